"""A learned injection detector: sentence embeddings and a logistic regression over lines.

The phrasing guard's regex was written together with the specs it is measured on. This
detector is trained instead, on lines of the specs it is given: their payloads (positive) against
every line of the worlds they seed (negative), embedded
with the packaged all-MiniLM-L6-v2. Its threshold is chosen by leave-one-spec-out
cross-validation on the training specs, for a target false-positive rate on clean lines,
so nothing about the specs it is reported on shapes it. Fit it on the development specs
and measure it on the held-out ones (`benchmarks/security.py` does).

As a defence layer, `screen` replaces the lines it flags with a marker, like the phrasing
guard; the information-flow guard (`relaygraph.eval.security.flow`) does not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from relaygraph.errors import ConfigError
from relaygraph.eval.security.synthesis import parameter_bindings, seeded_world
from relaygraph.eval.security.templates import fill

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.eval.security.spec import RiskSpec
    from relaygraph.memory.embedding import Embedder

FLAGGED = "[detector: removed a line that looks like an injected instruction]"


@dataclass(frozen=True, slots=True)
class LabelledLine:
    """A line of a spec's world or payload, whether it is injected, and the spec."""

    text: str
    injected: bool
    spec: str


def labelled_lines(specs: Sequence[RiskSpec]) -> list[LabelledLine]:
    """Every payload line (injected) and every line of the seeded world (clean) of
    ``specs``, under every binding of their parameters, deduplicated."""
    seen: dict[str, LabelledLine] = {}
    for spec in specs:
        for values in parameter_bindings(spec):
            env = seeded_world(spec, values)
            texts = [*env.files.values(), *env.pages.values()]
            texts += [f"{m.subject}\n{m.body}" for m in env.inbox]
            for text in texts:
                for line in _lines(text):
                    seen.setdefault(line, LabelledLine(line, False, spec.id))
            for payload in spec.attack.payloads:
                for line in _lines(fill(payload, values)):
                    seen[line] = LabelledLine(line, True, spec.id)
    return list(seen.values())


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


class InjectionDetector:
    """Scores lines of tool output by how much they look like an injected instruction."""

    def __init__(self, embedder: Embedder, *, target_fpr: float = 0.02, l2: float = 1e-2):
        self.embedder = embedder
        self.target_fpr = target_fpr
        self.l2 = l2
        self.weights: np.ndarray | None = None
        self.threshold = 0.5
        self.cross_validated = np.zeros(0, dtype=np.float32)
        """Each training line's score from the model fitted without its spec."""

    def fit(self, lines: Sequence[LabelledLine]) -> InjectionDetector:
        """Train on ``lines``; the threshold is cross-validated, one spec held out at a time.

        Raises:
            ConfigError: Fewer than two specs, or no lines of one class.
        """
        specs = sorted({line.spec for line in lines})
        labels = np.array([line.injected for line in lines], dtype=np.float32)
        if len(specs) < 2 or labels.min() == labels.max():
            raise ConfigError("the detector needs injected and clean lines from two specs or more")
        features = self._features([line.text for line in lines])
        held_out_scores = np.zeros(len(lines), dtype=np.float32)
        for spec in specs:
            fold = np.array([line.spec == spec for line in lines])
            weights = _logistic_regression(features[~fold], labels[~fold], self.l2)
            held_out_scores[fold] = _sigmoid(features[fold] @ weights)
        self.cross_validated = held_out_scores
        clean = np.sort(held_out_scores[labels == 0])
        index = min(len(clean) - 1, int(np.ceil((1 - self.target_fpr) * len(clean))))
        self.threshold = float(max(0.5, clean[index] + 1e-6))
        self.weights = _logistic_regression(features, labels, self.l2)
        return self

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """The probability that each text is injected.

        Raises:
            ConfigError: The detector was not fitted.
        """
        if self.weights is None:
            raise ConfigError("fit the detector before scoring with it")
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return _sigmoid(self._features(list(texts)) @ self.weights)

    def flags(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text is above the cross-validated threshold."""
        return [bool(s >= self.threshold) for s in self.scores(texts)]

    def screen(self, text: str) -> str:
        """``text`` with its flagged lines replaced by a marker."""
        lines = text.split("\n")
        flagged = self.flags([line.strip() or "." for line in lines])
        return "\n".join(
            FLAGGED if hit and line.strip() else line
            for line, hit in zip(lines, flagged, strict=True)
        )

    def _features(self, texts: list[str]) -> np.ndarray:
        vectors = self.embedder.embed(texts).astype(np.float32)
        features: np.ndarray = np.hstack([vectors, np.ones((len(texts), 1), dtype=np.float32)])
        return features


def _sigmoid(z: np.ndarray) -> np.ndarray:
    probabilities: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    return probabilities.astype(np.float32)


def _logistic_regression(
    x: np.ndarray, y: np.ndarray, l2: float, *, steps: int = 500, rate: float = 2.0
) -> np.ndarray:
    """Class-balanced logistic regression by gradient descent (the bias is x's last column)."""
    weights = np.zeros(x.shape[1], dtype=np.float32)
    positive = max(float(y.mean()), 1e-6)
    sample = np.where(y == 1, 0.5 / positive, 0.5 / max(1 - positive, 1e-6)).astype(np.float32)
    for _ in range(steps):
        error = (_sigmoid(x @ weights) - y) * sample
        gradient = x.T @ error / len(y) + l2 * np.r_[weights[:-1], 0.0]
        weights -= rate * gradient.astype(np.float32)
    return weights
