"""Shared-memory backends: PostgreSQL + pgvector (HNSW, exact) against in-process FAISS
(exact, HNSW), at 10k and 100k entries.

Entries: ``--real`` sentences (a seeded random choice) of the shipped HotPotQA samples,
embedded with the packaged all-MiniLM-L6-v2, then noisy copies of their vectors (as in
memory_index.py) up to each size; embedding 100k texts on two CPU cores would take most
of an hour, so the memories get precomputed vectors through a lookup embedder and every
timing excludes the model. Queries are HotPotQA questions (not stored), embedded the same
way. Entries are spread over ten namespaces.

Per size and backend (default `IndexConfig` of each kind; pgvector HNSW is built with the
same m and ef_construction as FAISS's):

- add: ``add_many`` in batches of ``--batch`` entries into an empty memory, entries per
  second (for PostgreSQL one COPY per batch, committed; pgvector-hnsw loads into the
  table without its index, then builds it, which is included); then ``--extra`` more
  entries in batches of 50 into the built index;
- search p50/p95, k=10, one query vector at a time, unfiltered;
- recall@10 against FAISS exact on the same vectors;
- one routing step end to end: `RCRContext.select` over a run's namespace (10% of the
  entries) with a budget of 256 words (words stand in for tokens), its query already
  embedded, p50/p95.

PostgreSQL runs from the pgserver wheel in a temporary folder, on this machine, reached
over a Unix socket, with maintenance_work_mem raised so a 100k HNSW graph builds in
memory; each table gets the VACUUM ANALYZE autovacuum would give it after the load.

Usage:
    python benchmarks/memory_backends.py [--sizes 10000 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, machine, write_json
from memory_index import Lookup, embed_cached, fill, real_text
from psycopg import sql
from rich.progress import Progress

from relaygraph.database import connect
from relaygraph.fileio import save_figure
from relaygraph.memory import IndexConfig, Memory, SentenceEmbedder, SharedMemory
from relaygraph.memory.postgres import PostgresMemory
from relaygraph.routing import ContextRequest, RCRContext

BACKENDS = ("faiss-exact", "faiss-hnsw", "pgvector-exact", "pgvector-hnsw")
NAMESPACES = 10
BUDGET = 256
EXTRA_BATCH = 50


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3),
    }


def _timed(run: Callable[[], Any], times: int) -> list[float]:
    run()  # warm-up: caches, the first connection of the pool, plans
    samples = []
    for _ in range(times):
        began = time.perf_counter()
        run()
        samples.append(time.perf_counter() - began)
    return samples


def open_backend(name: str, lookup: Lookup, url: str, table: str) -> Memory:
    """An empty memory of ``name``; pgvector-hnsw starts without its index (see measure)."""
    store, kind = name.split("-")
    if store == "faiss":
        return SharedMemory(lookup, IndexConfig(kind="hnsw" if kind == "hnsw" else "exact"))
    return PostgresMemory(url, table=table, embedder=lookup, index="exact")


def measure(
    memory: Memory,
    texts: list[str],
    *,
    batch: int,
    extra: list[str],
    queries: np.ndarray,
    questions: list[str],
    hnsw: bool,
    url: str,
) -> tuple[dict[str, Any], list[list[str]]]:
    """Add, search and routing timings of one memory (closed after); also its top-10 ids
    per query."""
    n = len(texts)
    items = [
        {"id": f"e{i}", "text": texts[i], "namespace": f"ns{i % NAMESPACES}"} for i in range(n)
    ]
    began = time.perf_counter()
    for start in range(0, n, batch):
        memory.add_many(items[start : start + batch])
    add_s = time.perf_counter() - began
    row: dict[str, Any] = {"add_s": round(add_s, 2), "add_entries_per_s": round(n / add_s)}
    if isinstance(memory, PostgresMemory) and hnsw:
        # Bulk-loaded, then indexed: pgvector builds an HNSW index over existing rows far
        # faster than it inserts rows into one (measured below on the extra entries).
        began = time.perf_counter()
        memory.close()
        memory = PostgresMemory(url, table=memory.table, embedder=memory.embedder, index="hnsw")
        row["index_build_s"] = round(time.perf_counter() - began, 2)
        row["add_s"] = round(add_s + row["index_build_s"], 2)
        row["add_entries_per_s"] = round(n / row["add_s"])
    if isinstance(memory, PostgresMemory):
        # What autovacuum does soon after a bulk load: until then every page must be
        # visited to count a namespace's rows, which filtered searches do first.
        with connect(url) as conn:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(memory.table)))
    began = time.perf_counter()
    for start in range(0, len(extra), EXTRA_BATCH):
        memory.add_many(
            [{"text": text, "namespace": "extra"} for text in extra[start : start + EXTRA_BATCH]]
        )
    row["indexed_add_entries_per_s"] = round(len(extra) / (time.perf_counter() - began))
    memory.delete_namespace("extra")

    tops: list[list[str]] = []
    latencies = []
    for q in queries:
        began = time.perf_counter()
        hits = memory.search(q, k=10)
        latencies.append(time.perf_counter() - began)
        tops.append([h.entry.id for h in hits])

    policy = RCRContext()
    scope = memory.scope("ns3")
    steps: list[float] = []
    for question in questions:
        request = ContextRequest(
            "solver", "solver", question, [], BUDGET, lambda s: len(s.split()), memory=scope
        )
        steps += _timed(lambda request=request: policy.select(request), 1)
    row |= {"search": _ms(latencies), "routing_step": _ms(steps)}
    if isinstance(memory, PostgresMemory):
        memory.close()
    return row, tops


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return round(hits / sum(len(t) for t in truth), 4)


def server_versions(url: str) -> dict[str, str]:
    """PostgreSQL's and pgvector's versions (creating the extension the memories use)."""
    with connect(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        row = conn.execute(
            "SELECT current_setting('server_version'), extversion FROM pg_extension"
            " WHERE extname = 'vector'"
        ).fetchone()
    assert row is not None
    return {"server": str(row[0]), "pgvector": str(row[1])}


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in rows})
    panels = [
        ("add_entries_per_s", "bulk add, entries/s", True),
        ("indexed_add_entries_per_s", "adds into a built index, entries/s", True),
        ("search.p50_ms", "search p50, ms (k=10)", True),
        ("routing_step.p50_ms", "RCR routing step p50, ms", True),
        ("recall_at_10", "recall@10 vs FAISS exact", False),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(20, 4))
    width = 0.8 / len(BACKENDS)
    for ax, (key, label, log) in zip(axes, panels, strict=True):
        for b, backend in enumerate(BACKENDS):
            values = []
            for size in sizes:
                row = next(r for r in rows if r["size"] == size and r["backend"] == backend)
                value: Any = row
                for part in key.split("."):
                    value = value[part]
                values.append(value)
            xs = [i + (b - (len(BACKENDS) - 1) / 2) * width for i in range(len(sizes))]
            ax.bar(xs, values, width, label=backend, color=f"C{b}")
        ax.set_xticks(range(len(sizes)), [f"{s:,}" for s in sizes])
        ax.set(xlabel="entries", ylabel=label, yscale="log" if log else "linear")
        if not log:
            ax.set_ylim(min(0.9, min(r["recall_at_10"] for r in rows) - 0.05), 1.005)
    axes[-1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Shared memory: pgvector vs FAISS")
    save_figure(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--routing-steps", type=int, default=50)
    parser.add_argument("--real", type=int, default=2000, help="real sentences embedded")
    parser.add_argument("--batch", type=int, default=1000, help="entries per add_many")
    parser.add_argument("--extra", type=int, default=500, help="entries added once indexed")
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=RESULTS / "memory_backends.json")
    args = parser.parse_args()

    import pgserver

    facts = machine()
    rng = np.random.default_rng(0)
    sentences, questions = real_text()
    sentences = [sentences[i] for i in rng.permutation(len(sentences))[: args.real]]
    questions = [questions[i] for i in rng.permutation(len(questions))[: args.queries]]
    embedder = SentenceEmbedder()
    real = embed_cached(embedder, sentences)
    query_vectors = embed_cached(embedder, questions)
    largest = max(args.sizes)
    pool = fill(real, largest + args.extra, args.noise, rng)
    texts = sentences + [f"copy {i}" for i in range(len(pool) - len(sentences))]
    extra = texts[largest:]
    routed = questions[: args.routing_steps]

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        server = pgserver.get_server(Path(folder), cleanup_mode="stop")
        server.psql("CREATE DATABASE bench;")
        url = server.get_uri("bench")
        # Room for pgvector to build a 100k-entry HNSW graph in memory (its default 64 MB
        # would make it build on disk, as slowly as inserting row by row).
        server.psql("ALTER SYSTEM SET maintenance_work_mem = '1GB';")
        server.psql("SELECT pg_reload_conf();")
        postgres = server_versions(url)
        with Progress() as progress:
            task = progress.add_task("memory backends", total=len(args.sizes) * len(BACKENDS))
            for size in sorted(args.sizes):
                truth: list[list[str]] = []
                for backend in BACKENDS:
                    progress.update(task, description=f"{size:,} entries, {backend}")
                    lookup = Lookup(embedder.name, embedder.dim)
                    lookup.vectors.update(zip(texts[:size], pool[:size], strict=True))
                    lookup.vectors.update(zip(extra, pool[largest:], strict=True))
                    lookup.vectors.update(zip(questions, query_vectors, strict=True))
                    memory = open_backend(
                        backend,
                        lookup,
                        url,
                        f"m{size}_{backend[:5]}_{backend[-5:]}".replace("-", ""),
                    )
                    row, tops = measure(
                        memory,
                        texts[:size],
                        batch=args.batch,
                        extra=extra,
                        queries=query_vectors,
                        questions=routed,
                        hnsw=backend.endswith("hnsw"),
                        url=url,
                    )
                    if backend == "faiss-exact":
                        truth = tops
                    row = {
                        "size": size,
                        "backend": backend,
                        **row,
                        "recall_at_10": recall(tops, truth),
                    }
                    rows.append(row)
                    progress.console.print(row)
                    progress.advance(task)
        server.cleanup()

    write_json(
        args.out,
        {
            "benchmark": "memory_backends",
            "machine": {
                **facts,
                "faiss": version("faiss-cpu"),
                "psycopg": version("psycopg"),
                "pgvector_python": version("pgvector"),
                "postgresql": postgres,
                "load_average_at_end": os.getloadavg(),
            },
            "settings": {
                "entries": f"{len(sentences)} HotPotQA sentences embedded with "
                f"all-MiniLM-L6-v2, then copies of their vectors plus Gaussian noise of L2 "
                f"norm {args.noise}, re-normalised",
                "why_precomputed": "embedding 100k texts on this machine's 2 CPU cores "
                "takes most of an hour; memories get precomputed vectors through a lookup "
                "embedder, so no timing includes the model",
                "queries": f"{len(questions)} HotPotQA questions (not stored), as vectors",
                "namespaces": NAMESPACES,
                "add_batch": args.batch,
                "add": "add_many in batches of add_batch into an empty memory; for "
                "pgvector-hnsw into a table without its index, then the index built "
                "(index_build_s, included in add_s and add_entries_per_s)",
                "indexed_add": f"{args.extra} more entries, add_many in batches of "
                f"{EXTRA_BATCH}, into the built index (then deleted)",
                "postgres_settings": {"maintenance_work_mem": "1GB"},
                "vacuum": "VACUUM ANALYZE after the bulk load (and index build), untimed, as "
                "autovacuum would run; before it, counting a namespace (which filtered "
                "searches and len(scope) do) visits every heap page",
                "routing": f"RCRContext().select over namespace ns3 (1/{NAMESPACES} of the "
                f"entries), budget {BUDGET} words, {len(routed)} questions, query embedding "
                "cached",
                "postgres": "pgserver wheel, default settings, same machine, Unix socket",
                "index_configs": {
                    kind: IndexConfig(kind=kind).model_dump() for kind in ("exact", "hnsw")
                },
            },
            "results": rows,
        },
    )
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
