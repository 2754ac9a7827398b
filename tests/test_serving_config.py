"""Server configs: YAML or JSON, strict, with errors naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaygraph.errors import ConfigError
from relaygraph.serving.config import GraphEntry, LLMEntry, WorkerPoolEntry, load_config
from relaygraph.serving.server import safe_host

GOOD = """
models:
  small: {llm: smollm2-135m}
  big: {workers: [http://127.0.0.1:9001/v1], model: some/model}
  team: {graph: examples/research_team.py:build, model: smollm2-135m}
security:
  api_keys_env: TEST_RELAYGRAPH_KEYS
  max_concurrency_per_key: 2
"""


def test_yaml_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(GOOD)
    config = load_config(path)
    assert [type(e) for e in config.models.values()] == [LLMEntry, WorkerPoolEntry, GraphEntry]
    monkeypatch.setenv("TEST_RELAYGRAPH_KEYS", "a, b")
    assert config.security.keys() == {"a", "b"}
    json_path = tmp_path / "serve.json"
    json_path.write_text('{"models": {"small": {"llm": "smollm2-135m"}}}')
    assert list(load_config(json_path).models) == ["small"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: {}", "models: Dictionary should have at least 1 item"),
        ("models: {a: {lm: x}}", "models.a: a model entry needs one of the keys"),
        (
            "models: {a: {llm: x, colour: red}}",
            "models.a.llm.colour: Extra inputs are not permitted",
        ),
        (
            "models: {a: {workers: [], model: m}}",
            "models.a.workers.workers: List should have at least 1",
        ),
        ("models: {a: {llm: x}}\nsecurity: {max_tokens_cap: -1}", "security.max_tokens_cap"),
        ("models: [unclosed", ": not valid YAML"),
    ],
)
def test_bad_configs_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"server config .*: cannot read it"):
        load_config("/no/such/serve.yaml")


def test_without_keys_only_loopback_is_bound(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("models: {a: {llm: smollm2-135m}}")
    config = load_config(path)
    assert safe_host("0.0.0.0", config.security) == "127.0.0.1"
    keyed = config.security.model_copy(update={"api_keys": ["k"]})
    assert safe_host("0.0.0.0", keyed) == "0.0.0.0"
