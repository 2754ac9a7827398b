"""What callers of the embedded engine get from its jobs: completions, scores, and streams
of chunks (to a thread or to an event loop), where closing a stream cancels its job."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import time
from concurrent.futures import wait
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from relaygraph.llm.sampling import log_softmax
from relaygraph.llm.types import (
    Choice,
    Completion,
    CompletionChunk,
    Score,
    Usage,
    combined_load,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from relaygraph.llm.generation import Step, Vocabulary
    from relaygraph.llm.jobs import Job, Request

OnStep: TypeAlias = "Callable[[Job, Step], None]"
Submit: TypeAlias = "Callable[[OnStep], Job]"
"""Queues a job whose every token is handed to the given callback (on the engine thread)."""


def completion_of(model: str, request: Request, jobs: list[Job], began: float) -> Completion:
    """The `Completion` of one request's finished jobs (its groups of samples)."""
    sequences = [s for job in jobs for s in job.sequences]
    choices = [
        Choice(
            index=s.index,
            text=s.content(),
            token_ids=s.token_ids,
            logprobs=s.logprobs if s.params.logprobs else None,
            finish_reason=s.finish_reason or "length",
            tool_calls=list(s.splitter.calls) if s.splitter and s.splitter.calls else None,
        )
        for s in sequences
    ]
    return Completion(
        model=model,
        choices=choices,
        usage=Usage(
            prompt_tokens=len(request.prompt_ids),
            completion_tokens=sum(len(s.token_ids) for s in sequences),
            cached_tokens=jobs[0].cached_tokens,
        ),
        latency_s=max(job.ended for job in jobs) - began,
        load=combined_load(*(job.load() for job in jobs)),
    )


def score_of(model: str, job: Job, vocabulary: Vocabulary, top: int, began: float) -> Score:
    """The `Score` of a finished scoring job: its rows from the last prompt position on."""
    full, start = job.tokens, (job.score_from or 0) + 1
    rows = np.concatenate(job.rows)
    tokens = [
        vocabulary.token_logprob(log_softmax(row), token, top)
        for token, row in zip(full[start:], rows[:-1], strict=True)
    ]
    return Score(
        model=model,
        prompt_tokens=start,
        tokens=tokens,
        next_top=vocabulary.top(log_softmax(rows[-1]), top),
        latency_s=time.perf_counter() - began,
        cached_tokens=job.cached_tokens,
        load=job.load(),
    )


def chunk_of(model: str, job: Job, step: Step) -> CompletionChunk:
    """One token's chunk; the last carries usage and the load report."""
    finished = step.sequence.finished
    return CompletionChunk(
        model=model,
        text=step.text,
        token_ids=[step.token_id],
        logprobs=[step.logprob] if step.logprob else None,
        tool_calls=step.tool_calls or None,
        finish_reason=step.sequence.finish_reason,
        usage=job.usage() if finished else None,
        load=job.load() if finished else None,
    )


def stream_chunks(submit: Submit, model: str) -> Iterator[CompletionChunk]:
    """The job's chunks in this thread, submitted on first iteration; closing the iterator
    cancels the job and returns once its slot is free."""
    events: queue.SimpleQueue[CompletionChunk | None] = queue.SimpleQueue()
    job = submit(lambda job, step: events.put(chunk_of(model, job, step)))
    job.done.add_done_callback(lambda _: events.put(None))
    try:
        while (chunk := events.get()) is not None:
            yield chunk
        job.done.result()  # a failure ends the stream with its error
    finally:
        job.cancel()
        wait([job.done])


async def astream_chunks(submit: Submit, model: str) -> AsyncIterator[CompletionChunk]:
    """The job's chunks in this event loop; closing the iterator (or cancelling the task
    reading it) cancels the job."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[CompletionChunk | None] = asyncio.Queue()

    def put(item: CompletionChunk | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            loop.call_soon_threadsafe(events.put_nowait, item)

    job = submit(lambda job, step: put(chunk_of(model, job, step)))
    job.done.add_done_callback(lambda _: put(None))
    try:
        while (chunk := await events.get()) is not None:
            yield chunk
        job.done.result()
    finally:
        job.cancel()
