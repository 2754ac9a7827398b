"""README.md's headline figures (docs/readme_results.py): paths, escaping, the check.

Pure functions on small dictionaries and temporary result folders; no model, no server.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
sys.path.insert(0, str(DOCS))  # docs/ is no package; its modules import each other
try:
    readme_results = importlib.import_module("readme_results")
finally:
    sys.path.remove(str(DOCS))

Headline = readme_results.Headline

RUN = {
    "machine": {"cpu": "x", "commit": {"hash": "0123456789abcdef0123", "dirty": False}},
    "best": "b",
    "rows": [
        {"kind": "exact", "size": 10, "p50": 4.0},
        {"kind": "hnsw", "size": 10, "p50": 0.5},
        {"kind": "hnsw", "size": 20, "p50": 0.8},
    ],
    "by": {"a": {"gain": 0.1, "ci95": [0.02, 0.2]}, "b": {"gain": 0.25, "ci95": [0.1, 0.4]}},
    "name": "<b>*bold*</b> | x",
}


def test_paths_index_select_and_substitute() -> None:
    resolve = readme_results.resolve
    assert resolve(RUN, "rows/1/p50") == 0.5
    assert resolve(RUN, "rows/kind=hnsw,size=20/p50") == 0.8
    assert resolve(RUN, "by/{best}/gain") == 0.25
    with pytest.raises(LookupError, match="2 records match"):
        resolve(RUN, "rows/kind=hnsw/p50")
    with pytest.raises(LookupError, match="no 'gains'"):
        resolve(RUN, "by/a/gains")
    with pytest.raises(LookupError, match="not a number"):
        readme_results.number(RUN, "name")


def test_commit_is_the_nearest_recorded() -> None:
    measured_at = readme_results.measured_at
    assert measured_at(RUN, "rows/0/p50") == "`0123456`"
    assert measured_at({"part": {"x": 1}}, "part/x") == "before provenance"
    sections = {"part": {"commit": {"hash": "abcdef0123", "dirty": True}, "x": 1}}
    assert measured_at(sections, "part/x") == "`abcdef0` with uncommitted changes"
    assert measured_at({"machine": {"commit": None}, "x": 1}, "x") == (
        "unknown (not a git checkout)"
    )


def test_figure_with_peer_ratio_and_interval() -> None:
    figure = readme_results.figure
    versus = Headline(
        result="r",
        what="w",
        value="rows/kind=hnsw,size=10/p50",
        fmt="{:.2f}",
        unit="ms",
        peer="rows/kind=exact,size=10/p50",
        peer_name="exact",
    )
    assert figure(RUN, versus) == "**0.50 ms** vs 4.00 ms exact: 0.12x"
    gain = Headline(
        result="r",
        what="w",
        value="by/{best}/gain",
        fmt="{:+.1f}",
        unit="points",
        scale=100,
        interval="by/{best}/ci95",
    )
    assert figure(RUN, gain) == "**+25.0 points** (95% interval +10.0 to +40.0)"


def test_text_from_a_json_is_escaped() -> None:
    cell = readme_results.label(RUN, "Name: {name}")
    assert "<b>" not in cell
    assert "\\|" in cell
    assert "\\*bold\\*" in cell
    assert readme_results.label(RUN, "{by/a/gain:.0%}") == "10%"
    assert readme_results.code_cell("a | b `c`") == "`` a \\| b `c` ``"


def _results(tmp_path: Path, p50: float) -> Path:
    folder = tmp_path / "results"
    folder.mkdir(exist_ok=True)
    run = {**RUN, "rows": [{"kind": "hnsw", "size": 10, "p50": p50}]}
    (folder / "memory_index.json").write_text(json.dumps(run), encoding="utf-8")
    return folder


def test_a_rerun_or_a_hand_edit_makes_the_block_stale(tmp_path: Path) -> None:
    row = Headline(result="memory_index", what="search", value="rows/0/p50", unit="ms")
    old = readme_results.render((row,), _results(tmp_path, 0.5))
    assert "| **0.5 ms** | `0123456` | `python benchmarks/memory_index.py` |" in old
    readme = readme_results.replace_block(
        f"# R\n{readme_results.BEGIN}\nx\n{readme_results.END}\n", old
    )
    assert readme_results.replace_block(readme, old) == readme
    rerun = readme_results.render((row,), _results(tmp_path, 0.7))
    assert readme_results.replace_block(readme, rerun) != readme
    edited = readme.replace("**0.5 ms**", "**0.4 ms**")
    assert readme_results.replace_block(edited, old) == readme


def test_a_missing_path_or_option_fails(tmp_path: Path) -> None:
    folder = _results(tmp_path, 0.5)
    with pytest.raises(ValueError, match=r"search.*no 'p95'"):
        readme_results.render(
            (Headline(result="memory_index", what="search", value="rows/0/p95"),), folder
        )
    with pytest.raises(ValueError, match="--nope is not in the Usage"):
        readme_results.render(
            (Headline(result="memory_index", what="s", value="rows/0/p50", args="--nope"),),
            folder,
        )
    with pytest.raises(ValueError, match="do not exist"):
        readme_results.render((Headline(result="gone", what="s", value="x"),), folder)


def test_the_readme_block_is_current() -> None:
    readme = readme_results.README.read_text(encoding="utf-8")
    assert readme_results.replace_block(readme, readme_results.render()) == readme, (
        "README.md's results block is stale: run `make readme-results`"
    )
