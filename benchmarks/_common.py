"""Shared helpers for benchmark scripts: machine facts and atomic JSON output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psutil

from relaygraph.fileio import write_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "llama_cpp_python": version("llama-cpp-python"),
        "relaygraph": version("relaygraph"),
        "load_average_at_start": os.getloadavg(),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a killed benchmark never leaves a truncated result."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


@contextmanager
def worker(model: str, port: int = 0) -> Iterator[str]:
    """A `relaygraph worker` for ``model`` in its own process on 127.0.0.1; yields its URL.

    Its own process, so a benchmark's client work does not compete with it for the GIL.
    ``port`` 0 takes any free port.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "relaygraph.cli", "worker", "--model", model, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        _wait_ready(base_url)
        yield base_url
    finally:
        process.terminate()
        process.communicate(timeout=30)


def _wait_ready(base_url: str) -> None:
    for _ in range(600):
        try:
            httpx.get(f"{base_url}/models", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"worker at {base_url!r} never became ready")
