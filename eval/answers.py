"""Answer exact match and token F1 after normalisation, as SQuAD and HotPotQA's official
scripts define them: lowercase, punctuation and the articles a/an/the removed, whitespace
collapsed; a yes/no/noanswer answer scores F1 0 unless it matches exactly. Every harness
that grades a short answer against a gold one uses these.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

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
