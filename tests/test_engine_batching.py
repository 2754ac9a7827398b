"""The embedded engine's continuous batching on the real models: requests join and leave
the running batch, long prompts are prefilled in chunks beside running decodes, the
prefix cache works across calls, and cancelled or timed-out requests free their slots."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from relaygraph.errors import EngineOverloadedError
from relaygraph.llm import GenerationParams, LocalLLM
from relaygraph.llm.catalog import packaged_model

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(max_tokens=24)
PROMPTS = [
    f"Q: Name {n} things that are {color}.\nA:"
    for n, color in enumerate(
        ["red", "blue", "green", "yellow", "white", "black", "small", "round"] * 2
    )
]


def settle(llm: LocalLLM, timeout_s: float = 5.0) -> None:
    """Wait until the engine holds no request (the last step after a cancel)."""
    deadline = time.monotonic() + timeout_s
    while llm.engine_load().running or llm.engine_load().waiting:
        assert time.monotonic() < deadline, llm.engine_load()
        time.sleep(0.01)


def test_sixteen_interleaved_streams_match_one_at_a_time(smollm2: LocalLLM) -> None:
    # From a clean cache: KV that earlier tests computed for a shared prefix (the chat
    # template's system turn) in passes of another size can differ in the last bits, and
    # a near tie then flips (see docs/guides/server.md, "Under load").
    smollm2.clear_cache()
    alone = [smollm2.complete(p, GREEDY).text for p in PROMPTS]

    def streamed(prompt: str) -> str:
        return "".join(chunk.text for chunk in smollm2.stream(prompt, GREEDY))

    with ThreadPoolExecutor(max_workers=len(PROMPTS)) as pool:
        together = list(pool.map(streamed, PROMPTS))
    assert together == alone


def test_a_request_joins_a_running_batch_and_leaves_before_it_ends(smollm2: LocalLLM) -> None:
    long_params = GenerationParams(max_tokens=200)
    stream = smollm2.stream(PROMPTS[0], long_params)
    first = next(iter(stream))
    assert first.text is not None
    short = smollm2.complete(PROMPTS[1], GenerationParams(max_tokens=8))
    assert short.text == smollm2.complete(PROMPTS[1], GenerationParams(max_tokens=8)).text
    assert short.load is not None and short.load.shared_tokens > 0  # it shared passes
    rest = list(stream)  # the long stream was still running when the short one finished
    assert rest and rest[-1].finish_reason is not None
    whole = first.text + "".join(c.text for c in rest)
    assert whole == smollm2.complete(PROMPTS[0], long_params).text


def test_a_long_prompt_is_prefilled_in_chunks_beside_running_decodes(smollm2: LocalLLM) -> None:
    long_prompt = "Notes: " + " ".join(f"item {i} is filed." for i in range(220)) + "\nQ: Sum?\nA:"
    assert smollm2.count_tokens(long_prompt) > 1_500
    stream = smollm2.stream(PROMPTS[2], GenerationParams(max_tokens=120))
    next(iter(stream))
    smollm2.clear_cache()  # nothing of the long prompt is cached
    result = smollm2.complete(long_prompt, GenerationParams(max_tokens=4))
    chunks = list(stream)
    assert result.load is not None and result.load.passes >= 4  # >= 3 prefill chunks + last token
    final = chunks[-1].load
    # The running stream took part in the prefill passes: their prompt tokens shared its passes.
    assert final is not None and final.shared_tokens >= 1_000


def test_the_prefix_cache_is_reused_across_calls(smollm2: LocalLLM) -> None:
    system = "You are a careful assistant. " * 40
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi!"}]
    smollm2.clear_cache()
    first = smollm2.complete(messages, GREEDY)
    second = smollm2.complete(messages, GREEDY)
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == second.usage.prompt_tokens - 1
    assert second.text == first.text
    followup = [
        *messages,
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And then?"},
    ]
    third = smollm2.complete(followup, GREEDY)
    assert third.usage.cached_tokens >= smollm2.count_tokens(messages) - 2


def test_closing_a_stream_frees_its_slot_within_a_step(smollm2: LocalLLM) -> None:
    stream = smollm2.stream(PROMPTS[3], GenerationParams(max_tokens=500))
    next(iter(stream))
    assert smollm2.engine_load().running == 1
    stream.close()  # type: ignore[attr-defined]
    assert smollm2.engine_load().running == 0  # close() returns once the slot is free


def test_a_cancelled_async_call_frees_its_slot(smollm2: LocalLLM) -> None:
    async def timed_out() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                smollm2.acomplete(PROMPTS[4], GenerationParams(max_tokens=500)), 0.3
            )

    began = time.monotonic()
    asyncio.run(timed_out())
    settle(smollm2)
    assert time.monotonic() - began < 3  # not the 500 tokens' several seconds


def test_a_full_queue_is_refused_clearly() -> None:
    llm = LocalLLM(
        packaged_model("smollm2-135m").locate(),
        name="smollm2-q1",
        max_batch=1,
        max_waiting=1,
        context_window=512,
    )
    holding = llm.stream(PROMPTS[5], GenerationParams(max_tokens=400))
    next(iter(holding))  # the only slot is taken
    queued = threading.Thread(
        target=llm.complete, args=(PROMPTS[6], GenerationParams(max_tokens=2))
    )
    queued.start()
    deadline = time.monotonic() + 5
    while llm.engine_load().waiting == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(EngineOverloadedError, match="limit 1"):
        llm.complete(PROMPTS[7], GenerationParams(max_tokens=2))
    holding.close()  # type: ignore[attr-defined]
    queued.join(timeout=30)
    assert not queued.is_alive()


def test_n_samples_beside_other_requests(smollm2: LocalLLM) -> None:
    sampled = GenerationParams(max_tokens=12, n=3, temperature=0.8, seed=3)
    alone = smollm2.complete(PROMPTS[8], sampled)
    with ThreadPoolExecutor(max_workers=3) as pool:
        busy = [pool.submit(smollm2.complete, p, GREEDY) for p in PROMPTS[9:11]]
        together = smollm2.complete(PROMPTS[8], sampled)
        for f in busy:
            f.result()
    assert [c.text for c in together.choices] == [c.text for c in alone.choices]


def test_scoring_joins_the_batch_and_agrees_with_scoring_alone(smollm2: LocalLLM) -> None:
    alone = smollm2.score(PROMPTS[11], " one two three")
    stream = smollm2.stream(PROMPTS[12], GenerationParams(max_tokens=60))
    next(iter(stream))
    together = smollm2.score(PROMPTS[11], " one two three")
    list(stream)
    assert together.load is not None and together.load.shared_tokens > 0
    assert [t.logprob for t in together.tokens] == pytest.approx(
        [t.logprob for t in alone.tokens], abs=1e-4
    )


def test_gemma_batched_greedy_text_is_within_the_documented_tolerance(gemma3: LocalLLM) -> None:
    """Gemma 3's Q4_K kernels are not batch-invariant, so a batched greedy decode may
    diverge from one at a time after a near tie; most replies still agree."""
    prompts = PROMPTS[:8]
    params = GenerationParams(max_tokens=16)
    alone = [gemma3.complete(p, params).text for p in prompts]
    together = [c.text for c in gemma3.complete_batch(prompts, params)]
    agree = sum(a == b for a, b in zip(alone, together, strict=True))
    assert agree >= 6, (alone, together)


def test_chunk_tokens_sets_how_much_prompt_one_pass_takes() -> None:
    from relaygraph.errors import ConfigError
    from relaygraph.llm.registry import EngineOptions, load_llm
    from relaygraph.serving.config import LLMEntry

    prompt = "The lighthouse keeper counted the ships that passed. " * 30
    params = GenerationParams(max_tokens=1)
    passes = {}
    for chunk in (64, 512):
        llm = LocalLLM(
            packaged_model("smollm2-135m").locate(),
            name=f"smollm2-chunk{chunk}",
            max_batch=2,
            context_window=1024,
            chunk_tokens=chunk,
        )
        out = llm.complete(prompt, params)
        assert out.load is not None
        passes[chunk] = out.load.passes
        prompt_tokens = out.usage.prompt_tokens
    assert passes[512] == 2  # the body in one pass, the last prompt token apart
    assert passes[64] == 1 + -(-(prompt_tokens - 1) // 64)
    with pytest.raises(ConfigError, match="chunk_tokens"):
        LocalLLM(packaged_model("smollm2-135m").locate(), name="x", max_batch=8, chunk_tokens=8)
    entry = LLMEntry(llm="smollm2-135m", chunk_tokens=128)
    assert entry.engine() == EngineOptions(chunk_tokens=128)
    configured = load_llm("smollm2-135m", engine=EngineOptions(slots=2, chunk_tokens=128))
    assert configured is not load_llm("smollm2-135m", engine=EngineOptions(slots=2))
    assert configured.complete(prompt, params).load.passes == 1 + -(-(prompt_tokens - 1) // 128)  # type: ignore[union-attr]
