"""The ``reasoning`` group: ALFWorld states recorded with real model calls, this
machine's resource profile fitted to them, and a policy trained on them."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.table import Table

from relaygraph.cli.root import SeedOption, console, user_errors
from relaygraph.llm.catalog import DEFAULT_MODEL

if TYPE_CHECKING:
    from relaygraph.eval.alfworld.games import Split
    from relaygraph.routing.reasoning.env import StepPolicy

reasoning_app = typer.Typer(
    help="Resource-aware reasoning policies: record ALFWorld states, fit a profile, train.",
    no_args_is_help=True,
)
BookOption = Annotated[Path, typer.Option(help="The state book (JSON lines).")]
SmallOption = Annotated[str, typer.Option(help="The executor and small reasoner.")]
LargeOption = Annotated[str, typer.Option(help="The large reasoner.")]


@reasoning_app.command("record")
@user_errors
def reasoning_record(
    *,
    book: BookOption = Path("runs/reasoning/book.jsonl"),
    split: Annotated[str, typer.Option(help="valid_train, valid_seen or valid_unseen.")] = (
        "valid_train"
    ),
    games: Annotated[int, typer.Option(min=1, help="Games, the task types in turn.")] = 10,
    remaining: Annotated[
        list[int], typer.Option(help="Expert commands left when the agent takes over.")
    ] = [1, 2],  # noqa: B006 - typer reads the default, never mutates it
    slack: Annotated[int, typer.Option(min=0, help="Commands beyond the expert's.")] = 1,
    small: SmallOption = DEFAULT_MODEL,
    large: LargeOption = "gemma3-270m",
) -> None:
    """Play episodes with real model calls in the real engine; every module at every
    state, every distinct command followed. Resumes: recorded states are never redone."""
    from rich.progress import Progress

    from relaygraph.eval.alfworld.games import load_games
    from relaygraph.eval.alfworld.modules import AlfworldModules, Recorder, spread
    from relaygraph.routing.reasoning.modules import ActionSpace
    from relaygraph.routing.reasoning.record import StateBook

    states = StateBook(book)
    recorder = Recorder(AlfworldModules(ActionSpace.default(small, large)), states)
    chosen = spread(load_games(cast("Split", split)), games)
    before = len(states.states)
    with Progress(console=console) as progress:
        task = progress.add_task("recording", total=len(chosen) * len(remaining))
        for game in chosen:
            for left in remaining:
                recorder.record(recorder.episode(game, remaining=left, max_steps=left + slack))
                progress.advance(task)
    console.print(f"{len(states.states) - before} new states; {book} holds {len(states.states)}")


@reasoning_app.command("profile")
@user_errors
def reasoning_profile(
    *,
    out: Annotated[Path, typer.Option(help="Where the profile JSON goes.")],
    book: BookOption = Path("runs/reasoning/book.jsonl"),
    name: Annotated[str, typer.Option(help="The profile's name.")] = "this-machine",
    budget: Annotated[float, typer.Option(min=0.0, help="Latency budget per episode (s).")] = 12.0,
    small: SmallOption = DEFAULT_MODEL,
    large: LargeOption = "gemma3-270m",
) -> None:
    """Measure this machine: per module, seconds per call, prompt token and completion
    token, fitted to the recorded requests' wall times."""
    from relaygraph.routing.reasoning.modules import ActionSpace
    from relaygraph.routing.reasoning.profiles import fit_profile, save_profile
    from relaygraph.routing.reasoning.record import StateBook

    space = ActionSpace.default(small, large)
    profile = fit_profile(StateBook(book), space, name=name, budget_s=budget)
    save_profile(profile, out)
    table = Table(title=f"profile {name}: {profile.description}")
    for column in (
        "module",
        "per call (ms)",
        "per prompt token (ms)",
        "per completion (ms)",
        "R^2",
    ):
        table.add_column(column, justify="left" if column == "module" else "right")
    for module, cost in profile.modules.items():
        fit = profile.fit.get(module, {})
        table.add_row(
            module,
            f"{cost.base_s * 1e3:.1f}",
            f"{cost.prompt_s * 1e3:.3f}",
            f"{cost.completion_s * 1e3:.1f}",
            f"{fit['r2']:.2f}" if fit else "-",
        )
    console.print(table)
    console.print(f"profile: {out}")


@reasoning_app.command("train")
@user_errors
def reasoning_train(
    *,
    out: Annotated[Path, typer.Option(help="Where the policy file goes.")],
    book: BookOption = Path("runs/reasoning/book.jsonl"),
    profile: Annotated[str, typer.Option(help="A shipped profile or a .json file.")] = "this-cpu",
    lam: Annotated[float, typer.Option(min=0.0, help="Latency weight (per budget spent).")] = 0.25,
    updates: Annotated[int, typer.Option(min=1)] = 300,
    seed: SeedOption = 0,
    small: SmallOption = DEFAULT_MODEL,
    large: LargeOption = "gemma3-270m",
    safe: Annotated[
        bool, typer.Option(help="Keep the network only on a confident gain on valid_seen.")
    ] = True,
) -> None:
    """Train on the book's valid_train episodes (REINFORCE), choose the checkpoint on
    valid_seen, and compare with the tuned baselines on valid_unseen."""
    from relaygraph.routing.reasoning.baselines import tuned_baselines
    from relaygraph.routing.reasoning.modules import ActionSpace
    from relaygraph.routing.reasoning.pipeline import (
        EpisodeSplits,
        SplitEnvs,
        fit_featurizer,
        train_and_deploy,
    )
    from relaygraph.routing.reasoning.profiles import load_profile
    from relaygraph.routing.reasoning.record import StateBook
    from relaygraph.routing.reasoning.train import TrainConfig, evaluate

    states = StateBook(book)
    space = ActionSpace.default(small, large)
    deployment = load_profile(profile)
    splits = EpisodeSplits.of(states)
    featurizer = fit_featurizer(states, splits.train)
    envs = SplitEnvs.build(states, splits, space, deployment, featurizer, lam=lam)
    trained = train_and_deploy(envs, [TrainConfig(updates=updates, seed=seed)], safe=safe)
    network, deployed, check = trained.network, trained.deployed, trained.check
    deployed.save(out)
    table = Table(title=f"valid_unseen, {len(splits.report)} episodes, {profile}, lam {lam}")
    for column in ("policy", "success", "latency (s)", "tokens", "reward"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    rows: list[tuple[str, StepPolicy]] = []
    if deployed is not network:
        rows.append(("trained network", network))
    rows += [("deployed: " + deployed.name, deployed)]
    rows += [(p.name, p) for p in tuned_baselines(envs.tune)]
    for name, policy in rows:
        scores = evaluate(policy, envs.report)
        table.add_row(
            name,
            f"{scores['success']:.1%}",
            f"{scores['latency_s']:.2f}",
            f"{scores['tokens']:.0f}",
            f"{scores['reward']:.3f}",
        )
    console.print(table)
    console.print(f"policy: {out} (best update {trained.result.best_update})")
    if check is not None:
        verdict = "kept" if check.kept else f"not kept: the file says {deployed.name}"
        console.print(
            f"gain over never reasoning on valid_seen: {check.gain:+.3f} reward per episode, "
            f"95% lower bound {check.lower:+.3f} ({verdict})"
        )
