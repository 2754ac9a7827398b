"""`WorkerPool`: one model served by several workers, with failover and passive health.

A call goes to the first healthy worker in rotation. A worker that fails with a
transport error (refused connection, timeout, 5xx, 429) is marked down for ``cooldown_s``
and the call moves to the next worker; a request error (4xx) is the caller's fault and
is raised at once. When every worker is down the pool tries them all anyway (a worker
may have come back) and raises the last error. A stream fails over only before its first
chunk: after that, text already reached the caller.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING, TypeVar

from relaygraph.errors import ConfigError, TransportError
from relaygraph.llm.protocol import BaseLLM

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

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


class WorkerPool(BaseLLM):
    """Several workers of the same model behind one `LLM`.

    Example:
        >>> pool = WorkerPool([OpenAICompatLLM("http://gpu1:8000/v1", "m"),
        ...                    OpenAICompatLLM("http://gpu2:8000/v1", "m")])  # doctest: +SKIP
    """

    def __init__(
        self, workers: Sequence[LLM], *, name: str | None = None, cooldown_s: float = 30.0
    ) -> None:
        if not workers:
            raise ConfigError("a worker pool needs at least one worker", parameter="workers")
        self.workers = list(workers)
        self._name = name or self.workers[0].name
        self._cooldown_s = cooldown_s
        self._down_until = [0.0] * len(self.workers)
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

    def _order(self) -> list[int]:
        """Healthy workers in rotation order, then the ones marked down."""
        with self._lock:
            start = next(self._rotation) % len(self.workers)
        indices = [(start + i) % len(self.workers) for i in range(len(self.workers))]
        up = self.healthy()
        return [i for i in indices if up[i]] + [i for i in indices if not up[i]]

    def _mark_down(self, index: int, error: Exception) -> None:
        self._down_until[index] = time.monotonic() + self._cooldown_s
        logger.warning(
            "worker %d of %s failed (%s); down for %.0f s",
            index,
            self._name,
            error,
            self._cooldown_s,
        )

    def _first_healthy(self, call: Callable[[LLM], T]) -> T:
        last: TransportError | None = None
        for index in self._order():
            try:
                result = call(self.workers[index])
            except TransportError as exc:
                self._mark_down(index, exc)
                last = exc
                continue
            self._down_until[index] = 0.0
            return result
        assert last is not None  # the loop ran at least once and only failed by TransportError
        raise last

    def complete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        return self._first_healthy(lambda w: w.complete(prompt, params))

    def stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Iterator[CompletionChunk]:
        last: TransportError | None = None
        for index in self._order():
            chunks = self.workers[index].stream(prompt, params)
            try:
                first = next(iter(chunks))
            except StopIteration:
                return iter(())
            except TransportError as exc:
                self._mark_down(index, exc)
                last = exc
                continue
            return _resumed(first, chunks)
        assert last is not None  # as in _first_healthy
        raise last

    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        return self._first_healthy(lambda w: w.encode(prompt))

    def tokenize(self, text: str) -> list[int]:
        return self._first_healthy(lambda w: w.tokenize(text))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._first_healthy(lambda w: w.detokenize(token_ids))

    def score(
        self, prompt: PromptInput | Prompt, continuation: str | Sequence[int], top_logprobs: int = 0
    ) -> Score:
        return self._first_healthy(lambda w: w.score(prompt, continuation, top_logprobs))


def _resumed(
    first: CompletionChunk, chunks: Iterator[CompletionChunk]
) -> Iterator[CompletionChunk]:
    """The worker's stream from its first chunk on; closing it closes the worker's stream,
    so a caller that stops early frees the worker's connection."""
    try:
        yield first
        yield from chunks
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
