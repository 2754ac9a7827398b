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

from relaygraph.decoding.rounds import Round
from relaygraph.decoding.window.adaptive import POOLED_WEIGHT, AdaptiveWindow
from relaygraph.decoding.window.policy import EARLIER_ROUNDS, FixedWindow, WindowPolicy
from relaygraph.decoding.window.prior import CostPrior, expected_tokens, stand_rates
from relaygraph.decoding.window.resume import (
    RESUME_BINS,
    ResumeEvidence,
    resume_bin,
    resume_rates,
)

__all__ = [
    "EARLIER_ROUNDS",
    "POOLED_WEIGHT",
    "RESUME_BINS",
    "AdaptiveWindow",
    "CostPrior",
    "FixedWindow",
    "ResumeEvidence",
    "Round",
    "WindowPolicy",
    "expected_tokens",
    "resume_bin",
    "resume_rates",
    "stand_rates",
]
