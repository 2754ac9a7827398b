"""`WorkerPool`: one model served by several workers, balanced by load, sticky per
conversation, with failover and passive health.

A call goes to the healthy worker with the fewest requests outstanding from this pool
(ties in rotation), except that a conversation stays on the worker that served it last,
whose prefix cache holds its transcript, while that worker has at most
``max_imbalance`` more requests outstanding than the least loaded one. A conversation is
known by its opening (the chat's first two messages, or a text prompt's first characters),
which every later turn repeats.

A worker that fails with a transport error (refused connection, timeout, 5xx, 429) is
marked down for ``cooldown_s`` and the call moves to the next worker; a request error
(4xx) is the caller's fault and is raised at once. When every worker is down the pool
tries them all anyway (a worker may have come back) and raises the last error. A stream
fails over only before its first chunk: after that, text already reached the caller.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from relaygraph.errors import ConfigError, TransportError
from relaygraph.llm.protocol import BaseLLM
from relaygraph.llm.types import ChatPrompt, TextPrompt, to_prompt

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator, Sequence

    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import (
        Completion,
        CompletionChunk,
        GenerationParams,
        Prompt,
        PromptInput,
        Score,
    )

logger = logging.getLogger("relaygraph.llm.pool")
T = TypeVar("T")
_REMEMBERED_CONVERSATIONS = 4096


class WorkerPool(BaseLLM):
    """Several workers of the same model behind one `LLM`.

    Example:
        >>> pool = WorkerPool([OpenAICompatLLM("http://gpu1:8000/v1", "m"),
        ...                    OpenAICompatLLM("http://gpu2:8000/v1", "m")])  # doctest: +SKIP
    """

    def __init__(
        self,
        workers: Sequence[LLM],
        *,
        name: str | None = None,
        cooldown_s: float = 30.0,
        max_imbalance: int = 4,
    ) -> None:
        if not workers:
            raise ConfigError("a worker pool needs at least one worker", parameter="workers")
        if max_imbalance < 0:
            raise ConfigError("max_imbalance must be >= 0", parameter="max_imbalance")
        self.workers = list(workers)
        self._name = name or self.workers[0].name
        self._cooldown_s = cooldown_s
        self._max_imbalance = max_imbalance
        self._down_until = [0.0] * len(self.workers)
        self._outstanding = [0] * len(self.workers)
        self._last_worker: OrderedDict[str, int] = OrderedDict()
        self._rotation = itertools.count()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return self._first_healthy(lambda w: w.context_window)

    def close(self) -> None:
        """Close the workers' synchronous connections."""
        for w in self.workers:
            close = getattr(w, "close", None)
            if close is not None:
                close()

    async def aclose(self) -> None:
        """Close the workers' connections."""
        for w in self.workers:
            close = getattr(w, "aclose", None)
            if close is not None:
                await close()

    def healthy(self) -> list[bool]:
        """Whether each worker is currently considered up."""
        now = time.monotonic()
        return [until <= now for until in self._down_until]

    def outstanding(self) -> list[int]:
        """Requests in flight from this pool on each worker."""
        return list(self._outstanding)

    def _order(self, conversation: str | None = None) -> list[int]:
        """Healthy workers, least loaded first (ties in rotation) unless the conversation's
        last worker is close enough to the least loaded; then the ones marked down."""
        with self._lock:
            start = next(self._rotation) % len(self.workers)
            load = list(self._outstanding)
            sticky = self._last_worker.get(conversation) if conversation else None
        indices = [(start + i) % len(self.workers) for i in range(len(self.workers))]
        up = self.healthy()
        healthy = sorted((i for i in indices if up[i]), key=lambda i: load[i])
        close_enough = sticky in healthy and load[sticky] <= load[healthy[0]] + self._max_imbalance
        if sticky is not None and close_enough:
            healthy.remove(sticky)
            healthy.insert(0, sticky)
        return healthy + [i for i in indices if not up[i]]

    @contextmanager
    def _serving(self, index: int) -> Generator[None]:
        """Count a request as outstanding on worker ``index`` while it runs."""
        self._begin(index)
        try:
            yield
        finally:
            self._done(index)

    def _begin(self, index: int) -> None:
        with self._lock:
            self._outstanding[index] += 1

    def _remember(self, conversation: str | None, index: int) -> None:
        if conversation is None:
            return
        with self._lock:
            self._last_worker[conversation] = index
            self._last_worker.move_to_end(conversation)
            while len(self._last_worker) > _REMEMBERED_CONVERSATIONS:
                self._last_worker.popitem(last=False)

    def _mark_down(self, index: int, error: Exception) -> None:
        self._down_until[index] = time.monotonic() + self._cooldown_s
        logger.warning(
            "worker %d of %s failed (%s); down for %.0f s",
            index,
            self._name,
            error,
            self._cooldown_s,
        )

    def _first_healthy(
        self, call: Callable[[LLM], T], prompt: PromptInput | Prompt | None = None
    ) -> T:
        conversation = conversation_key(prompt) if prompt is not None else None
        last: TransportError | None = None
        for index in self._order(conversation):
            try:
                with self._serving(index):
                    result = call(self.workers[index])
            except TransportError as exc:
                self._mark_down(index, exc)
                last = exc
                continue
            self._down_until[index] = 0.0
            self._remember(conversation, index)
            return result
        assert last is not None  # the loop ran at least once and only failed by TransportError
        raise last

    def complete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        return self._first_healthy(lambda w: w.complete(prompt, params), prompt)

    def stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Iterator[CompletionChunk]:
        conversation = conversation_key(prompt)
        last: TransportError | None = None
        for index in self._order(conversation):
            self._begin(index)
            chunks = self.workers[index].stream(prompt, params)
            try:
                first = next(iter(chunks))
            except StopIteration:
                self._done(index)
                return iter(())
            except TransportError as exc:
                self._done(index)
                self._mark_down(index, exc)
                last = exc
                continue
            except BaseException:
                self._done(index)
                raise
            self._remember(conversation, index)
            return _resumed(first, chunks, on_close=functools.partial(self._done, index))
        assert last is not None  # as in _first_healthy
        raise last

    def _done(self, index: int) -> None:
        with self._lock:
            self._outstanding[index] -= 1

    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        return self._first_healthy(lambda w: w.encode(prompt))

    def tokenize(self, text: str) -> list[int]:
        return self._first_healthy(lambda w: w.tokenize(text))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._first_healthy(lambda w: w.detokenize(token_ids))

    def score(
        self, prompt: PromptInput | Prompt, continuation: str | Sequence[int], top_logprobs: int = 0
    ) -> Score:
        return self._first_healthy(lambda w: w.score(prompt, continuation, top_logprobs), prompt)


def conversation_key(prompt: PromptInput | Prompt) -> str:
    """What identifies a conversation across its turns: the chat's first two messages
    (system and first user turn), or a text or token prompt's opening."""
    p = to_prompt(prompt)
    if isinstance(p, ChatPrompt):
        opening = repr([(m.role, m.content) for m in p.messages[:2]])
    elif isinstance(p, TextPrompt):
        opening = p.text[:512]
    else:
        opening = repr(p.token_ids[:128])
    return hashlib.blake2b(opening.encode(), digest_size=12).hexdigest()


def _resumed(
    first: CompletionChunk, chunks: Iterator[CompletionChunk], *, on_close: Callable[[], None]
) -> Iterator[CompletionChunk]:
    """The worker's stream from its first chunk on; closing it closes the worker's stream,
    so a caller that stops early frees the worker's connection."""
    try:
        yield first
        yield from chunks
    finally:
        on_close()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
