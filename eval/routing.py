"""Metrics of small-to-large routing: how well a score ranks wrong answers, and what
escalating the highest-scored share of queries buys.

All take one array per query: the router's ``scores`` (higher: escalate first) and whether
the small and the large model answered it right. Quality at an escalation rate is an
expectation: ties in the score are escalated in random order, so a coarse score (a share
of agreeing samples) is not flattered by the order of the data, and a rate between two
counts escalates the next query with that probability. PGR (RouteLLM's "performance gap
recovered") is the share of the large model's lead over the small one that routing wins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    ArrayLike = np.ndarray | Sequence[float] | Sequence[bool]


def auroc(scores: ArrayLike, positive: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for telling ``positive`` items (here: wrong
    answers) from the rest; ties count half. 0.5 is chance, 1 a perfect ranking.

    Raises:
        ConfigError: All items are of one class.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        raise ConfigError("AUROC needs both positive and negative items", parameter="positive")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def escalation_quality(
    scores: ArrayLike, small_correct: ArrayLike, large_correct: ArrayLike, rates: ArrayLike
) -> np.ndarray:
    """Expected accuracy when the ``rates`` share of queries with the highest scores go to
    the large model (ties in random order)."""
    s = np.asarray(scores, dtype=np.float64)
    small = np.asarray(small_correct, dtype=np.float64)
    gain = np.asarray(large_correct, dtype=np.float64) - small
    order = np.argsort(-s, kind="stable")
    # Within a group of equal scores the expected gain grows linearly, so the cumulative
    # gain is piecewise linear with knots at the group boundaries.
    ordered_scores, ordered_gain = s[order], gain[order]
    ends = np.flatnonzero(np.append(ordered_scores[1:] != ordered_scores[:-1], True)) + 1
    counts = np.concatenate([[0], ends])
    gains = np.concatenate([[0.0], np.cumsum(ordered_gain)[ends - 1]])
    escalated = np.asarray(rates, dtype=np.float64) * len(s)
    return np.asarray(float(small.mean()) + np.interp(escalated, counts, gains) / len(s))


def random_quality(
    small_correct: ArrayLike, large_correct: ArrayLike, rates: ArrayLike
) -> np.ndarray:
    """Expected accuracy when a random ``rates`` share of queries is escalated."""
    small = float(np.asarray(small_correct, dtype=np.float64).mean())
    large = float(np.asarray(large_correct, dtype=np.float64).mean())
    return small + np.asarray(rates, dtype=np.float64) * (large - small)


def oracle_quality(
    small_correct: ArrayLike, large_correct: ArrayLike, rates: ArrayLike
) -> np.ndarray:
    """Accuracy of a router that knows the answers: escalates first the queries only the
    large model gets right, last those only the small one does."""
    gain = np.asarray(large_correct, dtype=np.float64) - np.asarray(small_correct, np.float64)
    return escalation_quality(gain, small_correct, large_correct, rates)


def recovered_share(quality: ArrayLike, small_accuracy: float, large_accuracy: float) -> np.ndarray:
    """PGR: (quality - small) / (large - small); random routing recovers its own rate.

    Raises:
        ConfigError: The large model is not more accurate than the small one.
    """
    if large_accuracy <= small_accuracy:
        raise ConfigError(
            f"the large model ({large_accuracy:.3f}) is not more accurate than the small "
            f"one ({small_accuracy:.3f}); there is no gap to recover",
            parameter="large_accuracy",
        )
    q = np.asarray(quality, dtype=np.float64)
    return (q - small_accuracy) / (large_accuracy - small_accuracy)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]
