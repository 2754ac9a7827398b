"""A learned resource-aware reasoning policy (RARRL) against fixed strategies, on ALFWorld.

Stages (each resumable; ``--only`` runs one):

1. ``record``: real episodes with real model calls. Each episode enters an ALFWorld game
   1 or 2 expert commands before its goal and gives the agent one command more than
   that; at every state the executor (SmolLM2-135M) proposes a command and each module
   (act on the proposal; reason with SmolLM2; reason with Gemma-3-270M) produces its
   own, and every distinct command is followed, so the book holds each episode's whole
   tree. ``valid_train`` games train, ``valid_seen`` games tune, ``valid_unseen`` games
   report. Book: benchmarks/data/reasoning_book.jsonl, kept in the repository: recording
   it takes hours of model calls (about 1.3 episodes a minute here), longer than one
   sitting, and every later stage replays it.
2. ``policy``: the this-cpu profile fitted to the recorded calls, then for each profile
   and lambda: a REINFORCE policy trained on the training episodes (checkpoint chosen on
   the tuning episodes), deployed only if its reward gain over never reasoning on the
   tuning episodes is positive with 95% confidence (safe policy improvement; otherwise
   the policy file says never reason); the deployed policy, the trained network and
   every baseline replayed on the report episodes.

Writes benchmarks/results/reasoning_policy.json, reasoning_policy.png (success against
latency per profile and lambda) and reasoning_policy_curves.png (learning curves).

Usage:
    python benchmarks/reasoning_policy.py [--only record|policy] [--train-games 40]
        [--tune-games 16] [--report-games 24] [--book PATH] [--runs DIR]
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import asdict
from itertools import chain, zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _common import RESULTS, machine, write_json
from rich.progress import Progress

from relaygraph.eval.alfworld.env import AlfworldEnvError
from relaygraph.eval.alfworld.games import load_games
from relaygraph.eval.alfworld.modules import AlfworldModules, Recorder, spread
from relaygraph.fileio import save_figure
from relaygraph.routing.reasoning.baselines import tuned_baselines
from relaygraph.routing.reasoning.env import ReasoningEnv, rollout
from relaygraph.routing.reasoning.modules import ActionSpace
from relaygraph.routing.reasoning.pipeline import (
    EpisodeSplits,
    SplitEnvs,
    fit_featurizer,
    train_and_deploy,
)
from relaygraph.routing.reasoning.profiles import fit_profile, load_profile, save_profile
from relaygraph.routing.reasoning.record import StateBook
from relaygraph.routing.reasoning.train import TrainConfig, evaluate, summarize

if TYPE_CHECKING:
    from relaygraph.routing.reasoning.env import StepPolicy

RUNS = Path("runs/reasoning")
BOOK = Path(__file__).resolve().parent / "data" / "reasoning_book.jsonl"
SMALL, LARGE = "smollm2-135m", "gemma3-270m"
REMAINING = (1, 2)
"""Expert commands left when the agent takes over; with 3, no module won in a probe."""
SLACK = 1
"""Commands the agent gets beyond the expert's."""
SPACE = ActionSpace.default(SMALL, LARGE)
PROFILES = ("this-cpu", "edge-phone", "cloud-gpu", "congested-network")
LAMBDAS = (0.05, 0.25)
"""Latency weights: spending the whole budget costs a twentieth of a success, or a quarter
(the large model wins a minority of episodes, so at 1.0 no reasoning could pay)."""
THIS_CPU_BUDGET_S = 20.0
"""The measured profile's episode budget: about three steps of the large model here."""
SEEDS = (0, 1, 2)
PROFILE_FILE = Path(__file__).resolve().parents[1] / "routing/reasoning/profiles/this-cpu.json"


def record(args: argparse.Namespace) -> StateBook:
    args.book.parent.mkdir(parents=True, exist_ok=True)
    book = StateBook(args.book)
    recorder = Recorder(AlfworldModules(SPACE), book)
    splits = [
        [(game, remaining) for game in spread(load_games(split), count) for remaining in REMAINING]
        for split, count in (
            ("valid_train", args.train_games),
            ("valid_seen", args.tune_games),
            ("valid_unseen", args.report_games),
        )
    ]
    # The splits in turn, so that a recording cut short still trains, tunes and reports.
    plan = [item for item in chain.from_iterable(zip_longest(*splits)) if item is not None]
    with Progress() as progress:
        task = progress.add_task("recording episodes", total=len(plan))
        for game, remaining in plan:
            episode = recorder.episode(game, remaining=remaining, max_steps=remaining + SLACK)
            try:
                recorder.record(episode)
            except AlfworldEnvError as exc:
                progress.console.print(f"skipped {episode.id}: {exc}")
            progress.advance(task)
    return book


def dominators(point: dict[str, float], others: list[dict[str, Any]]) -> list[str]:
    """The others at least as successful and at most as slow, strictly better in one."""
    return [
        o["policy"]
        for o in others
        if o["success"] >= point["success"]
        and o["latency_s"] <= point["latency_s"]
        and (o["success"] > point["success"] or o["latency_s"] < point["latency_s"])
    ]


def policy(args: argparse.Namespace) -> None:
    book = StateBook(args.book)
    measured = fit_profile(book, SPACE, name="this-cpu", budget_s=THIS_CPU_BUDGET_S)
    save_profile(measured, PROFILE_FILE)
    profiles = {name: measured if name == "this-cpu" else load_profile(name) for name in PROFILES}
    splits = EpisodeSplits.of(book)
    featurizer = fit_featurizer(book, splits.train, dims=args.dims)
    runs: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    with Progress() as progress:
        task = progress.add_task("training", total=len(PROFILES) * len(LAMBDAS) * len(SEEDS))
        for name, profile in profiles.items():
            for lam in LAMBDAS:
                envs = SplitEnvs.build(book, splits, SPACE, profile, featurizer, lam=lam)
                configs = [TrainConfig(updates=args.updates, seed=seed) for seed in SEEDS]
                trained = train_and_deploy(
                    envs, configs, on_trained=lambda _: progress.advance(task)
                )
                assert trained.check is not None  # safe deployment is the default
                trained.deployed.save(args.runs / f"policy-{name}-{lam}.json")
                curves[f"{name} lam={lam}"] = [asdict(p) for p in trained.result.curve]
                rows = [
                    {"policy": p.name, **evaluate(p, envs.report)}
                    for p in tuned_baselines(envs.tune)
                ]
                network = _report("trained network", trained.network, envs.report, rows)
                learned = _report("learned (RARRL)", trained.deployed, envs.report, rows)
                learned["safety"] = trained.check.as_dict()
                runs.append(
                    {
                        "profile": name,
                        "lam": lam,
                        "learned": learned,
                        "trained_network": network,
                        "learned_training": trained.network.training,
                        "baselines": rows,
                    }
                )
    data = {
        "machine": machine(),
        "settings": {
            "small": SMALL,
            "large": LARGE,
            "actions": list(SPACE.names),
            "remaining": list(REMAINING),
            "slack": SLACK,
            "episodes": {
                "train": len(splits.train),
                "tune": len(splits.tune),
                "report": len(splits.report),
            },
            "states_recorded": len(book.states),
            "lambdas": list(LAMBDAS),
            "seeds": list(SEEDS),
            "updates": args.updates,
            "embedding_dims": args.dims,
            "reward": "1[won] - lam * latency_s / budget_s",
        },
        "profiles": {name: p.model_dump(mode="json") for name, p in profiles.items()},
        "runs": runs,
        "learned_on_front_everywhere": all(not r["learned"]["dominated_by"] for r in runs),
        "curves": curves,
    }
    write_json(RESULTS / "reasoning_policy.json", data)
    _plot_fronts(runs)
    _plot_curves(curves)


def _report(
    label: str, chosen: StepPolicy, env: ReasoningEnv, baselines: list[dict[str, Any]]
) -> dict[str, Any]:
    """``chosen`` replayed on ``env``'s episodes: summary, dominating baselines, and how
    often it chose each action."""
    played = [rollout(env, chosen, e.id) for e in env.episodes]
    row: dict[str, Any] = {"policy": label, **summarize(played)}
    row["dominated_by"] = dominators(row, baselines)
    actions = Counter(a for r in played for a in r.actions)
    row["action_shares"] = {a: round(actions[a] / sum(actions.values()), 3) for a in SPACE.names}
    return row


def _plot_fronts(runs: list[dict[str, Any]]) -> None:
    fig, axes = plt.subplots(len(LAMBDAS), len(PROFILES), figsize=(4 * len(PROFILES), 7))
    markers = "osD^vP<>X"
    for run in runs:
        ax = axes[LAMBDAS.index(run["lam"])][PROFILES.index(run["profile"])]
        rows = run["baselines"]
        front = sorted((r for r in rows if not dominators(r, rows)), key=lambda r: r["latency_s"])
        ax.plot([r["latency_s"] for r in front], [r["success"] for r in front], "k--", lw=1)
        for marker, r in zip(markers, rows, strict=False):
            ax.scatter(r["latency_s"], r["success"], marker=marker, alpha=0.7, label=r["policy"])
        network, learned = run["trained_network"], run["learned"]
        ax.scatter(
            network["latency_s"], network["success"], c="orange", marker="x", s=90,
            label="trained network",
        )  # fmt: skip
        ax.scatter(
            learned["latency_s"], learned["success"], c="red", marker="*", s=180,
            label="learned, deployed",
        )  # fmt: skip
        ax.set_title(f"{run['profile']}, lambda={run['lam']}", fontsize=9)
        ax.set_xlabel("latency per episode (s)")
        ax.set_ylabel("success rate")
    axes[0][0].legend(fontsize=6, loc="lower left")
    save_figure(fig, RESULTS / "reasoning_policy.png")


def _plot_curves(curves: dict[str, list[dict[str, Any]]]) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, points in curves.items():
        tuned = [p for p in points if p["tune_reward"] is not None]
        ax.plot([p["update"] for p in tuned], [p["tune_reward"] for p in tuned], label=label)
    ax.set_xlabel("update")
    ax.set_ylabel("greedy reward on the tuning episodes")
    ax.legend(fontsize=7)
    save_figure(fig, RESULTS / "reasoning_policy_curves.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("record", "policy"))
    parser.add_argument("--train-games", type=int, default=40)
    parser.add_argument("--tune-games", type=int, default=16)
    parser.add_argument("--report-games", type=int, default=24)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--dims", type=int, default=8)
    parser.add_argument("--book", type=Path, default=BOOK, help="the recorded episodes")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where the policies go")
    args = parser.parse_args()
    if args.only in (None, "record"):
        record(args)
    if args.only in (None, "policy"):
        policy(args)


if __name__ == "__main__":
    main()
