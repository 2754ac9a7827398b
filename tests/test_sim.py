"""The edge-cloud simulator: closed-form cases, monotone effects, batching, profile files
and fitting."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaygraph.decoding.sim import (
    LatencyProfile,
    SimConfig,
    acceptance_by_kind,
    fit_profile,
    simulate,
)
from relaygraph.decoding.window import AdaptiveWindow, FixedWindow
from relaygraph.errors import ConfigError


def profile(**changes: float) -> LatencyProfile:
    base = LatencyProfile(
        name="t", draft_per_token_s=0.002, verify_base_s=0.02, verify_per_token_s=0.001,
        decode_base_s=0.015, decode_per_seq_s=0.005, prefill_s=0.0, acceptance=0.7,
    )  # fmt: skip
    return base.model_copy(update=changes)


def test_cloud_only_latency_is_the_round_trip_plus_every_step() -> None:
    p = profile(rtt_s=0.05, prefill_s=0.1)
    result = simulate(p, SimConfig(output_tokens=[10], requests_per_edge=3), "cloud-only")
    # one sequence: 10 steps of base + per_seq, the first also reads the prompt
    assert result.latency_p50_s == pytest.approx(0.05 + 0.1 + 10 * 0.02)
    assert result.tokens == 30 and result.requests == 3


def test_full_acceptance_gives_windows_of_k_plus_one_tokens() -> None:
    p = profile(acceptance=1.0)
    result = simulate(
        p, SimConfig(output_tokens=[10], requests_per_edge=1), "speculative", FixedWindow(4)
    )
    # rounds of 5 tokens (4 accepted + the target's): 2 rounds, each 4 drafts + a pass over 5
    assert result.latency_p50_s == pytest.approx(2 * (4 * 0.002 + 0.02 + 5 * 0.001))
    assert result.acceptance_rate == 1.0 and result.mean_window == 4


def test_zero_acceptance_makes_one_token_per_round() -> None:
    p = profile(acceptance=0.0)
    result = simulate(
        p, SimConfig(output_tokens=[6], requests_per_edge=1), "speculative", FixedWindow(2)
    )
    # one token a round; the last round's window is cut to the one token left
    full, last = 2 * 0.002 + 0.02 + 3 * 0.001, 0.002 + 0.02 + 2 * 0.001
    assert result.latency_p50_s == pytest.approx(5 * full + last)


def test_a_longer_round_trip_hurts_speculation_more_than_cloud_only() -> None:
    config = SimConfig(output_tokens=[64], requests_per_edge=20)

    def speedup(rtt: float) -> float:
        p = profile(rtt_s=rtt)
        base = simulate(p, config, "cloud-only")
        return base.makespan_s / simulate(p, config, "speculative", FixedWindow(4)).makespan_s

    assert speedup(0.0) > speedup(0.01) > speedup(0.05)


def test_the_adaptive_window_lengthens_with_the_round_trip() -> None:
    config = SimConfig(output_tokens=[64], requests_per_edge=10)
    near = simulate(profile(rtt_s=0.0), config, "speculative", AdaptiveWindow())
    far = simulate(profile(rtt_s=0.1), config, "speculative", AdaptiveWindow())
    assert far.mean_window is not None and near.mean_window is not None
    assert far.mean_window > near.mean_window


def test_more_edges_fill_the_cloud_and_batching_raises_throughput() -> None:
    p = profile()
    one = simulate(p, SimConfig(edges=1, output_tokens=[32]), "speculative", FixedWindow(3))
    many = simulate(p, SimConfig(edges=16, output_tokens=[32]), "speculative", FixedWindow(3))
    assert many.cloud_utilization > one.cloud_utilization
    assert many.throughput_tok_s > one.throughput_tok_s
    assert many.latency_p95_s > one.latency_p95_s  # they queue
    two_clouds = simulate(
        p, SimConfig(edges=16, clouds=2, output_tokens=[32]), "speculative", FixedWindow(3)
    )
    assert two_clouds.latency_p50_s < many.latency_p50_s


def test_runs_are_reproducible_for_a_seed() -> None:
    config = SimConfig(edges=4, output_tokens=[20, 40], seed=3)
    p = profile(rtt_s=0.02, jitter_s=0.005)
    assert simulate(p, config, "speculative", AdaptiveWindow()) == simulate(
        p, config, "speculative", AdaptiveWindow()
    )


def test_profiles_round_trip_and_bad_ones_are_named(tmp_path: Path) -> None:
    p = profile(rtt_s=0.01)
    assert LatencyProfile.load(p.save(tmp_path / "p.json")) == p
    (tmp_path / "bad.json").write_text(
        p.model_dump_json().replace('"acceptance":0.7', '"acceptance":1.5')
    )
    with pytest.raises(ConfigError, match="acceptance"):
        LatencyProfile.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="window policy"):
        simulate(p, SimConfig(), "speculative")


def test_a_profile_is_fitted_from_measured_rounds() -> None:
    # verification = 0.01 + 0.002 * tokens, plus 0.05 of prefill on each first pass
    def request(acc: list[int]) -> dict[str, list[float]]:
        drafted = [4] * len(acc)
        verify = [0.01 + 0.002 * 5 + (0.05 if i == 0 else 0.0) for i in range(len(acc))]
        return {
            "window": list(drafted),
            "drafted": drafted,
            "accepted": acc,
            "draft_s": [0.004] * len(acc),
            "verify_s": verify,
        }

    rounds = [request([4, 2, 0, 4]), request([1, 2, 3])]
    rounds[1]["drafted"][1] = rounds[1]["window"][1] = 2  # a shorter window: two points
    rounds[1]["verify_s"][1] = 0.01 + 0.002 * 3
    fitted = fit_profile("f", rounds, [(0.05 + 10 * 0.01, 10)], batch_step_ratio=(1.5, 3),
                         rtt_s=0.0, jitter_s=0.0, source="test")  # fmt: skip
    assert fitted.verify_base_s == pytest.approx(0.01, abs=1e-9)
    assert fitted.verify_per_token_s == pytest.approx(0.002, abs=1e-9)
    assert fitted.prefill_s == pytest.approx(0.05, abs=1e-9)
    # 16 drafted tokens passed; 4 rounds stopped at a failure (2 < 2 did not)
    assert fitted.acceptance == pytest.approx(16 / 20)
    # per position: all 7 rounds reach the first and 6 pass; 6 reach the second, 5 pass
    assert fitted.position_acceptance[:2] == pytest.approx([6 / 7, 5 / 6])
    step = fitted.decode_base_s + fitted.decode_per_seq_s
    assert step == pytest.approx(0.01) and fitted.decode_per_seq_s == pytest.approx(0.0025)
    # told which prompt each request answered, it keeps each prompt's own rates
    by_prompt = fit_profile("f", rounds, [(0.05 + 10 * 0.01, 10)], batch_step_ratio=(1.5, 3),
                            rtt_s=0.0, jitter_s=0.0, source="test", kinds=[0, 1])  # fmt: skip
    assert by_prompt.request_acceptance[0] == pytest.approx([3 / 4, 1.0, 2 / 3, 1.0])
    assert by_prompt.request_acceptance[1][:2] == pytest.approx([1.0, 2 / 3])
    assert fitted.unproposed == 0.0 and by_prompt.request_unproposed == [0.0, 0.0]
    # a round with no proposal (prompt lookup found no n-gram) tests no position, and
    # makes one of the answer's tokens: 1 of 14 in the first request, 1 of 23 in all
    rounds[0]["drafted"][2] = 0
    rates = fit_profile("f", rounds, [(0.05 + 10 * 0.01, 10)], batch_step_ratio=(1.5, 3),
                        rtt_s=0.0, jitter_s=0.0, source="test", kinds=[0, 1])  # fmt: skip
    assert rates.unproposed == pytest.approx(1 / 23)
    assert rates.request_unproposed == pytest.approx([1 / 14, 0.0])
    assert rates.request_acceptance[0][0] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"kinds \[1\]"):
        acceptance_by_kind(rounds, [0, 2])


def test_a_round_the_target_decodes_alone_is_fitted_as_its_steps_and_an_overhead() -> None:
    record = {
        "window": [4, 4, 4],
        "drafted": [4, 0, 4],
        "accepted": [4, 0, 2],
        "decoded": [0, 5, 0],
        "draft_s": [0.0] * 3,
        "verify_s": [0.03, 0.02 + 5 * 0.01, 0.03],  # 20 ms beyond five 10 ms steps
    }
    fitted = fit_profile("f", [record], [(10 * 0.01, 10)], batch_step_ratio=(1.0, 1),
                         rtt_s=0.0, jitter_s=0.0, source="test")  # fmt: skip
    assert fitted.solo_overhead_s == pytest.approx(0.02)
    assert fitted.unproposed == pytest.approx(5 / 13)  # of 5 + 5 + 3 tokens


def test_rounds_without_a_proposal_let_the_cloud_decode_the_window() -> None:
    p = profile(unproposed=1.0, rtt_s=0.01)
    spec = simulate(p, SimConfig(requests_per_edge=2), "speculative", FixedWindow(4))
    assert spec.acceptance_rate is None  # nothing was ever drafted
    # 64 tokens in rounds of k + 1 = 5 decode steps each, one round trip per round
    rounds = -(-64 // 5)
    step = p.decode_base_s + p.decode_per_seq_s
    assert spec.time_per_token_s == pytest.approx((rounds * p.rtt_s + 64 * step) / 64, rel=0.02)


def test_each_request_kind_drafts_at_its_own_acceptance() -> None:
    # kind 0 accepts everything, kind 1 nothing: the pooled rate (0.5) would predict neither
    p = profile(request_acceptance=[[1.0], [0.0]])
    config = SimConfig(output_tokens=[10, 10], requests_per_edge=2)
    result = simulate(p, config, "speculative", FixedWindow(4))

    def round_s(k: int) -> float:
        return k * 0.002 + 0.02 + (k + 1) * 0.001

    easy = 2 * round_s(4)  # two rounds of 5 tokens
    # one token a round; windows are cut to what is left at the end
    hard = 7 * round_s(4) + round_s(3) + round_s(2) + round_s(1)
    assert result.makespan_s == pytest.approx(easy + hard)
    assert result.acceptance_rate == pytest.approx(8 / (8 + 7 * 4 + 3 + 2 + 1))


def test_adaptive_windows_keep_up_with_the_best_fixed_window_under_congestion() -> None:
    # verification steep in tokens (this CPU's shape): with 16 edges on one cloud, every
    # drafted token is work all the others wait behind, so short windows win
    p = profile(draft_per_token_s=0.0001, verify_base_s=0.03, verify_per_token_s=0.0074,
                decode_base_s=0.0, decode_per_seq_s=0.012, acceptance=0.55)  # fmt: skip
    config = SimConfig(edges=16, requests_per_edge=3, output_tokens=[48])
    fixed = {k: simulate(p, config, "speculative", FixedWindow(k)) for k in (1, 2, 4)}
    best = max(r.throughput_tok_s for r in fixed.values())
    adaptive = simulate(p, config, "speculative", AdaptiveWindow(prior=p.window_prior()))
    assert adaptive.throughput_tok_s >= 0.97 * best
    assert fixed[1].throughput_tok_s > fixed[4].throughput_tok_s


def test_stretches_without_proposals_are_fitted_from_where_lookups_resumed() -> None:
    # request 1: a stretch ended inside a round (after its 2nd token), then a round that
    # proposed after one that did not propose; request 2: a stretch that ran on to the end
    records = [
        {"window": [4, 4, 4, 4], "drafted": [4, 0, 4, 4], "accepted": [4, 0, 3, 0],
         "decoded": [0, 5, 0, 0], "resume_at": [0, 2, 0, 0], "draft_s": [0.0] * 4,
         "verify_s": [0.03, 0.07, 0.03, 0.03]},
        {"window": [4, 4, 4], "drafted": [0, 0, 4], "accepted": [0, 0, 1],
         "decoded": [5, 5, 0], "resume_at": [0, 0, 0], "draft_s": [0.0] * 3,
         "verify_s": [0.07, 0.07, 0.03]},
    ]  # fmt: skip
    fitted = fit_profile("f", records, [(10 * 0.01, 10)], batch_step_ratio=(1.0, 1),
                         rtt_s=0.0, jitter_s=0.0, source="test", kinds=[0, 1])  # fmt: skip
    # proposing after a proposing round or as a request's first: 2 of 4 such rounds
    assert fitted.proposing == pytest.approx(2 / 4)
    assert fitted.request_proposing == pytest.approx([2 / 3, 0.0])
    # watched, by bin (1, 2, 3-4, 5-8, 9-16, 17+): positions 1 and 2 of request 1 (ended
    # at 2); 1-4, 5 (the next round did not propose), 6-9 and 10 (the next proposed and
    # its first token stood) of request 2: 9 and 10 in bin 9-16, one ended; the last
    # bin, never watched, takes 9-16's
    assert fitted.resume == pytest.approx([0.0, 1 / 2, 0.0, 0.0, 1 / 2, 1 / 2])


def test_the_simulated_policy_knows_whether_a_round_has_a_proposal() -> None:
    # stretches without proposals end at their 2nd token: a fixed window of 16 decodes
    # 17 tokens alone each time, AWC stops where copying resumes
    p = profile(draft_per_token_s=0.0, verify_base_s=0.03, verify_per_token_s=0.002,
                decode_base_s=0.0, decode_per_seq_s=0.01, acceptance=0.97, proposing=0.8,
                resume=[0.0, 0.95, 0.5], rtt_s=0.005, solo_overhead_s=0.005)  # fmt: skip
    config = SimConfig(requests_per_edge=6, output_tokens=[96])
    fixed = {k: simulate(p, config, "speculative", FixedWindow(k)) for k in (4, 8, 16)}
    adaptive = simulate(p, config, "speculative", AdaptiveWindow(k_max=16, prior=p.window_prior()))
    assert adaptive.makespan_s < min(r.makespan_s for r in fixed.values())
