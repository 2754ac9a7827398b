"""What a reasoning policy sees at a step (`StepView`) and its feature vector.

The features are the step and the episode's progress, the share of the latency budget
left, recent success signals (was the last command valid, does it repeat an earlier one),
the executor's uncertainty about its proposal (confidence, margin, entropy, how many
commands it chose among), and a compact embedding of the goal and the last observation:
the sentence embedding projected on its leading principal components, fitted on the
training states (`Featurizer.fit`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.memory.embedding import Embedder

SCALARS = (
    "step_fraction",
    "steps_left",
    "budget_left",
    "last_valid",
    "repeated",
    "probe_known",
    "confidence",
    "margin",
    "entropy",
    "log_candidates",
)
LOG_CANDIDATES = math.log(100)
"""Candidate counts are scaled by this (ALFWorld offers 10 to 60 commands a state)."""
EMBED_BOUND = 2.0
"""Bound on an embedding feature: unit vectors, centred, projected on unit directions."""
EMBED_CACHE = 4096
"""Texts whose embeddings are kept (replay sees the same states again and again)."""


@dataclass(frozen=True, slots=True)
class StepView:
    """A decision point as a policy sees it.

    Attributes:
        step: Commands already sent in the episode.
        max_steps: Commands the episode allows.
        spent_s: Latency spent so far under the deployment's profile.
        budget_s: The episode's latency budget.
        last_valid: The last command was valid (True at the first step).
        repeated: The last command repeats an earlier one.
        confidence: The executor's probability for its proposal (None: no probe ran).
        margin: Confidence minus the runner-up's.
        entropy: Normalized entropy of the executor's distribution.
        candidates: Commands the executor chose among.
        text: The goal and the last observation, for the embedding.
    """

    step: int
    max_steps: int
    spent_s: float
    budget_s: float
    last_valid: bool = True
    repeated: bool = False
    confidence: float | None = None
    margin: float | None = None
    entropy: float | None = None
    candidates: int | None = None
    text: str = ""

    @property
    def budget_left(self) -> float:
        """Share of the budget left, in [0, 1]."""
        return max(0.0, 1.0 - self.spent_s / self.budget_s)


class Featurizer:
    """Turns a `StepView` into the policy's input vector.

    Args:
        embedder: Sentence embedder for ``StepView.text``; None: no embedding features.
        mean: Mean embedding of the training states.
        components: ``(dims, embedding_dim)`` principal directions.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        mean: np.ndarray | None = None,
        components: np.ndarray | None = None,
    ) -> None:
        if (embedder is None) != (components is None):
            raise ConfigError("an embedding projection needs an embedder, and the reverse")
        self.embedder = embedder
        self.mean = mean
        self.components = components
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest value of each feature."""
        width = len(self.names) - len(SCALARS)
        low = np.concatenate([np.zeros(len(SCALARS)), np.full(width, -EMBED_BOUND)])
        high = np.concatenate([np.ones(len(SCALARS)), np.full(width, EMBED_BOUND)])
        return low.astype(np.float32), high.astype(np.float32)

    @property
    def names(self) -> tuple[str, ...]:
        dims = 0 if self.components is None else self.components.shape[0]
        return (*SCALARS, *(f"embedding_{i}" for i in range(dims)))

    @classmethod
    def fit(cls, texts: Sequence[str], embedder: Embedder, dims: int = 8) -> Featurizer:
        """Principal components of the embeddings of ``texts`` (the training states)."""
        unique = list(dict.fromkeys(texts))
        if len(unique) <= dims:
            raise ConfigError(f"{len(unique)} distinct states cannot fit {dims} components")
        vectors = _unit(embedder.embed(unique))
        mean = vectors.mean(axis=0)
        _, _, directions = np.linalg.svd(vectors - mean, full_matrices=False)
        return cls(embedder, mean, directions[:dims])

    def __call__(self, view: StepView) -> np.ndarray:
        known = view.confidence is not None
        scalars = [
            view.step / view.max_steps,
            (view.max_steps - view.step) / view.max_steps,
            view.budget_left,
            float(view.last_valid),
            float(view.repeated),
            float(known),
            view.confidence or 0.0,
            view.margin or 0.0,
            view.entropy or 0.0,
            min(1.0, math.log(view.candidates) / LOG_CANDIDATES) if view.candidates else 0.0,
        ]
        return np.concatenate([np.asarray(scalars, dtype=np.float32), self._embedding(view.text)])

    def _embedding(self, text: str) -> np.ndarray:
        if self.embedder is None or self.components is None or self.mean is None:
            return np.zeros(0, dtype=np.float32)
        if text not in self._cache:
            vector = _unit(self.embedder.embed([text]))[0]
            self._cache[text] = ((vector - self.mean) @ self.components.T).astype(np.float32)
            if len(self._cache) > EMBED_CACHE:
                self._cache.popitem(last=False)
        return self._cache[text]

    def state_dict(self) -> dict[str, Any]:
        """What a policy file keeps to rebuild this featurizer."""
        return {
            "names": list(self.names),
            "embedder": None if self.embedder is None else self.embedder.name,
            "mean": None if self.mean is None else self.mean.tolist(),
            "components": None if self.components is None else self.components.tolist(),
        }

    @classmethod
    def from_state_dict(cls, data: dict[str, Any], embedder: Embedder | None) -> Featurizer:
        """Rebuild from `state_dict`; ``embedder`` must be the one it was fitted with.

        Raises:
            ConfigError: The embedder is missing or another one.
        """
        if data["components"] is None:
            return cls()
        if embedder is None or embedder.name != data["embedder"]:
            have = None if embedder is None else embedder.name
            raise ConfigError(
                f"the policy was fitted with embedder {data['embedder']!r}, not {have!r}"
            )
        featurizer = cls(
            embedder,
            np.asarray(data["mean"], dtype=np.float32),
            np.asarray(data["components"], dtype=np.float32),
        )
        if list(featurizer.names) != data["names"]:
            raise ConfigError(
                f"the policy's features {data['names']} are not {list(featurizer.names)}"
            )
        return featurizer


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = vectors / np.maximum(norms, 1e-12)
    return unit
