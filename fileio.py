"""Atomic file writes: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a synced temporary file in the same folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def append_line(path: str | Path, line: str) -> None:
    """Append one line (newline added) and sync it: a finished record survives a crash."""
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


def complete_lines(path: str | Path, *, repair: bool = False) -> list[bytes]:
    """The lines of an append-only file that were written whole.

    A last line without its newline is a write that died mid-way: it is left out, and
    cut off the file when ``repair`` (so the next append starts on a fresh line).
    """
    target = Path(path)
    data = target.read_bytes()
    complete, _, torn = data.rpartition(b"\n")
    if torn and repair:
        with target.open("r+b") as handle:
            handle.truncate(len(complete) + 1 if complete else 0)
    return complete.splitlines()


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
