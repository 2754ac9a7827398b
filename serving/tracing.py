"""W3C trace context at the server's edge: each request becomes a ``SERVER`` span that
continues the caller's ``traceparent`` (so a graph run's spans join the caller's trace),
and the response names that span in a ``traceresponse`` header (the ``traceparent``
format of W3C Trace Context Level 2).

Only while span export is on (see `relaygraph.telemetry`); otherwise requests pass
through untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph import telemetry
from relaygraph.serving.guard import OTHER_ROUTE, route_label

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACERESPONSE = "traceresponse"
"""The response header naming the request's trace and span."""


class TraceContext:
    """ASGI middleware: one span per HTTP request, parented by its ``traceparent``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not telemetry.enabled():
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        route = route_label(scope)
        method = scope["method"]
        attributes = {
            "http.request.method": method,
            "url.path": scope["path"],
            "http.route": route,
        }
        name = method if route == OTHER_ROUTE else f"{method} {route}"
        with telemetry.span(
            name,
            kind=telemetry.SpanKind.SERVER,
            attributes=attributes,
            context=telemetry.context_from_headers(headers),
        ) as span:
            value = telemetry.traceresponse(span)

            async def send_named(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        telemetry.fail(span, str(message["status"]), "server error")
                    if value is not None:
                        extra = [(TRACERESPONSE.encode(), value.encode())]
                        message = {**message, "headers": [*message.get("headers", []), *extra]}
                await send(message)

            await self.app(scope, receive, send_named)
