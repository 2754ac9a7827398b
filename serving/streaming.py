"""Streamed completions as server-sent events: OpenAI's chunk shapes, the usage chunk,
``relaygraph.load`` on the last chunk, in-band errors once headers are sent, and the
request's deadline over the whole stream."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from relaygraph.serving.errors import APIError, to_api_error
from relaygraph.serving.responses import chunk_json, load_json, new_id, now, usage_json

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from starlette.requests import Request

    from relaygraph.llm.types import CompletionChunk
    from relaygraph.serving.metrics import ServerMetrics
    from relaygraph.serving.protocol import SamplingFields


def sse(payload: Mapping[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


class SSEStream:
    """One streamed completion's SSE events, bounded by the request's timeout
    (``timeout_s`` from ``began``, a `time.monotonic` reading)."""

    def __init__(
        self,
        chunks: AsyncIterator[CompletionChunk],
        request: SamplingFields,
        *,
        began: float,
        timeout_s: float,
        metrics: ServerMetrics,
    ) -> None:
        self._chunks = chunks
        self._request = request
        self._deadline = began + timeout_s
        self._timeout_s = timeout_s
        self._metrics = metrics

    async def _next(self) -> CompletionChunk | None:
        """The next chunk; over the deadline, the stream is cancelled and ends in error."""
        left = self._deadline - time.monotonic()
        try:
            return await asyncio.wait_for(anext(self._chunks, None), max(left, 0.0))
        except TimeoutError:
            raise timeout_error(self._timeout_s) from None

    async def events(self, first: CompletionChunk | None, *, chat: bool) -> AsyncIterator[str]:
        """SSE lines; closing this generator (client gone) cancels generation."""
        request = self._request
        ident, created = new_id("chatcmpl" if chat else "cmpl"), now()
        kind = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": ident, "object": kind, "created": created, "model": request.model}
        usage = None
        inter_token = self._metrics.inter_token.labels(request.model)
        try:
            if chat:
                role = {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": None,
                }
                yield sse(head | {"choices": [role]})
            chunk, calls = first, 0
            last = time.monotonic()
            while chunk is not None:
                usage = chunk.usage or usage
                payload = chunk_json(
                    chunk,
                    chat=chat,
                    ident=ident,
                    created=created,
                    request=request,
                    calls_before=calls,
                )
                calls += len(chunk.tool_calls or ())
                yield sse(payload | load_json(chunk.load))
                chunk = await self._next()
                inter_token.observe(time.monotonic() - last)
                last = time.monotonic()
            if request.stream_options and request.stream_options.include_usage and usage:
                yield sse(head | {"choices": [], "usage": usage_json(usage)})
        except Exception as exc:  # headers are sent: report in-band, as OpenAI does
            yield sse(to_api_error(exc).body())
        finally:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        yield sse("[DONE]")


def timeout_error(seconds: float) -> APIError:
    return APIError(
        503, f"request took longer than {seconds} s", type="server_error", code="timeout"
    )


async def disconnected(client: Request) -> None:
    """Return when the client closes the connection (its body is already read)."""
    while (await client.receive())["type"] != "http.disconnect":
        pass
