"""The viewer's FastAPI app: runs, one run, one trace, two runs compared, live traces.

Every page is rendered by Jinja2 with autoescaping on, and nothing marks a string safe:
a trace's prompts, replies, answers and tool output are untrusted (a model or a dataset
wrote them), and an answer holding ``<script>`` must show as text. The Content-Security-
Policy (scripts and styles from the app's own static folder only) is a second wall, not
the first. Files are named by the catalog's keys, never by paths (see `catalog`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined

from relaygraph.errors import ConfigError
from relaygraph.eval.compare import compare, summary_rows
from relaygraph.ui import views
from relaygraph.ui.catalog import Catalog, NotFoundError, item_by_id
from relaygraph.ui.live import LiveServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path

    from starlette.responses import Response
    from starlette.routing import Router
    from starlette.types import ASGIApp, Receive, Scope, Send

    from relaygraph.graph.trace import Trace

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
LIVE_POLL_S = 2.0
"""How often the live page asks for new traces."""


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("relaygraph.ui", "templates"),
        autoescape=True,  # every template: untrusted text renders as text
        undefined=StrictUndefined,
    )
    env.filters["seconds"] = _seconds
    env.filters["pct"] = lambda x: f"{x:.1%}"
    env.filters["when"] = lambda t: dt.datetime.fromtimestamp(t, dt.UTC).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    env.globals["outcome"] = views.outcome
    return Jinja2Templates(env=env)


def _seconds(s: float) -> str:
    """A duration as a person reads it: ms below a second, minutes above one."""
    if s < 0.01:
        return f"{s * 1000:.1f} ms"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.2f} s" if s < 120 else f"{s / 60:.1f} min"


def create_ui_app(
    roots: Sequence[str | Path],
    *,
    server: str | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """The viewer over the runs and traces under ``roots`` (and a server's traces).

    Args:
        roots: Folders holding run directories or trace files, or trace files.
        server: A relaygraph server whose traces the live page shows.
        api_key: The server's key, when it has keys.

    Raises:
        ConfigError: A root does not exist.

    Example:
        >>> uvicorn.run(create_ui_app(["runs/"]), host="127.0.0.1", port=8300)  # doctest: +SKIP
    """
    catalog = Catalog(roots)
    live = LiveServer(server, api_key=api_key) if server else None
    templates = _templates()
    app = FastAPI(title="relaygraph ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(packages=[("relaygraph.ui", "static")]), name="static")
    app.add_middleware(_OwnRouter, router=app.router)

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context |= {"live_enabled": live is not None}
        return templates.TemplateResponse(request, name, context, status_code=status)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(ConfigError)
    async def refused(request: Request, exc: Exception) -> HTMLResponse:
        status = 404 if isinstance(exc, NotFoundError) else 400
        return page(request, "error.html", status, message=str(exc))

    @app.get("/", response_class=HTMLResponse, name="runs")
    def runs(request: Request) -> HTMLResponse:
        return page(request, "runs.html", runs=catalog.runs(), traces=catalog.traces())

    @app.get("/run", response_class=HTMLResponse, name="run")
    def run(request: Request, r: str, show: views.Outcome = "all") -> HTMLResponse:
        chosen = catalog.run(r)
        groups = {
            k.removeprefix("g."): v for k, v in request.query_params.items() if k.startswith("g.")
        }
        return page(
            request,
            "run.html",
            run=chosen,
            items=views.filter_items(chosen.items, show, groups),
            show=show,
            outcomes=views.OUTCOMES,
            groups=groups,
            group_values=views.group_values(chosen.items),
        )

    @app.get("/plot", name="plot")
    def plot(r: str, name: str) -> FileResponse:
        chosen = catalog.run(r)
        return FileResponse(catalog.plot(chosen, name), media_type="image/png")

    @app.get("/trace", response_class=HTMLResponse, name="trace")
    def trace(
        request: Request, r: str | None = None, item: str | None = None, file: str | None = None
    ) -> HTMLResponse:
        if r is not None and item is not None:
            chosen = catalog.run(r)
            record = item_by_id(chosen, item)
            return trace_page(request, catalog.item_trace(chosen, record), run=chosen, item=record)
        if file is not None:
            return trace_page(request, catalog.trace(file))
        raise NotFoundError("name a trace: ?r=<run>&item=<id> or ?file=<trace file>")

    @app.get("/compare", response_class=HTMLResponse, name="compare")
    def compared(request: Request, a: str, b: str) -> HTMLResponse:
        run_a, run_b = catalog.run(a), catalog.run(b)
        comparison = compare(run_a.path, run_b.path)
        return page(
            request,
            "compare.html",
            run_a=run_a,
            run_b=run_b,
            comparison=comparison,
            rows=summary_rows(comparison),
        )

    @app.get("/live", response_class=HTMLResponse, name="live")
    def live_page(request: Request) -> HTMLResponse:
        server_live = _live(live)
        return page(request, "live.html", server=server_live.url, poll_ms=int(LIVE_POLL_S * 1000))

    @app.get("/live/rows", response_class=HTMLResponse, name="live_rows")
    def live_rows(request: Request) -> HTMLResponse:
        return page(request, "_live_rows.html", rows=_live(live).recent())

    @app.get("/live/trace", response_class=HTMLResponse, name="live_trace")
    def live_trace(request: Request, id: str) -> HTMLResponse:
        return trace_page(request, _live(live).trace(id))

    def trace_page(request: Request, shown: Trace, **context: Any) -> HTMLResponse:
        return page(
            request,
            "trace.html",
            trace=shown,
            timeline=views.timeline(shown),
            label_width=views.LABEL_WIDTH,
            row_height=views.ROW_HEIGHT,
            rounds={s.step: views.speculative_rounds(s) for s in shown.steps},
            decoding={s.step: views.decoding_totals(s) for s in shown.steps},
            run=context.get("run"),
            item=context.get("item"),
        )

    return app


class _OwnRouter:
    """Resolves ``url_for`` against the viewer's own routes and prefix, also when it is
    mounted in another app (Starlette keeps the outermost router and root path in the
    scope, for which the viewer's routes have prefixed names)."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["router"] = self.router
        scope["app_root_path"] = scope.get("root_path", "")
        await self.app(scope, receive, send)


def _live(live: LiveServer | None) -> LiveServer:
    if live is None:
        raise NotFoundError("no server to watch: start the viewer with --server URL")
    return live
