"""`relaygraph eval` end to end on the embedded model: HotPotQA (ReAct and the routed team,
with the AQ judge) and ALFWorld on the real TextWorld engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from commands import eval_cli

from relaygraph.eval.hotpotqa import AnswerJudge, answer_score
from relaygraph.graph.runs import read_items, read_manifest
from relaygraph.llm.local import LocalLLM

pytestmark = pytest.mark.slow


def test_hotpotqa_react_run_on_the_embedded_model(tmp_path: Path) -> None:
    result = eval_cli(
        "hotpotqa", "--limit", "2", "--out", str(tmp_path), "--judge", "smollm2-135m", timeout=900
    )
    assert result.returncode == 0, result.stderr
    items = list(read_items(tmp_path).values())
    assert len(items) == 2
    for item in items:
        assert item.roles["researcher"].prompt_tokens > 0 and item.steps >= 1
        assert 0.0 <= item.metrics["aq"] <= 1.0
        # The record's scores are the scores of the answer it records.
        expected = answer_score(item.prediction or "", item.gold or "")
        assert item.metrics["em"] == expected.em and item.metrics["f1"] == expected.f1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["items"] == 2 and "aq" in summary["metrics"]
    assert (tmp_path / "tokens_by_role.png").stat().st_size > 0


def test_hotpotqa_team_routes_context_within_its_budget(tmp_path: Path) -> None:
    graph = "relaygraph.eval.hotpotqa.agents:team"
    result = eval_cli(
        "hotpotqa", "--graph", graph, "--limit", "1", "--out", str(tmp_path), timeout=900
    )
    assert result.returncode == 0, result.stderr
    (item,) = read_items(tmp_path).values()
    assert set(item.roles) == {"planner", "researcher", "solver"}
    assert item.trace is not None
    trace = json.loads((tmp_path / item.trace).read_text())
    for step in trace["steps"]:
        assert step["context"]["policy"] == "rcr" and 0 < step["context"]["tokens"] <= 384
    assert any("/p" in i for i in trace["steps"][-1]["context"]["items"]), "paragraph sentences"


def test_judge_reads_a_grade_distribution(smollm2: LocalLLM) -> None:
    judge = AnswerJudge(smollm2)
    graded = judge.grade("What is the capital of France?", "Paris", "Paris", "It is Paris.")
    assert graded.distribution is not None
    assert sum(graded.distribution.values()) == pytest.approx(1.0)
    assert 0.0 <= graded.score <= 1.0
    assert judge.grade("q", "Paris", None, "").score == 0.0


def test_alfworld_run_on_the_real_engine(tmp_path: Path) -> None:
    result = eval_cli(
        "alfworld", "--limit", "1", "--max-steps", "3", "--out", str(tmp_path), timeout=900
    )
    assert result.returncode == 0, result.stderr
    (item,) = read_items(tmp_path).values()
    assert item.groups["task_type"] in {"pick", "clean", "heat", "cool", "look", "pick_two"}
    assert 1 <= item.steps <= 3 and item.success == item.metrics["won"]
    assert (item.prediction == "won") == (item.success == 1.0)
    assert read_manifest(tmp_path).headline == "success rate"
    assert "success rate" in (tmp_path / "report.md").read_text()


def test_alfworld_short_horizon_run_with_scored_choices(tmp_path: Path) -> None:
    graph = "relaygraph.eval.alfworld.agent:alfworld_react_scored"
    result = eval_cli(
        "alfworld", "--graph", graph, "--split", "valid_train", "--remaining", "1",
        "--max-steps", "2", "--limit", "1", "--out", str(tmp_path), timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (item,) = read_items(tmp_path).values()
    assert 1 <= item.steps <= 2 and item.error is None  # the agent's commands only
    assert read_manifest(tmp_path).settings["remaining"] == 1
    trace = json.loads((tmp_path / str(item.trace)).read_text())
    assert "Done so far:" in trace["steps"][0]["prompt"][-1]["content"]
    assert trace["steps"][0]["model"]["choice_scores"]
