"""Calibrating an uncertainty score into a probability of being right, and choosing where
to escalate.

A `Calibration` is fitted on a labelled hold-out set (one estimator's score and whether
the small model was right, per query) with isotonic regression (pool-adjacent-violators,
monotone and free of shape assumptions) or Platt scaling (a logistic curve, smoother on
small sets). It records the expected calibration error before (the estimator's own
confidence) and after, and picks thresholds either for a target share of queries
escalated or for a target accuracy of the answers kept. Saved as JSON naming the small
model and the estimator, and refused by a cascade for another pair.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from relaygraph.errors import ConfigError
from relaygraph.fileio import read_model, write_atomic

CALIBRATION_VERSION = 1
MIN_ITEMS = 20
"""Fewer labelled answers than this cannot place a threshold with any confidence."""
Method = Literal["isotonic", "platt"]


class CalibrationItem(BaseModel):
    """One labelled answer of the hold-out set."""

    id: str
    score: float
    confidence: float = Field(ge=0.0, le=1.0)
    """The estimator's own, uncalibrated probability of being right (for ECE before)."""
    correct: bool


class Calibration(BaseModel):
    """A fitted map from one estimator's score to P(the small model is right).

    Isotonic: ``knots`` (scores, ascending) and ``values`` (probabilities, non-increasing),
    interpolated linearly and flat beyond the ends. Platt: P = 1 / (1 + exp(a·score + b)).
    """

    version: int = CALIBRATION_VERSION
    model: str
    estimator: str
    method: Method
    knots: list[float] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)
    a: float = 0.0
    b: float = 0.0
    items: int
    accuracy: float
    """Share of the hold-out answers that were right."""
    ece_before: float
    ece_after: float
    scores: list[float]
    """The hold-out scores, sorted: the quantiles thresholds are read from."""
    correct: list[bool]
    """Whether each answer of ``scores`` (same order) was right."""

    @model_validator(mode="after")
    def _consistent(self) -> Calibration:
        if self.method == "isotonic" and (not self.knots or len(self.knots) != len(self.values)):
            raise ValueError("isotonic calibration needs as many knots as values, at least one")
        if len(self.scores) != len(self.correct):
            raise ValueError("scores and correct differ in length")
        return self

    def probability(self, score: float | np.ndarray) -> np.ndarray:
        """Calibrated probability that an answer with this score is right."""
        x = np.asarray(score, dtype=np.float64)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(np.clip(self.a * x + self.b, -50, 50)))
        return np.interp(x, self.knots, self.values)

    def threshold_for_escalation(self, rate: float) -> float:
        """The threshold that escalates ``rate`` of the hold-out queries (score above it).

        ``inf`` for 0 (escalate nothing), ``-inf`` for 1 (everything).
        """
        if not 0.0 <= rate <= 1.0:
            raise ConfigError("escalation rate must be in [0, 1]", parameter="rate", value=rate)
        escalated = round(rate * len(self.scores))
        if escalated == 0:
            return math.inf
        if escalated == len(self.scores):
            return -math.inf
        return self.scores[len(self.scores) - escalated - 1]

    def threshold_for_accuracy(self, target: float) -> float:
        """The highest threshold whose kept hold-out answers reach ``target`` accuracy.

        Escalating every score above it keeps the most answers on the small model that
        still meets the target; ``-inf`` (escalate everything) when no threshold does.
        """
        if not 0.0 <= target <= 1.0:
            raise ConfigError("target accuracy must be in [0, 1]", parameter="target")
        right = np.cumsum(self.correct)
        kept = np.arange(1, len(self.scores) + 1)
        ok = np.flatnonzero(right / kept >= target)
        # Only a cut between two different scores is a threshold a score can be put at.
        cuts = [i for i in ok if i + 1 == len(self.scores) or self.scores[i + 1] > self.scores[i]]
        return float(self.scores[cuts[-1]]) if cuts else -math.inf

    def save(self, path: str | Path) -> Path:
        """Write atomically as JSON; returns the path."""
        target = Path(path)
        write_atomic(target, self.model_dump_json(indent=1) + "\n")
        return target

    @classmethod
    def load(cls, path: str | Path, *, model: str | None = None) -> Calibration:
        """Read a saved calibration, checking it was made for ``model`` when given.

        Raises:
            ConfigError: Missing or malformed file, another version, or another model.
        """
        source = Path(path)
        calibration = read_model(cls, source, what="calibration")
        if calibration.version != CALIBRATION_VERSION:
            raise ConfigError(
                f"calibration {source} has version {calibration.version}; this relaygraph "
                f"reads version {CALIBRATION_VERSION}; fit it again",
                parameter="path",
            )
        if model is not None and calibration.model != model:
            raise ConfigError(
                f"calibration {source} was fitted for {calibration.model!r}, not {model!r}; "
                "scores of different models are not comparable",
                parameter="path",
            )
        return calibration


def fit_calibration(
    items: list[CalibrationItem], *, model: str, estimator: str, method: Method = "isotonic"
) -> Calibration:
    """Fit ``method`` on labelled answers of one model and one estimator.

    Raises:
        ConfigError: Fewer than `MIN_ITEMS` items, or answers all right or all wrong
            (nothing tells a good score from a bad one).
    """
    if len(items) < MIN_ITEMS:
        raise ConfigError(
            f"calibration needs at least {MIN_ITEMS} labelled answers, got {len(items)}",
            parameter="items",
        )
    right = sum(i.correct for i in items)
    if right in (0, len(items)):
        raise ConfigError(
            f"every calibration answer is {'right' if right else 'wrong'}; the set needs "
            "both kinds to relate scores to correctness",
            parameter="items",
        )
    ordered = sorted(items, key=lambda i: i.score)
    scores = np.array([i.score for i in ordered], dtype=np.float64)
    labels = np.array([i.correct for i in ordered], dtype=np.float64)
    knots: list[float] = []
    values: list[float] = []
    a = b = 0.0
    if method == "isotonic":
        knots, values = _isotonic_decreasing(scores, labels)
    elif method == "platt":
        a, b = _platt(scores, labels)
    else:
        raise ConfigError(f"unknown calibration method {method!r}", parameter="method")
    calibration = Calibration(
        model=model,
        estimator=estimator,
        method=method,
        knots=knots,
        values=values,
        a=a,
        b=b,
        items=len(items),
        accuracy=right / len(items),
        ece_before=expected_calibration_error([i.confidence for i in ordered], labels),
        ece_after=0.0,
        scores=scores.tolist(),
        correct=[bool(x) for x in labels],
    )
    after = expected_calibration_error(calibration.probability(scores), labels)
    return calibration.model_copy(update={"ece_after": after})


def expected_calibration_error(
    confidence: np.ndarray | list[float], correct: np.ndarray | list[bool], bins: int = 10
) -> float:
    """ECE: the item-weighted mean |accuracy - mean confidence| over equal-width bins."""
    p = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(correct, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(y[members].mean() - p[members].mean())
    return float(total / len(p))


def _isotonic_decreasing(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators for a non-increasing fit of ``y`` on sorted ``x``.

    Equal scores are pooled first (one score, one probability); each block becomes a knot
    at its mean score.
    """
    blocks: list[list[float]] = []  # [sum of y, count, sum of x]
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        if blocks and blocks[-1][2] / blocks[-1][1] == xi:
            blocks[-1][0] += yi
            blocks[-1][1] += 1
            blocks[-1][2] += xi
        else:
            blocks.append([yi, 1.0, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            y_sum, count, x_sum = blocks.pop()
            blocks[-1][0] += y_sum
            blocks[-1][1] += count
            blocks[-1][2] += x_sum
    return [b[2] / b[1] for b in blocks], [b[0] / b[1] for b in blocks]


def _platt(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic fit P(right) = 1 / (1 + exp(a·x + b)) by Newton's method.

    Targets are Platt's smoothed labels, which keep the fit finite when the classes are
    separable.
    """
    positives = y.sum()
    negatives = len(y) - positives
    target = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    scale = float(x.std()) or 1.0
    z = (x - x.mean()) / scale  # standardised, so Newton's steps are well conditioned
    w = np.zeros(2)
    design = np.column_stack([z, np.ones_like(z)])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(np.clip(design @ w, -50, 50)))
        gradient = design.T @ (target - p)
        hessian = (design.T * (p * (1 - p))) @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    a = float(w[0] / scale)
    return a, float(w[1] - a * x.mean())
