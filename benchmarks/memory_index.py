"""Shared-memory index benchmark: exact vs IVF vs HNSW at 1k, 10k and 100k entries.

Entries are real text: the sentences of the two shipped HotPotQA samples (paragraphs
split at sentence ends, duplicates and fragments under 20 characters dropped), embedded
with the packaged all-MiniLM-L6-v2. Queries are the samples' questions, which are not
stored. Sizes beyond the real sentences are filled with copies of their vectors plus
Gaussian noise of L2 norm ``--noise`` (cosine ~0.89 to the source at 0.5), re-normalised;
the JSON says how many entries of each size are real.

For each size and index kind (default `IndexConfig` of each):

- build: one ``add_many`` of every entry (vectors precomputed, so this is validation,
  bookkeeping and indexing, including IVF training);
- add: single ``add`` calls on top of the built memory, entries per second, after one
  warm-up add that grows the vector buffer (at 1k this includes IVF's training, which
  happens when the memory reaches 1,024 entries);
- search p50/p95 latency, k=10, one query vector at a time (no embedding), unfiltered and
  restricted to a namespace holding 10% of the entries;
- recall@10 of IVF and HNSW against exact, unfiltered.

Query embedding latency and batch embedding throughput of MiniLM are reported
separately. Embeddings are cached under build/ (keyed by the texts) so reruns skip them.

Usage:
    python benchmarks/memory_index.py [--sizes 1000 10000 100000] [--queries 300]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import re
import statistics
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, machine, write_json

from relaygraph.eval.hotpotqa import load_hotpotqa
from relaygraph.memory import IndexConfig, IndexKind, SentenceEmbedder, SharedMemory

CACHE = Path(__file__).resolve().parent.parent / "build" / "bench-cache"
KINDS: tuple[IndexKind, ...] = ("exact", "ivf", "hnsw")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"(])")


def real_text() -> tuple[list[str], list[str]]:
    """(unique sentences, questions) of both shipped HotPotQA samples."""
    sentences: list[str] = []
    questions: list[str] = []
    for sample in ("distractor-100", "paragraphs-376"):
        for example in load_hotpotqa(sample=sample).examples:
            questions.append(example.question)
            for paragraph in example.context:
                for text in paragraph.sentences:
                    sentences.extend(s.strip() for s in _SENTENCE_END.split(text))
    unique = list(dict.fromkeys(s for s in sentences if len(s) >= 20))
    return unique, list(dict.fromkeys(questions))


def embed_cached(embedder: SentenceEmbedder, texts: list[str]) -> np.ndarray:
    """Embeddings of ``texts``, from build/bench-cache when an earlier run made them."""
    key = hashlib.sha256("\n".join([embedder.name, *texts]).encode()).hexdigest()[:16]
    path = CACHE / f"minilm-{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = embedder.embed(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed: two benchmarks sharing the cache never read half a file.
    partial = path.with_suffix(f".{os.getpid()}.partial")
    with partial.open("wb") as out:
        np.save(out, vectors)
    partial.replace(path)
    return vectors


def fill(real: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors: the real ones first, then noisy copies of them."""
    if n <= len(real):
        return real[:n]
    sources = real[rng.integers(0, len(real), n - len(real))]
    jitter = rng.standard_normal(sources.shape).astype(np.float32)
    jitter *= noise / np.linalg.norm(jitter, axis=1, keepdims=True)
    copies = sources + jitter
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return np.concatenate([real, copies.astype(np.float32)])


class Lookup:
    """An embedder that returns precomputed vectors, so timings exclude the model."""

    def __init__(self, name: str, dim: int) -> None:
        self.name = name
        self.dim = dim
        self.vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.vectors[t] for t in texts], dtype=np.float32).reshape(
            len(texts), self.dim
        )


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 4),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 4),
    }


def measure(
    kind: IndexKind,
    vectors: np.ndarray,
    texts: list[str],
    *,
    extra: np.ndarray,
    queries: np.ndarray,
    lookup: Lookup,
) -> tuple[dict[str, Any], list[list[str]]]:
    """Build, add and search timings of one index kind; also its top-10 ids per query."""
    n = len(vectors)
    for i, text in enumerate(texts):
        lookup.vectors[text] = vectors[i]
    items = [{"id": f"e{i}", "text": texts[i], "namespace": f"ns{i % 10}"} for i in range(n)]
    memory = SharedMemory(lookup, IndexConfig(kind=kind))

    began = time.perf_counter()
    memory.add_many(items)
    build_s = time.perf_counter() - began

    # Warm-up, then one query at a time.
    for q in queries[:5]:
        memory.search(q, k=10)
    latencies, filtered, tops = [], [], []
    for q in queries:
        began = time.perf_counter()
        hits = memory.search(q, k=10)
        latencies.append(time.perf_counter() - began)
        tops.append([h.entry.id for h in hits])
    for q in queries:
        began = time.perf_counter()
        memory.search(q, k=10, namespace="ns3")
        filtered.append(time.perf_counter() - began)

    extra_texts = [f"extra {i}" for i in range(len(extra))]
    for text, vector in zip(extra_texts, extra, strict=True):
        lookup.vectors[text] = vector
    # The first add after a bulk build doubles the vector buffer (a one-off copy,
    # amortised over as many adds as the memory held); it is left out.
    memory.add(extra_texts[0])
    began = time.perf_counter()
    for text in extra_texts[1:]:
        memory.add(text)
    add_s = time.perf_counter() - began

    result = {
        "kind": kind,
        "size": n,
        "build_s": round(build_s, 3),
        "build_entries_per_s": round(n / build_s),
        "add_entries_per_s": round((len(extra) - 1) / add_s),
        "search": _ms(latencies),
        "search_namespace_10pct": _ms(filtered),
    }
    del memory
    lookup.vectors.clear()
    gc.collect()
    return result, tops


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return round(hits / sum(len(t) for t in truth), 4)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, rec) = plt.subplots(1, 2, figsize=(11, 4))
    for colour, kind in enumerate(KINDS):
        mine = [r for r in rows if r["kind"] == kind]
        sizes = [r["size"] for r in mine]
        style = {"color": f"C{colour}"}
        lat.plot(sizes, [r["search"]["p50_ms"] for r in mine], "o-", label=f"{kind} p50", **style)
        lat.plot(sizes, [r["search"]["p95_ms"] for r in mine], "x--", label=f"{kind} p95", **style)
        if kind != "exact":
            rec.plot(sizes, [r["recall_at_10"] for r in mine], "o-", label=kind, **style)
    lat.set(
        xscale="log",
        yscale="log",
        xlabel="entries",
        ylabel="search latency, ms (k=10, one query)",
        title="SharedMemory.search latency",
    )
    rec.set(xscale="log", xlabel="entries", ylabel="recall@10 vs exact", title="Recall@10")
    lowest = min(r["recall_at_10"] for r in rows if "recall_at_10" in r)
    rec.set_ylim(max(0.0, lowest - 0.1), 1.005)
    lat.legend(fontsize=8)
    rec.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--adds", type=int, default=500, help="single adds timed per index")
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=RESULTS / "memory_index.json")
    args = parser.parse_args()

    facts = machine()
    rng = np.random.default_rng(0)
    sentences, questions = real_text()
    order = rng.permutation(len(sentences))
    sentences = [sentences[i] for i in order]

    embedder = SentenceEmbedder()
    embedder.embed(sentences[:64])  # warm-up
    began = time.perf_counter()
    embedder.embed(sentences[:1024])
    embed_rate = 1024 / (time.perf_counter() - began)
    real = embed_cached(embedder, sentences)
    query_vectors = embed_cached(embedder, questions)
    picked = rng.choice(len(questions), min(args.queries, len(questions)), replace=False)
    queries = query_vectors[picked]
    one_query = []
    for question in questions[:50]:
        began = time.perf_counter()
        embedder.embed([question])
        one_query.append(time.perf_counter() - began)
    print(f"{len(sentences)} real sentences, {len(questions)} questions")

    largest = max(args.sizes)
    pool = fill(real, largest + args.adds, args.noise, rng)
    texts = sentences + [f"copy {i}" for i in range(len(pool) - len(sentences))]
    rows = []
    for size in sorted(args.sizes):
        vectors, extra = pool[:size], pool[largest : largest + args.adds]
        truth: list[list[str]] = []
        for kind in KINDS:
            print(f"{size} entries, {kind}...", flush=True)
            lookup = Lookup(embedder.name, embedder.dim)
            row, tops = measure(
                kind, vectors, texts[:size], extra=extra, queries=queries, lookup=lookup
            )
            if kind == "exact":
                truth = tops
            else:
                row["recall_at_10"] = recall(tops, truth)
            row["real_entries"] = min(size, len(sentences))
            rows.append(row)
            print(f"  {row}", flush=True)

    write_json(
        args.out,
        {
            "benchmark": "memory_index",
            "machine": {
                **facts,
                "faiss": version("faiss-cpu"),
                "sentence_transformers": version("sentence-transformers"),
                "load_average_at_end": os.getloadavg(),
            },
            "data": {
                "entries": "sentences of the shipped HotPotQA samples distractor-100 and "
                "paragraphs-376 (split at sentence ends, unique, >= 20 characters), "
                "embedded with all-MiniLM-L6-v2",
                "real_sentences": len(sentences),
                "filler": f"beyond {len(sentences)} entries: copies of real vectors plus "
                f"Gaussian noise of L2 norm {args.noise}, re-normalised",
                "queries": f"{len(queries)} HotPotQA questions (not stored), as vectors",
                "single_adds_timed": args.adds - 1,
            },
            "index_configs": {kind: IndexConfig(kind=kind).model_dump() for kind in KINDS},
            "embedding": {
                "model": embedder.name,
                "batch_texts_per_s": round(embed_rate, 1),
                "batch_measured_on": "1024 of the sentences, batch size 64",
                "single_query": _ms(one_query),
            },
            "results": rows,
        },
    )
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
