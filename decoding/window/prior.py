"""What a round is expected to cost and yield: the prior, and the acceptance arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True, slots=True)
class CostPrior:
    """What a round costs before any has been measured (from a profile, or a guess).

    Attributes:
        acceptance: Per-token acceptance rate.
        position_acceptance: Per window position, the chance its drafted token stands
            given the earlier ones did (the last holds beyond; empty: ``acceptance``).
        draft_s: Seconds per drafted token.
        verify_base_s: Seconds of a verification, fixed part.
        verify_per_token_s: Seconds each verified token adds.
        rtt_s: Network round trip.
        queue_factor: Verification wall time over its service time at the cloud (1 when
            nothing queues).
        load: Tokens a verification pass carries per token of this edge's window (1 when
            it verifies alone).
        decode_base_s: Seconds of a round the target decodes alone (nothing proposed),
            fixed part beyond the link.
        decode_per_token_s: Seconds each token it decodes adds.
        unproposed: Share of the answer's tokens made in such rounds.
        resume: Per bin of `RESUME_BINS`, the chance that a stretch without proposals
            ends at its next token (the last holds beyond).
        weight: How many rounds of evidence the prior is worth.
    """

    acceptance: float = 0.7
    position_acceptance: tuple[float, ...] = ()
    draft_s: float = 0.01
    verify_base_s: float = 0.02
    verify_per_token_s: float = 0.005
    rtt_s: float = 0.0
    queue_factor: float = 1.0
    load: float = 1.0
    decode_base_s: float = 0.005
    decode_per_token_s: float = 0.015
    unproposed: float = 0.0
    resume: tuple[float, ...] = (0.3,)
    weight: float = 2.0

    def rate_at(self, position: int) -> float:
        """The prior acceptance at window ``position`` (0-based)."""
        rates = self.position_acceptance
        return rates[min(position, len(rates) - 1)] if rates else self.acceptance

    def resume_at_bin(self, index: int) -> float:
        """The prior chance that a stretch without proposals in bin ``index`` of
        `RESUME_BINS` ends at its next token."""
        return self.resume[min(index, len(self.resume) - 1)]


def expected_tokens(rates: Sequence[float]) -> float:
    """Mean tokens a round yields when its j-th drafted token stands with ``rates[j]``
    given the ones before it did: the target's one, plus the running products. With
    one rate ``a`` at all k positions (i.i.d.) this is ``(1 - a^(k+1)) / (1 - a)``."""
    # plain floats: the controller asks for this k_max times a round, and numpy's call
    # overhead on a list of eight was a third of its decision time
    total, standing = 1.0, 1.0
    for rate in rates:
        standing *= min(max(rate, 0.0), 1.0)
        total += standing
    return total


def stand_rates(
    outcomes: Sequence[tuple[int, int]],
    positions: int,
    *,
    weights: Sequence[float] | None = None,
    prior: CostPrior | None = None,
) -> list[float]:
    """For each window position j (up to ``positions``), the chance that its drafted
    token stands given that the ones before it did, from (drafted, accepted) outcomes of
    rounds (weighted; blended with the prior's rate at that position worth ``prior.weight``
    rounds).

    A round reaches position j when it drafted j tokens or more and the j-1 before stood.
    Positions a drafter did not fill are untested, not misses: prompt lookup proposes
    nothing where no n-gram recurs, whatever the window, so such a round says nothing
    about how far a proposal stands. The list ends at the first position that no round
    reached and no prior covers.
    """
    weights = weights if weights is not None else [1.0] * len(outcomes)
    prior_weight = prior.weight if prior is not None else 0.0
    rates = []
    for j in range(1, positions + 1):
        reached = [(w, accepted) for w, (drafted, accepted) in zip(weights, outcomes, strict=True)
                   if drafted >= j and accepted >= j - 1]  # fmt: skip
        tested = prior_weight + sum(w for w, _ in reached)
        if tested == 0:
            break
        prior_passed = prior_weight * prior.rate_at(j - 1) if prior is not None else 0.0
        rates.append((prior_passed + sum(w for w, accepted in reached if accepted >= j)) / tested)
    return rates
