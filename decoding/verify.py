"""Verification rules of speculative decoding: which drafted tokens the target keeps, and
the one token it adds after them.

- Greedy: a drafted token stands where it is the target's argmax; the target's argmax
  after the last standing token is added.
- Sampling (Leviathan et al.): token ``x`` drafted with probability ``q(x)`` stands with
  probability ``min(1, p(x) / q(x))``; at the first rejection the added token is drawn from
  ``norm(max(p - q, 0))``; if all stand, from ``p`` after them. A deterministic draft (prompt
  lookup) is a point mass: accept with ``p(x)``, else draw from ``p`` without ``x``. The
  output then follows the target's distribution exactly.
- Constrained: every target row is first masked by the request's grammar in the state the
  standing tokens left it (a forbidden draft has probability 0, so it never stands).

The functions read the request's state (`VerifiedRequest`) and draw from its generator
in a fixed order, so a seeded request is reproducible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from relaygraph.decoding.drafts import FullDistribution, Proposal
from relaygraph.llm.sampling import token_distribution
from relaygraph.llm.types import TokenPrompt

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from relaygraph.llm.grammar import TokenMatcher
    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import GenerationParams, LoadReport


class VerifiedRequest(Protocol):
    """What verification reads of a request: its ids so far, its sampling settings and
    generator, and its grammar state (None: unconstrained)."""

    ids: list[int]
    params: GenerationParams
    rng: np.random.Generator
    matcher: TokenMatcher | None


def _stands(p: np.ndarray, token: int, q: float, rng: np.random.Generator) -> bool:
    """The sampling rule: ``token``, drafted with probability ``q``, stands with
    probability ``min(1, p(token) / q)``."""
    return bool(rng.uniform() * q < p[token])


def _replacement(
    p: np.ndarray, token: int, q_row: np.ndarray | None, rng: np.random.Generator
) -> int:
    """The token drawn after ``token`` was rejected: from ``norm(max(p - q, 0))``, or from
    ``p`` without ``token`` when the draft was deterministic (``q_row`` None)."""
    if q_row is None:
        residual = p.copy()
        residual[token] = 0.0
    else:
        residual = np.maximum(p - q_row, 0.0)
    return int(rng.choice(residual.shape[0], p=residual / residual.sum()))


def _distribution(row: np.ndarray, params: GenerationParams) -> np.ndarray:
    return token_distribution(row, temperature=params.temperature, top_p=params.top_p)


def pick(request: VerifiedRequest, row: np.ndarray, *, sampling: bool) -> int:
    """The target's own choice from a (masked) row: argmax, or a sample."""
    if not sampling:
        return int(row.argmax())
    p = _distribution(row, request.params)
    return int(request.rng.choice(p.shape[0], p=p))


def verify_greedy(
    target: LLM, ids: Sequence[int], drafted: list[int]
) -> tuple[int, int, LoadReport | None]:
    """Accepted count, the target's token after them (argmax everywhere), and the
    target's load report where it sends one (a relaygraph worker does)."""
    if isinstance(target, FullDistribution):  # in process: argmax of raw logits
        best = target.logits(ids, drafted).argmax(axis=1).tolist()
        accepted = next((i for i, t in enumerate(drafted) if t != best[i]), len(drafted))
        return accepted, int(best[accepted]), None
    score = target.score(TokenPrompt(token_ids=tuple(ids)), drafted, 1)
    for i, (token, scored) in enumerate(zip(drafted, score.tokens, strict=True)):
        best_token = scored.top[0].token_id
        if token != best_token:
            return i, best_token, score.load
    return len(drafted), score.next_top[0].token_id, score.load


def verify_sampled(
    target: FullDistribution, request: VerifiedRequest, proposal: Proposal
) -> tuple[int, int]:
    """Accepted count and the next token, by the speculative sampling rule."""
    params, rng = request.params, request.rng
    rows = target.logits(request.ids, proposal.ids)
    for i, token in enumerate(proposal.ids):
        p = _distribution(rows[i], params)
        q_row = None if proposal.distributions is None else proposal.distributions[i]
        if not _stands(p, token, 1.0 if q_row is None else q_row[token], rng):
            return i, _replacement(p, token, q_row, rng)
    bonus = _distribution(rows[len(proposal.ids)], params)
    return len(proposal.ids), int(rng.choice(bonus.shape[0], p=bonus))


def verify_masked(
    target: FullDistribution,
    request: VerifiedRequest,
    proposal: Proposal,
    ends: Collection[int],
    *,
    sampling: bool,
) -> tuple[list[int], int]:
    """A constrained round: the tokens it adds and how many drafted ones stood; the round
    ends early where the grammar completes or a token ``ends`` generation."""
    matcher = request.matcher
    assert matcher is not None  # only constrained requests come here
    params = request.params
    rows = target.logits(request.ids, proposal.ids)
    out: list[int] = []
    for i, token in enumerate(proposal.ids):
        row = matcher.mask(rows[i])
        if sampling:
            p = _distribution(row, params)
            q_row = None if proposal.distributions is None else proposal.distributions[i]
            stands = _stands(p, token, 1.0 if q_row is None else q_row[token], request.rng)
        else:
            stands = token == int(row.argmax())
        if not stands:
            extra = _replacement(p, token, q_row, request.rng) if sampling else int(row.argmax())
            matcher.advance(extra)
            return [*out, extra], i
        matcher.advance(token)
        out.append(token)
        if matcher.complete or token in ends:
            return out, i + 1
    bonus = pick(request, matcher.mask(rows[len(proposal.ids)]), sampling=sampling)
    matcher.advance(bonus)
    return [*out, bonus], len(proposal.ids)
