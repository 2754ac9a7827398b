"""Extracted vs written answers: a small model reading the paragraphs that hold the answer.

An agent with ``answer_format="extract"`` answers with the name or number of its context
that the question makes likeliest (each candidate scored after the answer prompt and after
the same prompt without the question; see `relaygraph.agents.extraction`). This measures
what that buys over writing the answer (``plain``), on HotPotQA's reading-comprehension
setting: one agent, the question's gold paragraphs as context (`reader` /
`reader_extract` in `relaygraph.eval.hotpotqa.agents`).

Parts:

1. ``tune`` (the shipped ``distractor-100`` sample): the scoring rule. Each candidate's
   log-probability under the reader's answer prompt and under the calibration prompt, and
   four rules over them: raw total, raw per token, calibrated total, calibrated per token
   (the shipped one). The rule was chosen here, and only here.
2. ``report`` (the ``paragraphs-376`` sample, which tuning never saw): the two reader
   graphs through the evaluation runner (run directories under runs/extractive_bench/,
   resumed when present): EM, F1, the paired difference in F1 with a 95% bootstrap
   interval over questions, by question type, tokens and seconds per question.
3. ``demo``: the research-team example's questions (examples/research_team.py), the
   solver writing vs extracting, answers printed and checked against the expected entity.

Writes benchmarks/results/extractive_answers.json and extractive_answers.png.

Usage:
    python benchmarks/extractive_answers.py [--model smollm2-135m] [--tune-limit 100]
        [--report-limit 376] [--parts tune report demo]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import RESULTS, ROOT, machine, write_json
from rich.console import Console
from rich.progress import track
from rich.table import Table

from relaygraph.agents.extraction import ANSWER_PREFILL, NEUTRAL_TASK, answer_candidates
from relaygraph.agents.prompts import step_prompt
from relaygraph.eval.answers import answer_score
from relaygraph.eval.hotpotqa import HotpotSuite, load_hotpotqa
from relaygraph.eval.hotpotqa.agents import reader, reader_extract, seed_memory
from relaygraph.eval.runner import evaluate
from relaygraph.fileio import save_figure
from relaygraph.graph.loader import load_factory
from relaygraph.graph.runs import read_items
from relaygraph.llm.registry import load_llm
from relaygraph.llm.types import GenerationParams
from relaygraph.memory import SharedMemory
from relaygraph.routing.context import ContextItem, render_item

PARTS = ("tune", "report", "demo")
RULES = ("raw_total", "raw_per_token", "calibrated_total", "calibrated_per_token")
TYPED = "+typed"
"""A rule applied only to the candidates of the asked type (when the context has any)."""
VARIANTS = (*RULES, *(f"{rule}{TYPED}" for rule in RULES))
SHIPPED_RULE = "calibrated_per_token+typed"
RUNS = ROOT / "runs" / "extractive_bench"
DEMO_EXPECTED = {
    "Which river flows through the city of the Eiffel Tower?": "Seine",
    "In which country is the Colosseum?": "Italy",
    "Which river flows through London?": "Thames",
}


def context_of(example: Any) -> str:
    """The reader's context for a question: its gold paragraphs seeded as the reader's
    graph seeds them, rendered line by line as the agent's prompt renders them."""
    memory = SharedMemory()
    seed_memory(memory, example, titles=set(example.gold_titles))
    return "\n".join(
        render_item(ContextItem.from_entry(e)) for e in memory.scope(example.id).entries()
    )


def tune(model: str, limit: int) -> dict[str, Any]:
    """Each rule's F1 on the tuning sample, over all the context's candidates and over
    those of the asked type (`answer_candidates`' ``typed``), beside the written answer's."""
    llm = load_llm(model)
    with reader_extract(llm, load_hotpotqa(limit=1).examples[0]).compile() as graph:
        agent = graph.agents["reader"]
    examples = load_hotpotqa(sample="distractor-100", limit=limit).examples
    f1: dict[str, list[float]] = {rule: [] for rule in ("plain", *VARIANTS)}
    narrowed = 0  # questions whose candidates the asked type narrowed
    for example in track(examples, description="tune: scoring rules"):
        context = context_of(example)
        asked = step_prompt(agent, example.question, context, act_only=True, prefill=ANSWER_PREFILL)
        neutral = step_prompt(agent, NEUTRAL_TASK, context, act_only=True, prefill=ANSWER_PREFILL)
        written = llm.complete(
            step_prompt(agent, example.question, context, act_only=True),
            GenerationParams(max_tokens=32, temperature=0.0),
        ).text.strip()
        f1["plain"].append(answer_score(written, example.answer).f1)
        candidates = answer_candidates(example.question, context, typed=False)
        typed = answer_candidates(example.question, context)
        narrowed += typed != candidates
        if not candidates:  # the agent writes its answer then, as plain does
            for variant in VARIANTS:
                f1[variant].append(f1["plain"][-1])
            continue
        on_question = {c: llm.score(asked, c) for c in candidates}
        on_neutral = {c: llm.score(neutral, c) for c in candidates}
        for rule in RULES:
            for variant, among in ((rule, candidates), (f"{rule}{TYPED}", typed)):
                best = max(among, key=lambda c: _rule(rule, on_question[c], on_neutral[c]))
                f1[variant].append(answer_score(best, example.answer).f1)
    means = {rule: round(statistics.fmean(values), 4) for rule, values in f1.items()}
    return {
        "sample": "distractor-100",
        "questions": len(examples),
        "f1": means,
        "typed_questions": narrowed,
        "best_rule": max(VARIANTS, key=lambda r: means[r]),
        "shipped_rule": SHIPPED_RULE,
    }


def _rule(rule: str, asked: Any, neutral: Any) -> float:
    tokens = max(len(asked.tokens), 1)
    gain = asked.total_logprob - neutral.total_logprob
    return {
        "raw_total": asked.total_logprob,
        "raw_per_token": asked.total_logprob / tokens,
        "calibrated_total": gain,
        "calibrated_per_token": gain / tokens,
    }[rule]


def report(model: str, limit: int) -> dict[str, Any]:
    """The two reader graphs on the report sample, through the evaluation runner."""
    examples = load_hotpotqa(sample="paragraphs-376", limit=limit).examples
    llm = load_llm(model)
    graphs = {"plain": reader, "extract": reader_extract}
    sides: dict[str, Any] = {}
    for name, factory in graphs.items():
        out = RUNS / f"{name}-{model}-{limit}"
        evaluate(
            HotpotSuite(factory, llm),
            examples,
            out,
            dataset="paragraphs-376",
            graph=f"relaygraph.eval.hotpotqa.agents:{factory.__name__}",
            model=model,
            resume=(out / "run.json").exists(),
        )
        sides[name] = read_items(out)
    ids = sorted(sides["plain"].keys() & sides["extract"].keys())
    per_side = {
        name: {
            "em": round(statistics.fmean(items[i].metrics["em"] for i in ids), 4),
            "f1": round(statistics.fmean(items[i].metrics["f1"] for i in ids), 4),
            "prompt_tokens_per_question": round(
                statistics.fmean(items[i].prompt_tokens for i in ids), 1
            ),
            "seconds_per_question": round(statistics.fmean(items[i].latency_s for i in ids), 3),
            "errors": sum(items[i].error is not None for i in ids),
            "f1_by_type": {
                kind: round(
                    statistics.fmean(
                        items[i].metrics["f1"] for i in ids if items[i].groups["type"] == kind
                    ),
                    4,
                )
                for kind in sorted({items[i].groups["type"] for i in ids})
            },
        }
        for name, items in sides.items()
    }
    gains = np.array(
        [sides["extract"][i].metrics["f1"] - sides["plain"][i].metrics["f1"] for i in ids]
    )
    return {
        "sample": "paragraphs-376",
        "questions": len(ids),
        **per_side,
        "f1_gain": round(float(gains.mean()), 4),
        "f1_gain_interval": _bootstrap(gains),
    }


def _bootstrap(values: np.ndarray, resamples: int = 10_000) -> list[float]:
    """95% interval of the mean, resampling questions."""
    rng = np.random.default_rng(0)
    means = rng.choice(values, size=(resamples, len(values))).mean(axis=1)
    return [round(float(q), 4) for q in np.quantile(means, [0.025, 0.975])]


def demo(model: str) -> dict[str, Any]:
    """The research team's questions with a writing and an extracting solver."""
    build = load_factory(f"{ROOT / 'examples' / 'research_team.py'}:build")
    results: dict[str, Any] = {}
    for answer_format in ("plain", "extract"):
        answers = {}
        with build(model, answer_format=answer_format).compile() as team:
            for question, expected in DEMO_EXPECTED.items():
                result = team.invoke(question)
                answer = result.answer or ""
                answers[question] = {"answer": answer, "right": expected.lower() in answer.lower()}
        results[answer_format] = {
            "answers": answers,
            "right": sum(a["right"] for a in answers.values()),
        }
    return {"questions": len(DEMO_EXPECTED), **results}


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    if "tune" in result:
        f1 = result["tune"]["f1"]
        names = ["plain", *VARIANTS]
        axes[0].bar(range(len(names)), [f1[n] for n in names], color="tab:gray")
        axes[0].set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
        axes[0].set_ylabel("answer F1")
        axes[0].set_title(f"tuning sample ({result['tune']['questions']} questions)")
    if "report" in result:
        rep = result["report"]
        kinds = sorted(rep["plain"]["f1_by_type"])
        x = np.arange(len(kinds) + 1)
        for offset, side in ((-0.2, "plain"), (0.2, "extract")):
            values = [rep[side]["f1"], *(rep[side]["f1_by_type"][k] for k in kinds)]
            axes[1].bar(x + offset, values, width=0.4, label=side)
        axes[1].set_xticks(x, ["all", *kinds])
        axes[1].set_ylabel("answer F1")
        axes[1].set_title(f"report sample ({rep['questions']} questions)")
        axes[1].legend()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tune-limit", type=int, default=100)
    parser.add_argument("--report-limit", type=int, default=376)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", type=Path, default=RESULTS / "extractive_answers.json")
    args = parser.parse_args()
    console = Console()
    result: dict[str, Any] = {
        "benchmark": "extractive_answers",
        "machine": machine(),
        "model": args.model,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    # A part's figures are written as soon as it ends; a later run of some parts keeps
    # the others' from the last run.
    if args.out.is_file() and set(args.parts) != set(PARTS):
        result = {**json.loads(args.out.read_text()), **result}
    for part, run in (
        ("tune", lambda: tune(args.model, args.tune_limit)),
        ("report", lambda: report(args.model, args.report_limit)),
        ("demo", lambda: demo(args.model)),
    ):
        if part in args.parts:
            result[part] = run()
            write_json(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    table = Table("part", "figure")
    if "tune" in result:
        table.add_row("tune", f"F1 {result['tune']['f1']}, best {result['tune']['best_rule']}")
    if "report" in result:
        rep = result["report"]
        table.add_row(
            "report",
            f"F1 plain {rep['plain']['f1']} vs extract {rep['extract']['f1']}, gain "
            f"{rep['f1_gain']} {rep['f1_gain_interval']}",
        )
    if "demo" in result:
        table.add_row(
            "demo",
            f"right: plain {result['demo']['plain']['right']}, "
            f"extract {result['demo']['extract']['right']} of {result['demo']['questions']}",
        )
    console.print(table)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
