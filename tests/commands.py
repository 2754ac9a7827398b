"""Running the `relaygraph` command in a child process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable


def _no_check(what: str) -> None:
    """Called before each child process; conftest.py sets a check of the test's tier."""


before_run: Callable[[str], None] = _no_check


def eval_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``relaygraph eval *args`` offline; the result carries exit code, stdout and stderr."""
    return relaygraph_cli("eval", *args, timeout=timeout)


def relaygraph_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``relaygraph *args`` offline, as a child process."""
    before_run("runs the relaygraph command")
    return subprocess.run(
        [sys.executable, "-m", "relaygraph.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
        check=False,
    )
