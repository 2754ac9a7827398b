"""Structured REASON/ACT distillation against token-level KD and SFT, on real trajectories.

Stages (each resumable; ``--only`` runs one):

1. ``teacher``: the teacher (SmolLM2-135M, ReAct agents) plays ALFWorld ``valid_train``
   games and answers HotPotQA questions of the 376-question sample: the training
   trajectories. It also plays ``valid_unseen`` games and the distractor-100 questions:
   held-out trajectories, never trained on. Run directories under runs/distillation/.
2. ``train``: one dataset from the training runs (all episodes: the teacher rarely
   succeeds), and three students with the same blocks, data, steps and seed, one per
   loss: ``sft``, ``kd`` (token-level) and ``structured``.
3. ``eval``: on held-out steps, each student's ACT exact match with the teacher given the
   same prompt, the teacher's perplexity of the student's REASON text, and end-task
   success with the student as the agent model; student size and tokens/s.

Writes benchmarks/results/distillation.json and distillation.png.

Usage:
    python benchmarks/distillation.py [--only teacher|train|eval] [--hotpot-train 120]
        [--alfworld-train 24] [--steps 60] [--batch 4] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import RESULTS, machine, write_json

from relaygraph.distill import build_dataset, load_dataset, save_dataset
from relaygraph.distill.dataset import dataset_stats
from relaygraph.distill.evaluate import score_student
from relaygraph.distill.losses import LOSSES
from relaygraph.distill.train import TrainConfig, train
from relaygraph.eval.alfworld.agent import alfworld_react
from relaygraph.eval.alfworld.games import load_games
from relaygraph.eval.alfworld.suite import AlfworldSuite
from relaygraph.eval.hotpotqa import HotpotSuite, load_hotpotqa
from relaygraph.eval.hotpotqa.agents import react
from relaygraph.eval.report import save_figure
from relaygraph.eval.runner import evaluate, sample_items
from relaygraph.eval.runs import read_items
from relaygraph.llm.registry import load_llm

TEACHER = "smollm2-135m"
RUNS = Path("runs/distillation")
ALFWORLD_STEPS = 15
"""Commands per game: the teacher wins none in 50 either, and 15 keep a game near 25 s."""


def teacher_runs(args: argparse.Namespace) -> None:
    """Train and held-out trajectories of the teacher (resumed when present)."""
    llm = load_llm(TEACHER)
    hotpot = HotpotSuite(react, llm)
    alfworld = AlfworldSuite(alfworld_react, llm, max_steps=ALFWORLD_STEPS)
    paragraphs = load_hotpotqa(sample="paragraphs-376").examples
    distractor = load_hotpotqa(sample="distractor-100").examples

    def games(split: Any, limit: int) -> list[Any]:
        return sample_items(load_games(split), limit, 0, stratum=lambda g: g.task_type)

    plan = [
        ("hotpot-train", hotpot, sample_items(paragraphs, args.hotpot_train, 0)),
        ("hotpot-heldout", hotpot, sample_items(distractor, args.hotpot_heldout, 0)),
        ("alfworld-train", alfworld, games("valid_train", args.alfworld_train)),
        ("alfworld-heldout", alfworld, games("valid_unseen", args.alfworld_heldout)),
    ]
    for name, suite, items in plan:
        out = RUNS / name
        resume = (out / "run.json").exists()
        evaluate(suite, items, out, dataset=name, graph=name, model=TEACHER, resume=resume)


def datasets(args: argparse.Namespace) -> tuple[Path, Path]:
    """The training dataset (a seeded sample of the training runs' steps) and the
    held-out one, built once."""
    tokenizer = load_llm(TEACHER)
    out = {}
    for split in ("train", "heldout"):
        folder = RUNS / f"dataset-{split}"
        if not (folder / "examples.jsonl").exists():
            sources = [RUNS / f"hotpot-{split}", RUNS / f"alfworld-{split}"]
            examples, stats = build_dataset(sources, tokenizer)
            limit = args.train_examples if split == "train" else args.heldout_examples
            examples = sample_items(examples, limit, 0)
            sampled = dataset_stats(
                examples,
                episodes=stats.episodes,
                successful_episodes=stats.successful_episodes,
                skipped=stats.skipped
                | {f"not drawn (sample of {limit})": stats.examples - len(examples)},
            )
            save_dataset(examples, sampled, folder)
        out[split] = folder
    return out["train"], out["heldout"]


def students(args: argparse.Namespace, dataset: Path) -> dict[str, Path]:
    """One student per loss: same blocks, data, steps, seed (resumed when present)."""
    made = {}
    for loss in LOSSES:
        config = TrainConfig(
            loss=loss,
            layers=args.layers,
            steps=args.steps,
            batch=args.batch,
            lr=args.lr,
            teacher=TEACHER,
        )
        out = RUNS / f"student-{loss}"
        if not (out / "result.json").exists():
            train(config, dataset, out)
        made[loss] = out
    return made


def evaluation(args: argparse.Namespace, heldout: Path, made: dict[str, Path]) -> dict[str, Any]:
    """Agreement with the teacher on held-out steps, and end-task success as the agent."""
    teacher = load_llm(TEACHER)
    examples, _ = load_dataset(heldout)
    distractor = load_hotpotqa(sample="distractor-100")
    questions = sample_items(distractor.examples, args.task_questions, 0)
    scores: dict[str, Any] = {}
    for name, model in [
        ("teacher", TEACHER),
        *((k, str(v / "student.gguf")) for k, v in made.items()),
    ]:
        llm = load_llm(model)
        agreement = score_student(llm, teacher, examples).model_dump()
        out = RUNS / f"task-{name}"
        summary = evaluate(
            HotpotSuite(react, llm),
            questions,
            out,
            dataset="sample:distractor-100",
            graph="react",
            model=model,
            resume=(out / "run.json").exists(),
        )
        size = Path(model).stat().st_size if model.endswith(".gguf") else None
        scores[name] = agreement | {
            "hotpot_em": summary.success,
            "hotpot_f1": summary.metrics.get("f1"),
            "hotpot_questions": summary.items,
            "size_mb": None if size is None else round(size / 1e6, 1),
        }
        if name != "teacher":
            result = json.loads((made[name] / "result.json").read_text())
            scores[name]["train"] = result
    return scores


def plot(scores: dict[str, Any], path: Path) -> None:
    names = list(scores)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = [
        ("act_match", "ACT exact match (held-out)"),
        ("parsed", "replies with REASON/ACT"),
        ("hotpot_f1", "HotPotQA F1 as the agent"),
    ]
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.bar(names, [scores[n][key] or 0 for n in names], color="#4c72b0")
        ax.set_title(title)
        ax.set_ylim(0, 1)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["teacher", "train", "eval"])
    parser.add_argument("--hotpot-train", type=int, default=120)
    parser.add_argument("--hotpot-heldout", type=int, default=30)
    parser.add_argument("--alfworld-train", type=int, default=24)
    parser.add_argument("--alfworld-heldout", type=int, default=6)
    parser.add_argument("--train-examples", type=int, default=240)
    parser.add_argument("--heldout-examples", type=int, default=40)
    parser.add_argument("--task-questions", type=int, default=20)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    if args.only in (None, "teacher"):
        teacher_runs(args)
    if args.only == "teacher":
        return
    train_set, heldout = datasets(args)
    made = students(args, train_set)
    if args.only == "train":
        return
    scores = evaluation(args, heldout, made)
    teacher_success = {
        name: float(np.mean([r.success for r in read_items(RUNS / name).values()]))
        for name in ("hotpot-train", "alfworld-train")
    }
    result = {
        "benchmark": "distillation",
        "machine": machine(),
        "settings": vars(args) | {"teacher": TEACHER, "alfworld_steps": ALFWORLD_STEPS},
        "teacher_success_on_training_runs": teacher_success,
        "datasets": {
            split: json.loads((folder / "stats.json").read_text())
            for split, folder in (("train", train_set), ("heldout", heldout))
        },
        "scores": scores,
    }
    write_json(RESULTS / "distillation.json", result)
    plot(scores, RESULTS / "distillation.png")


if __name__ == "__main__":
    main()
