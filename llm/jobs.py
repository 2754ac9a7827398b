"""A request's life in the embedded engine: what it asks (`Request`), its state while it
runs (`Job`: samples, slots, progress, the load it met, its future), and a scheduler's
counters (`SchedulerLoad`)."""

from __future__ import annotations

import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relaygraph.llm.engine_thread import ENGINE
from relaygraph.llm.types import GenerationParams, LoadReport, Usage

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from relaygraph.llm.generation import Generation, Step


@dataclass(frozen=True, slots=True)
class Request:
    """An encoded prompt, the stop strings that apply to it, and its grammar (if any)."""

    prompt_ids: list[int]
    stop: tuple[str, ...]
    grammar: str | None = None


@dataclass(eq=False, slots=True)
class Job:
    """One request's work in the engine: its samples (or a scoring), where it runs, and
    the load it met. ``done`` resolves when it finishes, fails or is cancelled.

    A scoring job (``score_from`` set) evaluates its tokens and keeps the logits from that
    position on in ``rows``; a generation job samples ``samples`` completions.
    """

    request: Request
    params: GenerationParams
    samples: range
    score_from: int | None = None
    on_step: Callable[[Job, Step], None] | None = None
    done: Future[Job] = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)
    sequences: list[Generation] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    position: int = 0
    """Next prompt position to evaluate in the first slot."""
    queue_s: float = 0.0
    passes: int = 0
    shared_tokens: int = 0
    cached_tokens: int = 0
    cancelled: bool = False
    ended: float = 0.0
    """When the job finished (perf_counter), for latencies."""

    @property
    def stopped(self) -> bool:
        """Cancelled by `cancel`, or its future cancelled by an awaiting task."""
        return self.cancelled or self.done.cancelled()

    @property
    def tokens(self) -> list[int]:
        return self.request.prompt_ids

    @property
    def prefill_end(self) -> int:
        """Where chunked prefill stops: a generation's last prompt token is evaluated in a
        pass of its own (see `Scheduler._plan`), a scoring evaluates every token."""
        return len(self.tokens) if self.score_from is not None else len(self.tokens) - 1

    @property
    def slots_needed(self) -> int:
        return max(1, len(self.samples))

    def cancel(self) -> None:
        """Stop at the next step, keeping what was generated; ``done`` resolves then.

        Nothing to do once the job has settled by itself; a job whose future an awaiting
        task cancelled is still in the engine, and leaves at the next step."""
        if self.done.done() and not self.done.cancelled():
            return
        self.cancelled = True
        ENGINE.wake()

    def load(self) -> LoadReport:
        return LoadReport(
            queue_s=round(self.queue_s, 6), passes=self.passes, shared_tokens=self.shared_tokens
        )

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=len(self.tokens),
            completion_tokens=sum(len(s.token_ids) for s in self.sequences),
            cached_tokens=self.cached_tokens,
        )

    def settle(self, error: BaseException | None = None) -> None:
        """Resolve ``done`` (with the job, or ``error``) unless an awaiting task cancelled
        it already; the engine thread calls it when the job leaves."""
        self.ended = time.perf_counter()
        try:
            if error is None:
                self.done.set_result(self)
            else:
                self.done.set_exception(error)
        except InvalidStateError:  # cancelled meanwhile, from another thread
            pass


@dataclass(frozen=True, slots=True)
class SchedulerLoad:
    """A snapshot of a scheduler's state and counters, for metrics."""

    waiting: int
    running: int
    """Slots held by running requests."""
    slots: int
    prompt_tokens: int
    """Prompt tokens of admitted requests since the start."""
    cached_tokens: int
    """Of those, the ones read from the prefix cache."""
    passes: int
