"""`AdaptiveWindow`: each round, the window with the least expected seconds per token
(the package docstring has the model it minimises)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING

from relaygraph.decoding.rounds import Round, recency_weights
from relaygraph.decoding.window.costs import CostLine, RoundCosts, fit_line
from relaygraph.decoding.window.prior import CostPrior, expected_tokens, stand_rates
from relaygraph.decoding.window.resume import ResumeEvidence, resume_bin, resume_rates
from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

POOLED_WEIGHT = 1.0
"""Rounds of evidence the request's pooled acceptance is worth at each window position."""


@dataclass(frozen=True, slots=True)
class AdaptiveWindow:
    """Adaptive window control: each round, the ``k`` in ``[k_min, k_max]`` with the least
    expected time per token, from running estimates of acceptance, draft cost,
    verification cost (a line in ``k``) and round trip. Told what a free drafter
    proposed, it verifies at most that much, and with nothing proposed it sizes the
    round the cloud decodes alone by where copying is likely to resume (package
    docstring).

    Estimates blend the ``prior`` (worth ``prior.weight`` rounds, fading like the oldest
    round) with the request's rounds, recent ones weighted more (``decay`` per round
    back), so a link that slows down mid-request shortens the window within a few rounds.
    """

    k_min: int = 1
    k_max: int = 8
    prior: CostPrior = field(default_factory=CostPrior)
    decay: float = 0.7
    name: str = "adaptive"

    def __post_init__(self) -> None:
        if not 1 <= self.k_min <= self.k_max:
            raise ConfigError(
                f"need 1 <= k_min <= k_max, got {self.k_min} and {self.k_max}",
                parameter="k_min",
            )
        if not 0.0 < self.decay <= 1.0:
            raise ConfigError("decay must be in (0, 1]", parameter="decay", value=self.decay)

    def _weights(self, rounds: Sequence[Round]) -> tuple[CostPrior, list[float]]:
        """The prior, its weight faded like the oldest round's, and each round's weight
        (recent rounds count more), so the prior gives way as evidence accumulates."""
        return self._faded(len(rounds)), recency_weights(len(rounds), self.decay)

    def _faded(self, rounds: float) -> CostPrior:
        """The prior with its weight faded by ``rounds`` rounds of evidence."""
        return replace(self.prior, weight=self.prior.weight * self.decay**rounds)

    def informed(self, earlier: Sequence[Round]) -> AdaptiveWindow:
        """This controller with its prior's acceptance (pooled and per position) and
        unproposed share moved by the edge's ``earlier`` rounds, the weight unchanged:
        the start of a new request's estimates."""
        if not earlier:
            return self
        p = self.prior
        proposing = _proposed(earlier)
        outcomes = [(r.drafted, r.accepted) for r in proposing]
        return replace(
            self,
            prior=replace(
                p,
                acceptance=_acceptance_rate(proposing, [1.0] * len(proposing), p),
                position_acceptance=tuple(stand_rates(outcomes, self.k_max, prior=p)),
                unproposed=_unproposed_share(earlier, [1.0] * len(earlier), p),
            ),
        )

    def estimates(self, rounds: Sequence[Round], earlier: Sequence[Round] = ()) -> CostPrior:
        """The current estimates: the prior, moved by ``earlier`` rounds of the same edge
        (`informed`) and by this request's rounds; costs from both, recent ones weighted
        more."""
        start = _edge_start(self, tuple(earlier))
        return start.policy._estimates(rounds, start)

    def _estimates(self, rounds: Sequence[Round], start: _EdgeStart) -> CostPrior:
        # Like acceptance, the share of tokens made without a proposal belongs to the prompt.
        p, weights = self._weights(rounds)
        unproposed = _unproposed_share(rounds, weights, p)
        solo = start.solo.then(CostLine.solo(_decoded_alone(rounds), self.decay), self.decay)
        c = self._faded(solo.count)
        decode_base, decode_per_token = fit_line(
            solo,
            (c.decode_base_s, c.decode_per_token_s),
            (c.weight, self.prior.weight),
        )
        # Costs of drafting and verification, from the rounds that drafted: one in which
        # the target decoded alone times its decoding, and one in which a target in
        # process took one step (nothing proposed) is a different pass. On this CPU a
        # one-token step costs half of a pass over two, and fitting the line through such
        # steps read 3.7 ms a token where a drafted token added 2.2.
        costs = start.costs.then(RoundCosts.of(_proposed(rounds), self.decay), self.decay)
        c = self._faded(costs.line.count)
        total = c.weight + costs.line.weight
        base, per_token = fit_line(
            costs.line,
            (c.verify_base_s, c.verify_per_token_s),
            (c.weight, self.prior.weight),
        )
        prior_service = c.verify_base_s + c.verify_per_token_s * self.k_min
        service = (c.weight * prior_service + costs.service_s) / total
        wall = (c.weight * prior_service * c.queue_factor + costs.wall_s) / total
        return CostPrior(
            acceptance=self._acceptance(rounds),
            draft_s=(c.weight * c.draft_s + costs.draft_s) / (c.weight + costs.drafted),
            verify_base_s=base,
            verify_per_token_s=per_token,
            rtt_s=(c.weight * c.rtt_s + costs.network_s) / total,
            queue_factor=max(wall / max(service, 1e-12), 1.0),
            load=(c.weight * c.load + costs.load) / total,
            decode_base_s=decode_base,
            decode_per_token_s=decode_per_token,
            unproposed=unproposed,
            weight=total,
        )

    def _acceptance(self, rounds: Sequence[Round]) -> float:
        """The per-token acceptance rate: the prior moved by the request's proposing
        rounds, recent ones weighted more."""
        proposing = _proposed(rounds)
        p, weights = self._weights(proposing)
        return _acceptance_rate(proposing, weights, p)

    @property
    def largest(self) -> int:
        return self.k_max

    def next_window(
        self, rounds: Sequence[Round], earlier: Sequence[Round] = (), proposed: int | None = None
    ) -> int:
        start = _edge_start(self, tuple(earlier))
        policy = start.policy
        e = policy._estimates(rounds, start)
        if proposed == 0:
            return policy._alone_window(rounds, start, e)
        rates = policy._position_acceptance(rounds)
        if proposed is not None:  # verify a known proposal: no round decodes alone
            longest = min(self.k_max, max(proposed, self.k_min))
            return min(range(self.k_min, longest + 1), key=lambda k: _verified(e, rates, k))

        def seconds_per_token(k: int) -> float:
            # A share of the tokens comes from rounds that verify a proposal, the rest from
            # rounds where the target decodes k + 1 tokens alone: each at its own rate.
            alone = (e.rtt_s + e.decode_base_s) / (k + 1) + e.decode_per_token_s
            return (1 - e.unproposed) * _verified(e, rates, k) + e.unproposed * alone

        return min(range(self.k_min, self.k_max + 1), key=seconds_per_token)

    def _alone_window(self, rounds: Sequence[Round], start: _EdgeStart, e: CostPrior) -> int:
        """The window of a round with nothing proposed, whose ``J = k + 1`` tokens the
        target decodes alone: the least expected seconds for the next ``k_max + 1``
        tokens (module docstring), with the stretch's chance to end at each of its
        next tokens from `resume_rates`."""
        watched, length = ResumeEvidence.of(rounds)
        resume = resume_rates(start.resumes.then(watched), self.prior)
        # What copying costs a token, as the edge's rounds whose proposal stood measured
        # it, all alike: weighting recent rounds more made it noise (6 to 12 ms a token in
        # one request), and one high reading sent a whole round past the stretch's end.
        copied = start.copied.then(RoundCosts.of(_stood(rounds), 1.0), 1.0)
        # nothing copied yet: copying is worth nothing, and rounds as long as allowed
        copy_s = copied.seconds / copied.made if copied.made else e.decode_per_token_s
        overhead = e.rtt_s + e.decode_base_s
        horizon = self.k_max + 1
        standing, cost = 1.0, {}
        for tokens in range(1, horizon + 1):
            # the chance the stretch goes on past the round's last token
            standing *= 1.0 - resume[resume_bin(length + tokens)]
            # the horizon's other tokens: copied if it ended, else decoded in rounds alike
            alone_s = overhead / tokens + e.decode_per_token_s
            rest = (horizon - tokens) * ((1.0 - standing) * copy_s + standing * alone_s)
            cost[tokens - 1] = overhead + tokens * e.decode_per_token_s + rest
        return min(range(self.k_min, self.k_max + 1), key=cost.__getitem__)

    def position_acceptance(
        self, rounds: Sequence[Round], earlier: Sequence[Round] = ()
    ) -> list[float]:
        """For each position j of a window, the chance that its drafted token stands given
        that the ones before it did (`stand_rates`), from the request's ``rounds`` and a
        prior `informed` by the edge's ``earlier`` ones. Equal at every j under i.i.d.
        acceptance; prompt lookup's first guesses are better than its later ones, which
        a single rate would misjudge.

        Each position's evidence is shrunk toward the request's pooled per-token rate,
        worth `POOLED_WEIGHT` rounds that do not fade. Without it a position that failed
        once and was never drafted again keeps that failure as its estimate (its own
        evidence and the prior fade alike), so the window stays short for the rest of
        the request however well the shorter windows do.

        Only rounds that followed a round like the last one count (`_copying`): where the
        answer copies its context, a round after a fully accepted one usually copies on,
        and one after a rejection or a round with nothing proposed usually does not.
        Pooling the two would shorten the windows that copying stretches pay for.
        """
        return _edge_start(self, tuple(earlier)).policy._position_acceptance(rounds)

    def _position_acceptance(
        self, rounds: Sequence[Round], copying: bool | None = None
    ) -> list[float]:
        """`position_acceptance` after a round like the last one, or, when ``copying``
        is given, after a round that did (True) or did not (False) leave the answer in a
        copied stretch."""
        if copying is None:
            copying = _copying(rounds[-1]) if rounds else False
        proposing = [
            r
            for i, r in enumerate(rounds)
            if r.drafted and (i > 0 and _copying(rounds[i - 1])) == copying
        ]
        p, weights = self._weights(proposing)
        pooled = self._acceptance(rounds)
        blend = p.weight + POOLED_WEIGHT
        prior = replace(
            p,
            position_acceptance=tuple(
                (p.weight * p.rate_at(j) + POOLED_WEIGHT * pooled) / blend
                for j in range(self.k_max)
            ),
            weight=blend,
        )
        outcomes = [(r.drafted, r.accepted) for r in proposing]
        return stand_rates(outcomes, self.k_max, weights=weights, prior=prior)


@dataclass(frozen=True, slots=True)
class _EdgeStart:
    """What an edge's earlier rounds tell a new request: the policy `informed` by them,
    and the sums over them that its cost estimates go on from."""

    policy: AdaptiveWindow
    costs: RoundCosts
    solo: CostLine
    resumes: ResumeEvidence
    copied: RoundCosts


@lru_cache(maxsize=64)
def _edge_start(policy: AdaptiveWindow, earlier: tuple[Round, ...]) -> _EdgeStart:
    """``policy``'s start after an edge's ``earlier`` rounds. Cached: a caller asks again
    every round of a request with the same rounds, and summing them each time (128 by
    default) cost more than half a millisecond a round, a few percent of a round in
    process."""
    return _EdgeStart(
        policy=policy.informed(earlier),
        costs=RoundCosts.of(_proposed(earlier), policy.decay),
        solo=CostLine.solo(_decoded_alone(earlier), policy.decay),
        resumes=ResumeEvidence.of(earlier)[0],
        copied=RoundCosts.of(_stood(earlier), 1.0),
    )


def _verified(e: CostPrior, rates: Sequence[float], k: int) -> float:
    """Expected seconds per token of a round that drafts and verifies ``k`` tokens."""
    verify = e.queue_factor * (e.verify_base_s + e.load * k * e.verify_per_token_s)
    return (k * e.draft_s + e.rtt_s + verify) / expected_tokens(rates[:k])


def _acceptance_rate(
    proposing: Sequence[Round], weights: Sequence[float], prior: CostPrior
) -> float:
    """Per-token acceptance over weighted ``proposing`` rounds, the prior's rate worth
    ``prior.weight`` tested tokens. A round tests drafted tokens only up to the first
    rejection: `accepted` passes and one failure (none when all passed), the
    maximum-likelihood reading of a per-token rate."""
    pairs = list(zip(weights, proposing, strict=True))
    tested = prior.weight + sum(w * (r.accepted + (r.accepted < r.drafted)) for w, r in pairs)
    passed = prior.weight * prior.acceptance + sum(w * r.accepted for w, r in pairs)
    return passed / tested


def _unproposed_share(rounds: Sequence[Round], weights: Sequence[float], prior: CostPrior) -> float:
    """The share of weighted ``rounds``' tokens made without a proposal, the prior's share
    worth ``prior.weight`` tokens."""
    pairs = list(zip(weights, rounds, strict=True))
    decoded = sum(w * r.decoded for w, r in pairs)
    made = sum(w * (r.decoded or r.accepted + 1) for w, r in pairs)
    return (prior.weight * prior.unproposed + decoded) / (prior.weight + made)


def _proposed(rounds: Sequence[Round]) -> list[Round]:
    """The rounds in which the drafter proposed something: only they tell acceptance, and
    only they age its evidence (a stretch of rounds where prompt lookup found nothing to
    copy should not wipe out what the copied stretch before it showed)."""
    return [r for r in rounds if r.drafted]


def _stood(rounds: Sequence[Round]) -> list[Round]:
    """The rounds whose proposal stood, at least its first token: they time copying
    (a proposal rejected at once is the price of looking, not of copying)."""
    return [r for r in rounds if r.accepted]


def _decoded_alone(rounds: Sequence[Round]) -> list[Round]:
    """The rounds in which the target decoded alone: they time its decoding."""
    return [r for r in rounds if r.decoded]


def _copying(last: Round) -> bool:
    """Whether a round leaves the answer in a copied stretch: it drafted, and every
    drafted token stood."""
    return bool(last.drafted) and last.accepted == last.drafted
