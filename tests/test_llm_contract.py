"""The `LLM` contract: every backend passes the same tests, on real models.

Backends: SmolLM2 and Gemma 3 embedded (llama.cpp); SmolLM2 behind relaygraph's own
OpenAI-compatible server through `OpenAICompatLLM` (the path a vLLM worker takes) and
through a `WorkerPool` of two such workers; and `SpeculativeLLM` with a prompt-lookup
draft verified by SmolLM2 in process (lossless, so it owes the target's own answers).
`ScriptedLLM`, which has no distribution, keeps the part of the contract it can and
refuses the rest clearly (the last tests).

Gemma 3's Q4_K kernels in llama.cpp are not batch-invariant (a row's logits move by up
to ~0.15 nats with the batch it was computed in), so comparisons between a batched
evaluation and a token-by-token one use a tolerance for it; SmolLM2's Q4_1 is exact.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest

from relaygraph.decoding import FixedWindow, PromptLookupDrafter, SpeculativeLLM
from relaygraph.errors import ConfigError, ContextWindowError, LLMError, RequestRejectedError
from relaygraph.llm import LLM, GenerationParams, LocalLLM, Message, OpenAICompatLLM, TextPrompt
from relaygraph.llm.pool import WorkerPool
from relaygraph.llm.scripted import ScriptedLLM

pytestmark = pytest.mark.slow

BACKENDS = [
    "smollm2",
    "gemma3",
    pytest.param("remote_smollm2", marks=pytest.mark.server),
    pytest.param("pool_smollm2", marks=pytest.mark.server),
    "speculative_smollm2",
]
LOGPROB_TOLERANCE = {
    "smollm2": 1e-4,
    "gemma3": 0.25,
    "remote_smollm2": 1e-4,
    "pool_smollm2": 1e-4,
    "speculative_smollm2": 1e-4,
}
REFUSED = {"speculative_smollm2": {"logprobs", "n"}}
"""What a backend refuses by design, with a ConfigError naming the parameter: speculative
decoding makes one answer, and its tokens come from two models' rounds."""
PROMPT = "Q: What is the capital of France?\nA:"
CHAT = [Message(role="user", content="Name a large animal.")]


@pytest.fixture(scope="module")
def pool_smollm2(remote_smollm2: OpenAICompatLLM) -> Iterator[WorkerPool]:
    second = OpenAICompatLLM(remote_smollm2.base_url, "smollm2-135m", max_retries=0)
    pool = WorkerPool([remote_smollm2, second])
    yield pool
    second.close()


@pytest.fixture(scope="module")
def speculative_smollm2(smollm2: LocalLLM) -> SpeculativeLLM:
    return SpeculativeLLM(PromptLookupDrafter(), smollm2, FixedWindow(4), tokenizer=smollm2)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, LLM]:
    return request.param, request.getfixturevalue(request.param)


@pytest.fixture
def llm(backend: tuple[str, LLM]) -> LLM:
    return backend[1]


def refused(backend: tuple[str, LLM], parameter: str, params: GenerationParams) -> bool:
    """Whether the backend refuses ``parameter`` by design; if so, it did, clearly."""
    name, llm = backend
    if parameter not in REFUSED.get(name, set()):
        return False
    with pytest.raises(ConfigError) as info:
        llm.complete(PROMPT, params)
    assert info.value.parameter == parameter
    return True


def test_satisfies_the_protocol(llm: LLM) -> None:
    assert isinstance(llm, LLM)
    assert llm.context_window >= 512
    assert llm.name


def test_greedy_completion_is_deterministic(llm: LLM) -> None:
    params = GenerationParams(max_tokens=12)
    first = llm.complete(PROMPT, params)
    again = llm.complete(PROMPT, params)
    assert first.text == again.text
    assert first.choice.token_ids == again.choice.token_ids
    assert first.text.strip()


def test_chat_prompt_gets_an_answer(llm: LLM) -> None:
    completion = llm.complete(CHAT, GenerationParams(max_tokens=24))
    assert completion.text.strip()
    assert completion.usage.prompt_tokens == llm.count_tokens(CHAT)


def test_max_tokens_is_respected(llm: LLM) -> None:
    completion = llm.complete("1, 2, 3, 4, 5,", GenerationParams(max_tokens=5))
    assert completion.choice.finish_reason == "length"
    assert len(completion.choice.token_ids) == 5
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens == llm.count_tokens("1, 2, 3, 4, 5,")


def test_stop_string_ends_the_text_before_it(llm: LLM) -> None:
    free = llm.complete("1, 2, 3, 4, 5,", GenerationParams(max_tokens=12)).text
    stop = free[4:6]
    assert stop.strip(), f"unexpected continuation {free!r}"
    stopped = llm.complete("1, 2, 3, 4, 5,", GenerationParams(max_tokens=12, stop=(stop,)))
    assert stopped.choice.finish_reason == "stop"
    assert stopped.text == free[: free.index(stop)]


def test_logprobs_come_from_the_model_distribution(backend: tuple[str, LLM]) -> None:
    _, llm = backend
    params = GenerationParams(max_tokens=6, logprobs=True, top_logprobs=3)
    if refused(backend, "logprobs", params):
        return
    completion = llm.complete(PROMPT, params)
    logprobs = completion.choice.logprobs
    assert logprobs is not None and len(logprobs) == len(completion.choice.token_ids)
    for token, entry in zip(completion.choice.token_ids, logprobs, strict=True):
        assert entry.token_id == token
        assert entry.logprob <= 0.0
        assert len(entry.top) == 3
        assert [a.logprob for a in entry.top] == sorted(
            (a.logprob for a in entry.top), reverse=True
        )
        # Greedy picks the most likely token, so it heads the alternatives.
        assert entry.top[0].token_id == token
        assert math.isclose(entry.top[0].logprob, entry.logprob, abs_tol=1e-9)
        assert sum(math.exp(a.logprob) for a in entry.top) <= 1.0 + 1e-6


def test_score_agrees_with_generation(backend: tuple[str, LLM]) -> None:
    name, llm = backend
    params = GenerationParams(max_tokens=6, logprobs=True, top_logprobs=2)
    if refused(backend, "logprobs", params):
        return
    completion = llm.complete(PROMPT, params)
    ids = completion.choice.token_ids
    score = llm.score(PROMPT, ids[:5], top_logprobs=2)
    assert [t.token_id for t in score.tokens] == ids[:5]
    assert score.prompt_tokens == llm.count_tokens(PROMPT)
    generated = completion.choice.logprobs or []
    for scored, sampled in zip(score.tokens, generated, strict=False):
        assert scored.logprob == pytest.approx(sampled.logprob, abs=LOGPROB_TOLERANCE[name])
    # The distribution after the continuation ranks the sixth greedy token at the top, up
    # to the backend's numerical tolerance (Gemma's scoring pass batches differently).
    assert len(score.next_top) == 2
    sixth = {t.token_id: t.logprob for t in score.next_top}
    assert ids[5] in sixth
    assert score.next_top[0].logprob - sixth[ids[5]] <= LOGPROB_TOLERANCE[name]


def test_score_of_text_continuation(llm: LLM) -> None:
    likely = llm.score("The capital of France is", " Paris")
    unlikely = llm.score("The capital of France is", " cucumber")
    assert likely.total_logprob > unlikely.total_logprob


def test_stream_matches_complete(llm: LLM) -> None:
    params = GenerationParams(max_tokens=16)
    chunks = list(llm.stream(CHAT, params))
    assert "".join(c.text for c in chunks) == llm.complete(CHAT, params).text
    assert chunks[-1].finish_reason in {"stop", "length"}
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == sum(len(c.token_ids) for c in chunks)


def test_closing_a_stream_early_frees_the_engine(llm: LLM) -> None:
    stream = llm.stream(PROMPT, GenerationParams(max_tokens=64))
    next(iter(stream))
    stream.close()  # type: ignore[attr-defined]
    assert llm.complete(PROMPT, GenerationParams(max_tokens=3)).usage.completion_tokens == 3


def test_seeded_sampling_is_reproducible(llm: LLM) -> None:
    params = GenerationParams(max_tokens=16, temperature=1.0, seed=123)
    assert llm.complete(CHAT, params).text == llm.complete(CHAT, params).text
    samples = {llm.complete(CHAT, params.model_copy(update={"seed": s})).text for s in range(4)}
    assert len(samples) > 1


def test_n_samples(backend: tuple[str, LLM]) -> None:
    _, llm = backend
    params = GenerationParams(max_tokens=8, n=3, temperature=1.0, seed=5)
    if refused(backend, "n", params):
        return
    completion = llm.complete(CHAT, params)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.usage.completion_tokens == sum(len(c.token_ids) for c in completion.choices)


def test_batch_matches_single_calls(backend: tuple[str, LLM]) -> None:
    name, llm = backend
    prompts = ["Q: Capital of Italy?\nA:", "Q: Capital of Spain?\nA:", "Q: 2 + 2 =\nA:"]
    params = GenerationParams(max_tokens=8)
    batched = llm.complete_batch(prompts, params)
    assert len(batched) == 3
    assert all(c.text.strip() for c in batched)
    if name != "gemma3":  # see the module docstring
        assert [c.text for c in batched] == [llm.complete(p, params).text for p in prompts]


def test_prompt_beyond_the_context_window_is_refused(llm: LLM) -> None:
    long_prompt = "word " * (llm.context_window + 10)
    with pytest.raises((ContextWindowError, RequestRejectedError)) as info:
        llm.complete(long_prompt, GenerationParams(max_tokens=4))
    assert "context" in str(info.value)


def test_max_tokens_beyond_the_window_is_refused(llm: LLM) -> None:
    with pytest.raises((ContextWindowError, RequestRejectedError)):
        llm.complete(PROMPT, GenerationParams(max_tokens=llm.context_window))


def test_empty_prompt_is_refused(llm: LLM) -> None:
    with pytest.raises(ConfigError, match="empty"):
        llm.complete("", GenerationParams(max_tokens=4))


def test_tokenize_round_trip(llm: LLM) -> None:
    text = "Speculative decoding, café ☕"
    ids = llm.tokenize(text)
    assert ids and llm.detokenize(ids) == text
    assert llm.count_tokens([*ids]) == len(ids)


def test_the_end_of_turn_token_is_the_one_a_reply_stops_on(
    smollm2: LocalLLM, gemma3: LocalLLM
) -> None:
    """SmolLM2's chat template closes a reply with <|im_end|>; Gemma 3 runs the plain
    format (it stops on text), so its end of turn is the GGUF's end-of-text token."""
    assert smollm2.encode(TextPrompt(text="<|im_end|>")) == [smollm2.end_of_turn_id]
    assert gemma3.end_of_turn_id == gemma3.encode(TextPrompt(text="<eos>"))[-1]
    for model in (smollm2, gemma3):
        assert model.end_of_turn_id in model.end_token_ids


def test_async_face(llm: LLM) -> None:
    params = GenerationParams(max_tokens=8)

    async def run() -> tuple[str, str, float]:
        completion = await llm.acomplete(PROMPT, params)
        streamed = "".join([c.text async for c in llm.astream(PROMPT, params)])
        score = await llm.ascore(PROMPT, " Paris")
        close = getattr(llm, "aclose", None)
        if close is not None:  # network clients: close connections before the loop ends
            await close()
        return completion.text, streamed, score.total_logprob

    text, streamed, logprob = asyncio.run(run())
    assert text == streamed == llm.complete(PROMPT, params).text
    assert logprob < 0


def test_concurrent_callers_share_one_engine_safely(smollm2: LLM) -> None:
    """Threads calling one engine get exactly what they would get one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = [f"Q: What is {n} + {n}?\nA:" for n in range(6)]
    params = GenerationParams(max_tokens=6)
    alone = [smollm2.complete(p, params).text for p in prompts]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(lambda p: smollm2.complete(p, params).text, prompts))
    assert together == alone


# -- ScriptedLLM: the contract without a distribution ------------------------------------


def scripted() -> ScriptedLLM:
    return ScriptedLLM(lambda prompt: "Paris, the capital.")


def test_a_scripted_model_generates_streams_and_tokenizes_like_the_others() -> None:
    llm = scripted()
    assert isinstance(llm, LLM) and llm.context_window >= 512
    params = GenerationParams(max_tokens=2)
    completion = llm.complete(PROMPT, params)
    assert completion.choice.finish_reason == "length" and len(completion.choice.token_ids) == 2
    assert completion.usage.prompt_tokens == llm.count_tokens(PROMPT)
    chunks = list(llm.stream(PROMPT, params))
    assert "".join(c.text for c in chunks) == completion.text
    stopped = llm.complete(PROMPT, GenerationParams(max_tokens=12, stop=(",",)))
    assert stopped.text == "Paris" and stopped.choice.finish_reason == "stop"
    text = "Speculative decoding, café ☕"
    assert llm.detokenize(llm.tokenize(text)) == text
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        llm.detokenize([10**6])


def test_a_scripted_model_refuses_to_score_rather_than_invent_a_distribution() -> None:
    with pytest.raises(LLMError, match="no token distribution"):
        scripted().score(PROMPT, " Paris")
