"""Traces and evaluation records in PostgreSQL, so every replica and every machine of an
evaluation reads what any other wrote.

Two tables, created on first use: ``relaygraph_traces`` (one row per run, the trace as
JSONB) and ``relaygraph_items`` (one row per evaluation item of a run directory, keyed by
the run's name and the item id, so recording an item twice keeps one row). A process that
dies mid-write leaves a record and its trace written or not, never half of them: each
write is one transaction.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from relaygraph.database import connection_pool, is_postgres_url, redacted, schema_lock
from relaygraph.errors import ConfigError
from relaygraph.graph.runs import ItemRecord
from relaygraph.graph.trace import Trace

if TYPE_CHECKING:
    from collections.abc import Iterator

    from psycopg_pool import ConnectionPool

_SCHEMA = """
CREATE TABLE IF NOT EXISTS relaygraph_traces (
    run_id text PRIMARY KEY,
    graph text NOT NULL,
    saved_at timestamptz NOT NULL DEFAULT now(),
    trace jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS relaygraph_traces_saved_at ON relaygraph_traces (saved_at DESC);
CREATE TABLE IF NOT EXISTS relaygraph_items (
    run text NOT NULL,
    item_id text NOT NULL,
    run_id text,
    record jsonb NOT NULL,
    PRIMARY KEY (run, item_id)
);
"""
_SCHEMA_LOCK = 0x72677472  # "rgtr": replicas starting together create the tables once
_SAVE_TRACE = """
INSERT INTO relaygraph_traces (run_id, graph, trace) VALUES (%s, %s, %s)
ON CONFLICT (run_id) DO UPDATE SET graph = EXCLUDED.graph, trace = EXCLUDED.trace, saved_at = now()
"""
_SAVE_ITEM = """
INSERT INTO relaygraph_items (run, item_id, run_id, record) VALUES (%s, %s, %s, %s)
ON CONFLICT (run, item_id) DO UPDATE SET run_id = EXCLUDED.run_id, record = EXCLUDED.record
"""


class SharedRecords:
    """Traces and evaluation items in one PostgreSQL database.

    Example:
        >>> records = SharedRecords("postgresql://db/relaygraph")  # doctest: +SKIP
        >>> records.save_trace(result.trace); records.trace(result.trace.run_id)  # doctest: +SKIP
    """

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self._pool: ConnectionPool = connection_pool(url, max_size=max_connections)
        self._closed = threading.Event()
        with self._pool.connection() as conn, schema_lock(conn, _SCHEMA_LOCK):
            conn.execute(_SCHEMA)

    def close(self) -> None:
        """Close the connections."""
        if not self._closed.is_set():
            self._closed.set()
            self._pool.close()

    def __enter__(self) -> SharedRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save_trace(self, trace: Trace) -> None:
        """Store ``trace`` (replacing an earlier one of the same run, as a resumed run's)."""
        with self._pool.connection() as conn:
            conn.execute(_SAVE_TRACE, (trace.run_id, trace.graph, trace.model_dump_json()))

    def trace(self, run_id: str) -> Trace | None:
        """The stored trace of ``run_id``, or None."""
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT trace::text FROM relaygraph_traces WHERE run_id = %s", (run_id,)
            ).fetchone()
        return None if row is None else Trace.model_validate_json(row[0])

    def recent_traces(self, limit: int = 100) -> list[Trace]:
        """The newest stored traces, newest first."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT trace::text FROM relaygraph_traces ORDER BY saved_at DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [Trace.model_validate_json(text) for (text,) in rows]

    def save_item(self, run: str, item: ItemRecord, trace: Trace | None) -> None:
        """Store one evaluation item of ``run`` (and its trace), both in one transaction."""
        with self._pool.connection() as conn, conn.transaction():
            if trace is not None:
                conn.execute(_SAVE_TRACE, (trace.run_id, trace.graph, trace.model_dump_json()))
            run_id = None if trace is None else trace.run_id
            conn.execute(_SAVE_ITEM, (run, item.id, run_id, item.model_dump_json()))

    def items(self, run: str) -> dict[str, ItemRecord]:
        """Every stored item of ``run``, by id."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT record::text FROM relaygraph_items WHERE run = %s ORDER BY item_id",
                (run,),
            ).fetchall()
        records = [ItemRecord.model_validate_json(text) for (text,) in rows]
        return {r.id: r for r in records}

    def runs(self) -> dict[str, int]:
        """Each stored run's name and how many items it has."""
        with self._pool.connection() as conn:
            rows: list[Any] = conn.execute(
                "SELECT run, count(*) FROM relaygraph_items GROUP BY run ORDER BY run"
            ).fetchall()
        return {run: int(n) for run, n in rows}


@contextmanager
def shared_records(url: str | None) -> Iterator[SharedRecords | None]:
    """`SharedRecords` at ``url`` for the block, closed after it; None without a URL.

    Raises:
        ConfigError: A URL that is not ``postgresql://``, or a server that cannot be reached.
    """
    if url is None:
        yield None
        return
    if not is_postgres_url(url):
        raise ConfigError(
            f"records are shared in PostgreSQL: give a postgresql:// URL, not {redacted(url)}",
            parameter="database",
        )
    records = SharedRecords(url)
    try:
        yield records
    finally:
        records.close()
