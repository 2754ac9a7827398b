"""The cost lines the adaptive window fits: verification time against the tokens it
verifies, decoding time against the tokens decoded, as running weighted sums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaygraph.decoding.rounds import recency_weights

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.decoding.rounds import Round


@dataclass(frozen=True, slots=True)
class CostLine:
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
    def of(cls, points: Sequence[tuple[float, float]], weights: Sequence[float]) -> CostLine:
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
    def solo(cls, decoded: Sequence[Round], decay: float) -> CostLine:
        """Rounds in which the target decoded alone: t tokens in their decoding time."""
        return cls.of(
            [(float(r.decoded), r.verify_s - r.queue_s) for r in decoded],
            recency_weights(len(decoded), decay),
        )

    def then(self, newer: CostLine, decay: float) -> CostLine:
        """These points followed by ``newer`` ones, each of which ages these weights by
        ``decay``."""
        aged = decay**newer.count
        return CostLine(
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
class RoundCosts:
    """Weighted sums over rounds that drafted (recent rounds weigh more): what drafting,
    the round trip and the cloud's queue cost, and the verification line (whose
    ``weight`` is the rounds' total weight). Like `CostLine`, an older run's sums combine
    with a newer one's (`then`)."""

    drafted: float = 0.0
    draft_s: float = 0.0
    network_s: float = 0.0
    service_s: float = 0.0
    wall_s: float = 0.0
    load: float = 0.0
    made: float = 0.0
    line: CostLine = CostLine()

    @property
    def seconds(self) -> float:
        """The rounds' whole time: drafting, the link and the cloud."""
        return self.draft_s + self.network_s + self.wall_s

    @classmethod
    def of(cls, drafting: Sequence[Round], decay: float) -> RoundCosts:
        pairs = list(zip(recency_weights(len(drafting), decay), drafting, strict=True))
        return cls(
            drafted=sum(w * r.drafted for w, r in pairs),
            draft_s=sum(w * r.draft_s for w, r in pairs),
            network_s=sum(w * r.network_s for w, r in pairs),
            service_s=sum(w * max(r.verify_s - r.queue_s, 0.0) for w, r in pairs),
            wall_s=sum(w * r.verify_s for w, r in pairs),
            # tokens in the pass per token of this edge's window
            load=sum(w * (r.drafted + 1 + r.shared_tokens) / (r.drafted + 1) for w, r in pairs),
            made=sum(w * (r.accepted + 1) for w, r in pairs),
            line=CostLine.of(
                [(float(r.drafted + r.shared_tokens), r.verify_s - r.queue_s) for _, r in pairs],
                [w for w, _ in pairs],
            ),
        )

    def then(self, newer: RoundCosts, decay: float) -> RoundCosts:
        """These rounds' sums followed by ``newer`` ones, each of which ages these weights
        by ``decay``."""
        aged = decay**newer.line.count
        return RoundCosts(
            aged * self.drafted + newer.drafted,
            aged * self.draft_s + newer.draft_s,
            aged * self.network_s + newer.network_s,
            aged * self.service_s + newer.service_s,
            aged * self.wall_s + newer.wall_s,
            aged * self.load + newer.load,
            aged * self.made + newer.made,
            self.line.then(newer.line, decay),
        )


def fit_line(
    points: CostLine,
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
    pseudo = CostLine.of(
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
