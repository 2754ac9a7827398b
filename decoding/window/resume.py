"""Where a stretch of tokens without proposals ends: the evidence rounds give, and the
rates the window policy and the simulator read from it."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.decoding.rounds import Round
    from relaygraph.decoding.window.prior import CostPrior

RESUME_BINS = (1, 2, 3, 5, 9, 17)
"""Stretches without proposals, binned by their length so far (tokens) where
`resume_rates` estimates the chance that one ends at its next token: bins double, so the
long stretches, rarer and less likely to end, pool."""


@dataclass(frozen=True, slots=True)
class ResumeEvidence:
    """Per bin of `RESUME_BINS`, how many positions of stretches without proposals were
    watched and at how many the stretch ended: the evidence of `resume_rates`. An older
    run of rounds' sums and a newer one's add up (`then`)."""

    ended: tuple[float, ...] = (0.0,) * len(RESUME_BINS)
    watched: tuple[float, ...] = (0.0,) * len(RESUME_BINS)

    @classmethod
    def of(cls, rounds: Sequence[Round]) -> tuple[ResumeEvidence, int]:
        """The evidence in ``rounds``, and the length of the stretch without proposals
        they end in (0: they end copying).

        A round the target decoded alone watches the positions inside it up to where a
        free drafter would have resumed (`Round.resume_at`); its last position is
        watched by the next round, whose proposal stands or not. A stretch that resumed,
        or a proposal that stood, ends the stretch; a proposal that did not stand, or an
        in-process step with nothing proposed, adds its one token to it. An edge's
        earlier rounds run on across its requests, so a request's last round decoded
        alone is read as watched by the next request's first: one position a request."""
        ended, watched = [0.0] * len(RESUME_BINS), [0.0] * len(RESUME_BINS)
        length = 0
        for i, r in enumerate(rounds):
            if r.decoded:
                for m in range(1, (r.resume_at or r.decoded - 1) + 1):
                    watched[resume_bin(length + m)] += 1
                if r.resume_at:
                    ended[resume_bin(length + r.resume_at)] += 1
                elif i + 1 < len(rounds):
                    after = rounds[i + 1]
                    watched[resume_bin(length + r.decoded)] += 1
                    ended[resume_bin(length + r.decoded)] += bool(after.drafted and after.accepted)
                length = 0 if r.resume_at else length + r.decoded
            elif r.drafted and r.accepted:
                length = 0
            else:
                length += 1
        return cls(tuple(ended), tuple(watched)), length

    def then(self, newer: ResumeEvidence) -> ResumeEvidence:
        """This evidence and ``newer``'s together."""
        return ResumeEvidence(
            tuple(a + b for a, b in zip(self.ended, newer.ended, strict=True)),
            tuple(a + b for a, b in zip(self.watched, newer.watched, strict=True)),
        )


def resume_rates(evidence: ResumeEvidence, prior: CostPrior) -> list[float]:
    """Per bin of `RESUME_BINS`, the chance that a stretch without proposals ends at its
    next token: the positions where stretches ended over those watched, the prior's rate
    worth ``prior.weight`` positions in every bin."""
    return [
        (prior.weight * prior.resume_at_bin(b) + ended) / (prior.weight + watched)
        for b, (ended, watched) in enumerate(zip(evidence.ended, evidence.watched, strict=True))
    ]


def resume_bin(position: int) -> int:
    """The bin of `RESUME_BINS` of a stretch's ``position``-th token (1-based)."""
    return bisect_right(RESUME_BINS, position) - 1
