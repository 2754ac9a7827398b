"""Folding a stream of chunks back into a `Completion`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from relaygraph.llm.types import Choice, Completion, TokenLogprob, Usage

if TYPE_CHECKING:
    from collections.abc import Iterable

    from relaygraph.llm.constraints import ToolCall
    from relaygraph.llm.types import CompletionChunk


def collect(chunks: Iterable[CompletionChunk], *, model: str, began: float) -> Completion:
    """Fold a stream into the `Completion` that `complete` would have returned."""
    text: list[str] = []
    token_ids: list[int] = []
    logprobs: list[TokenLogprob] = []
    calls: list[ToolCall] = []
    has_logprobs = False
    usage, finish = Usage(), None
    for chunk in chunks:
        text.append(chunk.text)
        token_ids.extend(chunk.token_ids)
        if chunk.logprobs is not None:
            has_logprobs = True
            logprobs.extend(chunk.logprobs)
        calls.extend(chunk.tool_calls or ())
        usage = chunk.usage or usage
        finish = chunk.finish_reason or finish
    choice = Choice(
        text="".join(text),
        token_ids=token_ids,
        logprobs=logprobs if has_logprobs else None,
        finish_reason=finish or "stop",
        tool_calls=calls or None,
    )
    latency = time.perf_counter() - began
    return Completion(model=model, choices=[choice], usage=usage, latency_s=latency)
