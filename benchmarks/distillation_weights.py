"""The structured loss's weights, chosen on a tuning split of the training episodes.

Weights picked on the held-out steps would be fitted to them, so this splits the
distillation benchmark's training dataset by episode (a seeded draw of a quarter of each
agent's episodes) into a fit part and a tuning part, trains students on the fit part with
the benchmark's settings (`distillation.add_student_options`), one per weight setting and
seed, and scores each one's ACT match on the tuning part's steps. A KD student per seed
is the reference. The best setting's weights are what ``distillation_react.py --reason-kl
--act-kl --act-ce`` should then be given.

Run after ``distillation_react.py --only train`` (it reads
runs/distillation-react/dataset-train).
Writes benchmarks/results/distillation_weights.json and distillation_weights.png.

Usage:
    python benchmarks/distillation_weights.py [--weights 1,1,0 2,1,0 1,1,1]
        [--seeds 2] [--tune-steps 48] [distillation_react.py's student options]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import RESULTS, machine, write_json
from distillation import parse_weights
from distillation_react import (
    RUNS,
    TEACHER,
    add_student_options,
    agreement,
    paired_act_match,
    scored_steps,
    student_config,
    student_name,
)

from relaygraph.distill import load_dataset, save_dataset
from relaygraph.distill.dataset import DistillExample, dataset_stats
from relaygraph.distill.evaluate import agent_actions
from relaygraph.distill.losses import LossKind, SpanWeights
from relaygraph.distill.train import train
from relaygraph.eval.runner import sample_items
from relaygraph.fileio import save_figure
from relaygraph.llm.registry import load_llm

TUNING = RUNS / "tuning"


def split(examples: list[DistillExample], share: float) -> dict[str, list[DistillExample]]:
    """``fit`` and ``tune`` steps, split by episode: ``share`` of each agent's episodes
    (seeded) go to ``tune``, so no tuning step's episode is trained on."""
    episodes = sorted({(e.agent, e.source) for e in examples})
    drawn = sample_items(episodes, round(share * len(episodes)), 0, stratum=lambda e: e[0])
    tuned = {source for _, source in drawn}
    return {
        "fit": [e for e in examples if e.source not in tuned],
        "tune": [e for e in examples if e.source in tuned],
    }


def parts(share: float) -> dict[str, Path]:
    """The fit and tune datasets, written once under runs/distillation/tuning/."""
    examples, stats = load_dataset(RUNS / "dataset-train")
    folders = {name: TUNING / f"dataset-{name}" for name in ("fit", "tune")}
    if not all((f / "examples.jsonl").exists() for f in folders.values()):
        for name, chosen in split(examples, share).items():
            won = {e.source for e in chosen if e.success}
            sizes = dataset_stats(
                chosen,
                episodes=len({e.source for e in chosen}),
                successful_episodes=len(won),
                skipped={f"other part of {stats.examples} steps": stats.examples - len(chosen)},
            )
            save_dataset(chosen, sizes, folders[name])
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights",
        nargs="+",
        type=parse_weights,
        default=[SpanWeights(1, 1, 0), SpanWeights(2, 1, 0), SpanWeights(1, 1, 1)],
        help="structured weight settings to compare, each reason_kl,act_kl,act_ce",
    )
    parser.add_argument("--seeds", type=int, default=2, help="students per setting")
    parser.add_argument("--tune-share", type=float, default=0.25)
    parser.add_argument("--tune-steps", type=int, default=48)
    add_student_options(parser)
    args = parser.parse_args()
    folders = parts(args.tune_share)
    fit, tune = (load_dataset(folders[n])[0] for n in ("fit", "tune"))
    steps = scored_steps(tune, args.tune_steps)
    actions = agent_actions([*fit, *tune])
    teacher = load_llm(TEACHER)
    settings: dict[str, tuple[LossKind, SpanWeights | None]] = {"kd": ("kd", None)}
    for weights in args.weights:
        label = "structured " + ",".join(
            f"{w:g}" for w in (weights.reason_kl, weights.act_kl, weights.act_ce)
        )
        settings[label] = ("structured", weights)
    rows: dict[str, dict[str, Any]] = {}
    for label, (loss, weights) in settings.items():
        by_seed = []
        for seed in range(args.seeds):
            config = student_config(args, loss, seed, weights)
            out = TUNING / f"student-{student_name(config)}"
            if not (out / "result.json").exists():
                train(config, folders["fit"], out)
            model = str(out / "student.gguf")
            scores = agreement(
                load_llm(model),
                model,
                teacher,
                steps,
                actions,
                out=TUNING / f"score-{out.name}.json",
            )
            by_seed.append(scores)
        matches = [s["act_match"] for s in by_seed]
        rows[label] = {
            "weights": None if weights is None else asdict(weights),
            "by_seed": by_seed,
            "act_match": round(float(np.mean(matches)), 4),
            "parsed": round(float(np.mean([s["parsed"] for s in by_seed])), 4),
        }
    episodes = [e.source for e in steps]
    for label, row in rows.items():
        if label != "kd":
            row["vs_kd"] = paired_act_match(row, rows["kd"], episodes)
    best = max(
        (label for label in rows if label != "kd"), key=lambda label: rows[label]["act_match"]
    )
    write_json(
        RESULTS / "distillation_weights.json",
        {
            "benchmark": "distillation_weights",
            "machine": machine(),
            "settings": {k: v for k, v in vars(args).items() if k != "weights"}
            | {"teacher": TEACHER},
            "split": {n: json.loads((f / "stats.json").read_text()) for n, f in folders.items()},
            "tune_steps": len(steps),
            "rows": rows,
            "best": {"setting": best, "weights": rows[best]["weights"]},
        },
    )
    plot(rows, RESULTS / "distillation_weights.png")


def plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """ACT match on the tuning steps per setting: a bar (the seeds' mean), a dot per seed."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(rows)
    ax.bar(names, [rows[n]["act_match"] for n in names], color="#4c72b0")
    for x, name in enumerate(names):
        values = [s["act_match"] for s in rows[name]["by_seed"]]
        ax.scatter([x] * len(values), values, color="black", s=10, zorder=3)
    ax.set_ylim(0, 1)
    ax.set_title("ACT exact match on tuning steps (weights: reason_kl,act_kl,act_ce)", fontsize=10)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
