"""Structured REASON/ACT distillation against token-level KD and SFT, on ReAct trajectories.

The previous pipeline, kept with its results until distillation.py (the setting where the
teacher wins) has its own: here the teacher wins almost nothing, so only ACT match on
held-out steps can compare the losses.

Stages (each resumable; ``--only`` runs one):

1. ``teacher``: the teacher (SmolLM2-135M, ReAct agents) plays ALFWorld ``valid_train``
   games and answers HotPotQA questions of the 376-question sample: the training
   trajectories. It also plays ``valid_unseen`` games and the distractor-100 questions:
   held-out trajectories, never trained on. Run directories under runs/distillation-react/.
2. ``train``: one dataset from the training runs (all episodes: the teacher rarely
   succeeds), and per seed three students with the same blocks, data, steps and example
   order, one per loss: ``sft``, ``kd`` (token-level) and ``structured`` (weights
   ``STRUCTURED_WEIGHTS``, chosen by distillation_weights.py on a tuning split of the
   training episodes, never on the held-out steps). Three seeds by
   default: one seed's ranking of the losses did not survive a second. By default a
   student keeps 24 of the teacher's 30 blocks, without its middle six (``--cut
   middle``), and trains only its upper twelve (``--frozen 12``): with 12 evenly spaced
   blocks, trained in full for 40 steps, no student reproduced a single held-out action.
   Students train without the prompt's gradient unless ``--prompt-gradient``.
3. ``eval``: on held-out steps, each student's ACT exact match with the teacher given the
   same prompt, the teacher's perplexity of the student's REASON text, and end-task
   success with the student as the agent model on held-out HotPotQA questions and
   ALFWorld ``valid_unseen`` games (the teacher's own held-out runs, over the same items,
   are its row); student size and tokens/s. Per loss the seeds' mean and spread, and
   structured against KD on ACT match paired over the same held-out steps, with an
   interval over held-out episodes; the goal counts as met only where it clears zero.

Writes benchmarks/results/distillation_react.json and distillation_react.png.

Usage:
    python benchmarks/distillation_react.py [--only teacher|train|eval] [--hotpot-train 120]
        [--alfworld-train 24] [--layers 24] [--cut middle] [--frozen 12] [--steps 200]
        [--batch 8] [--lr 1e-3] [--precision q8_0] [--prompt-gradient] [--seeds 3]
        [--reason-kl 1 --act-kl 1 --act-ce 0] [--losses sft kd structured]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, astuple
from pathlib import Path
from typing import Any, get_args

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import RESULTS, machine, write_json

from relaygraph.distill import build_dataset, load_dataset, options, save_dataset
from relaygraph.distill.dataset import DistillExample, dataset_stats
from relaygraph.distill.evaluate import agent_actions, score_student
from relaygraph.distill.losses import LOSSES, LossKind, SpanWeights
from relaygraph.distill.student import Cut, Precision
from relaygraph.distill.train import TrainConfig, train
from relaygraph.eval.alfworld.agent import MAX_TOKENS as ALFWORLD_MAX_TOKENS
from relaygraph.eval.alfworld.agent import alfworld_react
from relaygraph.eval.alfworld.games import load_games
from relaygraph.eval.alfworld.suite import AlfworldSuite
from relaygraph.eval.hotpotqa import HotpotSuite, load_hotpotqa
from relaygraph.eval.hotpotqa.agents import REACT_MAX_TOKENS, react
from relaygraph.eval.runner import evaluate, sample_items
from relaygraph.fileio import save_figure
from relaygraph.graph.runs import read_items
from relaygraph.llm.catalog import packaged_model
from relaygraph.llm.local import LocalLLM
from relaygraph.llm.registry import load_llm

TEACHER = "smollm2-135m"
RUNS = Path("runs/distillation-react")
STRUCTURED_WEIGHTS = SpanWeights(reason_kl=1.0, act_kl=1.0, act_ce=0.0)
"""The best of distillation_weights.py's settings on its tuning split of the training
episodes (the paper's KL-only loss: cross-entropy on ACT pulls a student toward the
guided replies' text, away from the teacher's own distribution)."""
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
    tokenizer = LocalLLM.load(TEACHER)
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


def students(args: argparse.Namespace, dataset: Path) -> dict[str, list[Path]]:
    """Students per loss, one per seed: the same blocks, data and steps, and for a seed
    the same example order across losses (resumed when present)."""
    made: dict[str, list[Path]] = {loss: [] for loss in args.losses}
    for seed in range(args.seeds):
        for loss in args.losses:
            config = student_config(args, loss, seed)
            out = RUNS / f"student-{student_name(config)}"
            if not (out / "result.json").exists():
                train(config, dataset, out)
            made[loss].append(out)
    return made


def student_config(
    args: argparse.Namespace, loss: LossKind, seed: int, weights: SpanWeights | None = None
) -> TrainConfig:
    """The students' settings (`add_student_options`) for one loss and seed; the span
    weights (``weights``, or the options') only where the loss has spans, so SFT and KD
    runs keep the configuration they resume under."""
    if loss == "structured":
        weights = weights or SpanWeights(args.reason_kl, args.act_kl, args.act_ce)
    else:
        weights = SpanWeights()
    return options.student_config(
        vars(args), loss=loss, seed=seed, teacher=TEACHER, **asdict(weights)
    )


def student_name(config: TrainConfig) -> str:
    """``<loss>-seed<n>``, with the structured loss's weights when they are not the
    defaults, so students trained with other weights never stand in for each other."""
    weights = (config.reason_kl, config.act_kl, config.act_ce)
    tag = ""
    if config.loss == "structured" and weights != astuple(SpanWeights()):
        tag = "-w" + "-".join(f"{w:g}" for w in weights)
    return f"{config.loss}{tag}-seed{config.seed}"


def heldout_tasks(args: argparse.Namespace) -> dict[str, tuple[Any, list[Any]]]:
    """The held-out task suites and items, built on ``model`` later: a prefix of the
    teacher's held-out runs (a smaller seeded draw is part of a larger one)."""
    distractor = load_hotpotqa(sample="distractor-100").examples
    games = load_games("valid_unseen")
    return {
        "hotpot": (
            lambda llm: HotpotSuite(react, llm),
            sample_items(distractor, min(args.task_questions, args.hotpot_heldout), 0),
        ),
        "alfworld": (
            lambda llm: AlfworldSuite(alfworld_react, llm, max_steps=ALFWORLD_STEPS),
            sample_items(
                games, min(args.task_games, args.alfworld_heldout), 0, stratum=lambda g: g.task_type
            ),
        ),
    }


def task_scores(run: Path, ids: list[str]) -> dict[str, float]:
    """Mean success and metrics of a run over the items ``ids``."""
    records = read_items(run)
    missing = [i for i in ids if i not in records]
    if missing:
        raise SystemExit(f"{run} lacks {len(missing)} of the held-out items; rerun --only teacher")
    chosen = [records[i] for i in ids]
    metrics = {
        k: float(np.mean([r.metrics.get(k, 0.0) for r in chosen])) for k in chosen[0].metrics
    }
    return {"success": float(np.mean([r.success for r in chosen])), **metrics, "items": len(ids)}


def model_row(
    args: argparse.Namespace,
    name: str,
    model: str,
    *,
    teacher: Any,
    examples: list[Any],
    actions: dict[str, list[str]],
) -> dict[str, Any]:
    """One model's agreement with the teacher on held-out steps and its end-task scores
    as the agent model. The teacher's task scores come from its held-out runs (stage
    ``teacher``) over the same items the students play."""
    llm = load_llm(model)
    row = agreement(llm, model, teacher, examples, actions, out=RUNS / f"score-{name}.json")
    for task, (suite_on, items) in heldout_tasks(args).items():
        suite = suite_on(llm)
        ids = [suite.item_id(i) for i in items]
        if name == "teacher":
            row[task] = task_scores(RUNS / f"{task}-heldout", ids)
            continue
        out = RUNS / f"task-{task}-{name}"
        evaluate(
            suite,
            items,
            out,
            dataset=f"{task}-heldout",
            graph="react",
            model=model,
            resume=(out / "run.json").exists(),
        )
        row[task] = task_scores(out, ids)
    path = Path(model) if model.endswith(".gguf") else packaged_model(TEACHER).locate()
    row["size_mb"] = round(path.stat().st_size / 1e6, 1)
    return row


def agreement(
    llm: Any,
    model: str,
    teacher: Any,
    examples: list[Any],
    actions: dict[str, list[str]],
    *,
    out: Path,
) -> dict[str, Any]:
    """`score_student` of ``llm`` (loaded from ``model``), kept in ``out`` for the same
    held-out steps and model file, so an interrupted evaluation resumes where it stopped."""
    file = Path(model)
    identity = {
        "examples": [e.id for e in examples],
        "model": [
            model,
            *((file.stat().st_size, file.stat().st_mtime_ns) if file.is_file() else ()),
        ],
    }
    if out.exists() and (saved := json.loads(out.read_text()))["identity"] == identity:
        return dict(saved["scores"])
    scores: dict[str, Any] = score_student(llm, teacher, examples, actions).model_dump()
    write_json(out, {"identity": identity, "scores": scores})
    return scores


def scored_steps(examples: list[DistillExample], limit: int) -> list[DistillExample]:
    """A seeded draw of ``limit`` steps, each with its agent's reply cap, in episode order
    (each prompt extends the last, and the engines' prefix caches read only the new part)."""
    # the caps the harness agents reply under, for traces that predate recording them
    caps = {"reader": REACT_MAX_TOKENS, "player": ALFWORLD_MAX_TOKENS}
    examples = [e if e.max_tokens else e.model_copy(update={"max_tokens": caps[e.agent]})
                for e in examples]  # fmt: skip
    return sorted(sample_items(examples, limit, 0), key=lambda e: (e.source, e.step))


def evaluation(
    args: argparse.Namespace,
    train_set: Path,
    examples: list[DistillExample],
    made: dict[str, list[Path]],
) -> dict[str, Any]:
    """The teacher's row, and per loss each seed's row and their mean and spread, on the
    held-out steps ``examples``."""
    teacher = load_llm(TEACHER)
    actions = agent_actions([*load_dataset(train_set)[0], *examples])
    scores: dict[str, Any] = {
        "teacher": model_row(
            args, "teacher", TEACHER, teacher=teacher, examples=examples, actions=actions
        )
    }
    for loss, folders in made.items():
        rows = []
        for folder in folders:
            row = model_row(
                args,
                folder.name.removeprefix("student-"),
                str(folder / "student.gguf"),
                teacher=teacher,
                examples=examples,
                actions=actions,
            )
            row["train"] = json.loads((folder / "result.json").read_text())
            rows.append(row)
        scores[loss] = {"by_seed": rows, **across_seeds(rows)}
    return scores


FIGURES: dict[str, Any] = {
    "act_match": lambda r: r["act_match"],
    "parsed": lambda r: r["parsed"],
    "reason_perplexity": lambda r: r["reason_perplexity"],
    "tokens_per_s": lambda r: r["tokens_per_s"],
    "hotpot_success": lambda r: r["hotpot"]["success"],
    "hotpot_f1": lambda r: r["hotpot"]["f1"],
    "alfworld_success": lambda r: r["alfworld"]["success"],
}
"""The figures averaged over a loss's seeds."""


def across_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of each figure over one loss's seeds."""
    values = {k: [v for r in rows if (v := get(r)) is not None] for k, get in FIGURES.items()}
    return {
        "mean": {k: round(float(np.mean(v)), 4) if v else None for k, v in values.items()},
        "sd": {
            k: round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else None for k, v in values.items()
        },
    }


def paired_act_match(
    a: dict[str, Any], b: dict[str, Any], episodes: list[str], resamples: int = 10_000
) -> dict[str, Any]:
    """Loss ``a``'s ACT match minus ``b``'s, averaged over seeds, with a 95% bootstrap
    interval, and the seeds ``a`` wins.

    The interval resamples whole episodes (``episodes``: each scored step's), paired (a
    resample draws the same steps for both losses): an episode's steps share a task and
    a history, so resampling single steps would understate the spread. It covers the
    choice of held-out episodes, not the choice of seeds."""
    matches = [np.array([r["act_matches"] for r in x["by_seed"]], dtype=float) for x in (a, b)]
    difference = matches[0].mean(axis=0) - matches[1].mean(axis=0)
    names, episode = np.unique(episodes, return_inverse=True)
    sums, sizes = np.bincount(episode, weights=difference), np.bincount(episode)
    picks = np.random.default_rng(0).integers(0, len(names), (resamples, len(names)))
    low, high = np.quantile(sums[picks].sum(axis=1) / sizes[picks].sum(axis=1), [0.025, 0.975])
    per_seed = matches[0].mean(axis=1) - matches[1].mean(axis=1)
    return {
        "difference": round(float(difference.mean()), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "episodes": len(names),
        "seeds_won": int((per_seed > 0).sum()),
        "seeds": len(per_seed),
    }


def plot(scores: dict[str, Any], path: Path) -> None:
    """Per model a bar (the seeds' mean) and a dot per seed."""
    names = list(scores)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    panels = [
        ("ACT exact match (held-out steps)", "act_match", 1.0),
        ("free replies that parse (no guidance)", "parsed", 1.0),
        ("HotPotQA F1 as the agent", "hotpot_f1", 1.0),
        ("REASON perplexity under teacher", "reason_perplexity", None),
    ]
    colors = ["#999999", "#4c72b0", "#dd8452", "#55a868"]
    for ax, (title, figure, top) in zip(axes, panels, strict=True):
        rows = [[scores[n]] if n == "teacher" else scores[n]["by_seed"] for n in names]
        seeds = [[FIGURES[figure](r) or 0.0 for r in group] for group in rows]
        ax.bar(names, [float(np.mean(v)) for v in seeds], color=colors[: len(names)])
        for x, values in enumerate(seeds):
            ax.scatter([x] * len(values), values, color="black", s=10, zorder=3)
        ax.set_title(title, fontsize=10)
        if top is not None:
            ax.set_ylim(0, top)
        else:
            ax.set_yscale("log")
    fig.suptitle("bars: mean over seeds; dots: one student each", fontsize=9)
    save_figure(fig, path)


def add_student_options(parser: argparse.ArgumentParser) -> None:
    """How students are made and trained (shared with distillation_weights.py)."""
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--cut", choices=get_args(Cut), default="middle")
    parser.add_argument("--frozen", type=int, default=12)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--precision", choices=get_args(Precision), default="q8_0")
    parser.add_argument(
        "--prompt-gradient",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="backpropagate through the trained blocks' work on the prompt (off: a much "
        "cheaper step; see TrainConfig.prompt_gradient)",
    )
    for term in ("reason_kl", "act_kl", "act_ce"):
        parser.add_argument(
            f"--{term.replace('_', '-')}",
            type=float,
            default=getattr(STRUCTURED_WEIGHTS, term),
            help="weight of this term of the structured loss",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["teacher", "train", "eval"])
    parser.add_argument("--hotpot-train", type=int, default=60)
    parser.add_argument("--hotpot-heldout", type=int, default=20)
    parser.add_argument("--alfworld-train", type=int, default=16)
    parser.add_argument("--alfworld-heldout", type=int, default=6)
    parser.add_argument("--train-examples", type=int, default=600)
    parser.add_argument("--heldout-examples", type=int, default=80)
    parser.add_argument("--score-examples", type=int, default=80)
    parser.add_argument("--task-questions", type=int, default=15)
    parser.add_argument("--task-games", type=int, default=6)
    add_student_options(parser)
    parser.add_argument("--seeds", type=int, default=3, help="students per loss")
    parser.add_argument(
        "--losses",
        nargs="+",
        choices=LOSSES,
        default=list(LOSSES),
        help="the losses to train (kd and structured at least: the goal compares them)",
    )
    args = parser.parse_args()
    if not {"kd", "structured"} <= set(args.losses):
        parser.error("--losses must include kd and structured: the goal compares them")
    if args.only in (None, "teacher"):
        teacher_runs(args)
    if args.only == "teacher":
        return
    train_set, heldout = datasets(args)
    made = students(args, train_set)
    if args.only == "train":
        return
    steps = scored_steps(load_dataset(heldout)[0], args.score_examples)
    scores = evaluation(args, train_set, steps, made)
    teacher_success = {
        name: float(np.mean([r.success for r in read_items(RUNS / name).values()]))
        for name in ("hotpot-train", "alfworld-train")
    }
    result = {
        "benchmark": "distillation_react",
        "machine": machine(),
        "settings": vars(args) | {"teacher": TEACHER, "alfworld_steps": ALFWORLD_STEPS},
        "teacher_success_on_training_runs": teacher_success,
        "datasets": {
            split: json.loads((folder / "stats.json").read_text())
            for split, folder in (("train", train_set), ("heldout", heldout))
        },
        "scores": scores,
    }
    structured, kd = scores["structured"], scores["kd"]
    paired = paired_act_match(structured, kd, [e.source for e in steps])
    result["structured_vs_kd_act_match"] = paired
    result["goal"] = {
        # ahead on the mean is not enough: the interval over episodes must clear zero
        "structured_beats_kd_on_act_match": paired["ci95"][0] > 0,
        "structured_beats_kd_on_task_success": {
            task: structured["mean"][f"{task}_success"] > kd["mean"][f"{task}_success"]
            for task in ("hotpot", "alfworld")
        },
    }
    write_json(RESULTS / "distillation_react.json", result)
    plot(scores, RESULTS / "distillation_react.png")


if __name__ == "__main__":
    main()
