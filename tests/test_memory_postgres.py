"""Shared memory on a real PostgreSQL + pgvector: the FAISS memory's contract, kept across
processes.

Every test gets a fresh database on the session's PostgreSQL 16 (the ``postgres_url``
fixture). Parity tests put the same entries in a `PostgresMemory` and a `SharedMemory`
and expect the same answers; the process tests spawn real writers, and kill one with
SIGKILL while its batch is half written (held there by a row lock, not by timing).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from embedders import HashEmbedder

from relaygraph.database import connect
from relaygraph.errors import ConfigError
from relaygraph.memory import (
    IndexConfig,
    Memory,
    MemoryEntry,
    SentenceEmbedder,
    SharedMemory,
    open_memory,
)
from relaygraph.memory.postgres import PostgresMemory
from relaygraph.routing import ContextRequest, RCRContext

FACTS = {
    "eiffel": "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "python": "Python is a programming language created by Guido van Rossum.",
    "photo": "Photosynthesis turns sunlight, water and carbon dioxide into sugar in plants.",
    "everest": "Mount Everest is the highest mountain above sea level, in the Himalayas.",
    "insulin": "Insulin is a hormone made by the pancreas that regulates blood sugar.",
    "bach": "Johann Sebastian Bach composed the Brandenburg Concertos.",
    "nile": "The Nile flows north through eleven countries into the Mediterranean Sea.",
    "bitcoin": "Bitcoin is a cryptocurrency whose ledger is a public blockchain.",
}
QUESTIONS = [
    "When was the famous iron tower in France's capital finished?",
    "Who invented the Python language?",
    "What is the tallest peak on Earth?",
    "Which hormone controls glucose levels in the blood?",
    "What digital currency uses a blockchain?",
]
TABLE = "team_memory"


@pytest.fixture(scope="module")
def minilm() -> SentenceEmbedder:
    return SentenceEmbedder()


def _facts() -> list[MemoryEntry]:
    roles = ["researcher", "planner", None]
    return [
        MemoryEntry(
            id=key,
            text=text,
            author=f"agent{i % 3}",
            role=roles[i % 3],
            round=i % 4,
            kind="plan" if i % 4 == 1 else "fact",
            namespace="run-a" if i % 2 else "run-b",
            metadata={"n": i % 3, "checked": i % 2 == 0, "source": ["web", "book"][i % 2]},
        )
        for i, (key, text) in enumerate(FACTS.items())
    ]


@pytest.fixture
def both(
    postgres_url: str, minilm: SentenceEmbedder
) -> Iterator[tuple[PostgresMemory, SharedMemory]]:
    faiss_memory = SharedMemory(minilm)
    pg = PostgresMemory(postgres_url, table=TABLE, embedder=minilm, index="exact")
    entries = _facts()
    for memory in (pg, faiss_memory):
        memory.add_many(entries)
    yield pg, faiss_memory
    pg.close()


def _ranked(memory: Memory, query: str, **options: Any) -> list[tuple[str, float]]:
    return [(h.entry.id, h.score) for h in memory.search(query, **options)]


def _same_hits(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> None:
    assert [i for i, _ in a] == [i for i, _ in b]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


# -- the contract, against the FAISS memory ----------------------------------------------


def test_exact_search_entries_and_vectors_match_faiss(
    both: tuple[PostgresMemory, SharedMemory],
) -> None:
    pg, faiss_memory = both
    assert isinstance(pg, Memory) and isinstance(faiss_memory, Memory)
    assert len(pg) == len(faiss_memory) == len(FACTS) and "bach" in pg and "mozart" not in pg
    assert pg.entries() == faiss_memory.entries()
    assert pg.get("nile") == faiss_memory.get("nile")
    np.testing.assert_allclose(pg.vector("nile"), faiss_memory.vector("nile"), atol=1e-6)
    for question in QUESTIONS:
        _same_hits(_ranked(pg, question, k=8), _ranked(faiss_memory, question, k=8))
        vector = faiss_memory.embedder.embed([question])[0]
        _same_hits(_ranked(pg, vector, k=3), _ranked(faiss_memory, vector, k=3))
        ids = ["bach", "eiffel", "nile"]
        np.testing.assert_allclose(
            pg.similarities(question, ids), faiss_memory.similarities(question, ids), atol=1e-5
        )
    assert pg.search(QUESTIONS[0], k=1)[0].entry.id == "eiffel"


@pytest.mark.parametrize(
    "where",
    [
        {"author": "agent1"},
        {"role": None},
        {"role": [None, "planner"]},
        {"round": [1, 2.0]},
        {"round": True},
        {"kind": "plan", "namespace": "run-a"},
        {"n": 1},
        {"n": [0, 2]},
        {"n": True},
        {"checked": True},
        {"checked": 1.0},
        {"source": "book"},
        {"source": ["web", 3]},
        {"missing_key": None},
        {"n": "1"},
    ],
    ids=repr,
)
def test_filters_mean_what_they_mean_in_faiss(
    both: tuple[PostgresMemory, SharedMemory], where: dict[str, Any]
) -> None:
    pg, faiss_memory = both
    expected = faiss_memory.entries(where=where)
    assert pg.entries(where=where) == expected
    _same_hits(
        _ranked(pg, QUESTIONS[2], k=3, where=where),
        _ranked(faiss_memory, QUESTIONS[2], k=3, where=where),
    )


def test_namespaces_kinds_predicates_and_scope(
    both: tuple[PostgresMemory, SharedMemory],
) -> None:
    pg, faiss_memory = both
    assert pg.namespaces() == faiss_memory.namespaces() == ["run-a", "run-b"]
    assert pg.count("run-a") == faiss_memory.count("run-a") == 4
    assert pg.entries("run-b", kinds=["fact"]) == faiss_memory.entries("run-b", kinds=["fact"])

    def early(entry: MemoryEntry) -> bool:
        return entry.round < 2

    assert pg.entries(where=early) == faiss_memory.entries(where=early)
    for question in QUESTIONS:
        _same_hits(
            _ranked(pg, question, k=2, namespace="run-a", where=early),
            _ranked(faiss_memory, question, k=2, namespace="run-a", where=early),
        )
    run = pg.scope("run-c")
    run.add("The bridge opened in 1932.", author="researcher")
    assert (
        len(run) == 1 and run.search("When did the bridge open?", k=1)[0].entry.namespace == "run-c"
    )
    with pytest.raises(ConfigError, match="this scope is 'run-c'"):
        run.add("x", namespace="run-a")
    assert pg.delete_namespace("run-a") == 4 and pg.namespaces() == ["run-b", "run-c"]


def test_update_re_embeds_and_delete_removes(both: tuple[PostgresMemory, SharedMemory]) -> None:
    pg, faiss_memory = both
    text = "The Amazon rainforest produces much of the world's oxygen."
    for memory in (pg, faiss_memory):
        updated = memory.update("bitcoin", text=text)
        assert updated.text == text and memory.get("bitcoin") == updated
    np.testing.assert_allclose(pg.vector("bitcoin"), faiss_memory.vector("bitcoin"), atol=1e-6)
    assert pg.search("Which forest makes oxygen?", k=1)[0].entry.id == "bitcoin"

    before = pg.vector("bach")
    pg.update("bach", metadata={"checked": "yes"}, author="critic")
    np.testing.assert_array_equal(pg.vector("bach"), before)
    assert (
        pg.get("bach").author == "critic" and pg.entries(where={"checked": "yes"})[0].id == "bach"
    )

    assert pg.delete("everest").id == "everest" and "everest" not in pg
    assert all(h.entry.id != "everest" for h in pg.search("tallest mountain", k=10))
    with pytest.raises(ConfigError, match="no memory entry has id 'everest'"):
        pg.get("everest")
    with pytest.raises(ConfigError, match="no memory entry has id 'everest'"):
        pg.update("everest", author="x")
    with pytest.raises(ConfigError, match="no memory entry has id 'everest'"):
        pg.similarities("mountain", ["bach", "everest"])
    with pytest.raises(ConfigError, match="cannot change"):
        pg.update("bach", id="other")


def test_bad_input_raises_the_faiss_memory_errors(
    both: tuple[PostgresMemory, SharedMemory],
) -> None:
    pg, faiss_memory = both
    for memory in (pg, faiss_memory):
        with pytest.raises(ConfigError, match="already has an entry with id 'bach'"):
            memory.add("again", id="bach")
        with pytest.raises(ConfigError, match="already has an entry with id 'nile'"):
            memory.add_many([{"id": "fresh", "text": "new"}, {"id": "nile", "text": "dup"}])
        assert "fresh" not in memory  # all or nothing
        with pytest.raises(ConfigError, match="appears twice"):
            memory.add_many([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
        with pytest.raises(ConfigError, match="memory entry: text"):
            memory.add("   ")
        with pytest.raises(ConfigError, match="k must be >= 1"):
            memory.search("x", k=0)
        with pytest.raises(ConfigError, match="query is blank"):
            memory.search(" ")
        with pytest.raises(ConfigError, match="expected \\(384,\\)"):
            memory.search(np.ones(3))
    with pytest.raises(ConfigError, match="jsonb holds only finite numbers"):
        pg.add("x", metadata={"score": float("nan")})


def test_hnsw_agrees_with_exact(postgres_url: str) -> None:
    embedder = HashEmbedder(dim=32)
    items = [{"id": f"e{i}", "text": f"entry {i}", "namespace": f"ns{i % 4}"} for i in range(600)]
    with (
        PostgresMemory(postgres_url, table=TABLE, embedder=embedder, index="exact") as exact,
        PostgresMemory(
            postgres_url,
            table=TABLE,
            embedder=embedder,
            index=IndexConfig(kind="hnsw", ef_search=200),
        ) as hnsw,
    ):
        exact.add_many(items)
        with connect(postgres_url) as conn:
            indexes = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [TABLE])
            assert any("hnsw" in row[0] for row in indexes.fetchall())
        queries = [f"query {i}" for i in range(20)]
        found = [{h.entry.id for h in hnsw.search(q, k=10)} for q in queries]
        truth = [{h.entry.id for h in exact.search(q, k=10)} for q in queries]
        recall = sum(len(f & t) for f, t in zip(found, truth, strict=True)) / 200
        assert recall >= 0.95
        # Filtered searches stay exact whatever the index.
        for q in queries:
            assert _ranked(hnsw, q, k=5, namespace="ns2") == _ranked(exact, q, k=5, namespace="ns2")


def test_opening_checks_embedder_table_and_index(postgres_url: str) -> None:
    with PostgresMemory(postgres_url, table=TABLE, embedder=HashEmbedder(dim=16), index="exact"):
        pass
    with pytest.raises(ConfigError, match="holds 16-d vectors from embedder 'hash-test'"):
        PostgresMemory(postgres_url, table=TABLE, embedder=HashEmbedder(dim=8))
    with pytest.raises(ConfigError, match="holds 16-d vectors from embedder 'hash-test'"):
        PostgresMemory(postgres_url, table=TABLE, embedder=HashEmbedder(dim=16, name="other"))
    with pytest.raises(ConfigError, match="pass that embedder"):
        PostgresMemory(postgres_url, table=TABLE)
    with pytest.raises(ConfigError, match="memory table name"):
        PostgresMemory(postgres_url, table="bad; drop table x")
    with pytest.raises(ConfigError, match="'exact' or 'hnsw'"):
        PostgresMemory(postgres_url, table=TABLE, index="ivf")
    with pytest.raises(ConfigError, match="2\\*hnsw_m <= ef_construction"):
        PostgresMemory(postgres_url, index=IndexConfig(kind="hnsw", hnsw_m=64, ef_construction=80))
    # Another table of the same database is another memory, with its own embedder.
    with PostgresMemory(postgres_url, table="other", embedder=HashEmbedder(dim=8)) as other:
        assert len(other) == 0


def test_open_memory_picks_the_backend(postgres_url: str) -> None:
    embedder = HashEmbedder()
    assert isinstance(open_memory(None, embedder=embedder), SharedMemory)
    with pytest.raises(ConfigError, match="must start with postgresql://"):
        open_memory("sqlite:///memory.db", embedder=embedder)
    memory = open_memory(postgres_url, table=TABLE, embedder=embedder)
    assert isinstance(memory, PostgresMemory) and memory.index_config.kind == "hnsw"
    memory.close()


# -- several processes -------------------------------------------------------------------


def _writer(url: str, name: str, batches: list[int]) -> None:
    """A separate process adding ``sum(batches)`` entries in batches of those sizes."""
    with PostgresMemory(url, table=TABLE, embedder=HashEmbedder(), index="hnsw") as memory:
        written = 0
        for size in batches:
            memory.add_many(
                [
                    {"id": f"{name}-{written + i}", "text": f"{name} wrote {written + i}"}
                    for i in range(size)
                ]
            )
            written += size


def test_processes_writing_at_once_lose_nothing(postgres_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    batches = [1, 7, 25, 1, 50, 16] * 3
    writers = [
        spawn.Process(target=_writer, args=(postgres_url, n, batches)) for n in ("a", "b", "c")
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=300)
        assert process.exitcode == 0
    with PostgresMemory(
        postgres_url, table=TABLE, embedder=HashEmbedder(), index="exact"
    ) as memory:
        each = sum(batches)
        assert len(memory) == 3 * each
        expected = {f"{n}-{i}": f"{n} wrote {i}" for n in "abc" for i in range(each)}
        assert {e.id: e.text for e in memory.entries()} == expected
        np.testing.assert_allclose(
            memory.vector("b-42"), HashEmbedder().embed(["b wrote 42"])[0], atol=1e-6
        )


def _blocked_writer(url: str, ids: list[str]) -> None:
    with PostgresMemory(url, table=TABLE, embedder=HashEmbedder(), index="exact") as memory:
        memory.add_many([{"id": i, "text": f"batch entry {i}"} for i in ids])


def _waiting_backend(url: str) -> int | None:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'COPY%'"
        ).fetchone()
    return None if row is None else int(row[0])


def test_a_process_killed_mid_add_many_leaves_no_half_batch(postgres_url: str) -> None:
    memory = PostgresMemory(postgres_url, table=TABLE, embedder=HashEmbedder(), index="exact")
    memory.add("written before", id="before")
    batch = [f"k{i}" for i in range(200)]
    # This connection inserts the batch's last id and does not commit: the writer's COPY
    # has written the other 199 rows when it reaches that id, and waits for this lock.
    holder = connect(postgres_url, autocommit=False)
    holder.execute(
        f"INSERT INTO {TABLE} (id, text, round, kind, timestamp, namespace, metadata, embedding)"
        " VALUES (%s, 'held', 0, 'fact', 0, 'default', '{}', %s::vector)",
        [batch[-1], str([1.0] + [0.0] * 15)],
    )
    writer = multiprocessing.get_context("spawn").Process(
        target=_blocked_writer, args=(postgres_url, batch)
    )
    writer.start()
    deadline = time.monotonic() + 120
    while (backend := _waiting_backend(postgres_url)) is None:
        assert writer.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    holder.rollback()
    holder.close()
    while True:  # the server notices the dead client and rolls its transaction back
        with connect(postgres_url) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]
            ).fetchone():
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [e.id for e in memory.entries()] == ["before"]
    assert not any(i in memory for i in batch)
    memory.add_many([{"id": i, "text": f"batch entry {i}"} for i in batch])  # ids are free
    assert len(memory) == 201
    memory.close()


# -- routing -----------------------------------------------------------------------------


def test_rcr_routing_chooses_the_same_context_on_both(
    postgres_url: str, minilm: SentenceEmbedder
) -> None:
    faiss_memory = SharedMemory(minilm)
    with PostgresMemory(postgres_url, table=TABLE, embedder=minilm) as pg:
        entries = [e.model_copy(update={"namespace": "run-1"}) for e in _facts()]
        entries += [
            MemoryEntry(text=f"Unrelated note {i} about the weather.", namespace="run-2")
            for i in range(3)
        ]
        for memory in (pg, faiss_memory):
            memory.add_many(entries)
        policy = RCRContext()
        for question in QUESTIONS:
            chosen = []
            for memory in (pg, faiss_memory):
                request = ContextRequest(
                    "solver",
                    "solver",
                    question,
                    [],
                    40,
                    lambda s: len(s.split()),
                    memory=memory.scope("run-1"),
                )
                selection = policy.select(request)
                chosen.append(([i.id for i in selection.items], selection.tokens, selection.scores))
            (pg_ids, pg_tokens, pg_scores), (f_ids, f_tokens, f_scores) = chosen
            assert pg_ids == f_ids and pg_tokens == f_tokens and pg_ids
            assert pg_scores.keys() == f_scores.keys()
            np.testing.assert_allclose(
                list(pg_scores.values()), [f_scores[k] for k in pg_scores], rtol=1e-4
            )
