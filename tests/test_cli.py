"""The `relaygraph` command, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_generate_raw_completion_on_gemma() -> None:
    result = run(
        "generate",
        "Q: What is the capital of France?\nA:",
        "--raw",
        "-m",
        "gemma3-270m",
        "--max-tokens",
        "4",
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
