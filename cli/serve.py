"""The serving commands: ``serve`` (models, pools and graphs behind the OpenAI API)
and ``worker`` (one model, for pools and speculative decoding)."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from relaygraph.cli.root import console, user_errors
from relaygraph.errors import RelayGraphError
from relaygraph.llm.catalog import DEFAULT_MODEL


@user_errors
def serve(
    *,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Model to serve (repeatable).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON config: models, worker pools, graphs, keys.")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    ui: Annotated[
        list[Path] | None,
        typer.Option(
            help="Show these runs in the viewer at /ui, behind the API keys (repeatable)."
        ),
    ] = None,
) -> None:
    """Serve models, worker pools and agent graphs behind an OpenAI-compatible API."""
    import uvicorn

    from relaygraph.serving.config import LLMEntry, ServeConfig, load_config
    from relaygraph.serving.server import app_from_config, safe_host
    from relaygraph.ui import mount_viewer

    if config is not None and model:
        raise RelayGraphError("give --config or --model, not both")
    settings = (
        load_config(config)
        if config is not None
        else ServeConfig(models={m: LLMEntry(llm=m) for m in model or [DEFAULT_MODEL]})
    )
    if ui:
        settings = settings.model_copy(update={"ui": [*settings.ui, *ui]})
    bind = safe_host(host, settings.security)
    served_app = app_from_config(settings)
    if settings.ui:
        mount_viewer(served_app, settings)
        console.print(f"viewer on http://{bind}:{port}/ui/")
    console.print(f"serving {', '.join(settings.models)} on http://{bind}:{port}/v1")
    uvicorn.run(served_app, host=bind, port=port, log_level="info")


@user_errors
def worker(
    *,
    model: Annotated[str, typer.Option("--model", "-m", help="Model (a name or a path).")],
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 0,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    engine: Annotated[
        str, typer.Option(help="relaygraph (embedded engine) or vllm (vLLM's server).")
    ] = "relaygraph",
    slots: Annotated[
        int | None, typer.Option(help="Sequences the embedded engine decodes together [8].")
    ] = None,
    max_waiting: Annotated[
        int | None, typer.Option(help="Requests that may wait for a slot before 503s [128].")
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(help="Requests in flight per client (429 above) [64].")
    ] = None,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(help="Most tokens one forward pass of the embedded engine takes [512]."),
    ] = None,
) -> None:
    """Start a worker for one model and print its URL (for pools and speculative decoding)."""
    import subprocess

    import uvicorn

    from relaygraph.serving.config import LLMEntry, SecurityConfig, ServeConfig
    from relaygraph.serving.server import app_from_config, free_port, safe_host

    if engine not in ("relaygraph", "vllm"):
        raise RelayGraphError(f"--engine must be relaygraph or vllm, not {engine!r}")
    engine_options = (slots, max_waiting, max_concurrency, chunk_tokens)
    if engine == "vllm" and engine_options != (None, None, None, None):
        raise RelayGraphError(
            "--slots, --max-waiting, --max-concurrency and --chunk-tokens set relaygraph's "
            "engine and server; vLLM takes its own options (--max-num-seqs and the like) on "
            "its command line"
        )
    entry = LLMEntry(llm=model, slots=slots, max_waiting=max_waiting, chunk_tokens=chunk_tokens)
    settings = ServeConfig(
        models={model: entry},
        # A worker's clients are servers and pools, many requests from one address.
        security=SecurityConfig(max_concurrency_per_key=max_concurrency or 64),
    )
    bind = safe_host(host, settings.security)
    chosen = port or free_port(bind)
    url = f"http://{bind}:{chosen}/v1"
    if engine == "vllm":
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model,
            "--host",
            bind,
            "--port",
            str(chosen),
        ]
        print(url, flush=True)
        raise typer.Exit(subprocess.call(command))
    served_app = app_from_config(settings)  # load before announcing: the URL means ready
    print(url, flush=True)
    uvicorn.run(served_app, host=bind, port=chosen, log_level="warning")
