"""Speculative decoding on the real SmolLM2: lossless greedy output, the target's
distribution under sampling (chi-square), remote verification over HTTP, the link's
delay, a cloud that goes away, and the pairing and window checks.

The drafts are deliberately worse copies of the real model, so that tokens get
rejected: `HotDraft` drafts by sampling SmolLM2 at temperature 1.5, `FlatDraft` flattens
its logits. They are the real model, not mocks; only their choices are degraded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from scipy.stats import chisquare

from relaygraph.agents import Agent
from relaygraph.decoding.drafts import PromptLookupDrafter
from relaygraph.decoding.network import NetworkLink
from relaygraph.decoding.rounds import SpeculativeReport
from relaygraph.decoding.speculative import CloudUnavailableError, SpeculativeLLM
from relaygraph.decoding.window import EARLIER_ROUNDS, AdaptiveWindow, FixedWindow, Round
from relaygraph.errors import ConfigError
from relaygraph.graph import AgentGraph
from relaygraph.graph.trace import Trace
from relaygraph.llm import LocalLLM, OpenAICompatLLM
from relaygraph.llm.sampling import token_distribution
from relaygraph.llm.types import Completion, GenerationParams, Prompt, PromptInput
from relaygraph.serving.server import BackgroundServer

PROMPT = "Here is a short story about a cat who learns to fly. Once upon a time,"
COPY_PROMPT = (
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It was designed "
    "by the engineering company of Gustave Eiffel.\nRepeat the text above exactly.\n"
)
"""A prompt whose answer copies its context: prompt lookup proposes most of it."""
GREEDY = GenerationParams(max_tokens=40, temperature=0.0)
NEAR_TIE = 1.0
"""Nats. llama.cpp's quantised kernels give logits that differ by up to ~0.7 between a
one-token step and a batched pass, so where the target's top two are closer than this,
its own step-by-step greedy choice and its verifying pass may pick differently."""


def greedy_reference(
    llm: LocalLLM, prompt: str, params: GenerationParams
) -> tuple[list[int], list[float]]:
    """The target's own step-by-step greedy tokens, and its top-two gap at each."""
    out = llm.complete(prompt, params.model_copy(update={"logprobs": True, "top_logprobs": 2}))
    tokens = out.choices[0].logprobs or []
    return out.choices[0].token_ids, [t.top[0].logprob - t.top[1].logprob for t in tokens]


def assert_lossless(got: list[int], reference: tuple[list[int], list[float]]) -> None:
    """Token for token the target's greedy output, up to a divergence that only a
    numerical near-tie of the target explains (after it the two texts differ anyway)."""
    expected, gaps = reference
    differ = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
    if differ is None:
        assert len(got) == len(expected)
        return
    assert gaps[differ] < NEAR_TIE, (
        f"diverged at token {differ}, where the target's choice was clear "
        f"(top-two gap {gaps[differ]:.2f} nats)"
    )


class HotDraft:
    """SmolLM2 drafting by sampling at temperature 1.5 (seeded) instead of greedily."""

    def __init__(self, llm: LocalLLM) -> None:
        self._llm = llm
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def complete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        self.calls += 1
        assert params is not None
        hot = params.model_copy(update={"temperature": 1.5, "seed": self.calls})
        return self._llm.complete(prompt, hot)


class FlatDraft(HotDraft):
    """SmolLM2 whose next-token logits are halved: a flatter draft distribution q != p."""

    def logits(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> np.ndarray:
        return self._llm.logits(prompt_ids, continuation) * 0.5


def test_greedy_output_is_the_targets_own_whatever_the_draft(smollm2: LocalLLM) -> None:
    reference = greedy_reference(smollm2, PROMPT, GREEDY)
    for window in (FixedWindow(1), FixedWindow(4), AdaptiveWindow()):
        spec = SpeculativeLLM(HotDraft(smollm2), smollm2, window)  # type: ignore[arg-type]
        got = spec.complete(PROMPT, GREEDY)
        assert_lossless(got.choices[0].token_ids, reference)
        stats = got.decoding
        assert stats is not None and stats["verification"] == "greedy"
        assert 0 < stats["accepted"] < stats["drafted"]  # a hot draft is sometimes wrong
        assert stats["target_calls"] == stats["rounds"] == len(stats["windows"])
        # every round adds its accepted drafts plus one token of the target's
        assert stats["accepted"] + stats["rounds"] >= len(got.choices[0].token_ids)


def test_stop_strings_and_streaming_match_the_target(smollm2: LocalLLM) -> None:
    params = GenerationParams(max_tokens=60, temperature=0.0, stop=(".",))
    spec = SpeculativeLLM(PromptLookupDrafter(), smollm2, FixedWindow(3))
    whole = spec.complete(PROMPT, params)
    chunks = list(spec.stream(PROMPT, params))
    assert "".join(c.text for c in chunks) == whole.text and "." not in whole.text
    assert chunks[-1].finish_reason == "stop" and whole.choices[0].finish_reason == "stop"
    assert smollm2.complete(PROMPT, params).text.startswith(whole.text[:20])


def first_two(spec: SpeculativeLLM, seed: int) -> tuple[int, int]:
    ids = spec.complete(PROMPT, GenerationParams(max_tokens=2, temperature=1.0, seed=seed))
    first, second = ids.choices[0].token_ids[:2]
    return first, second


def chi_square_p(samples: list[int], p: np.ndarray, buckets: int = 6) -> float:
    """p-value of the samples against p, over its most likely tokens plus "the rest"."""
    top = list(np.argsort(-p)[:buckets])
    counts = Counter(t if t in top else -1 for t in samples)
    observed = [counts[t] for t in top] + [counts[-1]]
    expected = np.array([p[t] for t in top] + [1 - sum(p[t] for t in top)]) * len(samples)
    return float(chisquare(observed, expected).pvalue)


@pytest.mark.slow
def test_sampling_preserves_the_targets_distribution(smollm2: LocalLLM) -> None:
    """First token: one speculative round's accept/resample; second token, given the
    most likely first: the accepted-then-next path. Both against the exact p."""
    spec = SpeculativeLLM(FlatDraft(smollm2), smollm2, FixedWindow(2))  # type: ignore[arg-type]
    prompt_ids = smollm2.encode(PROMPT)
    p_first = token_distribution(smollm2.logits(prompt_ids, [])[0], temperature=1.0, top_p=1.0)
    samples = [first_two(spec, seed) for seed in range(600)]
    assert chi_square_p([a for a, _ in samples], p_first) > 0.01
    modal = int(np.argmax(p_first))
    p_second = token_distribution(
        smollm2.logits([*prompt_ids, modal], [])[0], temperature=1.0, top_p=1.0
    )
    after_modal = [b for a, b in samples if a == modal]
    assert len(after_modal) > 100
    assert chi_square_p(after_modal, p_second, buckets=4) > 0.01
    stats = spec.complete(PROMPT, GenerationParams(max_tokens=8, temperature=1.0, seed=1)).decoding
    assert stats is not None and stats["verification"] == "sampling"


@pytest.fixture(scope="module")
def cloud(smollm2: LocalLLM) -> Iterator[OpenAICompatLLM]:
    """SmolLM2 as a cloud target: relaygraph's own server on 127.0.0.1, over HTTP."""
    with BackgroundServer({"smollm2-135m": smollm2}) as server:
        client = OpenAICompatLLM(server.base_url, "smollm2-135m", max_retries=0, timeout_s=30)
        yield client
        client.close()


@pytest.mark.server
def test_remote_verification_over_http_is_lossless(
    smollm2: LocalLLM, cloud: OpenAICompatLLM
) -> None:
    reference = greedy_reference(smollm2, PROMPT, GREEDY)
    link = NetworkLink(rtt_s=0.02, jitter_s=0.002, bandwidth_bps=10e6)
    spec = SpeculativeLLM(HotDraft(smollm2), cloud, FixedWindow(4), link=link)  # type: ignore[arg-type]
    got = spec.complete(PROMPT, GREEDY)
    assert_lossless(got.choices[0].token_ids, reference)
    stats = got.decoding
    assert stats is not None
    assert stats["network_s"] == pytest.approx(0.02 * stats["rounds"], rel=0.3)
    assert stats["verify_s"] > 0 and stats["draft_s"] > 0
    # a remote target gives top-k log-probabilities only: sampling is verified greedily
    hot = spec.complete(PROMPT, GenerationParams(max_tokens=8, temperature=0.8, seed=0))
    assert hot.decoding is not None and hot.decoding["verification"].startswith("greedy (")


@pytest.mark.server
def test_a_cloud_that_goes_away_falls_back_to_the_draft_or_fails_clearly(smollm2: LocalLLM) -> None:
    with BackgroundServer({"smollm2-135m": smollm2}) as server:
        target = OpenAICompatLLM(server.base_url, "smollm2-135m", max_retries=0, timeout_s=5)
        patient = SpeculativeLLM(smollm2, target, FixedWindow(4), on_target_failure="draft")
        strict = SpeculativeLLM(smollm2, target, FixedWindow(4))
    # the server has stopped: every verification is refused
    got = patient.complete(PROMPT, GenerationParams(max_tokens=12))
    assert got.decoding is not None and "the draft finished" in got.decoding["fallback"]
    assert got.text == smollm2.complete(PROMPT, GenerationParams(max_tokens=12)).text
    with pytest.raises(CloudUnavailableError, match="failed mid-request"):
        strict.complete(PROMPT, GenerationParams(max_tokens=12))
    target.close()


def test_a_pair_with_different_tokenizers_is_refused(smollm2: LocalLLM, gemma3: LocalLLM) -> None:
    with pytest.raises(ConfigError, match="tokenize differently"):
        SpeculativeLLM(smollm2, gemma3, FixedWindow(4))


class ZeroWindow:
    name = "zero"
    largest = 4

    def next_window(
        self, rounds: Sequence[Round], earlier: Sequence[Round] = (), proposed: int | None = None
    ) -> int:
        return 0


class RecordingWindow:
    """A fixed window of 3 that keeps what it was shown before each round."""

    name = "recording"
    largest = 3

    def __init__(self) -> None:
        self.shown: list[tuple[int, int]] = []
        self.proposed: list[int | None] = []

    def next_window(
        self, rounds: Sequence[Round], earlier: Sequence[Round] = (), proposed: int | None = None
    ) -> int:
        self.shown.append((len(rounds), len(earlier)))
        self.proposed.append(proposed)
        return 3


def test_an_edge_remembers_its_last_rounds_across_requests(smollm2: LocalLLM) -> None:
    window = RecordingWindow()
    spec = SpeculativeLLM(PromptLookupDrafter(), smollm2, window)
    first = spec.complete(PROMPT, GenerationParams(max_tokens=12))
    assert first.decoding is not None
    assert all(earlier == 0 for _, earlier in window.shown)
    window.shown.clear()
    spec.complete(PROMPT, GenerationParams(max_tokens=12))
    # the new request starts with no rounds of its own and the last ones of the first
    assert window.shown[0] == (0, min(first.decoding["rounds"], EARLIER_ROUNDS))
    # prompt lookup is free: it proposed first, and the policy was told how much
    assert all(isinstance(proposed, int) for proposed in window.proposed)


def test_a_model_draft_proposes_after_the_window_is_chosen(smollm2: LocalLLM) -> None:
    window = RecordingWindow()
    SpeculativeLLM(smollm2, smollm2, window).complete(PROMPT, GenerationParams(max_tokens=8))
    assert window.proposed and all(proposed is None for proposed in window.proposed)


def test_windows_outside_the_context_are_clear_errors(smollm2: LocalLLM) -> None:
    with pytest.raises(ConfigError, match="more than the context window"):
        SpeculativeLLM(smollm2, smollm2, FixedWindow(smollm2.context_window))
    spec = SpeculativeLLM(smollm2, smollm2, ZeroWindow())
    with pytest.raises(ConfigError, match="asked for 0 tokens"):
        spec.complete(PROMPT, GREEDY)
    with pytest.raises(ConfigError, match="n=1"):
        spec.complete(PROMPT, GenerationParams(n=2))


def test_prompt_lookup_copies_what_followed_the_last_ngram() -> None:
    drafter = PromptLookupDrafter(max_ngram=2)
    rng, params = np.random.default_rng(0), GenerationParams()
    # ... 7 8 9 ... 7 8 -> propose what followed "7 8" last time: 9 10
    assert drafter.propose([1, 7, 8, 9, 10, 2, 7, 8], 2, params, rng, frozenset()).ids == [9, 10]
    # the latest earlier occurrence wins; an end id cuts the proposal after it
    seq = [5, 1, 2, 5, 3, 4, 5]
    assert drafter.propose(seq, 3, params, rng, frozenset({4})).ids == [3, 4]
    assert drafter.propose([1, 2, 3], 4, params, rng, frozenset()).ids == []
    with pytest.raises(ConfigError, match="min_ngram"):
        PromptLookupDrafter(max_ngram=1, min_ngram=2)


def test_a_prompt_lookup_draft_is_lossless_and_accepts_copied_text(smollm2: LocalLLM) -> None:
    prompt = COPY_PROMPT
    reference = greedy_reference(smollm2, prompt, GREEDY)
    spec = SpeculativeLLM(PromptLookupDrafter(), smollm2, FixedWindow(6))
    got = spec.complete(prompt, GREEDY)
    assert_lossless(got.choices[0].token_ids, reference)
    assert got.decoding is not None and got.decoding["accepted"] > 0
    sampled = spec.complete(prompt, GenerationParams(max_tokens=16, temperature=0.7, seed=3))
    assert sampled.decoding is not None and sampled.decoding["verification"] == "sampling"


@pytest.mark.server
def test_where_nothing_is_proposed_the_cloud_decodes_the_window_itself(
    smollm2: LocalLLM, cloud: OpenAICompatLLM
) -> None:
    prompt = COPY_PROMPT
    params = GenerationParams(max_tokens=40)
    reference = greedy_reference(smollm2, prompt, params)
    lookup = PromptLookupDrafter(min_ngram=3)
    spec = SpeculativeLLM(lookup, cloud, FixedWindow(3), tokenizer=smollm2)
    got = spec.complete(prompt, params)
    assert_lossless(got.choices[0].token_ids, reference)
    stats = got.decoding
    assert stats is not None and stats["accepted"] > 0  # the copied part was drafted
    rounds = stats["per_round"]
    decoding = [n for n, d in zip(rounds["decoded"], rounds["drafted"], strict=True) if not d]
    assert decoding and all(n > 0 for n in decoding)  # no one-token round trips
    assert all(n == 4 for n in decoding[:-1])  # k + 1 each, the last cut by max_tokens
    # in such a round, where copying could first have resumed: a lookup that the
    # target's own next token confirms
    ids, out, start = smollm2.encode(prompt), got.choices[0].token_ids, 0
    ends, rng = frozenset(smollm2.end_token_ids), np.random.default_rng(0)
    for n, a, at in zip(rounds["decoded"], rounds["accepted"], rounds["resume_at"], strict=True):
        if n:
            standing = [m for m in range(1, n)
                        if lookup.propose([*ids, *out[: start + m]], 1, GREEDY, rng, ends).ids
                        == [out[start + m]]]  # fmt: skip
            assert at == (standing[0] if standing else 0)
        start += n or a + 1
    made = [n or a + 1 for n, a in zip(rounds["decoded"], rounds["accepted"], strict=True)]
    assert sum(made) >= len(got.choices[0].token_ids)


@pytest.mark.server
def test_adaptive_windows_with_prompt_lookup_over_http_are_lossless(
    smollm2: LocalLLM, cloud: OpenAICompatLLM
) -> None:
    prompt = COPY_PROMPT
    params = GenerationParams(max_tokens=40)
    reference = greedy_reference(smollm2, prompt, params)
    window = AdaptiveWindow(k_max=12)
    spec = SpeculativeLLM(PromptLookupDrafter(min_ngram=3), cloud, window, tokenizer=smollm2)
    for _ in range(2):  # the second request starts from the first one's rounds
        got = spec.complete(prompt, params)
        assert_lossless(got.choices[0].token_ids, reference)
        assert got.decoding is not None
        rounds = got.decoding["per_round"]
        assert all(1 <= k <= window.k_max for k in rounds["window"])
        # the policy chose knowing the proposal: a round verifies at most its window
        assert all(d <= k for d, k in zip(rounds["drafted"], rounds["window"], strict=True))
        assert got.decoding["accepted"] > 0


def test_a_graph_step_records_speculative_rounds_in_its_trace(smollm2: LocalLLM) -> None:
    spec = SpeculativeLLM(PromptLookupDrafter(), smollm2, AdaptiveWindow())
    graph = AgentGraph()
    graph.add_agent(Agent(name="echo", model=spec, answer_format="plain", max_tokens=24))
    graph.set_entry("echo").set_finish("echo")
    with graph.compile() as compiled:
        result = compiled.invoke("Repeat exactly: the quick brown fox jumps over the lazy dog.")
    [step] = result.trace.steps
    report = step.decoding.report
    assert isinstance(report, SpeculativeReport) and report.rounds >= 1
    assert report.target == "smollm2-135m" and len(report.per_round.window) == report.rounds
    # On disk the report has the completion's own shape, and it reads back typed.
    direct = spec.complete("Repeat exactly: one two three.", GenerationParams(max_tokens=8))
    assert direct.decoding is not None
    assert step.decoding.model_dump(mode="json")["report"].keys() == direct.decoding.keys()
    assert Trace.model_validate_json(result.trace.model_dump_json()) == result.trace
