"""HotPotQA metrics, as the official evaluation script (hotpot_evaluate_v1.py) defines them.

The answer's EM/F1 is the shared `relaygraph.eval.answers` metric; here are the
supporting-fact EM/F1 over (title, sentence id) pairs, and the joint metrics that
multiply the answer's and the supporting facts' precision and recall.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.eval.answers import ZERO, Score

if TYPE_CHECKING:
    from collections.abc import Iterable


def support_score(predicted: Iterable[tuple[str, int]], gold: Iterable[tuple[str, int]]) -> Score:
    """Supporting-fact EM/F1 over (title, sentence id) pairs (or any hashable units).

    Example:
        >>> support_score([("A", 0), ("B", 2)], [("A", 0), ("B", 1)])
        Score(em=0.0, f1=0.5, precision=0.5, recall=0.5)
    """
    pred, truth = set(predicted), set(gold)
    tp = len(pred & truth)
    fp, fn = len(pred - truth), len(truth - pred)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(float(fp + fn == 0), f1, precision, recall)


def joint_score(answer: Score, support: Score) -> Score:
    """The official joint metric: precisions and recalls multiply, EM is both EMs."""
    precision = answer.precision * support.precision
    recall = answer.recall * support.recall
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(answer.em * support.em, f1, precision, recall)


def mean(scores: Iterable[Score]) -> Score:
    """Averages over questions (what the official script reports)."""
    items = list(scores)
    if not items:
        return ZERO
    n = len(items)
    return Score(
        sum(s.em for s in items) / n,
        sum(s.f1 for s in items) / n,
        sum(s.precision for s in items) / n,
        sum(s.recall for s in items) / n,
    )
