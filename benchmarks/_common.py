"""Shared helpers for benchmark scripts: machine facts and atomic JSON output."""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

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
