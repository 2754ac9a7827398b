"""The embedded engine's scheduler: continuous batching over the sequence slots of one
llama.cpp context.

Requests from any thread join the running batch at the next step and leave when done.
Each step is one forward pass that holds one token of every decoding sequence and, in the
room left under ``chunk_tokens``, chunks of the prompts being prefilled, so one long
prompt never stalls the streams already running (chunked prefill, as vLLM and
llama-server do).

Prefix cache: a slot keeps its KV cache after its request leaves. A new request takes the
free slot whose cache shares the longest token-exact prefix with its prompt, the least
recently used one among equals, so the cache holds the last ``max_batch`` distinct
prefixes within the context's fixed memory (``max_batch`` x ``context_window`` cells) and
evicts the least recently used. Agents' repeated system prompts and growing transcripts
are evaluated once, whether they come in process or over HTTP.

Work waits in a bounded queue (`EngineOverloadedError` when full) and is admitted first
come, first served when enough slots are free; a cancelled request leaves at the next
step. Everything here runs on the engine thread (`relaygraph.llm.engine_thread`) except
`submit` and `Job.cancel`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from relaygraph.errors import EngineOverloadedError, LLMError, RelayGraphError
from relaygraph.llm.engine_thread import ENGINE, EngineThread
from relaygraph.llm.generation import Generation, Step, Vocabulary
from relaygraph.llm.jobs import Job, Request, SchedulerLoad
from relaygraph.llm.llamacpp import DecodeItem, LlamaRuntime
from relaygraph.llm.stops import TextAssembler
from relaygraph.llm.tool_format import ToolCallSplitter

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.llm.grammar import GrammarEngine
    from relaygraph.llm.types import GenerationParams


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True, slots=True)
class _Work:
    """One item of a pass and what its logits rows are for."""

    job: Job
    item: DecodeItem
    apply: Callable[[np.ndarray], None]


class Scheduler:
    """Continuous batching of one model's requests over its context's slots.

    Args:
        runtime: The model and context.
        name: The model name, for errors.
        grammars: This model's grammar compiler (built on first use).
        max_waiting: Requests that may wait for a slot before `submit` refuses more.
        chunk_tokens: Most tokens one forward pass evaluates (decodes first, then prefill
            chunks in the room left).
    """

    def __init__(
        self,
        runtime: LlamaRuntime,
        *,
        name: str,
        grammars: Callable[[], GrammarEngine],
        max_waiting: int = 128,
        chunk_tokens: int = 512,
        engine: EngineThread = ENGINE,
    ) -> None:
        self._runtime = runtime
        self._name = name
        self._grammars = grammars
        self._max_waiting = max_waiting
        self._chunk_tokens = max(chunk_tokens, runtime.n_seq_max + 1)
        self._engine = engine
        self.vocabulary = Vocabulary(runtime)
        slots = runtime.n_seq_max
        self._cached: list[list[int]] = [[] for _ in range(slots)]
        self._owner: list[Job | None] = [None] * slots
        self._last_used = [0] * slots
        self._clock = 0
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._counts = {"prompt": 0, "cached": 0, "passes": 0}
        engine.register(self)

    @property
    def max_batch(self) -> int:
        return self._runtime.n_seq_max

    # -- any thread -------------------------------------------------------------------

    def submit(
        self,
        request: Request,
        params: GenerationParams,
        *,
        samples: range = range(1),
        score_from: int | None = None,
        on_step: Callable[[Job, Step], None] | None = None,
    ) -> Job:
        """Queue a generation (``samples`` of it, at most ``max_batch``) or, with
        ``score_from``, a scoring of ``request``'s tokens.

        ``on_step`` is called on the engine thread with the job and every token's `Step`.

        Raises:
            EngineOverloadedError: The queue is full.
        """
        assert len(samples) <= self.max_batch, "more samples than slots: split the request"
        job = Job(request, params, samples, score_from=score_from, on_step=on_step)
        with self._engine.condition:
            if len(self._waiting) >= self._max_waiting:
                raise EngineOverloadedError(
                    f"{self._name} has {len(self._waiting)} requests waiting "
                    f"(limit {self._max_waiting}); retry later",
                    model=self._name,
                )
            self._waiting.append(job)
        self._engine.wake()
        return job

    def load(self) -> SchedulerLoad:
        return SchedulerLoad(
            waiting=len(self._waiting),
            running=sum(owner is not None for owner in self._owner),
            slots=self.max_batch,
            prompt_tokens=self._counts["prompt"],
            cached_tokens=self._counts["cached"],
            passes=self._counts["passes"],
        )

    # -- engine thread ----------------------------------------------------------------

    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    def clear(self) -> None:
        """Forget the KV cache of every slot no request is using."""
        for slot, owner in enumerate(self._owner):
            if owner is None:
                self._runtime.truncate(slot, 0)
                self._cached[slot] = []

    def step(self) -> None:
        """Release cancelled requests, admit waiting ones, sample a token of every
        evaluated sequence, and run one forward pass."""
        for job in [j for j in self._running if j.stopped]:
            self._finish(job)
        self._admit()
        self._sample()
        self._forward()

    def _admit(self) -> None:
        while True:
            with self._engine.condition:
                if not self._waiting:
                    return
                job = self._waiting[0]
                free = [slot for slot, owner in enumerate(self._owner) if owner is None]
                if not job.stopped and len(free) < job.slots_needed:
                    return  # first come, first served: the head waits for its slots
                self._waiting.popleft()
            if job.stopped:
                job.settle()
                continue
            try:
                self._start(job, free)
            except Exception as exc:  # a grammar that cannot be matched, say
                self._fail(job, exc)

    def _start(self, job: Job, free: list[int]) -> None:
        """Give ``job`` its slots, reusing the longest cached prefix, and its samples."""
        self._clock += 1
        job.queue_s = time.perf_counter() - job.submitted
        tokens = job.tokens
        first = max(
            free, key=lambda s: (common_prefix(self._cached[s], tokens), -self._last_used[s])
        )
        free.remove(first)
        others = sorted(free, key=lambda s: self._last_used[s])[: job.slots_needed - 1]
        job.slots = [first, *others]
        for slot in job.slots:
            self._owner[slot] = job
            self._last_used[slot] = self._clock
        limit = job.prefill_end if job.score_from is None else job.score_from
        keep = min(common_prefix(self._cached[first], tokens), limit)
        if not self._runtime.truncate(first, keep):
            self._runtime.truncate(first, 0)
            keep = 0
        self._cached[first] = tokens[:keep]
        job.position = job.cached_tokens = keep
        self._counts["prompt"] += len(tokens)
        self._counts["cached"] += keep
        if job.score_from is None:
            job.sequences = [
                self._generation(job, index, slot)
                for index, slot in zip(job.samples, job.slots, strict=True)
            ]
        self._running.append(job)

    def _generation(self, job: Job, index: int, slot: int) -> Generation:
        params = job.params
        rng = None
        if params.temperature > 0:
            rng = np.random.default_rng([params.seed, index] if params.seed is not None else None)
        grammar = job.request.grammar
        return Generation(
            index=index,
            prompt_ids=job.tokens,
            params=params,
            rng=rng,
            assembler=TextAssembler(job.request.stop),
            matcher=self._grammars().matcher(grammar) if grammar is not None else None,
            splitter=ToolCallSplitter() if params.calls_tools else None,
            slot=slot,
        )

    def _sample(self) -> None:
        for job in list(self._running):
            try:
                for s in job.sequences:
                    if s.logits is not None and not s.finished:
                        step = s.advance(self._runtime, self.vocabulary, model=self._name)
                        if job.on_step is not None:
                            job.on_step(job, step)
            except Exception as exc:
                self._fail(job, exc)
                continue
            if job.sequences and all(s.finished for s in job.sequences):
                self._finish(job)

    def _forward(self) -> None:
        """One forward pass over the planned work; each request is told what it shared."""
        work = self._plan()
        if not work:
            return
        jobs = {id(w.job): w.job for w in work}.values()
        try:
            rows = self._runtime.decode([w.item for w in work])
        except Exception as exc:
            for job in jobs:
                self._fail(job, exc)
            return
        total = sum(len(w.item.tokens) for w in work)
        own: dict[int, int] = {}
        for w, logits in zip(work, rows, strict=True):
            w.apply(logits)
            own[id(w.job)] = own.get(id(w.job), 0) + len(w.item.tokens)
        for job in jobs:
            job.passes += 1
            job.shared_tokens += total - own[id(job)]
            if job.score_from is not None and job.position == len(job.tokens):
                self._finish(job)
        self._counts["passes"] += 1

    def _plan(self) -> list[_Work]:
        """A token of every decoding sequence, the last prompt token of every request whose
        prompt body is in, then prompt chunks in the room left under ``chunk_tokens``.

        A generation's last prompt token never shares a pass with its own prompt body.
        llama.cpp's CPU kernels for some quantizations (Gemma's Q4_K) are not
        batch-invariant: a row's logits depend slightly on how many rows shared its
        pass. A repeated call reuses the cached body and evaluates only the last token,
        so evaluating it apart on the first call too keeps repeated greedy calls of one
        request at a time bit-identical.
        """
        work: list[_Work] = []
        for job in self._running:
            if job.score_from is not None:
                continue
            if job.position == len(job.tokens):
                work += [self._feed(job, s) for s in job.sequences if self._waits_for_feed(s)]
            elif job.position == job.prefill_end:
                work.append(self._last_prompt_token(job))
        room = self._chunk_tokens - sum(len(w.item.tokens) for w in work)
        for job in self._running:
            if room <= 0:
                break
            if job.position < job.prefill_end:
                chunk = self._prefill_chunk(job, room)
                room -= len(chunk.item.tokens)
                work.append(chunk)
        return work

    @staticmethod
    def _waits_for_feed(s: Generation) -> bool:
        return not s.finished and s.logits is None and bool(s.token_ids)

    def _feed(self, job: Job, s: Generation) -> _Work:
        token = s.token_ids[-1]
        cached = self._cached[s.slot]

        def apply(logits: np.ndarray) -> None:
            cached.append(token)
            s.logits = logits[0]

        return _Work(job, DecodeItem(s.slot, [token], len(cached), 0), apply)

    def _last_prompt_token(self, job: Job) -> _Work:
        leader, *followers = job.sequences
        end = job.prefill_end

        def apply(logits: np.ndarray) -> None:
            self._cached[leader.slot].append(job.tokens[end])
            job.position = len(job.tokens)
            leader.logits = logits[0]
            for s in followers:  # n samples of one prompt share its evaluation
                self._runtime.copy_sequence(leader.slot, s.slot)
                self._cached[s.slot] = list(job.tokens)
                s.logits = logits[0].copy()

        return _Work(job, DecodeItem(leader.slot, job.tokens[end:], end, 0), apply)

    def _prefill_chunk(self, job: Job, room: int) -> _Work:
        start = job.position
        tokens = job.tokens[start : min(job.prefill_end, start + room)]
        slot = job.slots[0]
        wanted_from = len(tokens)  # no logits for a generation's prompt body
        if job.score_from is not None:
            wanted_from = min(max(job.score_from - start, 0), len(tokens))

        def apply(logits: np.ndarray) -> None:
            self._cached[slot].extend(tokens)
            job.position += len(tokens)
            if len(logits):
                job.rows.append(logits)

        return _Work(job, DecodeItem(slot, tokens, start, wanted_from), apply)

    def _release(self, job: Job) -> None:
        self._running.remove(job)
        self._clock += 1
        for slot in job.slots:
            self._owner[slot] = None
            self._last_used[slot] = self._clock

    def _finish(self, job: Job) -> None:
        """Free the job's slots, keeping their caches for later requests."""
        self._release(job)
        job.settle()

    def _fail(self, job: Job, error: BaseException) -> None:
        """Free the job's slots, whose caches are in an unknown state, and fail it."""
        for slot in job.slots:
            self._runtime.truncate(slot, 0)
            self._cached[slot] = []
        if job in self._running:
            self._release(job)
        if not isinstance(error, RelayGraphError):
            error = LLMError(f"{type(error).__name__}: {error}", model=self._name)
        job.settle(error)
