"""The embedded engine's scheduler: requests become generations in the sequence slots of
one llama.cpp context, prefilled reusing the longest cached prefix, and decoded together,
one token per step, each under its own sampler, grammar and stop strings.

A slot keeps its KV cache between calls, so an agent that extends the same conversation
only evaluates the new tokens. Several prompts, or ``n`` samples of one prompt, decode
together in one batch per step.

All evaluation runs on one engine thread shared by every model in the process
(`on_engine`). Callers on any thread submit work to it and wait (a stream receives its
chunks through a queue). Besides serialising access to the contexts, this matters for
speed: llama.cpp's CPU backend is built with OpenMP, which gives every calling OS thread
its own team of worker threads, and an idle team keeps spinning on the cores the active
one needs. Decoding from several threads in turn halved throughput with four concurrent
streams on two cores (benchmarks/serving.py); one thread keeps the single-stream rate.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from relaygraph.errors import LLMError
from relaygraph.llm.llamacpp import DecodeItem, LlamaRuntime
from relaygraph.llm.sampling import log_softmax, select_token, top_k_indices
from relaygraph.llm.stops import TextAssembler
from relaygraph.llm.tool_format import ToolCallSplitter
from relaygraph.llm.types import (
    CompletionChunk,
    FinishReason,
    GenerationParams,
    TokenLogprob,
    TopLogprob,
    Usage,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator, Sequence

    from relaygraph.llm.constraints import ToolCall
    from relaygraph.llm.grammar import GrammarEngine, TokenMatcher

T = TypeVar("T")

ENGINE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relaygraph-engine")
"""The one thread every embedded model's evaluation runs on."""


def on_engine(work: Callable[[], T]) -> T:
    """Run ``work`` on the engine thread and return its result (or raise its error).

    Work submitted from the engine thread itself runs inline: waiting on the queue
    from the only thread that drains it would never return.
    """
    if threading.current_thread().name.startswith("relaygraph-engine"):
        return work()
    return ENGINE.submit(work).result()


@dataclass(frozen=True, slots=True)
class Request:
    """An encoded prompt, the stop strings that apply to it, and its grammar (if any)."""

    prompt_ids: list[int]
    stop: tuple[str, ...]
    grammar: str | None = None


@dataclass(slots=True)
class Generation:
    """One completion being generated in a slot (engine-internal state)."""

    request: int
    index: int
    prompt_ids: list[int]
    params: GenerationParams
    rng: np.random.Generator | None
    assembler: TextAssembler
    matcher: TokenMatcher | None = None
    splitter: ToolCallSplitter | None = None
    slot: int = -1
    logits: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """What one decoding step produced for one sequence.

    ``text`` is the reply's content that became safe to show; ``tool_calls`` the calls
    that this step completed (with tools, call text is never content).
    """

    sequence: Generation
    token_id: int
    text: str
    logprob: TokenLogprob | None
    tool_calls: list[ToolCall] = field(default_factory=list)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler:
    """Generations of one model in its context's slots; call it on the engine thread
    (`on_engine`), except `stream`, which hands its work to the engine itself."""

    def __init__(
        self, runtime: LlamaRuntime, *, name: str, grammars: Callable[[], GrammarEngine]
    ) -> None:
        self._runtime = runtime
        self._name = name
        self._grammars = grammars
        self._cached: list[list[int]] = [[] for _ in range(runtime.n_seq_max)]

    @property
    def max_batch(self) -> int:
        return self._runtime.n_seq_max

    def clear(self) -> None:
        """Forget every slot's KV cache."""
        for slot in range(self.max_batch):
            self._runtime.truncate(slot, 0)
            self._cached[slot] = []

    def generate(self, wave: list[Request], params: GenerationParams) -> list[Generation]:
        """Decode a wave to the end (engine thread); more samples than slots go in rounds."""
        sequences: list[Generation] = []
        for first in range(0, params.n, self.max_batch):
            samples = range(first, min(params.n, first + self.max_batch))
            batch = self._new_generations(wave, params, samples)
            for _ in self._run(batch):
                pass
            sequences.extend(batch)
        return sequences

    def stream(self, request: Request, params: GenerationParams) -> Iterator[CompletionChunk]:
        """Chunks produced on the engine thread, handed over a queue.

        Closing this iterator asks the engine to stop after the current step and waits for
        it, so the engine is free again when ``close()`` returns.
        """
        chunks: queue.SimpleQueue[CompletionChunk | BaseException | None] = queue.SimpleQueue()
        stop = threading.Event()
        n_prompt = len(request.prompt_ids)

        def produce() -> None:
            try:
                (sequence,) = self._new_generations([request], params, range(1))
                with closing(self._run([sequence])) as steps_iter:
                    for steps in steps_iter:
                        if stop.is_set():
                            return
                        step = steps[0]
                        finished = sequence.finish_reason is not None
                        done = len(sequence.token_ids)
                        chunks.put(
                            CompletionChunk(
                                model=self._name,
                                text=step.text,
                                token_ids=[step.token_id],
                                logprobs=[step.logprob] if step.logprob else None,
                                tool_calls=step.tool_calls or None,
                                finish_reason=sequence.finish_reason,
                                usage=Usage(prompt_tokens=n_prompt, completion_tokens=done)
                                if finished
                                else None,
                            )
                        )
            except BaseException as exc:
                chunks.put(exc)
            finally:
                chunks.put(None)

        job = ENGINE.submit(produce)
        try:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            job.result()

    def _new_generations(
        self, requests: list[Request], params: GenerationParams, samples: range
    ) -> list[Generation]:
        sequences: list[Generation] = []
        for number, request in enumerate(requests):
            for index in samples:
                rng = None
                if params.temperature > 0:
                    seed = [params.seed, index] if params.seed is not None else None
                    rng = np.random.default_rng(seed)
                sequences.append(
                    Generation(
                        request=number,
                        index=index,
                        prompt_ids=request.prompt_ids,
                        params=params,
                        rng=rng,
                        assembler=TextAssembler(request.stop),
                        matcher=self._grammars().matcher(request.grammar)
                        if request.grammar is not None
                        else None,
                        splitter=ToolCallSplitter() if params.calls_tools else None,
                    )
                )
        return sequences

    def _assign_slots(self, leaders: list[Generation], followers: list[Generation]) -> None:
        """Give each prompt the free slot whose cache shares the longest prefix with it.

        Ties go to the slot with the shortest cache, which is the least to lose.
        """
        free = set(range(self.max_batch))
        for s in leaders:
            s.slot = max(
                sorted(free),
                key=lambda i: (
                    common_prefix(self._cached[i], s.prompt_ids),
                    -len(self._cached[i]),
                ),
            )
            free.remove(s.slot)
        for s in followers:
            s.slot = min(free, key=lambda i: len(self._cached[i]))
            free.remove(s.slot)

    def _prefill(self, sequences: list[Generation]) -> None:
        """Evaluate each distinct prompt once, reusing cached prefixes; copy it to its samples.

        The last prompt token is always evaluated in a pass of its own. llama.cpp's CPU
        kernels for some quantizations (Gemma's Q4_K) are not batch-invariant: a row's
        logits depend slightly on how many rows shared its batch. A repeated call reuses
        the cached prefix and evaluates only the last token, so evaluating it alone on
        the first call too makes repeated greedy calls bit-identical.
        """
        rt = self._runtime
        leaders: dict[int, Generation] = {}
        for s in sequences:
            leaders.setdefault(s.request, s)
        self._assign_slots(
            list(leaders.values()), [s for s in sequences if leaders[s.request] is not s]
        )
        body: list[DecodeItem] = []
        last: list[DecodeItem] = []
        for s in leaders.values():
            keep = min(common_prefix(self._cached[s.slot], s.prompt_ids), len(s.prompt_ids) - 1)
            if not rt.truncate(s.slot, keep):
                rt.truncate(s.slot, 0)
                keep = 0
            self._cached[s.slot] = s.prompt_ids[:keep]
            end = len(s.prompt_ids) - 1
            if keep < end:
                body.append(
                    DecodeItem(s.slot, s.prompt_ids[keep:end], keep, logits_from=end - keep)
                )
            last.append(DecodeItem(s.slot, s.prompt_ids[end:], end, logits_from=0))
        if body:
            rt.decode(body)
        for leader, logits in zip(leaders.values(), rt.decode(last), strict=True):
            leader.logits = logits[-1]
            self._cached[leader.slot] = list(leader.prompt_ids)
        for s in sequences:
            leader = leaders[s.request]
            if s is not leader:
                rt.copy_sequence(leader.slot, s.slot)
                self._cached[s.slot] = list(s.prompt_ids)
                s.logits = leader.logits

    def _run(self, sequences: list[Generation]) -> Generator[list[Step]]:
        """Decode all sequences step by step; yields what each active sequence produced."""
        rt = self._runtime
        try:
            self._prefill(sequences)
            while True:
                active = [s for s in sequences if s.finish_reason is None]
                if not active:
                    return
                steps = [self._advance(s) for s in active]
                feed = [
                    DecodeItem(s.slot, [s.token_ids[-1]], len(self._cached[s.slot]), 0)
                    for s in active
                    if s.finish_reason is None
                ]
                yield steps
                if feed:
                    for item, logits in zip(feed, rt.decode(feed), strict=True):
                        self._cached[item.seq_id].append(item.tokens[0])
                        next(s for s in active if s.slot == item.seq_id).logits = logits[0]
        except Exception:
            # A failed decode leaves these slots' caches in an unknown state.
            for s in sequences:
                self._cached[s.slot] = []
                rt.truncate(s.slot, 0)
            raise

    def _advance(self, s: Generation) -> Step:
        """Choose, record and account one token of ``s``.

        With a grammar, the token is chosen from the masked logits, while the reported
        log-probabilities stay those of the model's own, unmasked distribution (what an
        uncertainty estimate must see). A finished grammar ends the sequence ("stop");
        the token budget running out first ends it with "length".
        """
        params = s.params
        logits = s.logits if s.matcher is None else s.matcher.mask(s.logits)
        token = select_token(logits, temperature=params.temperature, top_p=params.top_p, rng=s.rng)
        logprob = self._logprob(s.logits, token, params.top_logprobs) if params.logprobs else None
        s.token_ids.append(token)
        if logprob is not None:
            s.logprobs.append(logprob)
        if s.matcher is not None:
            try:
                s.matcher.advance(token)
            except RuntimeError as exc:  # an all-forbidden row: the grammar cannot go on
                raise LLMError(str(exc), model=self._name) from None
        if self._runtime.is_end_of_generation(token):
            text = s.assembler.finish()
            s.finish_reason = "stop"
        else:
            text = s.assembler.feed(self._runtime.piece(token))
            if s.assembler.stopped or (s.matcher is not None and s.matcher.complete):
                text += s.assembler.finish()
                s.finish_reason = "stop"
            elif len(s.token_ids) >= params.max_tokens:
                text += s.assembler.finish()
                s.finish_reason = "length"
        calls: list[ToolCall] = []
        if s.splitter is not None:
            text, calls = s.splitter.feed(text)
            if s.finish_reason is not None:
                rest, more = s.splitter.finish()
                text, calls = text + rest, calls + more
                if s.splitter.calls and s.finish_reason == "stop":
                    s.finish_reason = "tool_calls"
        return Step(sequence=s, token_id=token, text=text, logprob=logprob, tool_calls=calls)

    def _logprob(self, logits: np.ndarray, token: int, top: int) -> TokenLogprob:
        return self.token_logprob(log_softmax(logits), token, top)

    def token_logprob(self, lsm: np.ndarray, token: int, top: int) -> TokenLogprob:
        return TokenLogprob(
            token_id=token,
            token=self.token_str(token),
            logprob=float(lsm[token]),
            rank=1 + int(np.count_nonzero(lsm > lsm[token])),
            top=self.top(lsm, top),
        )

    def top(self, lsm: np.ndarray, k: int) -> list[TopLogprob]:
        return [
            TopLogprob(token_id=int(i), token=self.token_str(int(i)), logprob=float(lsm[i]))
            for i in top_k_indices(lsm, k)
        ]

    def score_rows(self, full: list[int], n_prompt: int) -> np.ndarray:
        """Logits at positions n_prompt-1 .. len(full)-1 (engine thread); reuses a cached prefix."""
        rt = self._runtime
        slot = max(range(self.max_batch), key=lambda i: common_prefix(self._cached[i], full))
        keep = min(common_prefix(self._cached[slot], full), n_prompt - 1)
        if not rt.truncate(slot, keep):
            rt.truncate(slot, 0)
            keep = 0
        self._cached[slot] = []
        (rows,) = rt.decode([DecodeItem(slot, full[keep:], keep, n_prompt - 1 - keep)])
        self._cached[slot] = full
        return rows

    def token_str(self, token_id: int) -> str:
        piece = self._runtime.piece(token_id)
        if piece:
            return piece.decode("utf-8", errors="replace")
        return self._runtime.token_text(token_id)
