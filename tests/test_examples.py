"""The examples run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
def test_quickstart() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Greedy answers of this model are fixed for a given build; "Mars" is its answer to
    # the Red Planet question (its answer about Italy is, honestly, wrong).
    assert "Mars" in result.stdout
    assert result.stdout.count("?") >= 4  # all four questions are in the table
    assert "identical greedy answers: True" in result.stdout
