"""Routing hold-out sets: built from HotPotQA with the real SmolLM2, resumed after a kill,
and calibrated through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from commands import eval_cli

from relaygraph.errors import ConfigError
from relaygraph.eval.holdout import (
    HoldoutRow,
    build_holdout,
    calibration_items,
    read_holdout,
)
from relaygraph.eval.hotpotqa import load_hotpotqa
from relaygraph.eval.hotpotqa.holdout import hotpot_items
from relaygraph.llm.registry import load_llm
from relaygraph.routing.calibration import Calibration
from relaygraph.routing.uncertainty import MeanLogprob, PTrue


def test_items_carry_the_gold_paragraphs_only() -> None:
    example = load_hotpotqa(sample="distractor-100").examples[0]
    [item] = hotpot_items([example])
    text = item.prompt.messages[0].content
    gold = {title for title, _ in example.supporting_facts or []}
    shown = {p.title for p in example.context if f"{p.title}: " in text}
    assert shown == gold and example.question in text and item.gold == example.answer


@pytest.mark.slow
def test_a_build_on_the_real_model_resumes_and_repairs_a_torn_line(tmp_path: Path) -> None:
    items = hotpot_items(load_hotpotqa(sample="distractor-100").examples[:3])
    out = tmp_path / "holdout.jsonl"
    model = load_llm("smollm2-135m")
    estimators = {"mean_logprob": MeanLogprob(), "p_true": PTrue()}
    rows = build_holdout(model, items[:2], estimators, out, show_progress=False)
    assert [r.id for r in rows] == [i.id for i in items[:2]]
    assert all(set(r.scores) == {"mean_logprob", "p_true"} for r in rows)
    assert rows[0].correct == (rows[0].f1 >= 0.5)
    with out.open("a") as sink:  # a kill in the middle of the third row
        sink.write('{"id": "torn", "mod')
    again = build_holdout(model, items, estimators, out, show_progress=False)
    assert [r.id for r in again] == [i.id for i in items]
    assert again[:2] == rows  # the first two were not answered again
    assert len(out.read_text().splitlines()) == 3 and read_holdout(out) == again


@pytest.mark.slow
def test_a_file_of_another_model_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "holdout.jsonl"
    other = row("q0", True).model_copy(update={"model": "gemma3-270m"})
    out.write_text(other.model_dump_json() + "\n")
    items = hotpot_items(load_hotpotqa(sample="distractor-100").examples[:1])
    with pytest.raises(ConfigError, match="not 'smollm2-135m'"):
        build_holdout(load_llm("smollm2-135m"), items, {}, out, show_progress=False)


def row(item_id: str, correct: bool, score: float = 0.5) -> HoldoutRow:
    return HoldoutRow(
        id=item_id,
        model="smollm2-135m",
        answer="a",
        gold="a" if correct else "b",
        f1=float(correct),
        correct=correct,
        scores={"mean_logprob": score},
        confidence={"mean_logprob": 0.9},
        extra_calls={"mean_logprob": 0},
    )


@pytest.mark.slow
def test_calibrate_fits_saves_and_reports(tmp_path: Path) -> None:
    holdout = tmp_path / "holdout.jsonl"
    rows = [row(f"q{i}", i % 3 != 0, score=i / 40 + (0.5 if i % 3 == 0 else 0)) for i in range(40)]
    holdout.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    out = tmp_path / "cal.json"
    result = eval_cli("calibrate", str(holdout), "--estimator", "mean_logprob", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "ECE before / after" in result.stdout
    calibration = Calibration.load(out, model="smollm2-135m")
    assert calibration.items == 40 and calibration.ece_after < calibration.ece_before

    result = eval_cli("calibrate", str(holdout), "--estimator", "p_true", "--out", str(out))
    assert result.returncode != 0 and "no 'p_true' score" in result.stderr
    one_class = tmp_path / "right.jsonl"
    one_class.write_text("".join(row(f"q{i}", True).model_dump_json() + "\n" for i in range(30)))
    result = eval_cli("calibrate", str(one_class), "--estimator", "mean_logprob", "--out", str(out))
    assert result.returncode != 0 and "every calibration answer is right" in result.stderr


def test_a_malformed_line_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"id": "q"}\n' + row("q1", True).model_dump_json() + "\n")
    with pytest.raises(ConfigError, match="line 1 is not a hold-out row: model: Field required"):
        read_holdout(path)


def test_calibration_items_need_the_estimator() -> None:
    with pytest.raises(ConfigError, match="no 'perplexity' score"):
        calibration_items([row("q", True)], "perplexity")


@pytest.mark.slow
def test_the_holdout_command_builds_a_set(tmp_path: Path) -> None:
    out = tmp_path / "h.jsonl"
    args = [
        "--out",
        str(out),
        "--limit",
        "1",
        "--dataset",
        "hotpotqa",
        "--sample",
        "distractor-100",
    ]
    result = eval_cli("holdout", *args, "--estimators", "mean_logprob")
    assert result.returncode == 0, result.stderr
    assert "1 answers" in result.stdout and len(read_holdout(out)) == 1
    result = eval_cli("holdout", *args, "--estimators", "mean_logprob,guess")
    assert result.returncode != 0 and "unknown estimator(s) guess" in result.stderr
    result = eval_cli("holdout", "--out", str(out), "--dataset", "trivia")
    assert result.returncode != 0 and "facts or hotpotqa" in result.stderr


@pytest.mark.slow
def test_the_holdout_command_asks_the_shipped_facts_by_category(tmp_path: Path) -> None:
    out = tmp_path / "facts.jsonl"
    args = ["--out", str(out), "--limit", "2", "--estimators", "mean_logprob,p_true"]
    result = eval_cli("holdout", *args)
    assert result.returncode == 0, result.stderr
    rows = read_holdout(out)
    assert sorted(r.group for r in rows) == ["capital", "symbol"]  # one of each, stratified
    assert all(set(r.scores) == {"mean_logprob", "p_true"} and r.latency_s > 0 for r in rows)
