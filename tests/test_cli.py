"""The `relaygraph` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relaygraph import __version__

pytestmark = pytest.mark.slow


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "relaygraph.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_models_lists_the_packaged_models() -> None:
    result = run("models")
    assert result.returncode == 0
    assert "smollm2-135m" in result.stdout and "gemma3-270m" in result.stdout
    assert "MB" in result.stdout


def test_generate_on_the_embedded_model() -> None:
    result = run("generate", "Name three fruits.", "--max-tokens", "16")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "tok/s" in result.stderr


def test_generate_streams_and_reads_stdin() -> None:
    result = run("generate", "--file", "-", "--stream", "--max-tokens", "8", stdin=b"Say hello.")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_generate_under_a_format(tmp_path: Path) -> None:
    schema = tmp_path / "city.json"
    schema.write_text(
        '{"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},'
        ' "required": ["city"]}'
    )
    result = run("generate", "Name a city as JSON.", "--json-schema", str(schema))
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout)["city"], str)
    picked = run("generate", "Is water wet?", "--choice", "yes", "--choice", "no")
    assert picked.returncode == 0 and picked.stdout.strip() in ("yes", "no")
    both = run("generate", "Hi", "--json", "--regex", "[a-z]+")
    assert both.returncode == 2 and "at most one of" in both.stderr


def test_generate_raw_completion_on_gemma() -> None:
    result = run(
        "generate",
        "Q: What is the capital of France?\nA:",
        "--raw",
        "-m",
        "gemma3-270m",
        # Room for "The capital of France is Paris.": which phrasing the 4-bit model
        # picks first depends on the CPU's kernels (AVX-512 machines start that way).
        "--max-tokens",
        "12",
        "--stop",
        "\n",
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "hi", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["generate", "hi", "--max-tokens", "0"], "max_tokens"),
        (["generate", "hi", "--temperature", "-1"], "temperature"),
        (["generate", "--file", "/no/such/file.txt"], "No such file"),
        (["generate"], "give a prompt argument or --file"),
        (["generate", "hi", "--max-tokens", "100000"], "context window"),
        (["generate", "hi", "-m", "openai:not-a-url"], "not a valid remote model"),
    ],
)
def test_user_errors_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    result = run("generate", "--file", str(bad))
    assert result.returncode == 2 and "not UTF-8" in result.stderr


EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "research_team.py")


def test_run_a_graph_and_show_its_trace(tmp_path: Path) -> None:
    trace = tmp_path / "run.json"
    result = run(
        "run", f"{EXAMPLE}:build", "Which river flows through London?", "--trace", str(trace)
    )
    assert result.returncode == 0, result.stderr
    assert (
        "per role" in result.stdout and "researcher" in result.stdout and "answer:" in result.stdout
    )
    shown = run("trace", "show", str(trace))
    assert shown.returncode == 0, shown.stderr
    assert "solver" in shown.stdout and "result:" in shown.stdout


def test_durable_run_from_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    first = run(
        "run", f"{EXAMPLE}:build", "Where is Big Ben?", "--checkpoint", str(db), "--thread", "t1"
    )
    assert first.returncode == 0, first.stderr
    again = run(
        "run", f"{EXAMPLE}:build", "-", "--checkpoint", str(db), "--thread", "t1", "--resume"
    )
    assert again.returncode == 0, again.stderr
    assert first.stdout.split("answer:")[-1] == again.stdout.split("answer:")[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_file.py:build", "q"], "does not exist"),
        (["run", "research_team", "q"], "must be <file.py or module>:<factory>"),
        (["run", f"{EXAMPLE}:nothing", "q"], "has no callable 'nothing'"),
        (["run", f"{EXAMPLE}:CORPUS", "q"], "has no callable 'CORPUS'"),
        (["run", f"{EXAMPLE}:search", "q"], "needs arguments ['query']"),
        (["run", f"{EXAMPLE}:main", "q"], "not an AgentGraph"),
        (["run", f"{EXAMPLE}:build", "q", "--resume"], "--resume needs --checkpoint"),
        (["trace", "show", "/no/such/trace.json"], "trace /no/such/trace.json: cannot read it"),
    ],
)
def test_run_errors(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stdout
    assert message in " ".join(result.stderr.split())


def _start(*args: str) -> subprocess.Popen[str]:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "relaygraph.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _stop(process: subprocess.Popen[str]) -> str:
    """Terminate the process; its stderr."""
    process.terminate()
    return process.communicate(timeout=30)[1]


def test_a_vllm_worker_refuses_the_embedded_engines_options() -> None:
    result = run("worker", "--engine", "vllm", "--slots", "4", "--model", "smollm2-135m")
    assert result.returncode != 0 and "--max-num-seqs" in result.stderr.replace("\n", " ")


@pytest.mark.server
def test_worker_prints_its_url_and_serves() -> None:
    import httpx

    process = _start("worker", "--model", "smollm2-135m")
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        for _ in range(100):
            try:
                models = httpx.get(f"{url}/models", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert [m["id"] for m in models["data"]] == ["smollm2-135m"]
    finally:
        _stop(process)


@pytest.mark.server
def test_serve_a_config_with_a_graph(tmp_path: Path) -> None:
    import httpx

    from relaygraph.serving.server import free_port

    config = tmp_path / "serve.yaml"
    config.write_text(
        f"models:\n  small: {{llm: smollm2-135m}}\n  team: {{graph: '{EXAMPLE}:build'}}\n"
    )
    port = free_port()
    process = _start("serve", "--config", str(config), "--port", str(port), "--host", "0.0.0.0")
    models: dict[str, list[dict[str, str]]] = {"data": []}
    try:
        for _ in range(200):
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        stderr = _stop(process)
    assert {m["id"] for m in models["data"]} == {"small", "team"}
    # No keys configured: it bound loopback only, and said so.
    assert "binding 127.0.0.1 instead of 0.0.0.0" in stderr


def test_serve_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("models: {a: {llm: no-such-model}}")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2 and "unknown model 'no-such-model'" in " ".join(
        result.stderr.split()
    )
