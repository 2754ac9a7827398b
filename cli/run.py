"""The graph commands: ``run`` (an agent graph on one task) and the ``trace`` group
(a saved trace, summarised)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from relaygraph.cli.root import console, errors, user_errors
from relaygraph.errors import RelayGraphError


@user_errors
def run(
    *,
    graph: Annotated[str, typer.Argument(help="Graph factory: file.py:factory or module:factory.")],
    task: Annotated[str, typer.Argument(help="The task (question) to run the graph on.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Default model for the graph.")
    ] = None,
    trace_out: Annotated[
        Path | None, typer.Option("--trace", help="Write the trace as JSON here.")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="sqlite file for a durable, resumable run.")
    ] = None,
    thread: Annotated[str | None, typer.Option(help="Thread id (with --checkpoint).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue thread --thread instead.")
    ] = False,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print tokens as agents produce them.")
    ] = False,
) -> None:
    """Run an agent graph on a task and print its steps and per-role cost."""
    from relaygraph.graph.loader import load_graph
    from relaygraph.graph.results import ResultEvent, RunResult, StepEvent, TokenEvent
    from relaygraph.graph.trace import role_table, step_table

    if resume and (checkpoint is None or thread is None):
        raise RelayGraphError("--resume needs --checkpoint and --thread")
    with load_graph(graph, model=model).compile(checkpointer=checkpoint) as compiled:
        result: RunResult | None = None
        if resume:
            assert thread is not None  # checked above
            result = compiled.resume(thread)
        else:
            for event in compiled.stream(task, thread_id=thread, tokens=stream):
                if isinstance(event, TokenEvent):
                    console.print(event.text, end="", markup=False, highlight=False)
                elif isinstance(event, StepEvent) and stream:
                    console.print()
                elif isinstance(event, ResultEvent):
                    result = event.result
    assert result is not None  # stream() always ends with the result
    console.print(step_table(result.trace))
    console.print(role_table(result.trace))
    if result.ok:
        console.print(f"[bold]answer:[/bold] {escape(result.answer or '')}")
    else:
        errors.print(f"[red]run ended with an error:[/red] {escape(str(result.error))}")
    if trace_out is not None:
        console.print(f"trace written to {result.trace.save(trace_out)}")
    errors.print(f"[dim]thread {result.thread_id}[/dim]")
    if not result.ok:
        raise typer.Exit(1)


trace_app = typer.Typer(help="Inspect run traces.", no_args_is_help=True)


@trace_app.command("show")
@user_errors
def trace_show(
    *,
    file: Annotated[Path, typer.Argument(help="A trace JSON file (relaygraph run --trace).")],
) -> None:
    """Summarise a saved trace: one row per step, then tokens, latency and cost per role."""
    from relaygraph.graph.trace import Trace, role_table, step_table

    saved = Trace.load(file)
    console.print(step_table(saved))
    console.print(role_table(saved))
    verdict = saved.answer if saved.error is None else f"error: {saved.error.message}"
    console.print(f"[bold]result:[/bold] {escape(verdict or '')}")
