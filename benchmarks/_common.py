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
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx
import psutil

from relaygraph.fileio import write_atomic

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent

PACKAGES = (
    "relaygraph",
    "llama-cpp-python",
    "llguidance",
    "faiss-cpu",
    "sentence-transformers",
    "torch",
    "transformers",
    "langgraph",
    "numpy",
)
"""The packages whose version moves a benchmark's figures: the engine, the grammar
library, the index, the embedder, the training stack, the graph runtime."""

SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "neon",
    "asimd",
    "sve",
)
"""The CPU features llama.cpp, FAISS and torch pick their kernels by; a run's speed depends
on which of them the machine has, so they are listed apart from the full flag set."""


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and which code measured them.

    Besides the hardware (CPU model, its feature flags, cores, memory) this records the git
    commit of the checkout and whether its tree had changes (``commit``), and the versions
    of the packages that matter (``packages``). Results written before these fields existed
    lack them; the docs' results pages say so.
    """
    cpu, flags = _cpu()
    return {
        "cpu": cpu,
        "cpu_simd": [flag for flag in SIMD_FLAGS if flag in flags],
        "cpu_flags": sorted(flags),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": _commit(),
        "packages": {name: _version(name) for name in PACKAGES},
        # Kept under their old names: earlier results and their readers use them.
        "llama_cpp_python": _version("llama-cpp-python"),
        "relaygraph": _version("relaygraph"),
        "load_average_at_start": os.getloadavg(),
    }


def _cpu() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo (x86 ``flags``, Arm
    ``Features``); elsewhere, what `platform` knows and no flags."""
    model: str | None = None
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():  # every core repeats them; the first one says it
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "Model", "cpu model") and model is None:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def _commit() -> dict[str, Any] | None:
    """The checkout's commit and whether its tree differs from it (untracked files count:
    a new module can change what runs); None outside a git checkout."""

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        return {"hash": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a killed benchmark never leaves a truncated result."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


@contextmanager
def worker(model: str, port: int = 0, slots: int = 8) -> Iterator[str]:
    """A `relaygraph worker` for ``model`` in its own process on 127.0.0.1; yields its URL.

    Its own process, so a benchmark's client work does not compete with it for the GIL.
    ``port`` 0 takes any free port; ``slots`` sequences are decoded together.
    """
    command = ["worker", "--model", model, "--port", str(port), "--slots", str(slots)]
    process = subprocess.Popen(
        [sys.executable, "-m", "relaygraph.cli", *command],
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
