"""Structured generation: what constrained decoding costs the embedded engine.

Section ``mask`` (the default), for each packaged model at batch sizes 1 and 8:

- decode tokens/s of the same chat prompts, greedy, same ``max_tokens``, with no
  constraint, under a JSON schema (a nested object: string, bounded integer, enum, array
  of strings with maxItems, nested object), under a JSON schema whose long text field
  cannot close within the budget (every row decodes every step: the fair comparison at
  batch 8, where early stops would otherwise shrink the batch), and with
  ``tool_choice="required"`` over two tools against the same tools prompt decoded freely
  (a longer prompt makes every step slower by itself). The decode rate is the tokens
  after the first over the time of the whole call less that of the same call cut to one
  token (``first_token_ms``), both with the prompts
  already cached, so prefill and the request's setup (its grammar matcher) are left out.
  A constrained reply stops when its JSON closes while an unconstrained one runs on, so
  compare rates, not token totals. The goal, constrained at most 10% slower than its
  baseline, is judged on the two fair pairs (``goal_met``);
- the one-off build of llguidance's tokenizer on the first constrained request
  (``grammar_tokenizer_s``);
- the mask alone, replayed along each constrained reply's own tokens: median microseconds
  of llguidance's bitmask, of `TokenMatcher.allowed` (the bitmask as booleans), of
  `TokenMatcher.mask` (the logits masked, what `LocalLLM._advance` calls) and of
  `TokenMatcher.advance`; ``mask_share_pct`` is the slowdown those alone predict.

Every configuration is warmed up once, then run ``--repeats`` times (configurations
interleaved); medians are reported.

Section ``agents``: the step grammar against guided decoding on HotPotQA (the 100 shipped
distractor questions) and ALFWorld (a 12-game draw from valid_unseen, stratified by task
type), with SmolLM2, and on HotPotQA also the grammar with a tool policy (search before
finishing), on ALFWorld the grammar with ``act`` limited to the admissible commands:
EM/F1 or games won, the share of steps that parse without help
(no action scoring, no second call), tool calls, tokens and seconds per item; on HotPotQA
also one plain call with the question's ten paragraphs (no agent), and F1 per thousand
prompt tokens. Runs go to runs/structured/ and resume.

Writes benchmarks/results/structured.json (each section with its own commit, machine and
settings, so sections run apart share the file) and structured.png (the mask section's
tokens/s per model and batch).

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/structured.py [--sections mask agents] [--repeats 3]
        [--tokens 96] [--batches 1 8] [--models smollm2-135m gemma3-270m] [--out PATH]
        [--suites hotpotqa alfworld] [--hotpot-limit N] [--alfworld-games 12]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, machine, write_json
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from relaygraph.eval.report import write_report
from relaygraph.graph.runs import read_items
from relaygraph.graph.trace import Trace
from relaygraph.llm import GenerationParams, LocalLLM, Prompt, to_prompt
from relaygraph.llm.constraints import JsonSchemaFormat, ToolSpec
from relaygraph.llm.grammar import TokenMatcher, grammar_for
from relaygraph.llm.tool_format import prompt_with_tools

ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO = 0.9
"""Constrained decode may be at most 10% slower than unconstrained."""
BASELINE = {"json_schema": "unconstrained", "json_long": "unconstrained", "tools": "tools_prompt"}
"""Each constrained configuration and the unconstrained run it is compared with."""
CONSTRAINED = tuple(BASELINE)
GOAL_CONFIGS = ("json_long", "tools")
"""The fair comparisons: every sequence decodes the whole budget (no early stop shrinks
the batch) and the baseline reads the same prompt (a tools prompt is longer, and a
longer context makes every decode step slower)."""
LONG_TEXT = {
    "type": "object",
    "properties": {"story": {"type": "string", "minLength": 2000}},
    "required": ["story"],
}
"""JSON that cannot close within the budget: the mask runs on every step of every row."""

CHARACTER = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"type": "string", "enum": ["hero", "villain", "mentor", "sidekick"]},
        "skills": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        "home": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
            "required": ["city", "country"],
        },
    },
    "required": ["name", "age", "role", "skills", "home"],
}
TOOLS = (
    ToolSpec(name="create_character", description="Save a story character.", parameters=CHARACTER),
    ToolSpec(
        name="search_web",
        description="Search the web.",
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 10},
            },
            "required": ["query"],
        },
    ),
)
CHARACTERS = [
    "a lighthouse keeper",
    "a robot chef",
    "a retired pirate",
    "a young astronomer",
    "a forest witch",
    "a train conductor",
    "a desert nomad",
    "a clockmaker",
]
PROMPTS = [
    [
        {
            "role": "user",
            "content": f"Describe {who}, a character in a story, as JSON with name, age, "
            "role, skills and home.",
        }
    ]
    for who in CHARACTERS
]


def configurations(tokens: int) -> dict[str, tuple[list[Prompt], GenerationParams]]:
    """Each configuration's prompts (the tools one lists the tools in the system message, as
    the engine renders them) and parameters."""
    tools = GenerationParams(max_tokens=tokens, tools=TOOLS, tool_choice="required")
    tools_prompts = [prompt_with_tools(to_prompt(p), tools) for p in PROMPTS]
    plain = [to_prompt(p) for p in PROMPTS]
    return {
        "unconstrained": (plain, GenerationParams(max_tokens=tokens)),
        "json_schema": (
            plain,
            GenerationParams(
                max_tokens=tokens,
                response_format=JsonSchemaFormat(json_schema=CHARACTER, name="character"),
            ),
        ),
        "json_long": (
            plain,
            GenerationParams(
                max_tokens=tokens,
                response_format=JsonSchemaFormat(json_schema=LONG_TEXT, name="story"),
            ),
        ),
        "tools_prompt": (tools_prompts, GenerationParams(max_tokens=tokens)),
        "tools": (plain, tools),
    }


def decode_run(llm: LocalLLM, prompts: list[Prompt], params: GenerationParams) -> dict[str, float]:
    """One call's decode tokens/s, generated tokens and time to the first token.

    Both timed calls find the prompts in the KV cache (the untimed call puts them there:
    another configuration's prompts may have taken their slots), so the difference
    between them is decode alone.
    """
    first = params.model_copy(update={"max_tokens": 1})
    llm.complete_batch(prompts, first)
    began = time.perf_counter()
    llm.complete_batch(prompts, first)
    first_s = time.perf_counter() - began
    began = time.perf_counter()
    done = llm.complete_batch(prompts, params)
    total_s = time.perf_counter() - began
    tokens = sum(c.usage.completion_tokens for c in done)
    after_first, decode_s = tokens - len(prompts), total_s - first_s
    rate = after_first / decode_s if after_first > 0 and decode_s > 0 else math.nan
    return {"tok_s": rate, "tokens": tokens / len(prompts), "first_token_ms": first_s * 1e3}


def mask_timings(
    llm: LocalLLM, params: GenerationParams, reply: list[int], repeats: int
) -> dict[str, float]:
    """Median microseconds per step of the mask's parts, replayed along ``reply``'s tokens.

    Each part is timed in its own pass with a fresh matcher, so no part finds a state
    that another part already computed.
    """
    grammar = llm.grammars.compile(grammar_for(params), parameter="benchmark")
    logits = np.random.default_rng(0).standard_normal(llm.info().n_vocab, dtype=np.float32)
    parts = {
        # llguidance alone (the wrapped LLMatcher), then relaygraph's numpy on top.
        "bitmask": TokenMatcher.bitmask,
        "allowed": TokenMatcher.allowed,
        "mask": lambda m: m.mask(logits),
    }
    samples: dict[str, list[float]] = {name: [] for name in [*parts, "advance"]}
    for _ in range(repeats):
        for name, part in parts.items():
            matcher = llm.grammars.matcher(grammar)
            for token in reply:
                # The engine's grammar may also allow its turn-end text after tool calls.
                if matcher.complete or not matcher.accepts(token):
                    break
                began = time.perf_counter()
                part(matcher)
                samples[name].append(time.perf_counter() - began)
                began = time.perf_counter()
                matcher.advance(token)
                samples["advance"].append(time.perf_counter() - began)
    timings = {f"{name}_us": round(statistics.median(s) * 1e6, 1) for name, s in samples.items()}
    return {"steps": len(samples["mask"]) // repeats, **timings}


def measure_model(
    name: str, args: argparse.Namespace, progress: Progress, task: Any
) -> dict[str, Any]:
    progress.update(task, description=f"{name}: loading")
    llm = LocalLLM.load(name)
    began = time.perf_counter()
    _ = llm.grammars  # llguidance's view of the vocabulary, built on first use
    grammar_tokenizer_s = time.perf_counter() - began
    configs = configurations(args.tokens)
    replies: dict[str, list[int]] = {}
    rows = []
    for batch in args.batches:
        progress.update(task, description=f"{name}, batch {batch}: warm-up")
        for key, (prompts, params) in configs.items():
            done = llm.complete_batch(prompts[:batch], params)
            replies.setdefault(key, done[0].choice.token_ids)
            progress.advance(task)
        runs: dict[str, list[dict[str, float]]] = {key: [] for key in configs}
        for repeat in range(args.repeats):
            progress.update(task, description=f"{name}, batch {batch}: repeat {repeat + 1}")
            for key, (prompts, params) in configs.items():  # interleaved: drift hits all
                runs[key].append(decode_run(llm, prompts[:batch], params))
                progress.advance(task)
        median = {
            key: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for key, rs in runs.items()
        }
        ratios = {k: median[k]["tok_s"] / median[BASELINE[k]]["tok_s"] for k in CONSTRAINED}
        rows.append(
            {
                "batch": batch,
                "tok_s": {k: round(m["tok_s"], 1) for k, m in median.items()},
                "tokens_per_sequence": {k: round(m["tokens"], 1) for k, m in median.items()},
                "first_token_ms": {k: round(m["first_token_ms"], 1) for k, m in median.items()},
                "ratio": {k: round(r, 3) for k, r in ratios.items()},
                "goal_met": all(ratios[k] >= GOAL_RATIO for k in GOAL_CONFIGS),
                "samples_tok_s": {k: [r["tok_s"] for r in rs] for k, rs in runs.items()},
            }
        )
    progress.update(task, description=f"{name}: mask alone")
    masks = {k: mask_timings(llm, configs[k][1], replies[k], args.repeats) for k in CONSTRAINED}
    for row in rows:  # the share of a token's decode time that masking alone would take
        rate = row["tok_s"]["unconstrained"]
        row["mask_share_pct"] = {
            k: round((m["mask_us"] + m["advance_us"]) * rate / 1e4, 2) for k, m in masks.items()
        }
    progress.advance(task)
    return {
        "model": name,
        "n_vocab": llm.info().n_vocab,
        "grammar_tokenizer_s": round(grammar_tokenizer_s, 3),
        "batches": rows,
        "mask": masks,
    }


def mask_section(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    steps = len(args.batches) * len(configurations(args.tokens)) * (1 + args.repeats) + 1
    task = progress.add_task("mask cost", total=steps * len(args.models))
    return {"models": [measure_model(name, args, progress, task) for name in args.models]}


AGENT_RUNS = ROOT / "runs" / "structured"
HOTPOT_CONFIGS = {
    "grammar": "relaygraph.eval.hotpotqa.agents:react",
    "grammar_search_first": "relaygraph.eval.hotpotqa.agents:react_search_first",
    "guided": "relaygraph.eval.hotpotqa.agents:react_guided",
    "single_call": "relaygraph.eval.hotpotqa.agents:single_call",
}
SINGLE_CALL_WINDOW = 4096
"""Tokens of context for the plain call: the shipped questions' ten paragraphs need up to
about 2,300, more than the engine's default window of 2,048."""
ALFWORLD_CONFIGS = {
    "grammar": "relaygraph.eval.alfworld.agent:alfworld_react",
    "grammar_admissible": "relaygraph.eval.alfworld.agent:alfworld_react_admissible",
    "guided": "relaygraph.eval.alfworld.agent:alfworld_react_guided",
}


def step_figures(directory: Path) -> dict[str, Any]:
    """Per-step figures from a run's traces: how steps were produced and what they did."""
    steps = parsed_free = tool_calls = fallbacks = items = 0
    for record in read_items(directory).values():
        if record.trace is None:
            continue
        items += 1
        for step in Trace.load(directory / record.trace).steps:
            steps += 1
            model = step.model
            helped = model.action_scores is not None or model.grammar_fallback
            parsed_free += step.parse_retries == 0 and not helped and step.error is None
            fallbacks += model.grammar_fallback
            tool_calls += bool(step.action and step.action.get("type") == "tool")
    return {
        "steps": steps,
        "parsed_without_help": round(parsed_free / steps, 4) if steps else None,
        "grammar_fallbacks": fallbacks,
        "tool_calls_per_item": round(tool_calls / items, 2) if items else None,
    }


def summarise(directory: Path) -> dict[str, Any]:
    summary = write_report(directory)
    f1 = summary.metrics.get("f1")
    tokens = summary.prompt_tokens_mean
    return {
        "items": summary.items,
        summary.headline: round(summary.success, 4),
        **{k: round(v, 4) for k, v in summary.metrics.items()},
        "errors": summary.errors,
        "steps_per_item": round(summary.steps_mean, 2),
        "prompt_tokens_per_item": round(tokens, 1),
        "completion_tokens_per_item": round(summary.completion_tokens_mean, 1),
        "seconds_per_item_p50": summary.latency_s["p50"],
        "f1_per_1k_prompt_tokens": round(1000 * f1 / tokens, 4) if f1 and tokens else None,
        **step_figures(directory),
    }


def agents_section(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Agents on the benchmarks with grammar-decoded steps against guided decoding (and, on
    HotPotQA, one plain call with the paragraphs). Runs live in runs/structured/ and
    resume: an interrupted section continues where it stopped."""
    from relaygraph.eval.alfworld.games import load_games
    from relaygraph.eval.alfworld.suite import AlfworldSuite
    from relaygraph.eval.hotpotqa import HotpotSuite, load_hotpotqa
    from relaygraph.eval.runner import evaluate, sample_items
    from relaygraph.graph.loader import load_factory

    model = args.agent_model
    llm = LocalLLM.load(model)
    out: dict[str, Any] = {"model": model, "hotpotqa": {}, "alfworld": {}}
    if "hotpotqa" in args.suites:
        dataset = load_hotpotqa(None, sample="distractor-100")
        questions = sample_items(dataset.examples, args.hotpot_limit, 0)
        # The plain call reads all ten paragraphs: a window the longest question fits.
        wide = LocalLLM.load(model, context_window=SINGLE_CALL_WINDOW, max_batch=1)
        for name, graph in HOTPOT_CONFIGS.items():
            progress.console.print(f"hotpotqa: {name} ({len(questions)} questions)")
            directory = AGENT_RUNS / f"hotpotqa-{name}"
            evaluate(
                HotpotSuite(load_factory(graph), wide if name == "single_call" else llm),
                questions,
                directory,
                dataset="sample:distractor-100",
                graph=graph,
                model=model,
                resume=directory.exists(),
            )
            out["hotpotqa"][name] = summarise(directory)
    if "alfworld" in args.suites:
        games = sample_items(
            load_games("valid_unseen"), args.alfworld_games, 0, stratum=lambda g: g.task_type
        )
        for name, graph in ALFWORLD_CONFIGS.items():
            progress.console.print(f"alfworld: {name} ({len(games)} games)")
            directory = AGENT_RUNS / f"alfworld-{name}"
            evaluate(
                AlfworldSuite(load_factory(graph), llm, max_steps=50),
                games,
                directory,
                dataset="shipped:valid_unseen",
                graph=graph,
                model=model,
                settings={"limit": args.alfworld_games, "max_steps": 50},
                resume=directory.exists(),
            )
            out["alfworld"][name] = summarise(directory)
    return out


SECTIONS = {"mask": mask_section, "agents": agents_section}


def commit() -> dict[str, Any]:
    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    return {"hash": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def plot(models: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(m["model"], row) for m in models for row in m["batches"]]
    labels = {
        "unconstrained": "unconstrained",
        "json_schema": "JSON schema",
        "json_long": "JSON, long text",
        "tools_prompt": "tools prompt, free",
        "tools": "tools",
    }
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(groups)), 4))
    width = 0.8 / len(labels)
    for i, (key, label) in enumerate(labels.items()):
        xs = [g + i * width for g in range(len(groups))]
        bars = ax.bar(xs, [row["tok_s"][key] for _, row in groups], width, label=label)
        if key in CONSTRAINED:
            ax.bar_label(bars, [f"{row['ratio'][key]:.2f}x" for _, row in groups], fontsize=7)
    ax.set_xticks(
        [g + width * (len(labels) - 1) / 2 for g in range(len(groups))],
        [f"{model}\nbatch {row['batch']}" for model, row in groups],
    )
    ax.set_ylabel("decode tokens / s")
    ax.set_title("Constrained decoding cost (higher is better; labels: ratio to its baseline)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def report(console: Console, models: list[dict[str, Any]]) -> None:
    table = Table(title="Mask cost (medians; decode tokens/s; ratio to its baseline)")
    for column in ("model", "batch", "free", "JSON", "JSON long", "tools free", "tools", "goal"):
        table.add_column(column)
    for m in models:
        for row in m["batches"]:
            rate, ratio = row["tok_s"], row["ratio"]

            def cell(
                key: str, rate: dict[str, float] = rate, ratio: dict[str, float] = ratio
            ) -> str:
                return f"{rate[key]:.1f}" + (f" ({ratio[key]:.2f}x)" if key in ratio else "")

            table.add_row(
                m["model"],
                str(row["batch"]),
                *(cell(k) for k in ("unconstrained", "json_schema", "json_long", "tools_prompt")),
                cell("tools"),
                "yes" if row["goal_met"] else "no",
            )
    console.print(table)
    for m in models:
        parts = "; ".join(
            f"{k}: " + ", ".join(f"{p} {v}" for p, v in t.items() if p.endswith("_us"))
            for k, t in m["mask"].items()
        )
        console.print(
            f"{m['model']}: grammar tokenizer {m['grammar_tokenizer_s']} s; "
            f"mask alone (us per step) {parts}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=["mask"])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=RESULTS / "structured.json")
    parser.add_argument("--agent-model", default="smollm2-135m")
    parser.add_argument(
        "--suites", nargs="+", choices=["hotpotqa", "alfworld"], default=["hotpotqa", "alfworld"]
    )
    parser.add_argument("--hotpot-limit", type=int, default=None, help="questions (all 100)")
    parser.add_argument("--alfworld-games", type=int, default=12)
    args = parser.parse_args()
    if not all(1 <= b <= len(PROMPTS) for b in args.batches):
        parser.error(f"batch sizes must be in 1..{len(PROMPTS)}")

    console = Console()
    facts = machine()
    began = time.perf_counter()
    with Progress(console=console) as progress:
        results = {section: SECTIONS[section](args, progress) for section in args.sections}
    # Each section keeps its own run facts, so sections run at different times share a file.
    data: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    data["benchmark"] = "structured"
    for section, result in results.items():
        data[section] = {
            "commit": commit(),
            "machine": facts,
            "versions": {p: version(p) for p in ("llguidance", "llama-cpp-python", "relaygraph")},
            "seconds": round(time.perf_counter() - began, 1),
            "settings": settings(section, args),
            **result,
        }
    write_json(args.out, data)
    written = [str(args.out)]
    if "mask" in results:
        plot(results["mask"]["models"], args.out.with_suffix(".png"))
        written.append(str(args.out.with_suffix(".png")))
        report(console, results["mask"]["models"])
    console.print(f"wrote {' and '.join(written)}")


def settings(section: str, args: argparse.Namespace) -> dict[str, Any]:
    if section == "agents":
        return {
            "model": args.agent_model,
            "suites": args.suites,
            "hotpotqa": {"sample": "distractor-100", "limit": args.hotpot_limit},
            "alfworld": {"split": "valid_unseen", "games": args.alfworld_games, "max_steps": 50},
            "configs": {"hotpotqa": HOTPOT_CONFIGS, "alfworld": ALFWORLD_CONFIGS},
        }
    return {
        "sections": args.sections,
        "models": args.models,
        "batches": args.batches,
        "repeats": args.repeats,
        "max_tokens": args.tokens,
        "threads": os.cpu_count(),
        "greedy": True,
        "goal_ratio": GOAL_RATIO,
        "schema": CHARACTER,
        "tools": [t.name for t in TOOLS],
        "tool_choice": "required",
    }


if __name__ == "__main__":
    main()
