"""The process's one engine thread: it steps every embedded model's scheduler and runs the
calls other threads hand it in between.

All llama.cpp evaluation runs here, for every model in the process. Besides serialising
access to the contexts, this matters for speed: llama.cpp's CPU backend is built with
OpenMP, which gives every calling OS thread its own team of worker threads, and an idle
team keeps spinning on the cores the active one needs. Decoding from several threads in
turn halved throughput with four concurrent streams on two cores (benchmarks/serving.py);
one thread keeps the single-stream rate.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("relaygraph.llm.engine")
T = TypeVar("T")
THREAD_NAME = "relaygraph-engine"


class Steppable(Protocol):
    """What the engine thread drives: a scheduler with queued or running work."""

    def has_work(self) -> bool: ...

    def step(self) -> None: ...


class EngineThread:
    """Steps every registered scheduler while any has work, running queued calls between
    steps; sleeps when there is nothing to do.

    Schedulers change their queues under `condition` and `wake` the thread.
    """

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self._calls: deque[tuple[Callable[[], object], Future[object]]] = deque()
        self._schedulers: weakref.WeakSet[Steppable] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._stopping = False
        atexit.register(self.stop)

    def stop(self) -> None:
        """End the loop after its current step and wait for it (at exit: freeing the
        models while a pass runs on them would crash the process)."""
        with self.condition:
            self._stopping = True
            self.condition.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def register(self, scheduler: Steppable) -> None:
        with self.condition:
            self._schedulers.add(scheduler)

    def wake(self) -> None:
        """Tell the thread there is new work (starting it on first use)."""
        with self.condition:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self.condition.notify()

    def call(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the engine thread between two steps and return its result (or
        raise its error).

        Work submitted from the engine thread itself runs inline: waiting for the only
        thread that would run it would never return.
        """
        if threading.current_thread().name == THREAD_NAME:
            return work()
        future: Future[object] = Future()
        with self.condition:
            self._calls.append((work, future))
            self.wake()
        return future.result()  # type: ignore[return-value]  # the future holds work's T

    def _loop(self) -> None:
        while True:
            with self.condition:
                while not self._calls and not self._busy() and not self._stopping:
                    self.condition.wait()
                if self._stopping:
                    return
                calls = list(self._calls)
                self._calls.clear()
            for work, future in calls:
                try:
                    future.set_result(work())
                except BaseException as exc:  # handed to the caller, who raises it
                    future.set_exception(exc)
            for scheduler in list(self._schedulers):
                if scheduler.has_work():
                    try:
                        scheduler.step()
                    except Exception:  # a scheduler fails its own jobs; this keeps the thread
                        logger.exception("engine step failed")

    def _busy(self) -> bool:
        return any(s.has_work() for s in list(self._schedulers))


ENGINE = EngineThread()
"""The one engine thread every embedded model's evaluation runs on."""


def on_engine(work: Callable[[], T]) -> T:
    """Run ``work`` on the engine thread and return its result (or raise its error)."""
    return ENGINE.call(work)
