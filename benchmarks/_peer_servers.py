"""The three OpenAI-compatible servers that benchmarks/serving.py's ``peers`` section
compares, each started the same way: its own process on a free 127.0.0.1 port, one GGUF,
the same threads, the same number of parallel slots and the same context per slot.

- ``relaygraph``: `relaygraph.serving.server.BackgroundServer` over `LocalLLM`, in a child
  process (this file's ``__main__``) so the benchmark client's GIL stays out of it;
- ``llama-server``: llama.cpp's own server, built by benchmarks/build_llama_server.sh from
  the llama.cpp that the installed llama-cpp-python vendors;
- ``llama-cpp-python``: ``python -m llama_cpp.server`` (the ``bench`` extra installs its
  dependencies). It has one llama.cpp context and serves one request at a time (an anyio
  lock around the model); concurrent requests queue, which is what it measures.

Usage (the child-process entry, not meant to be run by hand):
    python benchmarks/_peer_servers.py relaygraph --port 8123 --threads 2 --slots 8
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import httpx

ROOT = Path(__file__).resolve().parent.parent
LLAMA_SERVER = ROOT / "build" / "llama-server" / "bin" / "llama-server"
MODEL = "smollm2-135m"
"""The name every server answers to (``model`` in requests)."""

PeerName = Literal["relaygraph", "llama-server", "llama-cpp-python"]
PEERS: tuple[PeerName, ...] = ("relaygraph", "llama-server", "llama-cpp-python")


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """What every server gets alike."""

    gguf: Path
    threads: int = 2
    slots: int = 8
    context_per_slot: int = 2048
    """Tokens of KV cache per slot: llama-server gets ``slots * context_per_slot`` in all."""


@dataclass(frozen=True, slots=True)
class RunningPeer:
    name: PeerName
    base_url: str
    """The OpenAI base URL, ending in /v1."""
    port: int
    command: list[str]


def missing(name: PeerName) -> str | None:
    """Why ``name`` cannot start here (with the fix), or None when it can."""
    if name == "llama-server" and not LLAMA_SERVER.is_file():
        return f"{LLAMA_SERVER} is missing: run `nice -n 19 benchmarks/build_llama_server.sh`"
    if name == "llama-cpp-python":
        absent = [
            module
            for module in (
                "fastapi",
                "uvicorn",
                "sse_starlette",
                "starlette_context",
                "pydantic_settings",
            )
            if importlib.util.find_spec(module) is None
        ]
        if absent:
            return f"llama_cpp.server needs {', '.join(absent)}: pip install -e '.[bench]'"
    return None


def command(name: PeerName, settings: PeerSettings, port: int) -> tuple[list[str], str]:
    """The command line that serves ``settings.gguf`` on ``port``, and its readiness path
    (200 once the model is loaded)."""
    s = settings
    if name == "relaygraph":
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            "relaygraph",
            *("--port", str(port), "--threads", str(s.threads), "--slots", str(s.slots)),
            *("--context", str(s.context_per_slot)),
        ], "/v1/models"
    if name == "llama-server":
        return [
            str(LLAMA_SERVER),
            *("-m", str(s.gguf), "--alias", MODEL, "--host", "127.0.0.1", "--port", str(port)),
            *("-t", str(s.threads), "-tb", str(s.threads)),
            *("-np", str(s.slots), "-c", str(s.slots * s.context_per_slot)),
            "--jinja",  # the GGUF's own chat template, as relaygraph renders it
        ], "/health"
    return [
        sys.executable,
        *("-m", "llama_cpp.server", "--model", str(s.gguf), "--model_alias", MODEL),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--n_threads", str(s.threads), "--n_threads_batch", str(s.threads)),
        # One context, one request at a time: a context per slot's worth is what it needs.
        *("--n_ctx", str(s.context_per_slot)),
        # Its default cancels a running stream whenever another request waits; queue instead.
        *("--interrupt_requests", "False"),
        *("--verbose", "False"),
    ], "/v1/models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(
    name: PeerName, settings: PeerSettings, ready_timeout_s: float = 300.0
) -> Iterator[RunningPeer]:
    """``name`` serving in its own process until the block ends; its output goes to a
    temporary log, whose tail is shown if it fails to come up."""
    port = free_port()
    argv, ready_path = command(name, settings, port)
    root = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )
        try:
            _wait_ready(process, f"{root}{ready_path}", ready_timeout_s, log, name)
            yield RunningPeer(name=name, base_url=f"{root}/v1", port=port, command=argv)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _wait_ready(
    process: subprocess.Popen[bytes], url: str, timeout_s: float, log: IO[str], name: str
) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(trust_env=False, timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    log.seek(0)
    tail = "".join(log.read().splitlines(keepends=True)[-30:])
    state = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
    raise SystemExit(f"{name} never became ready at {url} ({state}); its output ends:\n{tail}")


def serve_relaygraph(port: int, threads: int, slots: int, context: int) -> None:
    """The ``relaygraph`` peer: `LocalLLM` behind `BackgroundServer`, until SIGTERM."""
    from relaygraph.llm import LocalLLM
    from relaygraph.serving.config import SecurityConfig
    from relaygraph.serving.server import BackgroundServer

    llm = LocalLLM.load(MODEL, context_window=context, max_batch=slots, n_threads=threads)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # As `relaygraph worker` does: every client here is one address with many streams.
    security = SecurityConfig(max_concurrency_per_key=64)
    with BackgroundServer({MODEL: llm}, port=port, security=security):
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="serve one peer (benchmarks/serving.py)")
    parser.add_argument("peer", choices=["relaygraph"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--context", type=int, default=2048)
    args = parser.parse_args()
    serve_relaygraph(args.port, args.threads, args.slots, args.context)
