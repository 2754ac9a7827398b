"""``relaygraph ui``: the run and trace viewer in the browser."""

import os
from pathlib import Path
from typing import Annotated

import typer

from relaygraph.cli.root import console, errors, user_errors

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@user_errors
def ui(
    *,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run directories, folders of runs or trace files (default: runs/).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8300,
    server: Annotated[
        str | None,
        typer.Option(help="A relaygraph server whose traces the live page shows (its URL)."),
    ] = None,
    server_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the server's API key.")
    ] = "RELAYGRAPH_API_KEY",
) -> None:
    """Browse evaluation runs, traces and a server's live traces in the browser."""
    import uvicorn

    from relaygraph.ui import create_ui_app

    roots = paths or [Path("runs")]
    app = create_ui_app(roots, server=server, api_key=os.environ.get(server_key_env) or None)
    if host not in LOOPBACK:
        # The viewer has no keys of its own: whoever reaches the port reads every trace.
        errors.print(
            f"[yellow]warning:[/yellow] binding {host}: anyone who reaches it can read these "
            "runs and traces (relaygraph serve --ui puts the viewer behind API keys)"
        )
    console.print(f"relaygraph ui on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning")
