"""Model names resolve to the right backend, or fail clearly."""

from __future__ import annotations

import pytest

from relaygraph.errors import ModelNotFoundError
from relaygraph.llm import PACKAGED_MODELS, LocalLLM, OpenAICompatLLM, load_llm, parse_remote
from relaygraph.llm.catalog import cache_dir


def test_remote_names() -> None:
    remote = parse_remote("openai:http://127.0.0.1:8000/v1/smollm2-135m")
    assert (remote.base_url, remote.model) == ("http://127.0.0.1:8000/v1", "smollm2-135m")
    assert parse_remote("openai:https://gpu:9/v1/org/name-7b").model == "org/name-7b"
    assert parse_remote("openai:http://host:1/api/m").base_url == "http://host:1/api"
    llm = load_llm("openai:http://127.0.0.1:9/v1/x")
    assert isinstance(llm, OpenAICompatLLM) and llm.name == "x"


@pytest.mark.parametrize(
    "name", ["gpt-17", "openai:ftp://x/v1/m", "openai:http://h/v1/", "missing.gguf"]
)
def test_bad_names(name: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        load_llm(name)
    assert info.value.parameter == "model"


def test_packaged_models_load_once(smollm2: LocalLLM) -> None:
    assert set(PACKAGED_MODELS) == {"smollm2-135m", "gemma3-270m"}
    assert load_llm("smollm2-135m") is smollm2
    assert load_llm(str(smollm2.info().path)) is not None


def test_gemma_is_assembled_into_the_cache(gemma3: LocalLLM) -> None:
    path = gemma3.info().path
    assert path.parent == cache_dir() / "models"
    assert path.stat().st_size == gemma3.info().size_bytes or path.stat().st_size > 200e6
    assert not list(path.parent.glob("*.partial"))
