"""Fitting a `LatencyProfile` to a measured run: the cost lines from its rounds'
timings, acceptance per window position, and how often rounds propose."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import numpy as np

from relaygraph.decoding.rounds import Round, rounds_of
from relaygraph.decoding.sim.profile import LatencyProfile
from relaygraph.decoding.window import (
    ResumeEvidence,
    stand_rates,
)
from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence


_T = TypeVar("_T")

Requests: TypeAlias = "Sequence[Sequence[Round]]"
"""Rounds of each request, requests in order."""


def fit_profile(
    name: str,
    rounds: Sequence[Mapping[str, Sequence[float]]],
    cloud_only: list[tuple[float, int]],
    *,
    batch_step_ratio: tuple[float, int],
    rtt_s: float,
    jitter_s: float,
    source: str,
    kinds: Sequence[int] | None = None,
) -> LatencyProfile:
    """A profile from measured runs.

    Args:
        name: The profile's name.
        rounds: Each speculative request's ``decoding["per_round"]`` record; its first
            round's verification also read the prompt (the prefill).
        cloud_only: (seconds on the cloud, answer tokens) of cloud-only requests,
            link delay excluded.
        batch_step_ratio: (how much longer a decode step of b sequences takes than one
            of a single sequence, b), to split a step into a fixed and a per-sequence part.
        rtt_s: The link's round trip.
        jitter_s: Its one-way jitter.
        source: Where the measurements come from.
        kinds: Which prompt (0, 1, ...) each record of ``rounds`` answered; given, the
            profile keeps each prompt's acceptance (`acceptance_by_kind`) and its share
            of tokens made without a proposal.

    Raises:
        ConfigError: No rounds, or no cloud-only requests.
    """
    if not rounds or not cloud_only:
        raise ConfigError("fitting a profile needs speculative rounds and cloud-only requests")
    requests = [rounds_of(record) for record in rounds]
    every = [r for request in requests for r in request]
    drafted = np.array([r.drafted for r in every], dtype=float)
    accepted = np.array([r.accepted for r in every], dtype=float)
    tested = accepted + (accepted < drafted)
    # Verifications after each request's first (which also read the prompt).
    later = [
        (r.drafted + 1, r.verify_s) for request in requests for r in request[1:] if not r.decoded
    ]
    x = np.array([t for t, _ in later], dtype=float)
    y = np.array([v for _, v in later], dtype=float)
    slope, base = np.polyfit(x, y, 1) if len(set(x.tolist())) > 1 else (0.0, float(y.mean()))
    slope, base = max(float(slope), 0.0), max(float(base), 0.0)
    # A request's first verification also reads its prompt: its excess over the line.
    first = [
        request[0].verify_s - (base + slope * (request[0].drafted + 1))
        for request in requests
        if not request[0].decoded
    ]
    prefill = max(float(np.mean(first)), 0.0) if first else 0.0
    step = float(np.mean([max(s - prefill, 0.0) / n for s, n in cloud_only]))
    solo = [r.verify_s - r.decoded * step for request in requests for r in request[1:] if r.decoded]
    ratio, size = batch_step_ratio
    per_seq = step * max(ratio - 1.0, 0.0) / (size - 1) if size > 1 else step
    # Records made before rounds said where copying could resume cannot tell it.
    resumable = all("resume_at" in record for record in rounds)

    def per_kind(measure: Callable[[Requests], _T]) -> list[_T]:
        return _by_kind(requests, kinds, measure) if kinds is not None else []

    return LatencyProfile(
        name=name,
        draft_per_token_s=float(sum(r.draft_s for r in every) / max(drafted.sum(), 1.0)),
        verify_base_s=base,
        verify_per_token_s=slope,
        decode_base_s=max(step - per_seq, 0.0),
        decode_per_seq_s=min(per_seq, step),
        prefill_s=prefill,
        solo_overhead_s=max(float(np.mean(solo)), 0.0) if solo else 0.0,
        acceptance=float(accepted.sum() / max(tested.sum(), 1.0)),
        position_acceptance=_position_rates(requests),
        request_acceptance=per_kind(_position_rates),
        unproposed=_unproposed_share(requests),
        request_unproposed=per_kind(_unproposed_share),
        proposing=_proposing_share(requests),
        request_proposing=per_kind(_proposing_share),
        resume=_resume_rates(requests) if resumable else [],
        rtt_s=rtt_s,
        jitter_s=jitter_s,
        source=source,
    )


def acceptance_by_kind(
    rounds: Sequence[Mapping[str, Sequence[float]]], kinds: Sequence[int]
) -> list[list[float]]:
    """Each request kind's position acceptance (`stand_rates`), kinds 0, 1, ... in order,
    from per-request round records and the kind of each.

    Raises:
        ConfigError: A kind between 0 and the largest has no rounds.
    """
    return _by_kind([rounds_of(record) for record in rounds], kinds, _position_rates)


def _by_kind(
    requests: Requests, kinds: Sequence[int], measure: Callable[[Requests], _T]
) -> list[_T]:
    """``measure`` of each request kind's rounds, kinds 0, 1, ... in order."""
    by_kind: dict[int, list[Sequence[Round]]] = defaultdict(list)
    for request, kind in zip(requests, kinds, strict=True):
        by_kind[kind].append(request)
    missing = [k for k in range(max(kinds, default=-1) + 1) if not by_kind[k]]
    if missing:
        raise ConfigError(f"no rounds of request kinds {missing}", parameter="kinds")
    return [measure(by_kind[k]) for k in sorted(by_kind)]


def _position_rates(requests: Requests) -> list[float]:
    """`stand_rates` of the rounds' (drafted, accepted) outcomes."""
    outcomes = [(r.drafted, r.accepted) for request in requests for r in request]
    return stand_rates(outcomes, max((d for d, _ in outcomes), default=0))


def _unproposed_share(requests: Requests) -> float:
    """Share of the answer tokens made by rounds in which the drafter proposed nothing
    (a round of a record made before such rounds were decoded alone made one token)."""
    unproposed = made = 0
    for r in (r for request in requests for r in request):
        tokens = r.decoded or r.accepted + 1
        made += tokens
        unproposed += tokens if r.drafted == 0 else 0
    return unproposed / made


def _proposing_share(requests: Requests) -> float:
    """The share of rounds that proposed, among those after a round that did and each
    request's first (1 where there are none)."""
    after = [
        bool(request[i].drafted)
        for request in requests
        for i in range(len(request))
        if i == 0 or request[i - 1].drafted
    ]
    return sum(after) / len(after) if after else 1.0


def _resume_rates(requests: Requests) -> list[float]:
    """Per bin of `RESUME_BINS`, the chance that a stretch without proposals ends at its
    next token (`ResumeEvidence`); a bin nothing watched takes the one before's. Empty
    without requests."""
    if not requests:
        return []
    evidence = ResumeEvidence()
    for request in requests:
        evidence = evidence.then(ResumeEvidence.of(request)[0])
    rates: list[float] = []
    for ended, watched in zip(evidence.ended, evidence.watched, strict=True):
        rates.append(ended / watched if watched else (rates[-1] if rates else 0.0))
    return rates
