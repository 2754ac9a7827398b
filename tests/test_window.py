"""Draft window policies: fixed windows and the adaptive controller's decisions."""

from __future__ import annotations

import pytest

from relaygraph.decoding.window import (
    AdaptiveWindow,
    CostPrior,
    FixedWindow,
    ResumeEvidence,
    Round,
    expected_tokens,
)
from relaygraph.errors import ConfigError


def rounds(
    n: int, *, k: int, accepted: int, draft_s: float, verify_s: float, rtt_s: float
) -> list[Round]:
    return [Round(k, k, accepted, draft_s * k, verify_s, rtt_s) for _ in range(n)]


def test_expected_tokens_per_round() -> None:
    assert expected_tokens([0.0] * 5) == 1.0  # nothing accepted: the target's own token
    assert expected_tokens([1.0] * 5) == 6.0
    assert expected_tokens([0.5] * 2) == pytest.approx(1 + 0.5 + 0.25)


def test_a_fixed_window_never_moves_and_must_be_positive() -> None:
    assert FixedWindow(4).next_window([]) == 4 and FixedWindow(4).name == "fixed-4"
    with pytest.raises(ConfigError, match="at least 1"):
        FixedWindow(0)


def test_bad_adaptive_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="k_min"):
        AdaptiveWindow(k_min=0)
    with pytest.raises(ConfigError, match="k_min"):
        AdaptiveWindow(k_min=5, k_max=4)
    with pytest.raises(ConfigError, match="decay"):
        AdaptiveWindow(decay=0)


def test_high_acceptance_and_a_long_round_trip_lengthen_the_window() -> None:
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(weight=0.5))
    # every draft accepted, a cheap draft, a 50 ms link: amortise the trip over many tokens
    good = rounds(6, k=8, accepted=8, draft_s=0.002, verify_s=0.02, rtt_s=0.05)
    assert policy.next_window(good) == 8
    # positions never tried lean on the request's pooled rate: every draft stood, so it
    # reaches past what it has seen
    tried = rounds(6, k=4, accepted=4, draft_s=0.002, verify_s=0.02, rtt_s=0.05)
    assert policy.next_window(tried) > 4
    # most drafts rejected at once: drafting more is wasted
    bad = rounds(6, k=4, accepted=0, draft_s=0.002, verify_s=0.02, rtt_s=0.05)
    assert policy.next_window(bad) == 1


def test_an_expensive_draft_shortens_the_window() -> None:
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(weight=0.5))
    cheap = rounds(6, k=4, accepted=3, draft_s=0.001, verify_s=0.02, rtt_s=0.03)
    dear = rounds(6, k=4, accepted=3, draft_s=0.05, verify_s=0.02, rtt_s=0.03)
    assert policy.next_window(dear) < policy.next_window(cheap)


def test_the_controller_picks_the_analytic_optimum() -> None:
    prior = CostPrior(acceptance=0.8, draft_s=0.01, verify_base_s=0.02,
                      verify_per_token_s=0.004, rtt_s=0.03)  # fmt: skip
    policy = AdaptiveWindow(k_max=8, prior=prior)

    def per_token(k: int) -> float:
        return (0.01 * k + 0.03 + 0.02 + 0.004 * k) / expected_tokens([0.8] * k)

    assert policy.next_window([]) == min(range(1, 9), key=per_token)


def test_acceptance_is_estimated_per_window_position() -> None:
    policy = AdaptiveWindow(k_max=4, prior=CostPrior(weight=1e-9), decay=1.0)
    # the first drafted token always stands, the second half the time, the third never;
    # the fourth, never drafted, takes the pooled rate (3 of 5 tested tokens stood)
    history = [Round(2, 2, 1, 0.0, 0.035, 0.03), Round(4, 4, 2, 0.0, 0.045, 0.03)] * 50
    assert policy.position_acceptance(history) == pytest.approx([1.0, 0.5, 0.0, 0.6], abs=0.02)
    # so the window stops where drafts stop standing, not where one pooled rate says
    assert policy.next_window(history) == 2


def test_rounds_without_a_proposal_say_nothing_about_the_window() -> None:
    policy = AdaptiveWindow(k_max=4, prior=CostPrior(weight=1e-9), decay=1.0)
    copied = [Round(4, 4, 4, 0.0, 0.04, 0.0)] * 4
    # prompt lookup found no n-gram: the target added its one token, at any window
    nothing = [Round(4, 0, 0, 0.0, 0.02, 0.0)] * 4
    assert policy.position_acceptance(copied + nothing) == pytest.approx([1.0] * 4)
    assert policy.next_window(copied + nothing) == 4
    # a proposal cut short (the text ran out) leaves its later positions untested
    short = [Round(4, 2, 2, 0.0, 0.03, 0.0)] * 4
    assert policy.position_acceptance(copied + short) == pytest.approx([1.0] * 4)


def test_rounds_the_cloud_decoded_alone_do_not_price_verification() -> None:
    policy = AdaptiveWindow(prior=CostPrior(weight=1e-9), decay=1.0)
    verified = [Round(4, 4, 4, 0.0, 0.03, 0.0)] * 4
    # nothing proposed: the cloud decoded 5 tokens, which took far longer than a pass
    decoded = [Round(4, 0, 0, 0.0, 0.5, 0.0, decoded=5)] * 4
    alone, mixed = policy.estimates(verified), policy.estimates(verified + decoded)
    assert mixed.verify_base_s == pytest.approx(alone.verify_base_s)
    assert mixed.verify_per_token_s == pytest.approx(alone.verify_per_token_s)


def test_rounds_the_cloud_decodes_alone_lengthen_the_window_over_a_slow_link() -> None:
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(weight=1e-9), decay=1.0)
    # drafts often wrong at the second token: verification alone keeps the window short
    verified = [Round(2, 2, 1, 0.0, 0.03, 0.1)] * 6
    short = policy.next_window(verified)
    # but 3 in 5 tokens come from rounds in which the cloud decoded k + 1 tokens alone,
    # and a longer window shares each of their 100 ms round trips among more tokens
    alone = [Round(2, 0, 0, 0.0, 0.05, 0.1, decoded=3)] * 6
    assert policy.estimates(verified + alone).unproposed == pytest.approx(18 / 30)
    assert policy.next_window(verified + alone) > short


def test_acceptance_is_estimated_per_tested_token() -> None:
    policy = AdaptiveWindow(prior=CostPrior(weight=1e-9))
    # 2 accepted then a rejection, every round: p = 2 / 3, not 2 / 4 drafted
    estimate = policy.estimates(rounds(10, k=4, accepted=2, draft_s=0.01, verify_s=0.02, rtt_s=0))
    assert estimate.acceptance == pytest.approx(2 / 3, rel=1e-6)


def test_a_link_that_slows_down_is_followed_within_a_few_rounds() -> None:
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(weight=1.0))

    def mixed(n: int, rtt_s: float) -> list[Round]:
        return [Round(4, 4, i % 5, 0.01 * 4, 0.02, rtt_s) for i in range(n)]

    fast, slow = mixed(10, 0.0), mixed(4, 0.2)
    assert policy.next_window(fast + slow) > policy.next_window(fast)
    assert policy.estimates(fast + slow).rtt_s > 0.1


def test_verification_cost_is_learned_as_a_line_in_k() -> None:
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(weight=1e-6))
    history = [Round(k, k, k, 0.01 * k, 0.01 + 0.005 * k, 0.0) for k in (1, 2, 4, 8, 1, 2, 4, 8)]
    estimate = policy.estimates(history)
    assert estimate.verify_base_s == pytest.approx(0.01, abs=1e-4)
    assert estimate.verify_per_token_s == pytest.approx(0.005, abs=1e-4)


def test_a_congested_cloud_shortens_the_window_instead_of_lengthening_it() -> None:
    prior = CostPrior(acceptance=0.6, draft_s=0.0005, verify_base_s=0.03,
                      verify_per_token_s=0.007, weight=1.0)  # fmt: skip
    policy = AdaptiveWindow(k_max=8, prior=prior)

    def congested(*, reported: bool) -> list[Round]:
        # 15 other edges' windows share each pass, and each waits 0.5 s behind other passes
        service = 0.03 + 0.007 * (4 + 15 * 4)
        return [
            Round(4, 4, i % 4, 0.002, service + 0.5, 0.0,
                  queue_s=0.5 if reported else 0.0, shared_tokens=60 if reported else 0)
            for i in range(8)
        ]  # fmt: skip

    alone = policy.next_window(rounds(8, k=4, accepted=2, draft_s=0.0005, verify_s=0.058, rtt_s=0))
    # read as a fixed cost per round, the wait makes long windows look cheap
    assert policy.next_window(congested(reported=False)) > alone
    # priced as the work every edge adds to every pass and queue, the window shortens
    shared = policy.next_window(congested(reported=True))
    assert shared < alone
    assert shared == 1


def test_earlier_requests_set_costs_and_where_acceptance_starts() -> None:
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(acceptance=0.7, weight=1.0))
    earlier = rounds(8, k=4, accepted=0, draft_s=0.002, verify_s=0.02, rtt_s=0.2)
    fresh = policy.estimates([], earlier)
    assert fresh.rtt_s > 0.15  # the link was slow a moment ago, and still is
    assert fresh.acceptance < 0.1  # this edge's drafts have been failing
    assert policy.position_acceptance([], earlier)[0] < 0.1
    assert policy.next_window([], earlier) == 1
    # the prompt is new, though: a few rounds of its own outweigh the edge's history
    copying = rounds(3, k=4, accepted=4, draft_s=0.002, verify_s=0.02, rtt_s=0.2)
    assert policy.estimates(copying, earlier).acceptance > 0.8
    assert policy.next_window(copying, earlier) > 4


def test_a_fresh_edge_starts_from_the_prior() -> None:
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(acceptance=0.7, weight=1.0))
    assert policy.informed([]) is policy
    assert policy.estimates([]).acceptance == pytest.approx(0.7)


def test_the_verification_slope_is_learned_from_all_window_sizes() -> None:
    # windows of 2 and 8 earlier, then 7s and 8s whose noise happens to rise with k: the
    # slope keeps what the spread showed, not the recent rounds' 13 ms a token
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(weight=1.0))
    line = [Round(k, k, k, 0.0, 0.039 + 0.0032 * k, 0.0) for k in (2, 8) * 5]
    recent = [
        Round(k, k, k, 0.0, 0.039 + 0.0032 * k + noise, 0.0)
        for k, noise in ((7, -0.005), (8, 0.005)) * 4
    ]
    estimate = policy.estimates(recent, line)
    assert estimate.verify_per_token_s == pytest.approx(0.0032, abs=0.001)
    assert estimate.verify_base_s == pytest.approx(0.039, abs=0.006)


def test_the_priors_slope_weighs_the_same_whatever_the_largest_window() -> None:
    # measured: 20 ms + 2.2 ms a token over windows of 4-12; the prior says 5 ms a token.
    # Its weight on the slope must not grow with k_max (it did: 4.8 ms at k_max = 24).
    measured = [Round(k, k, k, 0.0, 0.020 + 0.0022 * k, 0.0) for k in (4, 8, 12) * 10]
    for k_max in (8, 24, 64):
        estimate = AdaptiveWindow(k_max=k_max).estimates(measured)
        assert estimate.verify_per_token_s == pytest.approx(0.0022, rel=0.05)
        assert estimate.verify_base_s == pytest.approx(0.020, rel=0.1)


def test_steps_with_nothing_proposed_price_neither_drafting_nor_verification() -> None:
    # in process, a round the drafter had nothing for is one target step (12 ms), a
    # different pass from verifying 1-8 drafted tokens (24 ms + 2 ms a token)
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(weight=1e-9))
    verified = [Round(8, k, k, 0.0001 * k, 0.024 + 0.002 * k, 0.0) for k in (1, 4, 8, 2, 6)]
    steps = [Round(8, 0, 0, 0.0001, 0.012, 0.0)] * 20
    before, after = policy.estimates(verified), policy.estimates(verified + steps)
    assert after.draft_s == pytest.approx(before.draft_s) == pytest.approx(0.0001)
    assert after.verify_per_token_s == pytest.approx(0.002)
    assert after.verify_base_s == pytest.approx(before.verify_base_s)
    assert policy.next_window(verified + steps) == 8


def test_an_edges_earlier_rounds_price_a_round_as_its_own_older_ones_would() -> None:
    # costs are summed over the earlier rounds once per request and carried on; the
    # result must be the estimate over all the rounds in one sequence
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(weight=2.0), decay=0.8)
    earlier = [
        Round(k, k, k // 2, 0.001 * k, 0.03 + 0.003 * k + 0.001 * (k % 3), 0.01 * (k % 2))
        for k in (1, 8, 3, 5, 8, 2, 7)
    ] + [Round(4, 0, 0, 0.0, 0.08, 0.01, decoded=5), Round(2, 0, 0, 0.0, 0.05, 0.0, decoded=3)]
    now = [Round(6, 6, 3, 0.006, 0.05, 0.02, queue_s=0.01, shared_tokens=4)] * 3 + [
        Round(4, 0, 0, 0.0, 0.07, 0.02, decoded=4)
    ]
    carried, whole = policy.estimates(now, earlier), policy.estimates([*earlier, *now])
    for cost in ("draft_s", "verify_base_s", "verify_per_token_s", "rtt_s", "queue_factor",
                 "load", "decode_base_s", "decode_per_token_s", "weight"):  # fmt: skip
        assert getattr(carried, cost) == pytest.approx(getattr(whole, cost), rel=1e-9), cost


def test_a_known_proposal_is_verified_at_most_to_its_length() -> None:
    policy = AdaptiveWindow(k_max=8, prior=CostPrior(weight=1e-9), decay=1.0)
    copied = [Round(8, 8, 8, 0.0, 0.03 + 0.002 * 8, 0.0)] * 6
    assert policy.next_window(copied) == 8
    assert policy.next_window(copied, proposed=8) == 8
    # the free drafter offers 3 tokens: a longer window would verify nothing more
    assert policy.next_window(copied, proposed=3) == 3
    with_floor = AdaptiveWindow(k_min=2, k_max=8, prior=CostPrior(weight=1e-9))
    assert with_floor.next_window(copied, proposed=1) == 2


def alone(decoded: int, resume_at: int = 0) -> Round:
    """A round the cloud decoded alone over a 10 ms link (5 ms + 10 ms a token)."""
    return Round(decoded - 1, 0, 0, 0.0, 0.005 + 0.01 * decoded, 0.01, decoded=decoded,
                 resume_at=resume_at)  # fmt: skip


COPIED = Round(8, 8, 8, 0.0, 0.03 + 0.002 * 8, 0.01)
"""A round that copied 9 tokens for 56 ms: about 6 ms a token, against 10 decoding."""


def test_stretches_without_proposals_are_counted_where_they_were_watched() -> None:
    # 3 tokens alone, copying could have resumed after the 2nd; then 4 alone that ran
    # on, and the next round's proposal stood (ended at the stretch's 4th token)
    evidence, length = ResumeEvidence.of([alone(3, 2), COPIED, alone(4), COPIED])
    assert length == 0
    assert evidence.watched == (2.0, 2.0, 2.0, 0.0, 0.0, 0.0)  # bins 1, 2, 3-4, 5-8, ...
    assert evidence.ended == (0.0, 1.0, 1.0, 0.0, 0.0, 0.0)
    # the stretch goes on: its length, and nothing ended at its last position
    evidence, length = ResumeEvidence.of([alone(4), alone(4)])
    assert length == 8
    assert evidence.watched == (1.0, 1.0, 2.0, 3.0, 0.0, 0.0)
    assert sum(evidence.ended) == 0


def test_alone_rounds_stop_where_copying_usually_resumes() -> None:
    policy = AdaptiveWindow(k_max=16, prior=CostPrior(weight=0.5), decay=1.0)
    # the answer comes back to its source after 2 tokens: decoding 17 alone would
    # decode 15 that copying makes cheaper
    soon = [alone(6, 2), COPIED, COPIED] * 8
    assert policy.next_window(soon, proposed=0) <= 3
    # it never comes back: long rounds save round trips
    never = [COPIED] * 4 + [alone(6)] * 12
    assert policy.next_window(never, proposed=0) == 16


def test_the_longer_a_stretch_has_lasted_the_longer_the_next_round_alone() -> None:
    policy = AdaptiveWindow(k_max=16, prior=CostPrior(weight=0.5), decay=1.0)
    # half the stretches end at their 2nd token, the other half never
    history = [alone(6, 2), COPIED, alone(8), alone(8), alone(8), COPIED] * 6
    fresh = policy.next_window([COPIED], history, proposed=0)
    lasted = policy.next_window([COPIED, alone(8)], history, proposed=0)
    assert fresh < lasted
