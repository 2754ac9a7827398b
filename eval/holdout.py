"""Hold-out sets for calibrating model routing, built from any QA dataset the harnesses load.

A hold-out row is one model's answer to one question, labelled right or wrong against the
gold answer, with every chosen estimator's score and own confidence. Rows are appended to
a JSONL file as they finish (fsynced), so a killed build resumes where it stopped; a
calibration for one estimator is then fitted from the rows (routing/calibration.py).

"Right" is answer F1 >= 0.5 after HotPotQA's normalisation against the gold answer or
any accepted alias: small models answer in sentences ("The capital is Paris."), which
exact match would count wrong. Items with one-word answers ask for exact match instead
(``exact``), where F1 would pass "San Francisco" for "San José".
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError
from rich.progress import track

from relaygraph.errors import ConfigError, first_problem
from relaygraph.eval.answers import answer_score
from relaygraph.fileio import append_line, complete_lines
from relaygraph.llm.types import ChatPrompt, GenerationParams, TextPrompt
from relaygraph.routing.calibration import CalibrationItem

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from relaygraph.eval.facts import FactSet
    from relaygraph.llm.protocol import LLM
    from relaygraph.routing.uncertainty import UncertaintyEstimator

RIGHT_F1 = 0.5
ANSWER_PARAMS = GenerationParams(max_tokens=32, logprobs=True, top_logprobs=5, stop=("\n",))


class QAItem(BaseModel):
    """One question with its gold answer (and others accepted), and the prompt asked."""

    id: str
    prompt: TextPrompt | ChatPrompt
    gold: str
    aliases: tuple[str, ...] = ()
    group: str = ""
    """The item's kind within its dataset (a question type, a fact category)."""
    exact: bool = False
    """Right only on an exact (normalised) match, not on F1 >= 0.5."""


class HoldoutRow(BaseModel):
    """One labelled answer with each estimator's reading."""

    id: str
    model: str
    answer: str
    gold: str
    group: str = ""
    f1: float
    correct: bool
    scores: dict[str, float]
    confidence: dict[str, float]
    extra_calls: dict[str, int]
    latency_s: float = 0.0
    """Seconds the answer took."""
    estimator_s: dict[str, float] = {}
    """Seconds each estimate took beyond the answer."""


def fact_items(facts: FactSet) -> list[QAItem]:
    """Every fact as a few-shot text question, grouped by category."""
    return [
        QAItem(
            id=fact.id,
            prompt=category.prompt(fact.subject),
            gold=fact.answer,
            aliases=fact.aliases,
            group=name,
            exact=True,
        )
        for name, category in facts.categories.items()
        for fact in category.items
    ]


def build_holdout(
    model: LLM,
    items: Sequence[QAItem],
    estimators: Mapping[str, UncertaintyEstimator],
    out: str | Path,
    *,
    show_progress: bool = True,
) -> list[HoldoutRow]:
    """Answer every item not yet in ``out`` and append its row; returns all rows.

    Raises:
        ConfigError: ``out`` holds rows of another model, or a malformed line.
    """
    path = Path(out)
    rows = {row.id: row for row in read_holdout(path)} if path.exists() else {}
    if rows and {r.model for r in rows.values()} != {model.name}:
        raise ConfigError(
            f"{path} holds answers of {sorted({r.model for r in rows.values()})}, not "
            f"{model.name!r}; choose another --out",
            parameter="out",
        )
    todo = [item for item in items if item.id not in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        complete_lines(path, repair=True)  # cut a row a kill left half-written
    steps = track(todo, description=f"hold-out ({model.name})") if show_progress else todo
    for item in steps:
        row = _answer(model, item, estimators)
        append_line(path, row.model_dump_json())
        rows[row.id] = row
    return [rows[item.id] for item in items if item.id in rows]


def judge(item: QAItem, answer: str) -> tuple[float, bool]:
    """The answer's best F1 over the accepted answers, and whether it counts as right."""
    matches = [answer_score(answer, gold) for gold in (item.gold, *item.aliases)]
    f1 = max(m.f1 for m in matches)
    return f1, any(m.em for m in matches) if item.exact else f1 >= RIGHT_F1


def _answer(model: LLM, item: QAItem, estimators: Mapping[str, UncertaintyEstimator]) -> HoldoutRow:
    began = time.perf_counter()
    completion = model.complete(item.prompt, ANSWER_PARAMS)
    latency = time.perf_counter() - began
    f1, correct = judge(item, completion.text)
    scores, confidence, calls, seconds = {}, {}, {}, {}
    for name, estimator in estimators.items():
        began = time.perf_counter()
        estimate = estimator.estimate(model, item.prompt, completion, ANSWER_PARAMS)
        seconds[name] = time.perf_counter() - began
        scores[name], confidence[name] = estimate.score, estimate.confidence
        calls[name] = estimate.extra_calls
    return HoldoutRow(
        id=item.id,
        model=model.name,
        answer=completion.text,
        gold=item.gold,
        group=item.group,
        f1=f1,
        correct=correct,
        scores=scores,
        confidence=confidence,
        extra_calls=calls,
        latency_s=latency,
        estimator_s=seconds,
    )


def read_holdout(path: str | Path) -> list[HoldoutRow]:
    """Rows of a hold-out file; a torn last line (a killed build) is left out.

    Raises:
        ConfigError: Missing file or a malformed complete line.
    """
    source = Path(path)
    try:
        lines = complete_lines(source)
    except OSError as exc:
        raise ConfigError(f"cannot read hold-out set {source}: {exc}", parameter="path") from None
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(HoldoutRow.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            problem = (
                ": ".join(first_problem(exc.errors()))
                if isinstance(exc, ValidationError)
                else str(exc)
            )
            raise ConfigError(
                f"{source} line {number} is not a hold-out row: {problem}", parameter="path"
            ) from None
    return rows


def calibration_items(rows: Sequence[HoldoutRow], estimator: str) -> list[CalibrationItem]:
    """One estimator's labelled scores, ready for `fit_calibration`.

    Raises:
        ConfigError: A row lacks that estimator.
    """
    missing = [r.id for r in rows if estimator not in r.scores]
    if missing:
        raise ConfigError(
            f"{len(missing)} hold-out rows have no {estimator!r} score (first: {missing[0]}); "
            "build the set with that estimator",
            parameter="estimator",
        )
    return [
        CalibrationItem(
            id=r.id,
            score=r.scores[estimator],
            confidence=min(1.0, max(0.0, r.confidence[estimator])),
            correct=r.correct,
        )
        for r in rows
    ]
