"""The server's front door: body size, API keys, and requests in flight per key.

An ASGI middleware, so it answers before any route runs: 413 for a body over the limit
(checked against Content-Length and while reading a chunked body), 401 for a missing or
wrong key (compared in constant time), 429 when a key already has its maximum of
requests in flight. ``/health`` and ``/metrics`` are open.
"""

from __future__ import annotations

import hmac
import json
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from relaygraph.serving.errors import APIError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from relaygraph.serving.metrics import ServerMetrics

OPEN_PATHS = frozenset({"/health", "/metrics"})


class Guard:
    """ASGI middleware enforcing keys, body size and per-key concurrency; records metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: set[str],
        max_body_bytes: int,
        max_concurrency: int,
        metrics: ServerMetrics,
    ) -> None:
        self.app = app
        self._keys = [k.encode() for k in keys]
        self._max_body = max_body_bytes
        self._max_concurrency = max_concurrency
        self._in_flight: dict[str, int] = defaultdict(int)
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        route = _route_label(scope["path"])
        status = {"code": 500}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_and_note)
        finally:
            self._metrics.requests.labels(route, str(status["code"])).inc()
            self._metrics.latency.labels(route).observe(time.perf_counter() - began)
            if status["code"] >= 400:
                self._metrics.errors.labels(str(status["code"])).inc()

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_body:
            await _reject(
                send,
                APIError(
                    413, f"request body of {length} bytes is over the limit of {self._max_body}"
                ),
            )
            return
        identity = (scope.get("client") or ("local", 0))[0]
        if self._keys and scope["path"] not in OPEN_PATHS:
            token = headers.get("authorization", "").removeprefix("Bearer ").strip().encode()
            if not any(hmac.compare_digest(token, key) for key in self._keys):
                error = APIError(
                    401,
                    "missing or invalid API key; send Authorization: Bearer <key>",
                    type="invalid_request_error",
                    code="invalid_api_key",
                )
                await _reject(send, error)
                return
            identity = "key:" + hmac.new(b"relaygraph", token, "sha256").hexdigest()[:16]
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self._in_flight[identity] >= self._max_concurrency:
            error = APIError(
                429,
                f"too many requests in flight for this client (limit {self._max_concurrency})",
                type="rate_limit_error",
                code="concurrency_limit",
            )
            await _reject(send, error, retry_after="1")
            return
        body = await _read_body(receive, self._max_body)
        if body is None:
            await _reject(
                send, APIError(413, f"request body is over the limit of {self._max_body} bytes")
            )
            return
        self._in_flight[identity] += 1
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            self._in_flight[identity] -= 1


def _route_label(path: str) -> str:
    return "/v1/traces/{id}" if path.startswith("/v1/traces/") else path


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds ``limit``."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands over the buffered body once, then listens for disconnects."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reject(send: Send, error: APIError, *, retry_after: str | None = None) -> None:
    payload = json.dumps(error.body()).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
