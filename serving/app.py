"""The OpenAI-compatible FastAPI app.

`create_app` mounts the routes of one `OpenAIServer` (`serving.routes`, which owns the
served models and graphs) behind the `Guard` (keys, body size, concurrency) and the
handlers that turn every error into OpenAI's format (`serving.errors`), and closes what
it serves when the app shuts down.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from relaygraph.serving.config import SecurityConfig
from relaygraph.serving.errors import add_error_handlers
from relaygraph.serving.guard import Guard
from relaygraph.serving.metrics import ReportsLoad, ServerMetrics
from relaygraph.serving.routes import OpenAIServer, Served
from relaygraph.serving.traces import TraceStore
from relaygraph.serving.tracing import TraceContext

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping


async def _close(models: Mapping[str, Served], traces: TraceStore) -> None:
    """Close upstream connections, graphs' checkpoint stores and the shared trace store."""
    for served in models.values():
        if (aclose := getattr(served, "aclose", None)) is not None:
            await aclose()
        if (close := getattr(served, "close", None)) is not None:
            close()
    traces.close()


def create_app(
    models: Mapping[str, Served],
    *,
    security: SecurityConfig | None = None,
    traces: TraceStore | None = None,
) -> FastAPI:
    """A FastAPI app serving these models and graphs under their names.

    Example:
        >>> app = create_app({"smollm2-135m": load_llm("smollm2-135m")})  # doctest: +SKIP
        >>> uvicorn.run(app, port=8000)                                    # doctest: +SKIP
    """
    security = security or SecurityConfig()
    engines = {n: m for n, m in models.items() if isinstance(m, ReportsLoad)}
    metrics = ServerMetrics(engines)
    server = OpenAIServer(models, security=security, traces=traces or TraceStore(), metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await _close(models, server.traces)

    app = FastAPI(title="relaygraph", version="1", lifespan=lifespan)
    app.add_api_route("/health", server.health, methods=["GET"])
    app.add_api_route("/metrics", server.metrics_text, methods=["GET"])
    app.add_api_route("/v1/models", server.list_models, methods=["GET"])
    app.add_api_route("/v1/traces", server.list_traces, methods=["GET"])
    app.add_api_route("/v1/traces/{trace_id}", server.get_trace, methods=["GET"])
    app.add_api_route(
        "/v1/chat/completions", server.chat_completions, methods=["POST"], response_model=None
    )
    app.add_api_route("/v1/completions", server.completions, methods=["POST"], response_model=None)
    app.add_api_route("/tokenize", server.tokenize, methods=["POST"])
    app.add_api_route("/detokenize", server.detokenize, methods=["POST"])

    add_error_handlers(app)
    app.add_middleware(
        Guard,
        keys=security.keys(),
        max_body_bytes=security.max_body_bytes,
        max_concurrency=security.max_concurrency_per_key,
        metrics=metrics,
    )
    # Outside the Guard, so a refused request is traced too and the caller can find it.
    app.add_middleware(TraceContext)
    if security.cors_origins:  # off unless configured; outermost, so preflights skip the keys
        app.add_middleware(
            CORSMiddleware,
            allow_origins=security.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app
