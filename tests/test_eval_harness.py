"""The evaluation harness: resumable runs, scored failures, reports, compare, the CLI.

Graphs here are scripted (tests/scripts/hotpot_graphs.py) so that outcomes are known;
test_eval_real_model.py runs the same commands on the embedded model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from commands import eval_cli

from relaygraph.errors import ConfigError
from relaygraph.eval.compare import compare
from relaygraph.eval.hotpotqa import HotpotSuite, ParagraphTools, load_hotpotqa
from relaygraph.eval.runner import evaluate, sample_items
from relaygraph.graph.loader import load_factory
from relaygraph.graph.runs import ITEMS, read_items
from relaygraph.llm.scripted import ScriptedLLM

GRAPHS = Path(__file__).parent / "scripts" / "hotpot_graphs.py"
DATA = load_hotpotqa(limit=12).examples


def run(out: Path, graph: str = "right", n: int = 6, **kwargs: object):  # type: ignore[no-untyped-def]
    suite = HotpotSuite(load_factory(f"{GRAPHS}:{graph}"), ScriptedLLM([]))
    return evaluate(
        suite,
        DATA[:n],
        out,
        dataset="test",
        graph=graph,
        model="scripted",
        show_progress=False,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.slow
def test_a_run_scores_items_and_writes_its_report(tmp_path: Path) -> None:
    summary = run(tmp_path, "right")
    assert summary.items == 6 and summary.success == 1.0 and summary.metrics["f1"] == 1.0
    assert set(summary.by_group) == {"type", "level"}
    assert summary.roles["researcher"].steps == 2.0
    for name in ("run.json", "items.jsonl", "summary.json", "report.md", "by_group.png"):
        assert (tmp_path / name).stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "**EM: 100.0%**" in report and "| researcher | 2.0 |" in report
    items = read_items(tmp_path)
    first = items[DATA[0].id]
    assert first.prediction == DATA[0].answer and first.trace is not None
    trace = json.loads((tmp_path / first.trace).read_text())
    assert trace["steps"][0]["action"]["tool"] == "search"


def test_a_failing_factory_or_a_silent_model_is_a_scored_failure(tmp_path: Path) -> None:
    summary = run(tmp_path / "broken", "broken", n=9)
    items = read_items(tmp_path / "broken")
    failed = [i for i in items.values() if i.error]
    assert summary.items == 9 and failed, "some ids hash to the failing third"
    assert all(i.success == 0.0 and "factory failed" in (i.error or "") for i in failed)
    assert summary.success == pytest.approx((9 - len(failed)) / 9)

    mute = run(tmp_path / "mute", "mute", n=2)
    assert mute.items == 2 and mute.errors == 2 and mute.success == 0.0
    assert all(i.prediction is None for i in read_items(tmp_path / "mute").values())


def test_resume_runs_only_what_is_missing_and_repairs_a_torn_line(tmp_path: Path) -> None:
    run(tmp_path, "right", n=6)
    kept = (tmp_path / ITEMS).read_text().splitlines()[:3]
    # Three items never finished, and a fourth was being written when the process died.
    (tmp_path / ITEMS).write_text("\n".join(kept) + '\n{"id": "torn", "succ')
    summary = run(tmp_path, "right", n=6, resume=True)
    assert summary.items == 6
    lines = (tmp_path / ITEMS).read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["id"] != "torn" for line in lines)


def test_an_existing_run_is_never_overwritten_or_resumed_on_other_data(tmp_path: Path) -> None:
    run(tmp_path, "right", n=3)
    with pytest.raises(ConfigError, match="--resume"):
        run(tmp_path, "right", n=3)
    with pytest.raises(ConfigError, match="fingerprint"):
        run(tmp_path, "right", n=4, resume=True)
    with pytest.raises(ConfigError, match="graph"):
        run(tmp_path, "wrong", n=3, resume=True)
    assert len(read_items(tmp_path)) == 3


@pytest.mark.slow
def test_compare_lists_the_items_that_differ(tmp_path: Path) -> None:
    run(tmp_path / "a", "right", n=4)
    run(tmp_path / "b", "wrong", n=4)
    comparison = compare(tmp_path / "a", tmp_path / "b")
    assert comparison.shared == 4 and len(comparison.differing) == 4
    assert comparison.a.success == 1.0 and comparison.b.success == 0.0
    result = eval_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    assert "4 items differ" in result.stdout and "nobody" in result.stdout


def test_sample_items_is_a_seeded_draw_in_dataset_order() -> None:
    items = list(range(20))
    draw = sample_items(items, 5, seed=3)
    assert draw == sorted(draw) and len(draw) == 5
    assert draw == sample_items(items, 5, seed=3) != sample_items(items, 5, seed=4)
    assert sample_items(items, None, seed=3) == items
    assert set(draw) < set(sample_items(items, 9, seed=3))  # nested: comparable runs


def test_a_stratified_draw_gives_each_stratum_its_share() -> None:
    items = [f"{kind}{i}" for kind, n in (("a", 10), ("b", 6), ("c", 4)) for i in range(n)]
    draw = sample_items(items, 5, seed=1, stratum=lambda item: item[0])
    assert [item[0] for item in draw].count("a") == 3  # 2.5 -> 3 by largest remainder
    assert {item[0] for item in draw} == {"a", "b", "c"} and len(draw) == 5
    assert draw == [i for i in items if i in draw]  # dataset order
    assert draw == sample_items(items, 5, seed=1, stratum=lambda item: item[0])


def test_paragraph_tools_search_and_lookup() -> None:
    example = DATA[0]
    tools = ParagraphTools(example)
    title = example.context[0].title
    assert tools.search(title.upper()).startswith(example.context[0].sentences[0].strip()[:20])
    assert tools.search("no such page at all").startswith("Could not find")
    assert title in tools.search("no such page at all")
    word = example.context[0].sentences[0].split()[0]
    first = tools.lookup(word)
    assert first.startswith("(Result 1 /")
    assert ParagraphTools(example).lookup("x") == "No page yet: search[title] first."


@pytest.mark.slow
def test_a_killed_cli_run_resumes_without_redoing_or_losing_items(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["hotpotqa", "--graph", f"{GRAPHS}:slow", "--limit", "8", "--out", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "relaygraph.cli", "eval", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_lines(out)) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {json.loads(line)["id"] for line in _lines(out)}
    assert 3 <= len(done_before) < 8
    result = eval_cli(*args, "--resume")
    assert result.returncode == 0, result.stderr
    ids = [json.loads(line)["id"] for line in _lines(out)]
    assert len(ids) == len(set(ids)) == 8, "each item exactly once"
    assert "EM" in result.stdout and "100.0%" in result.stdout


@pytest.mark.slow
def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"_id": "x", "question": "q"}]))
    result = eval_cli("hotpotqa", "--data", str(bad), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "record 0 (_id=x)" in _flat(result.stderr)
    result = eval_cli("hotpotqa", "--graph", "nowhere.py:build", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "does not exist" in _flat(result.stderr)
    result = eval_cli("compare", str(tmp_path), str(tmp_path))
    assert result.returncode == 2 and "not an evaluation run" in _flat(result.stderr)


def test_a_factory_without_example_gets_the_paragraphs_in_the_task(tmp_path: Path) -> None:
    summary = run(tmp_path, "closed_book", n=2)
    trace = json.loads(
        (tmp_path / next(iter(read_items(tmp_path).values())).trace).read_text()  # type: ignore[arg-type]
    )
    assert "Paragraphs:" in trace["task"] and summary.items == 2


def _flat(text: str) -> str:
    """Text with rich's line wrapping undone."""
    return " ".join(text.split())


def _lines(out: Path) -> list[str]:
    path = out / ITEMS
    if not path.exists():
        return []
    return [line for line in path.read_text().split("\n")[:-1] if line]
