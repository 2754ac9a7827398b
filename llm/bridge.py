"""Consuming a blocking iterator from asyncio without blocking the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

T = TypeVar("T")


async def iterate_in_thread(make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Run ``make()`` and its iteration on a worker thread, handing items over a queue.

    When the consumer stops early (a client disconnects), the producer stops at the next
    item and closes the iterator, which lets it release what it holds (an engine lock,
    a LangGraph run).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
    cancelled = threading.Event()

    def produce() -> None:
        try:
            iterator = make()
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            return
        try:
            for item in iterator:
                if cancelled.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

    producer = asyncio.ensure_future(asyncio.to_thread(produce))
    try:
        while True:
            kind, value = await queue.get()
            if kind == "done":
                break
            if kind == "error":
                assert isinstance(value, BaseException)  # what produce() puts with "error"
                raise value
            yield value  # type: ignore[misc]
    finally:
        cancelled.set()
        await producer
