"""The pure sampling kernel on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from relaygraph.llm.sampling import log_softmax, select_token, top_k_indices


def test_log_softmax_is_a_distribution_even_for_large_logits() -> None:
    logits = np.array([1000.0, 999.0, -50.0], dtype=np.float32)
    lsm = log_softmax(logits)
    assert np.isclose(np.exp(lsm).sum(), 1.0)
    assert np.isclose(lsm[0] - lsm[1], 1.0)


def test_top_k_orders_by_value_then_index() -> None:
    values = np.array([0.1, 0.7, 0.2, 0.7, 0.05])
    assert top_k_indices(values, 3).tolist() == [1, 3, 2]
    assert top_k_indices(values, 0).tolist() == []
    assert top_k_indices(values, 99).tolist() == [1, 3, 2, 0, 4]


def test_greedy_is_argmax_with_lowest_index_on_ties() -> None:
    logits = np.array([1.0, 5.0, 5.0], dtype=np.float32)
    assert select_token(logits, temperature=0.0, top_p=1.0, rng=None) == 1


def test_top_p_restricts_to_the_nucleus() -> None:
    # probabilities ~ [0.643, 0.237, 0.087, 0.032]: top_p=0.7 keeps tokens 0 and 1 only.
    logits = np.log(np.array([0.643, 0.237, 0.087, 0.032], dtype=np.float32))
    rng = np.random.default_rng(0)
    picks = {select_token(logits, temperature=1.0, top_p=0.7, rng=rng) for _ in range(500)}
    assert picks == {0, 1}


def test_sampling_follows_the_distribution() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    rng = np.random.default_rng(1)
    counts = np.bincount(
        [select_token(logits, temperature=1.0, top_p=1.0, rng=rng) for _ in range(4000)],
        minlength=3,
    )
    assert np.allclose(counts / 4000, [0.5, 0.3, 0.2], atol=0.03)


def test_same_seed_same_samples() -> None:
    logits = np.zeros(50, dtype=np.float32)
    first = [
        select_token(logits, temperature=1.0, top_p=1.0, rng=np.random.default_rng(7))
        for _ in range(3)
    ]
    again = [
        select_token(logits, temperature=1.0, top_p=1.0, rng=np.random.default_rng(7))
        for _ in range(3)
    ]
    assert first == again


def test_sampling_without_a_generator_is_refused() -> None:
    with pytest.raises(ValueError, match="random generator"):
        select_token(np.zeros(3, dtype=np.float32), temperature=1.0, top_p=1.0, rng=None)
