"""The server's front door: body size, API keys, and requests in flight per key.

An ASGI middleware, so it answers before any route runs: 413 for a body over the limit
(checked against Content-Length and while reading a chunked body), 401 for a missing or
wrong key (compared in constant time) or a credential not sent as ``Authorization:
Bearer <key>``, 400 for more than one Authorization header, 429 when a key already has
its maximum of requests in flight (counted from before its body is read, so a slow body
cannot slip past the limit). ``/health`` and ``/metrics`` are open. Under ``/ui`` (the
viewer that ``relaygraph serve --ui`` mounts), a browser may also send the key as the
password of HTTP Basic authentication, and a 401 asks for it (``WWW-Authenticate``), so
a person can open the viewer without a tool that sets headers.

It is also the last word on errors: an exception no route handler answered becomes an
OpenAI-format 500 here, so the connection stays usable (see `Guard.__call__`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.routing import Match

from relaygraph.serving.errors import APIError, to_api_error

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from relaygraph.serving.metrics import ServerMetrics

logger = logging.getLogger("relaygraph.serving")

OPEN_PATHS = frozenset({"/health", "/metrics"})
BROWSER_PREFIX = "/ui"
"""Paths for people in a browser: the key may come by HTTP Basic authentication."""
OTHER_ROUTE = "other"
"""The metrics label of every path that matches no route."""
CLIENT_GONE = 499
"""Recorded (as nginx does) for a request whose client left before it was answered."""


@dataclass(slots=True)
class _Exchange:
    """What has been sent of one response: its status, and whether its body is complete."""

    status: int | None = None
    complete: bool = False


class Guard:
    """ASGI middleware enforcing keys, body size and per-key concurrency; records metrics.

    Example:
        >>> app.add_middleware(Guard, keys={"sk-1"}, max_body_bytes=1 << 20,
        ...                    max_concurrency=8, metrics=ServerMetrics())  # doctest: +SKIP
    """

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
        self._in_flight: dict[str, int] = {}
        """Requests in flight per client identity; an identity with none has no entry."""
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request behind the checks, answering any exception the app let through.

        Starlette's outermost ServerErrorMiddleware answers an unhandled exception with a
        500 and then re-raises it; uvicorn, seeing an exception after a response started,
        closes the connection, so the client's next request on that keep-alive
        connection fails with a read error. Answering here, inside that middleware, and
        not re-raising keeps the connection open. Only a response already under way is
        left to fail: its body is cut short, and closing the connection is the one way
        to tell the client.
        """
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        route = route_label(scope)  # before the router adds its own keys to the scope
        exchange = _Exchange()

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                exchange.complete = True
            await send(message)

        try:
            await self._guarded(scope, receive, send_and_note)
        except Exception as exc:
            if exchange.status is None:
                error = to_api_error(exc)  # which logs a surprise
                await _reject(send_and_note, error, retry_after=error.retry_after)
            elif not exchange.complete:
                raise
            else:
                logger.exception("error after a response was sent", exc_info=exc)
        finally:
            status = exchange.status or CLIENT_GONE
            self._metrics.requests.labels(route, str(status)).inc()
            self._metrics.latency.labels(route).observe(time.perf_counter() - began)
            if status >= 400:
                self._metrics.errors.labels(str(status)).inc()

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
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        identity = (scope.get("client") or ("local", 0))[0]
        if self._keys:
            path = scope["path"]
            browser = path == BROWSER_PREFIX or path.startswith(BROWSER_PREFIX + "/")
            try:
                token = self._authenticate(scope["headers"], basic=browser)
            except APIError as refusal:
                await _reject(send, refusal, challenge=browser)
                return
            identity = "key:" + hmac.new(b"relaygraph", token, "sha256").hexdigest()[:16]
        if self._in_flight.get(identity, 0) >= self._max_concurrency:
            error = APIError(
                429,
                f"too many requests in flight for this client (limit {self._max_concurrency})",
                type="rate_limit_error",
                code="concurrency_limit",
            )
            await _reject(send, error, retry_after="1")
            return
        # Counted from here, before the body is read: a client sending its body slowly
        # holds a slot while it does, or it could open any number of requests at once.
        self._in_flight[identity] = self._in_flight.get(identity, 0) + 1
        try:
            try:
                body = await _read_body(receive, self._max_body)
            except APIError as refusal:
                await _reject(send, refusal)
                return
            if body is None:  # the client left mid-body: nobody to answer
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            self._in_flight[identity] -= 1
            if not self._in_flight[identity]:
                del self._in_flight[identity]

    def _authenticate(
        self, raw_headers: list[tuple[bytes, bytes]], *, basic: bool = False
    ) -> bytes:
        """The configured key the request's one ``Authorization: Bearer <key>`` carries
        (or, with ``basic``, ``Authorization: Basic`` whose password is the key).

        Every key is compared, in constant time, so timing tells nothing about which
        came close.

        Raises:
            APIError: 401 for a missing header, another scheme or an unknown key; 400 for
                more than one Authorization header (which one would count is ambiguous).
        """
        values = [v for k, v in raw_headers if k.lower() == b"authorization"]
        if len(values) > 1:
            raise APIError(
                400,
                f"the request has {len(values)} Authorization headers; send exactly one: "
                "Authorization: Bearer <key>",
                code="invalid_api_key",
            )
        if not values:
            raise _unauthorized("missing API key; send Authorization: Bearer <key>")
        scheme, _, token = values[0].strip().partition(b" ")
        token = token.strip()
        if basic and scheme.lower() == b"basic":
            token = _basic_password(token)
        elif scheme.lower() != b"bearer" or not token:
            raise _unauthorized(
                "the API key must use the Bearer scheme; send Authorization: Bearer <key>"
            )
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(token, key)
        if not matched:
            raise _unauthorized("invalid API key; send Authorization: Bearer <key>")
        return token


def _basic_password(credentials: bytes) -> bytes:
    """The password of HTTP Basic credentials (``base64(user:password)``); the user name
    is not checked: the key alone admits.

    Raises:
        APIError: 401 for credentials that are not base64 of ``user:password``.
    """
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        raise _unauthorized("malformed Basic credentials") from None
    _user, colon, password = decoded.partition(b":")
    if not colon or not password:
        raise _unauthorized("send the API key as the password of Basic authentication")
    return password


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, type="invalid_request_error", code="invalid_api_key")


def route_label(scope: Scope) -> str:
    """The metrics label of a request: the template of the app's route it matches
    (``/v1/traces/{trace_id}``), or ``other``.

    A label per route, never per path: clients make up paths without limit, and each
    label set is a time series ``/metrics`` would list forever. A path that matches a
    route by path alone (a wrong method, answered 405) counts under that route.
    """
    router = getattr(scope.get("app"), "router", None)
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(route.path)
    return OTHER_ROUTE


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when the client disconnects before sending it.

    Raises:
        APIError: 413 as soon as the body exceeds ``limit`` bytes.
    """
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
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


async def _reject(
    send: Send, error: APIError, *, retry_after: str | None = None, challenge: bool = False
) -> None:
    payload = json.dumps(error.body()).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    if challenge and error.status == 401:  # a browser then asks its user for the key
        headers.append((b"www-authenticate", b'Basic realm="relaygraph", charset="UTF-8"'))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
