"""How many tokens the draft proposes each round: fixed windows and adaptive control.

A round costs ``k`` draft steps, one trip over the network and one verification of ``k``
tokens; it yields the accepted tokens plus one from the target. With a per-token
acceptance rate ``a`` (i.i.d., Leviathan et al.) a round yields on average
``(1 - a^(k+1)) / (1 - a)`` tokens, so the best ``k`` maximises

    tokens(k) / (k * draft_s + rtt_s + verify_s(k)),

which grows with acceptance and a cheap draft, and shrinks as verification gets dearer
per token. A drafter may propose nothing (prompt lookup off its source); a remote
target then decodes ``k + 1`` tokens itself, and with a share ``u`` of the answer's
tokens made so, ``AdaptiveWindow`` minimises the seconds per token of the mix,

    (1 - u) * (k * draft_s + rtt_s + verify_s(k)) / tokens(k)
        + u * (rtt_s + decode_base_s + (k + 1) * decode_per_token_s) / (k + 1).

It (AWC-style, PAPERS.md section 4) estimates those quantities from measured rounds,
starting from a prior, and picks ``k`` by that formula each round.

A free drafter (prompt lookup) proposes before the window is chosen, so the policy is
told what the round holds and makes two decisions instead of one mix. With a proposal
of ``m`` tokens it verifies the ``k <= m`` with the least seconds per verified token.
With none, the cloud decodes ``J = k + 1`` tokens alone: a longer round shares its round
trip among more tokens, but runs past the point where the answer comes back to its
source and copying (``c`` seconds a token, as the edge's rounds whose proposal stood
measured it) would have been cheaper than decoding (``d`` a token). With ``S(J)`` the
chance that the stretch without proposals, ``s`` tokens long so far, lasts past the
round's last token, ``J`` minimises the expected seconds of the next ``H = k_max + 1``
tokens,

    rtt_s + decode_base_s + J * d
        + (H - J) * ((1 - S(J)) * c + S(J) * ((rtt_s + decode_base_s) / J + d)),

the tokens after the round copied if the stretch ended within it, else decoded in rounds
like it. ``S`` comes from where stretches ended before (`resume_rates`, per length so
far): after a round decoded alone, the decoder's lookups say where a proposal would
first have stood. Where an answer leaves its source it mostly comes back within a few
tokens or not at all, so the chance to end falls with the length: short rounds first,
longer ones as the stretch goes on. Fixed windows couple the two decisions: a window
long enough to verify a copied stretch in one trip decodes as long a round when nothing
is proposed.

The round trip, the draft's speed and the cloud's state outlive a request; acceptance
belongs to the prompt. So costs are estimated over the edge's recent rounds, earlier
requests' included, and acceptance over the request's own, starting from what the edge's
earlier requests showed (their pooled acceptance, per window position, and their share
of unproposed tokens, worth the prior's weight): one edge serves one application with
one drafter, so its last requests are a better start for the next than a fixed guess,
and a cold start on every request kept the window short for a request's first rounds.

A shared cloud changes the sum. Its pass verifies several edges' windows together, and
every edge waits behind the others' passes, so a window's real price is the work it adds
to every pass and every queue, not the little it adds to its own pass. Where the cloud
reports how long a verification queued and how many other tokens shared its pass,
`AdaptiveWindow` prices a window as if every edge (all run the same controller) moved
its window with it: the per-token part of verification is scaled by the pass's load
(its tokens per own token) and the whole line by the queueing factor
``(queue + service) / service``. Counting the wait as a fixed cost per round instead
would make long windows look ever cheaper as the cloud congests, and lengthen them
exactly when that hurts every edge.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence


EARLIER_ROUNDS = 128
"""How many rounds of an edge's earlier requests its window policy is shown (costs fade
with ``decay`` per round; the acceptance prior pools them all)."""
POOLED_WEIGHT = 1.0
"""Rounds of evidence the request's pooled acceptance is worth at each window position."""
RESUME_BINS = (1, 2, 3, 5, 9, 17)
"""Stretches without proposals, binned by their length so far (tokens) where
`resume_rates` estimates the chance that one ends at its next token: bins double, so the
long stretches, rarer and less likely to end, pool."""


@dataclass(frozen=True, slots=True)
class Round:
    """One draft-verify round, as the window policy sees it.

    Attributes:
        window: Tokens the policy asked for.
        drafted: Tokens the draft proposed (fewer when it ended its answer).
        accepted: Drafted tokens the target kept.
        draft_s: Seconds the draft took.
        verify_s: Seconds the target's verification took (its own compute and transport,
            and any wait in the cloud's queue).
        network_s: Seconds of injected link delay (both directions).
        queue_s: Of ``verify_s``, the seconds it waited in the cloud's queue before its
            pass began (0 where the cloud does not say).
        shared_tokens: Tokens of other requests verified in the same pass (0 when alone,
            or where the cloud does not say).
        decoded: Tokens the target decoded itself in a round the drafter had nothing to
            propose for (``verify_s`` is then its decoding time, not a verification).
        resume_at: In such a round, after how many of its tokens (1 to ``decoded - 1``)
            a free drafter would first have proposed a token that stood: where copying
            could have resumed (0: nowhere inside the round, or not checked).
    """

    window: int
    drafted: int
    accepted: int
    draft_s: float
    verify_s: float
    network_s: float
    queue_s: float = 0.0
    shared_tokens: int = 0
    decoded: int = 0
    resume_at: int = 0


@runtime_checkable
class WindowPolicy(Protocol):
    """Chooses the draft window of the next round from the rounds so far."""

    @property
    def name(self) -> str: ...

    @property
    def largest(self) -> int:
        """The largest window it may ask for."""
        ...

    def next_window(
        self, rounds: Sequence[Round], earlier: Sequence[Round] = (), proposed: int | None = None
    ) -> int:
        """Tokens to draft next (>= 1) given this request's ``rounds`` and the ``earlier``
        rounds of the same edge; the caller clips it to the tokens left.

        ``proposed``: what a free drafter already proposes for this round with the
        `largest` window (the round verifies the first ``k``; 0: nothing, and a remote
        target decodes ``k + 1`` tokens alone), or None where the drafter proposes after
        the choice (a model)."""
        ...


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """The same window every round."""

    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(
                "a draft window must be at least 1 token", parameter="k", value=self.k
            )

    @property
    def name(self) -> str:
        return f"fixed-{self.k}"

    @property
    def largest(self) -> int:
        return self.k

    def next_window(
        self, rounds: Sequence[Round], earlier: Sequence[Round] = (), proposed: int | None = None
    ) -> int:
        return self.k


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


@dataclass(frozen=True, slots=True)
class AdaptiveWindow:
    """Adaptive window control: each round, the ``k`` in ``[k_min, k_max]`` with the least
    expected time per token, from running estimates of acceptance, draft cost,
    verification cost (a line in ``k``) and round trip. Told what a free drafter
    proposed, it verifies at most that much, and with nothing proposed it sizes the
    round the cloud decodes alone by where copying is likely to resume (module
    docstring).

    Estimates blend the ``prior`` (worth ``prior.weight`` rounds, fading like the oldest
    round) with the request's rounds, recent ones weighted more (``decay`` per round
    back), so a link that slows down mid-request shortens the window within a few rounds.
    """

    k_min: int = 1
    k_max: int = 8
    prior: CostPrior = CostPrior()
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
        return self._faded(len(rounds)), _recency(len(rounds), self.decay)

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
        proposing = _proposing(earlier)
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
        solo = start.solo.then(_Line.solo(_decoded(rounds), self.decay), self.decay)
        c = self._faded(solo.count)
        decode_base, decode_per_token = _line(
            solo,
            (c.decode_base_s, c.decode_per_token_s),
            (c.weight, self.prior.weight),
        )
        # Costs of drafting and verification, from the rounds that drafted: one in which
        # the target decoded alone times its decoding, and one in which a target in
        # process took one step (nothing proposed) is a different pass. On this CPU a
        # one-token step costs half of a pass over two, and fitting the line through such
        # steps read 3.7 ms a token where a drafted token added 2.2.
        costs = start.costs.then(_Costs.of(_proposing(rounds), self.decay), self.decay)
        c = self._faded(costs.line.count)
        total = c.weight + costs.line.weight
        base, per_token = _line(
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
        proposing = _proposing(rounds)
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
        copied = start.copied.then(_Costs.of(_standing(rounds), 1.0), 1.0)
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
class _Line:
    """Sums over (t, seconds) points, all `_line` needs: plain ones for the slope, which
    is fitted over all points alike, and weighted ones (recent points weigh more) for the
    level. Sums over an older run of points and a newer one combine (`then`), so an
    edge's earlier rounds are summed once per request rather than once per round."""

    count: float = 0.0
    t: float = 0.0
    seconds: float = 0.0
    t_squared: float = 0.0
    t_seconds: float = 0.0
    weight: float = 0.0
    weighted_t: float = 0.0
    weighted_seconds: float = 0.0

    @classmethod
    def of(cls, points: Sequence[tuple[float, float]], weights: Sequence[float]) -> _Line:
        triples = [(t, y, w) for (t, y), w in zip(points, weights, strict=True)]
        return cls(
            count=len(triples),
            t=sum(t for t, _, _ in triples),
            seconds=sum(y for _, y, _ in triples),
            t_squared=sum(t * t for t, _, _ in triples),
            t_seconds=sum(t * y for t, y, _ in triples),
            weight=sum(w for _, _, w in triples),
            weighted_t=sum(w * t for t, _, w in triples),
            weighted_seconds=sum(w * y for _, y, w in triples),
        )

    @classmethod
    def solo(cls, decoded: Sequence[Round], decay: float) -> _Line:
        """Rounds in which the target decoded alone: t tokens in their decoding time."""
        return cls.of(
            [(float(r.decoded), r.verify_s - r.queue_s) for r in decoded],
            _recency(len(decoded), decay),
        )

    def then(self, newer: _Line, decay: float) -> _Line:
        """These points followed by ``newer`` ones, each of which ages these weights by
        ``decay``."""
        aged = decay**newer.count
        return _Line(
            self.count + newer.count,
            self.t + newer.t,
            self.seconds + newer.seconds,
            self.t_squared + newer.t_squared,
            self.t_seconds + newer.t_seconds,
            aged * self.weight + newer.weight,
            aged * self.weighted_t + newer.weighted_t,
            aged * self.weighted_seconds + newer.weighted_seconds,
        )


@dataclass(frozen=True, slots=True)
class _Costs:
    """Weighted sums over rounds that drafted (recent rounds weigh more): what drafting,
    the round trip and the cloud's queue cost, and the verification line (whose
    ``weight`` is the rounds' total weight). Like `_Line`, an older run's sums combine
    with a newer one's (`then`)."""

    drafted: float = 0.0
    draft_s: float = 0.0
    network_s: float = 0.0
    service_s: float = 0.0
    wall_s: float = 0.0
    load: float = 0.0
    made: float = 0.0
    line: _Line = _Line()

    @property
    def seconds(self) -> float:
        """The rounds' whole time: drafting, the link and the cloud."""
        return self.draft_s + self.network_s + self.wall_s

    @classmethod
    def of(cls, drafting: Sequence[Round], decay: float) -> _Costs:
        pairs = list(zip(_recency(len(drafting), decay), drafting, strict=True))
        return cls(
            drafted=sum(w * r.drafted for w, r in pairs),
            draft_s=sum(w * r.draft_s for w, r in pairs),
            network_s=sum(w * r.network_s for w, r in pairs),
            service_s=sum(w * max(r.verify_s - r.queue_s, 0.0) for w, r in pairs),
            wall_s=sum(w * r.verify_s for w, r in pairs),
            # tokens in the pass per token of this edge's window
            load=sum(w * (r.drafted + 1 + r.shared_tokens) / (r.drafted + 1) for w, r in pairs),
            made=sum(w * (r.accepted + 1) for w, r in pairs),
            line=_Line.of(
                [(float(r.drafted + r.shared_tokens), r.verify_s - r.queue_s) for _, r in pairs],
                [w for w, _ in pairs],
            ),
        )

    def then(self, newer: _Costs, decay: float) -> _Costs:
        """These rounds' sums followed by ``newer`` ones, each of which ages these weights
        by ``decay``."""
        aged = decay**newer.line.count
        return _Costs(
            aged * self.drafted + newer.drafted,
            aged * self.draft_s + newer.draft_s,
            aged * self.network_s + newer.network_s,
            aged * self.service_s + newer.service_s,
            aged * self.wall_s + newer.wall_s,
            aged * self.load + newer.load,
            aged * self.made + newer.made,
            self.line.then(newer.line, decay),
        )


@dataclass(frozen=True, slots=True)
class _EdgeStart:
    """What an edge's earlier rounds tell a new request: the policy `informed` by them,
    and the sums over them that its cost estimates go on from."""

    policy: AdaptiveWindow
    costs: _Costs
    solo: _Line
    resumes: ResumeEvidence
    copied: _Costs


@lru_cache(maxsize=64)
def _edge_start(policy: AdaptiveWindow, earlier: tuple[Round, ...]) -> _EdgeStart:
    """``policy``'s start after an edge's ``earlier`` rounds. Cached: a caller asks again
    every round of a request with the same rounds, and summing them each time (128 by
    default) cost more than half a millisecond a round, a few percent of a round in
    process."""
    return _EdgeStart(
        policy=policy.informed(earlier),
        costs=_Costs.of(_proposing(earlier), policy.decay),
        solo=_Line.solo(_decoded(earlier), policy.decay),
        resumes=ResumeEvidence.of(earlier)[0],
        copied=_Costs.of(_standing(earlier), 1.0),
    )


def _line(
    points: _Line,
    prior: tuple[float, float],
    prior_weights: tuple[float, float],
) -> tuple[float, float]:
    """Seconds as base + per_token * t from the sums over (t, seconds) ``points``: a
    verification pass over t tokens, or a round in which the target decodes t tokens
    alone (queueing left out). ``prior`` is a (base, per_token) line.

    The slope, what a token adds (the model and the hardware), shows only across rounds
    of several sizes, which a few recent rounds rarely span: it is fitted over all points
    alike by least squares, with the prior's line as ``prior_weights[1]`` pseudo-points
    centred on the points' mean t, one token apart. So the prior weighs on the slope as
    that many rounds one token apart whatever the window's range, and not on the level:
    a pseudo-point's pull on a slope grows with the square of its distance from the
    points, and anchored at k_min and k_max = 24 the prior's 5 ms a token outweighed a
    hundred measured rounds that said 2.2 (the windows stayed short). The level moves
    with the load: it is the weighted mean of ``seconds - slope * t``, the prior's worth
    ``prior_weights[0]``. Fitting both from recent rounds made the slope noise (0 ms of
    base and 10 ms a token, where 39 ms and 3 ms were true), and the window with it.
    """
    prior_base, prior_slope = prior
    level_prior, slope_prior = prior_weights
    center = points.t / points.count if points.count else 0.0
    pseudo = _Line.of(
        [(t, prior_base + prior_slope * t) for t in (center - 0.5, center + 0.5)], [1.0, 1.0]
    )
    half = slope_prior / 2  # each pseudo-point's weight in the fit
    n = points.count + half * pseudo.count
    t_sum = points.t + half * pseudo.t
    y_sum = points.seconds + half * pseudo.seconds
    t_squared = points.t_squared + half * pseudo.t_squared
    spread = t_squared - t_sum * t_sum / n
    slope = 0.0
    if spread > 1e-12 * t_squared:  # the points are not all at one t (beyond rounding)
        covariance = points.t_seconds + half * pseudo.t_seconds - t_sum * y_sum / n
        slope = max(covariance / spread, 0.0)  # more tokens never cost less
    level = level_prior * prior_base + points.weighted_seconds - slope * points.weighted_t
    return max(level / (level_prior + points.weight), 0.0), slope


def _verified(e: CostPrior, rates: Sequence[float], k: int) -> float:
    """Expected seconds per token of a round that drafts and verifies ``k`` tokens."""
    verify = e.queue_factor * (e.verify_base_s + e.load * k * e.verify_per_token_s)
    return (k * e.draft_s + e.rtt_s + verify) / expected_tokens(rates[:k])


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


def _recency(n: int, decay: float) -> list[float]:
    """The weights of ``n`` rounds, oldest first: the newest weighs 1, each older one
    ``decay`` times the next."""
    return [decay ** (n - 1 - i) for i in range(n)]


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


def _proposing(rounds: Sequence[Round]) -> list[Round]:
    """The rounds in which the drafter proposed something: only they tell acceptance, and
    only they age its evidence (a stretch of rounds where prompt lookup found nothing to
    copy should not wipe out what the copied stretch before it showed)."""
    return [r for r in rounds if r.drafted]


def _standing(rounds: Sequence[Round]) -> list[Round]:
    """The rounds whose proposal stood, at least its first token: they time copying
    (a proposal rejected at once is the price of looking, not of copying)."""
    return [r for r in rounds if r.accepted]


def _decoded(rounds: Sequence[Round]) -> list[Round]:
    """The rounds in which the target decoded alone: they time its decoding."""
    return [r for r in rounds if r.decoded]


def _copying(last: Round) -> bool:
    """Whether a round leaves the answer in a copied stretch: it drafted, and every
    drafted token stood."""
    return bool(last.drafted) and last.accepted == last.drafted
