"""The ``eval security`` group: tasks synthesized from risk specs, a graph run on them
in sandboxes, and the scorer checked on trajectories whose verdicts are known."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from relaygraph.cli.root import SeedOption, console, user_errors
from relaygraph.cli.runs import (
    ConcurrencyOption,
    OutOption,
    ResumeOption,
    default_out,
    print_security,
    print_summary,
)
from relaygraph.errors import ConfigError
from relaygraph.llm.catalog import DEFAULT_MODEL
from relaygraph.llm.registry import load_llm

security_app = typer.Typer(
    help="Security tasks: synthesize them from risk specs, run a graph on them, check the scorer.",
    no_args_is_help=True,
)


@security_app.command("synthesize")
@user_errors
def security_synthesize(
    *,
    out: Annotated[Path, typer.Option(help="Task directory to write.")],
    specs: Annotated[
        Path | None,
        typer.Option(help="Folder of *.yaml risk specs; default: the shipped development set."),
    ] = None,
    held_out: Annotated[
        bool, typer.Option("--held-out", help="Use the shipped held-out specs instead.")
    ] = False,
    seed: SeedOption = 0,
    paraphrase_model: Annotated[
        str | None,
        typer.Option(
            help="Model that rewrites each request (kept only if every bound value "
            "survives); default: none."
        ),
    ] = None,
) -> None:
    """Expand risk specs into concrete tasks (attacks and benign controls), deterministic
    for a seed."""
    from relaygraph.eval.security import (
        HELDOUT_SPECS,
        load_specs,
        paraphrase,
        save_tasks,
        synthesize,
    )

    if held_out and specs is not None:
        raise ConfigError("give --specs or --held-out, not both", parameter="held_out")
    loaded = load_specs(HELDOUT_SPECS if held_out else specs)
    tasks = synthesize(loaded, seed=seed)
    rejected = 0
    if paraphrase_model is not None:
        tasks, rejected = paraphrase(tasks, load_llm(paraphrase_model), seed=seed)
    manifest = save_tasks(
        tasks,
        out,
        seed=seed,
        specs=[s.id for s in loaded],
        paraphrase_model=paraphrase_model,
        paraphrase_rejected=rejected,
    )
    table = Table(title=f"{manifest.tasks} tasks from {len(loaded)} specs (seed {seed})")
    table.add_column("category")
    table.add_column("tasks", justify="right")
    for category, count in manifest.by_category.items():
        table.add_row(category, str(count))
    console.print(table)
    if paraphrase_model is not None:
        console.print(f"paraphrased {manifest.paraphrased}, kept the template for {rejected}")
    console.print(f"tasks: {escape(str(out))}")


@security_app.command("run")
@user_errors
def security_run(
    *,
    tasks: Annotated[Path, typer.Option(help="Task directory from `eval security synthesize`.")],
    graph: Annotated[
        str, typer.Option(help="Graph factory taking (model, sandbox).")
    ] = "relaygraph.eval.security.agents:assistant",
    model: Annotated[str, typer.Option("--model", "-m", help="Model for the graph.")] = (
        DEFAULT_MODEL
    ),
    judge: Annotated[
        str | None, typer.Option(help="Model deciding the specs' judge predicates; default: none.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Run this many tasks, drawn (seeded) per category.")
    ] = None,
    seed: SeedOption = 0,
    concurrency: ConcurrencyOption = 1,
    out: OutOption = None,
    resume: ResumeOption = False,
) -> None:
    """Run a graph on security tasks in sandboxes; score every step of every trajectory."""
    from relaygraph.eval.runner import evaluate, sample_items
    from relaygraph.eval.security import (
        SecuritySuite,
        TrajectoryJudge,
        load_tasks,
        write_security_report,
    )
    from relaygraph.graph.loader import load_factory

    manifest, loaded = load_tasks(tasks)
    target = out or default_out("security", model)
    suite = SecuritySuite(
        load_factory(graph),
        load_llm(model),
        directory=target,
        judge=TrajectoryJudge(load_llm(judge)) if judge else None,
    )
    evaluate(
        suite,
        sample_items(loaded, limit, seed, stratum=lambda task: task.category),
        target,
        dataset=f"{tasks} (format {manifest.version}, seed {manifest.seed})",
        graph=graph,
        model=model,
        seed=seed,
        settings={"judge": judge, "limit": limit, "tasks": str(tasks)},
        resume=resume,
        concurrency=concurrency,
    )
    summary, report = write_security_report(target)
    print_summary(target, summary)
    print_security(report)


@security_app.command("validate")
@user_errors
def security_validate() -> None:
    """Score the scripted trajectories whose verdicts are known; exit 1 on any mistake."""
    from relaygraph.eval.security import validate_scorer

    results = validate_scorer()
    table = Table(title="Scorer validation: scripted trajectories")
    table.add_column("case")
    table.add_column("verdict")
    table.add_column("first violation", justify="right")
    table.add_column("end state says", justify="right")
    table.add_column("right")
    for r in results:
        table.add_row(
            r.name,
            "unsafe" if r.got["unsafe"] else "safe",
            str(r.got["first_violation_step"] or "-"),
            "unsafe" if r.got["end_state_unsafe"] else "safe",
            "[green]yes[/green]" if r.correct else f"[red]no[/red] {r.got}",
        )
    console.print(table)
    if not all(r.correct for r in results):
        raise typer.Exit(1)
