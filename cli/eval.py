"""The ``eval`` group: agent graphs on HotPotQA and ALFWorld, a run's report rebuilt,
two runs compared, and the routing hold-out set and its calibration. (Its ``security``
subgroup is `relaygraph.cli.security`.)"""

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.table import Table

from relaygraph.cli.root import LimitOption, SeedOption, check_choice, console, user_errors
from relaygraph.cli.runs import (
    ConcurrencyOption,
    OutOption,
    ResumeOption,
    default_out,
    print_security,
    print_summary,
)
from relaygraph.errors import RelayGraphError
from relaygraph.llm.catalog import DEFAULT_MODEL
from relaygraph.llm.registry import load_llm

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.eval.alfworld.games import Split
    from relaygraph.eval.hotpotqa.data import HotpotDataset, SampleName
    from relaygraph.eval.recipes import SuiteRecipe
    from relaygraph.eval.report import Summary
    from relaygraph.routing.calibration import Method

eval_app = typer.Typer(
    help="Evaluate agent graphs on benchmarks; compare runs.", no_args_is_help=True
)
HotpotDataOption = Annotated[
    Path | None, typer.Option(help="HotPotQA JSON(.gz) file; default: a shipped sample.")
]
SampleOption = Annotated[
    str, typer.Option(help="Shipped sample: distractor-100 or paragraphs-376.")
]
# A flag and an address option rather than click's optional-value ``--ray [ADDRESS]``:
# typer does not pass ``flag_value`` on to click.
RayOption = Annotated[bool, typer.Option("--ray", help="Run the items as Ray tasks.")]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="With --ray: a running cluster (host:port, ray://host:port, auto); "
        "default: a local Ray started for the run."
    ),
]
RayWorkersOption = Annotated[
    int | None, typer.Option(min=1, help="With --ray: items run at once (default 1).")
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        help="A postgresql:// URL where each item and its trace are also stored as they "
        "finish (the run directory stays the record a resume reads)."
    ),
]


def _run(
    recipe: "SuiteRecipe",
    items: "Sequence[Any]",
    out: Path,
    *,
    ray: bool,
    ray_address: str | None,
    ray_workers: int | None,
    concurrency: int,
    dataset: str,
    graph: str,
    model: str,
    seed: int,
    settings: dict[str, object],
    resume: bool,
    database: str | None,
) -> "Summary":
    """The run, here on ``concurrency`` threads or on Ray with ``ray_workers`` tasks,
    its items also stored in ``database`` when given."""
    from relaygraph.eval.fanout import RayOptions, evaluate_on_ray
    from relaygraph.eval.runner import evaluate
    from relaygraph.graph.postgres import shared_records

    if not ray and (ray_workers is not None or ray_address is not None):
        raise RelayGraphError(
            "--ray-workers and --ray-address need --ray; for a local run use --concurrency"
        )
    if ray and concurrency != 1:
        raise RelayGraphError("--concurrency is for local runs; with --ray use --ray-workers")
    with shared_records(database) as shared:
        run: Callable[..., Summary]
        if ray:
            options = RayOptions(address=ray_address, workers=ray_workers or 1)
            run = partial(evaluate_on_ray, recipe, options=options)
        else:
            run = partial(evaluate, recipe.build(), concurrency=concurrency)
        return run(
            items,
            out,
            dataset=dataset,
            graph=graph,
            model=model,
            seed=seed,
            settings=settings,
            resume=resume,
            shared=shared,
        )


def _hotpot_dataset(data: Path | None, sample: str) -> "HotpotDataset":
    """The HotPotQA file ``data``, or the shipped ``sample`` when there is none."""
    from relaygraph.eval.hotpotqa import SAMPLES, load_hotpotqa

    if data is None:
        check_choice("--sample", sample, SAMPLES)
    return load_hotpotqa(data, sample=cast("SampleName", sample))


@eval_app.command("hotpotqa")
@user_errors
def eval_hotpotqa(
    *,
    graph: Annotated[
        str, typer.Option(help="Graph factory taking (model, example) or (model).")
    ] = "relaygraph.eval.hotpotqa.agents:react",
    model: Annotated[str, typer.Option("--model", "-m", help="Model for the graph.")] = (
        DEFAULT_MODEL
    ),
    data: HotpotDataOption = None,
    sample: SampleOption = "distractor-100",
    limit: LimitOption = None,
    seed: SeedOption = 0,
    concurrency: ConcurrencyOption = 1,
    out: OutOption = None,
    resume: ResumeOption = False,
    judge: Annotated[
        str | None, typer.Option(help="Model that grades answers (AQ score); default: none.")
    ] = None,
    ray: RayOption = False,
    ray_address: RayAddressOption = None,
    ray_workers: RayWorkersOption = None,
    database: DatabaseOption = None,
) -> None:
    """Run a graph on HotPotQA questions: EM/F1 (and AQ), per-role cost, report, plots."""
    from relaygraph.eval.recipes import HotpotRecipe
    from relaygraph.eval.runner import sample_items

    dataset = _hotpot_dataset(data, sample)
    target = out or default_out("hotpotqa", model)
    summary = _run(
        HotpotRecipe(graph, model, judge),
        sample_items(dataset.examples, limit, seed),
        target,
        ray=ray,
        ray_address=ray_address,
        ray_workers=ray_workers,
        concurrency=concurrency,
        dataset=dataset.source if data else f"sample:{sample}",
        graph=graph,
        model=model,
        seed=seed,
        settings={"judge": judge, "limit": limit},
        resume=resume,
        database=database,
    )
    print_summary(target, summary)


@eval_app.command("alfworld")
@user_errors
def eval_alfworld(
    *,
    graph: Annotated[
        str, typer.Option(help="Graph factory taking (model, env).")
    ] = "relaygraph.eval.alfworld.agent:alfworld_react",
    model: Annotated[str, typer.Option("--model", "-m", help="Model for the graph.")] = (
        DEFAULT_MODEL
    ),
    split: Annotated[
        str, typer.Option(help="valid_unseen (134 games), valid_seen or valid_train.")
    ] = "valid_unseen",
    data: Annotated[
        Path | None, typer.Option(help="Folder holding json_2.1.1/<split>; default: shipped.")
    ] = None,
    max_steps: Annotated[int, typer.Option(min=1, help="Commands per game.")] = 50,
    remaining: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Enter each game this many expert commands before its goal (the "
            "short-horizon setting; e.g. with --graph ...agent:alfworld_react_scored).",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(help="Play this many games, drawn (seeded) in proportion to task type."),
    ] = None,
    seed: SeedOption = 0,
    concurrency: ConcurrencyOption = 1,
    out: OutOption = None,
    resume: ResumeOption = False,
    ray: RayOption = False,
    ray_address: RayAddressOption = None,
    ray_workers: RayWorkersOption = None,
    database: DatabaseOption = None,
) -> None:
    """Play ALFWorld games with a graph: success rate per task type, steps, per-role cost."""
    from relaygraph.eval.alfworld.games import load_games
    from relaygraph.eval.recipes import AlfworldRecipe
    from relaygraph.eval.runner import sample_items

    games = load_games(cast("Split", split), data_dir=data)
    target = out or default_out("alfworld", model)
    summary = _run(
        AlfworldRecipe(graph, model, max_steps, remaining),
        sample_items(games, limit, seed, stratum=lambda game: game.task_type),
        target,
        ray=ray,
        ray_address=ray_address,
        ray_workers=ray_workers,
        concurrency=concurrency,
        dataset=str(data / split) if data else f"shipped:{split}",
        graph=graph,
        model=model,
        seed=seed,
        settings={"limit": limit, "max_steps": max_steps, "remaining": remaining},
        resume=resume,
        database=database,
    )
    print_summary(target, summary)


@eval_app.command("report")
@user_errors
def eval_report(
    *,
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
) -> None:
    """Rebuild a run's summary, report and plots from its items."""
    from relaygraph.eval.report import write_report
    from relaygraph.graph.runs import read_manifest

    if read_manifest(run_dir).suite == "security":
        from relaygraph.eval.security import write_security_report

        summary, report = write_security_report(run_dir)
        print_summary(run_dir, summary)
        print_security(report)
        return
    print_summary(run_dir, write_report(run_dir))


@eval_app.command("compare")
@user_errors
def eval_compare(
    *,
    run_a: Annotated[Path, typer.Argument(help="First run directory.")],
    run_b: Annotated[Path, typer.Argument(help="Second run directory.")],
    items: Annotated[int, typer.Option(help="Differing items to list.")] = 50,
) -> None:
    """Headline figures side by side, then the items whose outcome differs."""
    from relaygraph.eval.compare import compare, items_table, summary_table

    comparison = compare(run_a, run_b)
    console.print(summary_table(comparison, (str(run_a), str(run_b))))
    if comparison.differing:
        console.print(items_table(comparison, items))


@eval_app.command("holdout")
@user_errors
def eval_holdout(
    *,
    out: Annotated[Path, typer.Option(help="Hold-out JSONL to write (resumed if it exists).")],
    model: Annotated[str, typer.Option("--model", "-m", help="The small model.")] = (DEFAULT_MODEL),
    estimators: Annotated[
        str, typer.Option(help="Comma-separated estimator names, or 'all'.")
    ] = "all",
    dataset: Annotated[
        str, typer.Option(help="facts (shipped capitals and chemical symbols) or hotpotqa.")
    ] = "facts",
    data: HotpotDataOption = None,
    sample: SampleOption = "paragraphs-376",
    limit: LimitOption = None,
    seed: SeedOption = 0,
) -> None:
    """Build a routing hold-out set: the model's answers to short factual questions, or to
    HotPotQA questions with their gold paragraphs, right or wrong, with every estimator's
    score. --data and --sample choose the HotPotQA file."""
    from relaygraph.eval.facts import load_facts
    from relaygraph.eval.holdout import build_holdout, fact_items
    from relaygraph.eval.hotpotqa.holdout import hotpot_items
    from relaygraph.eval.runner import sample_items
    from relaygraph.routing.uncertainty import ESTIMATORS

    names = sorted(ESTIMATORS) if estimators == "all" else estimators.split(",")
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        raise RelayGraphError(
            f"unknown estimator(s) {', '.join(unknown)}; known: {', '.join(sorted(ESTIMATORS))}"
        )
    if dataset == "facts":
        items = fact_items(load_facts())
    elif dataset == "hotpotqa":
        items = hotpot_items(_hotpot_dataset(data, sample).examples)
    else:
        raise RelayGraphError(f"--dataset must be facts or hotpotqa, not {dataset!r}")
    items = sample_items(items, limit, seed, stratum=lambda item: item.group)
    rows = build_holdout(load_llm(model), items, {n: ESTIMATORS[n]() for n in names}, out)
    right = sum(r.correct for r in rows)
    console.print(f"{len(rows)} answers, {right} right ({right / max(len(rows), 1):.1%}): {out}")


@eval_app.command("calibrate")
@user_errors
def eval_calibrate(
    *,
    holdout: Annotated[Path, typer.Argument(help="Hold-out JSONL from `eval holdout`.")],
    estimator: Annotated[str, typer.Option(help="Estimator whose scores to calibrate.")],
    out: Annotated[Path, typer.Option(help="Calibration JSON to write.")],
    method: Annotated[str, typer.Option(help="isotonic or platt.")] = "isotonic",
) -> None:
    """Fit a calibration for one estimator; print ECE and thresholds for common targets."""
    from relaygraph.eval.holdout import calibration_items, read_holdout
    from relaygraph.routing.calibration import fit_calibration

    if method not in ("isotonic", "platt"):
        raise RelayGraphError(f"--method must be isotonic or platt, not {method!r}")
    rows = read_holdout(holdout)
    models = sorted({r.model for r in rows})
    if len(models) != 1:
        raise RelayGraphError(f"{holdout} holds answers of {models or 'no model'}; need one")
    calibration = fit_calibration(
        calibration_items(rows, estimator),
        model=models[0],
        estimator=estimator,
        method=cast("Method", method),
    )
    calibration.save(out)
    table = Table(title=f"{estimator} on {models[0]}: {calibration.items} answers")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("accuracy", f"{calibration.accuracy:.3f}")
    table.add_row(
        "ECE before / after", f"{calibration.ece_before:.3f} / {calibration.ece_after:.3f}"
    )
    for rate in (0.2, 0.5, 0.8):
        table.add_row(
            f"threshold, {rate:.0%} escalated", f"{calibration.threshold_for_escalation(rate):.4g}"
        )
    console.print(table)
    console.print(f"calibration: {out}")
