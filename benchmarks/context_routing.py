"""Context routing on HotPotQA: tokens vs supporting-fact recall, answers, and scale.

Each question's ten paragraphs go into shared memory, one `fact` entry per sentence
(real all-MiniLM-L6-v2 embeddings, exact FAISS index). Four parts:

0. tune (model-free, the 376 questions of the paragraph sample, which share none with the
   100 below): RCR's lexical weight and temperature on a grid, by the recall of gold
   supporting paragraphs (one entry per paragraph) at several budgets; RCRWeights'
   defaults are the best point. Role, stage and recency weights are not tuned here: every
   candidate is a round-0 fact, so they shift all items alike.
1. routing (model-free, every question): the answering agent's routed context (role
   solver, stage answer, query = the question) under each policy and budget; prompt
   tokens of the context (SmolLM2's tokenizer) and supporting-fact recall: the share of
   gold supporting sentences that reached it. Full context without a budget is the token
   baseline (ratio = tokens / full).
2. team (the embedded model, ``--team-questions``): the decomposer -> retriever ->
   answerer team (relaygraph.eval.hotpotqa.agents.team_graph) with each policy; prompt
   tokens per question over all agents, EM/F1, the answerer's recall, wall time.
3. scale: one agent step's RCR selection on memories of 1k/10k/100k entries, exact and
   HNSW index (p50/p95): ``new query`` is a step with a question not seen before (query
   embedding and first-use token counts included); ``same query`` repeats it, as the
   agents of one run do (the memory caches the query vector, the counter the counts).
   Entries beyond the real sentences are noisy copies of their vectors (as in
   benchmarks/memory_index.py).

Usage:
    python benchmarks/context_routing.py [--questions 100] [--team-questions 20]
        [--budgets 128 256 384 512 768] [--sizes 1000 10000 100000]
        [--parts tune routing team scale]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _common import RESULTS, machine, write_json
from memory_index import Lookup, embed_cached, fill, real_text
from rich.progress import track

from relaygraph.eval.hotpotqa import HotpotExample, answer_score, load_hotpotqa
from relaygraph.eval.hotpotqa.agents import POLICIES, seed_memory, team_graph
from relaygraph.fileio import save_figure
from relaygraph.llm.counting import TokenCounter
from relaygraph.llm.protocol import LLM
from relaygraph.llm.registry import load_llm
from relaygraph.memory import SentenceEmbedder, SharedMemory
from relaygraph.routing import (
    ContextPolicy,
    ContextRequest,
    FullContext,
    RCRContext,
    RCRWeights,
    TopKSimilarity,
)

MODEL = "smollm2-135m"
VARIANTS: dict[str, Callable[[], ContextPolicy]] = {
    **POLICIES,
    "rcr-dense-only": lambda: RCRContext(weights=RCRWeights(lexical=0), name="rcr-dense-only"),
}
TUNE_GRID = {"lexical": [0.0, 0.25, 0.5, 1.0, 1.5, 2.0], "temperature": [0.05, 0.1, 0.2]}


def gold_ids(example: HotpotExample) -> set[str]:
    """Memory ids of the question's supporting sentences."""
    titles = {p.title: i for i, p in enumerate(example.context)}
    return {
        f"{example.id}/p{titles[title]}s{sent}"
        for title, sent in example.supporting_facts or []
        if title in titles and sent < len(example.context[titles[title]].sentences)
    }


def recall(chosen: Sequence[str], gold: set[str]) -> float:
    return len(gold & set(chosen)) / len(gold) if gold else 1.0


def tune(examples: list[HotpotExample], count: TokenCounter, budgets: list[int]) -> dict[str, Any]:
    """Recall of gold paragraphs per (lexical, temperature), and top-k's, per budget."""
    memory = SharedMemory()
    gold: dict[str, set[str]] = {}
    for example in track(examples, description="embedding paragraphs (tune)"):
        memory.scope(example.id).add_many(
            [
                {"id": f"{example.id}/p{i}", "text": f"{p.title}: {' '.join(p.sentences)}",
                 "kind": "fact"}
                for i, p in enumerate(example.context)
            ]
        )  # fmt: skip
        titles = set(example.supporting_titles or ())
        gold[example.id] = {
            f"{example.id}/p{i}" for i, p in enumerate(example.context) if p.title in titles
        }
    points = [(x, t) for x in TUNE_GRID["lexical"] for t in TUNE_GRID["temperature"]]
    policies: dict[str, ContextPolicy] = {"topk": TopKSimilarity()} | {
        f"{x}/{t}": RCRContext(weights=RCRWeights(lexical=x, temperature=t)) for x, t in points
    }
    scores: dict[str, list[float]] = defaultdict(list)
    for example in track(examples, description="tuning"):
        for name, policy in policies.items():
            for budget in budgets:
                request = ContextRequest(
                    "answerer", "solver", example.question, [], budget, count, stage="answer",
                    memory=memory.scope(example.id),
                )  # fmt: skip
                chosen = [i.id for i in policy.select(request).items]
                scores[f"{name}@{budget}"].append(recall(chosen, gold[example.id]))

    def row(name: str) -> dict[str, Any]:
        by_budget = {b: round(statistics.fmean(scores[f"{name}@{b}"]), 4) for b in budgets}
        return {"recall": by_budget, "mean_recall": round(statistics.fmean(by_budget.values()), 4)}

    grid = [{"lexical": x, "temperature": t} | row(f"{x}/{t}") for x, t in points]
    best = max(grid, key=lambda r: r["mean_recall"])
    defaults = RCRWeights()
    return {
        "split": "paragraphs-376",
        "unit": "paragraph",
        "questions": len(examples),
        "budgets": budgets,
        "topk": row("topk"),
        "grid": grid,
        "best": best,
        "defaults": {"lexical": defaults.lexical, "temperature": defaults.temperature},
        "defaults_are_best": (defaults.lexical, defaults.temperature)
        == (best["lexical"], best["temperature"]),
    }


def routing(
    examples: list[HotpotExample], memory: SharedMemory, count: TokenCounter, budgets: list[int]
) -> dict[str, Any]:
    rows: dict[str, dict[str, list[float]]] = {}
    full_tokens: list[float] = []
    for example in track(examples, description="routing"):
        gold = gold_ids(example)

        def request(budget: int | None, ex: HotpotExample = example) -> ContextRequest:
            scope = memory.scope(ex.id)
            return ContextRequest(
                "answerer", "solver", ex.question, [], budget, count, stage="answer", memory=scope
            )

        full = FullContext().select(request(None))
        full_tokens.append(full.tokens)
        for name, make in VARIANTS.items():
            policy = make()
            for budget in budgets:
                selection = policy.select(request(budget))
                row = rows.setdefault(f"{name}@{budget}", {"tokens": [], "recall": []})
                row["tokens"].append(selection.tokens)
                row["recall"].append(recall([i.id for i in selection.items], gold))
    full_mean = statistics.fmean(full_tokens)
    table = {
        key: {
            "policy": key.split("@")[0],
            "budget": int(key.split("@")[1]),
            "tokens": round(statistics.fmean(v["tokens"]), 1),
            "token_ratio_vs_full": round(statistics.fmean(v["tokens"]) / full_mean, 3),
            "sf_recall": round(statistics.fmean(v["recall"]), 4),
        }
        for key, v in rows.items()
    }
    return {
        "full_context_tokens": round(full_mean, 1),
        "full_context_sf_recall": 1.0,
        "rows": table,
    }


def team(examples: list[HotpotExample], budget: int) -> dict[str, dict[str, Any]]:
    llm = load_llm(MODEL)
    settings: list[tuple[str, int | None]] = [
        ("full", None), ("rcr", budget), ("topk", budget), ("recency", budget),
    ]  # fmt: skip
    results: dict[str, dict[str, list[float]]] = {p: defaultdict(list) for p, _ in settings}
    for example in track(examples, description="team runs"):
        gold = gold_ids(example)
        for policy, cap in settings:
            began = time.perf_counter()  # a fresh memory per run: embedding is included
            graph = team_graph(llm, example, policy=policy, budget=cap)
            with graph.compile() as compiled:
                result = compiled.invoke(example.question, thread_id=example.id)
            seconds = time.perf_counter() - began
            steps = result.trace.steps
            routed = next((s.context.items for s in steps if s.agent == "answerer"), [])
            score = answer_score(result.answer or "", example.answer)
            row = results[policy]
            row["tokens"].append(sum(s.prompt_tokens for s in steps))
            row["em"].append(score.em)
            row["f1"].append(score.f1)
            row["recall"].append(recall(routed, gold))
            row["seconds"].append(seconds)
    full_tokens = statistics.fmean(results["full"]["tokens"])
    return {
        policy: {
            "budget": cap,
            "prompt_tokens_per_question": round(statistics.fmean(results[policy]["tokens"]), 1),
            "token_ratio_vs_full": round(
                statistics.fmean(results[policy]["tokens"]) / full_tokens, 3
            ),
            "em": round(statistics.fmean(results[policy]["em"]), 3),
            "f1": round(statistics.fmean(results[policy]["f1"]), 3),
            "answerer_sf_recall": round(statistics.fmean(results[policy]["recall"]), 4),
            "seconds_per_question": round(statistics.fmean(results[policy]["seconds"]), 2),
        }
        for policy, cap in settings
    }


class Hybrid(Lookup):
    """Precomputed vectors for stored entries, the real model for queries."""

    def __init__(self, model: SentenceEmbedder) -> None:
        super().__init__(model.name, model.dim)
        self.model = model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if all(t in self.vectors for t in texts):
            return super().embed(texts)
        return self.model.embed(texts)


def scale(sizes: list[int], llm: LLM, queries: int) -> list[dict[str, Any]]:
    model = SentenceEmbedder()
    sentences, questions = real_text()
    questions = questions[:queries]
    real = embed_cached(model, sentences)
    embedding = []
    for question in questions:
        t0 = time.perf_counter()
        model.embed([question])
        embedding.append(time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        vectors = fill(real, size, 0.5, rng)
        texts = [
            sentences[i % len(sentences)] + ("" if i < len(sentences) else f" ({i})")
            for i in range(size)
        ]
        for kind in ("exact", "hnsw"):
            embedder = Hybrid(model)
            embedder.vectors = dict(zip(texts, vectors, strict=True))
            memory = SharedMemory(embedder=embedder, index=kind)
            began = time.perf_counter()
            entries = [{"text": t, "round": i % 50} for i, t in enumerate(texts)]
            memory.scope("run").add_many(entries)
            build = time.perf_counter() - began
            policy, count = RCRContext(), TokenCounter(llm)  # a cold token-count memo per row
            new, same = [], []
            for question in questions:
                request = ContextRequest(
                    "answerer", "solver", question, [], 384, count, stage="answer", step=50,
                    memory=memory.scope("run"),
                )  # fmt: skip
                for samples in (new, same):
                    t0 = time.perf_counter()
                    policy.select(request)
                    samples.append(time.perf_counter() - t0)
            rows.append(
                {
                    "entries": size,
                    "index": kind,
                    "real_entries": min(size, len(sentences)),
                    "build_s": round(build, 2),
                    "new_query_p50_ms": _ms(statistics.median(new)),
                    "new_query_p95_ms": _ms(_p95(new)),
                    "same_query_p50_ms": _ms(statistics.median(same)),
                    "same_query_p95_ms": _ms(_p95(same)),
                    "query_embedding_p50_ms": _ms(statistics.median(embedding)),
                }
            )
            print(rows[-1])
    return rows


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


def _p95(samples: list[float]) -> float:
    return sorted(samples)[int(0.95 * (len(samples) - 1))]


def plot(result: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    rows = list(result["routing"]["rows"].values())
    for name in VARIANTS:
        mine = sorted((r for r in rows if r["policy"] == name), key=lambda r: r["budget"])
        ax.plot([r["tokens"] for r in mine], [r["sf_recall"] for r in mine], marker="o", label=name)
    ax.axvline(
        result["routing"]["full_context_tokens"], color="grey", ls="--", label="full, no budget"
    )
    ax.set_xlabel("answerer context tokens per question (SmolLM2 tokenizer)")
    ax.set_ylabel("supporting-fact recall of the context")
    ax.set_title("HotPotQA distractor: context routing at budgets " + ", ".join(
        str(b) for b in sorted({r["budget"] for r in rows})))  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--team-questions", type=int, default=20)
    parser.add_argument("--team-budget", type=int, default=384)
    parser.add_argument("--budgets", type=int, nargs="+", default=[128, 256, 384, 512, 768])
    parser.add_argument("--tune-budgets", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--scale-queries", type=int, default=100)
    parts = ["tune", "routing", "team", "scale"]
    parser.add_argument(
        "--parts", nargs="+", choices=parts, default=parts,
        help="parts to run; the others are kept from an earlier result file",
    )  # fmt: skip
    args = parser.parse_args()
    out = RESULTS / "context_routing.json"
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}

    examples = load_hotpotqa(sample="distractor-100").examples[: args.questions]
    llm = load_llm(MODEL)
    count = TokenCounter(llm)
    result |= {"benchmark": "context_routing", "machine": machine(), "model": MODEL}
    result.setdefault("settings", {})
    for part in args.parts:
        result["settings"][part] = vars(args)
    if "tune" in args.parts:
        held_out = load_hotpotqa(sample="paragraphs-376").examples
        result["tune"] = tune(held_out, count, args.tune_budgets)
        print("tune:", result["tune"]["best"], "defaults are best:",
              result["tune"]["defaults_are_best"])  # fmt: skip
    if "routing" in args.parts:
        memory = SharedMemory()
        for example in track(examples, description="embedding paragraphs"):
            seed_memory(memory, example)
        result["routing"] = routing(examples, memory, count, args.budgets)
    if "team" in args.parts:
        result["team"] = team(examples[: args.team_questions], args.team_budget)
    if "scale" in args.parts:
        result["scale"] = scale(args.sizes, llm, args.scale_queries)
    write_json(out, result)
    if "routing" in result:
        plot(result, RESULTS / "context_routing.png")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
