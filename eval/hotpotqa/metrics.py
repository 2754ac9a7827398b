"""HotPotQA metrics, as the official evaluation script (hotpot_evaluate_v1.py) defines them.

Answer EM/F1 after normalisation (lowercase, punctuation and the articles a/an/the
removed, whitespace collapsed), where a yes/no/noanswer answer scores F1 0 unless it
matches exactly; supporting-fact EM/F1 over (title, sentence id) pairs; joint metrics
multiply the answer's and the supporting facts' precision and recall.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPECIAL = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace.

    Example:
        >>> normalize_answer("The  Eiffel-Tower!")
        'eiffeltower'
    """
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


@dataclass(frozen=True, slots=True)
class Score:
    """Exact match, F1, precision and recall of one prediction (each in 0..1)."""

    em: float
    f1: float
    precision: float
    recall: float


ZERO = Score(0.0, 0.0, 0.0, 0.0)


def answer_score(prediction: str, gold: str) -> Score:
    """Answer EM and token-level F1 after normalisation.

    Example:
        >>> answer_score("the Seine river", "Seine")
        Score(em=0.0, f1=0.6666666666666666, precision=0.5, recall=1.0)
    """
    pred, truth = normalize_answer(prediction), normalize_answer(gold)
    em = float(pred == truth)
    if (pred in _SPECIAL or truth in _SPECIAL) and pred != truth:
        return ZERO
    pred_tokens, truth_tokens = pred.split(), truth.split()
    same = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if same == 0:
        return Score(em, 0.0, 0.0, 0.0)
    precision, recall = same / len(pred_tokens), same / len(truth_tokens)
    return Score(em, 2 * precision * recall / (precision + recall), precision, recall)


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
