"""Token selection from a logit row: greedy, temperature and nucleus sampling, log-probabilities.

Pure numpy so it is testable on tiny arrays and identical for every in-process backend.
Reported log-probabilities are those of the model's own distribution (softmax of the raw
logits), independent of temperature and top_p, as vLLM reports them by default: an
uncertainty estimate must not change because a caller sampled hotter.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def log_softmax(logits: FloatArray) -> npt.NDArray[np.float64]:
    """Numerically stable log-softmax over the last axis (one row or many), in float64
    (float32 loses tail mass over 262k tokens)."""
    shifted = logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True)
    result: npt.NDArray[np.float64] = shifted - np.log(
        np.sum(np.exp(shifted), axis=-1, keepdims=True)
    )
    return result


def top_k_indices(values: npt.NDArray[np.float64] | FloatArray, k: int) -> npt.NDArray[np.intp]:
    """Indices of the k largest values, largest first; ties keep the lower index first.

    Example:
        >>> top_k_indices(np.array([0.1, 0.7, 0.2, 0.7]), 2).tolist()
        [1, 3]
    """
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    k = min(k, values.shape[0])
    part = np.argpartition(-values, k - 1)[:k]
    # lexsort sorts by the last key first: value descending, then index ascending.
    return part[np.lexsort((part, -values[part]))]


def token_distribution(
    logits: FloatArray, *, temperature: float, top_p: float
) -> npt.NDArray[np.float64]:
    """The distribution `select_token` samples from: softmax(logits / temperature),
    restricted to the top_p nucleus and renormalised (zero elsewhere).

    Example:
        >>> token_distribution(np.array([0.0, 0.0], dtype=np.float32),
        ...                    temperature=1.0, top_p=1.0).tolist()
        [0.5, 0.5]
    """
    if temperature <= 0.0:
        raise ValueError("a distribution needs temperature > 0 (greedy is an argmax)")
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - np.max(scaled))
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # Keep tokens up to and including the one that crosses top_p (always >= 1 token).
        dropped = order[int(np.searchsorted(cumulative, top_p)) + 1 :]
        probs[dropped] = 0.0
        probs /= probs.sum()
    return probs


def select_token(
    logits: FloatArray,
    *,
    temperature: float,
    top_p: float,
    rng: np.random.Generator | None,
) -> int:
    """Pick the next token id.

    temperature == 0 is greedy (argmax, lowest id on ties). Otherwise sample from
    softmax(logits / temperature) restricted to the smallest prefix of tokens, by
    descending probability, whose mass reaches top_p.

    Example:
        >>> select_token(np.array([0.0, 3.0, 1.0], dtype=np.float32),
        ...              temperature=0.0, top_p=1.0, rng=None)
        1
    """
    if temperature == 0.0:
        return int(np.argmax(logits))
    if rng is None:
        raise ValueError("sampling with temperature > 0 needs a random generator")
    probs = token_distribution(logits, temperature=temperature, top_p=top_p)
    return int(rng.choice(probs.shape[0], p=probs))
