"""`PostgresMemory`: the shared memory in PostgreSQL + pgvector, for many processes.

The same contract as the in-process `SharedMemory` (see `Memory`), stored where every
replica of a server, every worker of an evaluation, can read and write one memory.
Entries are rows, their unit vectors a ``vector`` column searched by inner product, with
an HNSW index (``index="hnsw"``) or by a sequential scan (``index="exact"``, which is what
recall is measured against). Texts are embedded here, in the client, by the same
`Embedder` as the FAISS memory, so both hold the same vectors.

Writes are transactions: an ``add_many`` is one ``COPY`` that commits whole or not at
all (a process killed mid-batch leaves nothing of it), the unique id column lets
concurrent writers lose nothing and never duplicate an id, and an update only lands on
the row version it started from.

The drivers (psycopg, psycopg_pool, pgvector) come with the ``distributed`` extra and are
imported when a memory is opened.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from relaygraph.database import connection_pool
from relaygraph.errors import ConfigError
from relaygraph.memory.checks import (
    QueryVectors,
    already_there,
    check_distinct,
    embed_rows,
    missing,
    validate_entry,
)
from relaygraph.memory.entry import Hit, MemoryEntry
from relaygraph.memory.pg_filters import Clause, conditions
from relaygraph.memory.pg_rows import (
    COLUMNS,
    columns,
    copy_rows,
    entry_of,
    statement,
    storable,
    update_statement,
)
from relaygraph.memory.pg_schema import MAX_EF_SEARCH, check_table_name, index_config, open_table
from relaygraph.memory.scope import MemoryScope

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool

    from relaygraph.memory.embedding import Embedder
    from relaygraph.memory.index import IndexConfig
    from relaygraph.memory.store import Where


class PostgresMemory:
    """A shared memory in a PostgreSQL table, searched with pgvector; safe across threads,
    processes and machines.

    Args:
        url: A ``postgresql://`` URL.
        table: The memory's table; created (with the pgvector extension) when missing.
        embedder: Turns texts into vectors; the packaged all-MiniLM-L6-v2 when None. Its
            name and dimension must be those the table was created with.
        index: ``"exact"`` (sequential scan) or ``"hnsw"`` (creates the table's HNSW
            index if missing), or an `IndexConfig` of either kind to tune HNSW.
        max_connections: Connections this process keeps open to the server.

    Example:
        >>> url = "postgresql://localhost/team"
        >>> with PostgresMemory(url, table="run_memory") as m:  # doctest: +SKIP
        ...     _ = m.add("The Eiffel Tower is in Paris.", author="scout")
        ...     m.search("Where is the Eiffel Tower?", k=1)[0].entry.author
        'scout'
    """

    def __init__(
        self,
        url: str,
        *,
        table: str = "relaygraph_memory",
        embedder: Embedder | None = None,
        index: str | IndexConfig = "hnsw",
        max_connections: int = 8,
    ) -> None:
        self._table = check_table_name(table)
        self._config = index_config(index)
        self._url = url
        self._pool: ConnectionPool = connection_pool(url, max_size=max_connections)
        try:
            self._embedder = self._open(embedder)
        except BaseException:
            self._pool.close()
            raise
        self._dim = self._embedder.dim
        self._query = QueryVectors(self._embedder)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        table: str = "relaygraph_memory",
        embedder: Embedder | None = None,
        index: str | IndexConfig = "hnsw",
    ) -> PostgresMemory:
        """Open (creating when missing) the memory in ``table`` at ``url``."""
        return cls(url, table=table, embedder=embedder, index=index)

    def _open(self, embedder: Embedder | None) -> Embedder:
        from pgvector.psycopg import register_vector
        from psycopg.types import TypeInfo

        with self._pool.connection() as conn:
            embedder = open_table(conn, self._table, embedder, self._config, url=self._url)
            register_vector(conn)
            self._vector = TypeInfo.fetch(conn, "vector")
        return embedder

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def index_config(self) -> IndexConfig:
        return self._config

    @property
    def table(self) -> str:
        return self._table

    def close(self) -> None:
        """Close this process's connections; the memory stays in the database."""
        self._pool.close()

    def __enter__(self) -> PostgresMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        from pgvector.psycopg.vector import register_vector_info

        with self._pool.connection() as conn:
            # Registering a known type is local (no round trip); pooled connections are
            # made lazily, so each borrow makes sure its connection knows ``vector``.
            register_vector_info(conn, self._vector)
            yield conn

    def _sql(self, template: str, *parts: Any, columns_first: bool = False) -> sql.Composed:
        return statement(self._table, template, *parts, columns_first=columns_first)

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return self.count()

    def __contains__(self, entry_id: object) -> bool:
        if not isinstance(entry_id, str):
            return False
        with self._conn() as conn:
            row = conn.execute(self._sql("SELECT 1 FROM {} WHERE id = %s"), [entry_id])
            return row.fetchone() is not None

    def count(self, namespace: str | None = None) -> int:
        """Entries in ``namespace``, or in all of them."""
        where, params = conditions(namespace, None)
        with self._conn() as conn:
            row = conn.execute(self._sql("SELECT count(*) FROM {}{}", where), params).fetchone()
        return int(row[0]) if row else 0

    def namespaces(self) -> list[str]:
        """Namespaces holding at least one entry, sorted."""
        with self._conn() as conn:
            rows = conn.execute(self._sql("SELECT DISTINCT namespace FROM {}")).fetchall()
        return sorted(str(r[0]) for r in rows)

    def get(self, entry_id: str) -> MemoryEntry:
        """The entry with this id.

        Raises:
            ConfigError: No entry has it.
        """
        found = self._select(conditions(None, None, ids=[entry_id]))
        if not found:
            raise missing(entry_id)
        return found[0]

    def vector(self, entry_id: str) -> np.ndarray:
        """A copy of the entry's stored unit vector."""
        vector: np.ndarray = self._vectors([entry_id])[0]
        return vector

    def entries(
        self,
        namespace: str | None = None,
        *,
        where: Where | None = None,
        kinds: Iterable[str] | None = None,
    ) -> list[MemoryEntry]:
        """Entries in insertion order, optionally of one namespace, matching ``where``
        and of the given ``kinds``."""
        if callable(where):
            return [e for e in self._select(conditions(namespace, None, kinds)) if where(e)]
        return self._select(conditions(namespace, where, kinds))

    def _select(self, clause: Clause) -> list[MemoryEntry]:
        where, params = clause
        query = self._sql("SELECT {} FROM {}{} ORDER BY seq", where, columns_first=True)
        with self._conn() as conn, conn.cursor(binary=True) as cur:
            rows = cur.execute(query, params).fetchall()
        return [entry_of(row) for row in rows]

    def _vectors(self, ids: Sequence[str]) -> np.ndarray:
        where, params = conditions(None, None, ids=list(ids))
        with self._conn() as conn, conn.cursor(binary=True) as cur:
            rows = cur.execute(self._sql("SELECT id, embedding FROM {}{}", where), params)
            found = {str(i): v.to_numpy() for i, v in rows.fetchall()}
        for entry_id in ids:
            if entry_id not in found:
                raise missing(entry_id)
        matrix = np.empty((len(ids), self._dim), dtype=np.float32)
        for row, entry_id in enumerate(ids):
            matrix[row] = found[entry_id]
        return matrix

    # -- writing ---------------------------------------------------------------------

    def add(self, text: str, **fields: Any) -> MemoryEntry:
        """Embed and store one entry; ``fields`` are `MemoryEntry` fields.

        Raises:
            ConfigError: An invalid field or an id already in memory.
        """
        return self.add_many([{**fields, "text": text}])[0]

    def add_many(self, items: Sequence[MemoryEntry | Mapping[str, Any]]) -> list[MemoryEntry]:
        """Store several entries, embedded in one batch, in one transaction: all are
        added or none, even when the process dies midway.

        Raises:
            ConfigError: An invalid item, or an id repeated or already in memory.
        """
        import psycopg

        entries = [storable(validate_entry(item)) for item in items]
        ids = [e.id for e in entries]
        check_distinct(ids)
        if not entries:
            return []
        self._check_new(ids)
        vectors = embed_rows(self._embedder, [e.text for e in entries])
        try:
            with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                copy_rows(cur, self._table, entries, vectors)
        except psycopg.errors.UniqueViolation:
            # Another writer committed one of these ids after the check above.
            self._check_new(ids)
            raise
        return entries

    def _check_new(self, ids: list[str]) -> None:
        where, params = conditions(None, None, ids=ids)
        with self._conn() as conn:
            row = conn.execute(self._sql("SELECT id FROM {}{} LIMIT 1", where), params)
            found = row.fetchone()
        if found is not None:
            raise already_there(str(found[0]))

    def update(self, entry_id: str, **changes: Any) -> MemoryEntry:
        """Replace fields of an entry (``metadata`` as a whole); a new text is re-embedded.

        Raises:
            ConfigError: No such entry, a change to ``id``, or an invalid field.
        """
        from psycopg.types.json import Jsonb

        if "id" in changes:
            raise ConfigError(
                "an entry's id cannot change; delete it and add a new one", parameter="id"
            )
        columns = [c for c in COLUMNS if c != "id"]
        while True:
            old, version = self._versioned(entry_id)
            new = storable(validate_entry({**old.model_dump(), **changes}))
            values: list[Any] = [getattr(new, c) for c in columns if c != "metadata"]
            values.append(Jsonb(new.metadata))
            assigned = [*columns]
            if new.text != old.text:
                assigned.append("embedding")
                values.append(embed_rows(self._embedder, [new.text])[0])
            updating = update_statement(self._table, assigned)
            with self._conn() as conn:
                done = conn.execute(updating, [*values, entry_id, version]).rowcount
            if done:
                return new
            # Changed or deleted while this one embedded: start over from its version, so
            # neither change is lost (or report it gone).

    def _versioned(self, entry_id: str) -> tuple[MemoryEntry, int]:
        query = self._sql("SELECT {}, version FROM {} WHERE id = %s", columns_first=True)
        with self._conn() as conn, conn.cursor(binary=True) as cur:
            row = cur.execute(query, [entry_id]).fetchone()
        if row is None:
            raise missing(entry_id)
        return entry_of(row[:-1]), int(row[-1])

    def delete(self, entry_id: str) -> MemoryEntry:
        """Remove an entry; returns it.

        Raises:
            ConfigError: No entry has this id.
        """
        query = self._sql("DELETE FROM {} WHERE id = %s RETURNING {}", columns())
        with self._conn() as conn, conn.cursor(binary=True) as cur:
            row = cur.execute(query, [entry_id]).fetchone()
        if row is None:
            raise missing(entry_id)
        return entry_of(row)

    def delete_namespace(self, namespace: str) -> int:
        """Remove every entry of ``namespace``; returns how many there were."""
        with self._conn() as conn:
            return conn.execute(
                self._sql("DELETE FROM {} WHERE namespace = %s"), [namespace]
            ).rowcount

    # -- searching -------------------------------------------------------------------

    def search(
        self,
        query: str | np.ndarray,
        k: int = 5,
        *,
        namespace: str | None = None,
        where: Where | None = None,
    ) -> list[Hit]:
        """The ``k`` entries most similar to ``query`` (text, or a vector), best first.

        Filters are exact whatever the index, as in `SharedMemory.search`: a filter
        matching few entries (``IndexConfig.exact_subset_limit``) is scanned exactly.
        Otherwise HNSW searches and then filters its candidates (pgvector filters after
        the graph search), so its candidate list is widened by the share of entries the
        filter keeps; a filter too selective for pgvector's widest list is scanned
        exactly, and so is one that still leaves fewer than ``k``. A predicate ``where``
        is applied here, then its entries are scanned exactly.

        Raises:
            ConfigError: ``k`` < 1, a blank query, or a vector of the wrong size.
        """
        if k < 1:
            raise ConfigError("k must be >= 1", parameter="k", value=k)
        q = self._query(query)[0]
        if callable(where):
            ids = [e.id for e in self.entries(namespace, where=where)]
            return self._nearest(q, k, conditions(None, None, ids=ids), None) if ids else []
        clause = conditions(namespace, where)
        if self._config.kind == "exact":
            return self._nearest(q, k, clause, None)
        base = max(self._config.ef_search, k)
        ef: int | None = base
        if namespace is not None or where is not None:
            matching, total = self._share(clause)
            if matching == 0:
                return []
            # Expect ef * matching / total of the graph's candidates to pass the filter;
            # ask for half as many again as k needs.
            wanted = math.ceil(1.5 * k * max(total, matching) / matching)
            too_few = matching <= self._config.exact_subset_limit
            ef = None if too_few or wanted > MAX_EF_SEARCH else max(base, wanted)
        hits = self._nearest(q, k, clause, ef)
        if ef is not None and len(hits) < k:
            hits = self._nearest(q, k, clause, None)
        return hits

    def _share(self, clause: Clause) -> tuple[int, int]:
        """Entries the filter keeps, and the planner's estimate of all entries (0 before
        the table was first analysed)."""
        where, params = clause
        query = self._sql(
            "SELECT (SELECT count(*) FROM {}{}),"
            " (SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass)",
            where,
        )
        with self._conn() as conn:
            row = conn.execute(query, [*params, self._table]).fetchone()
        return (int(row[0]), int(row[1] or 0)) if row else (0, 0)

    def _nearest(self, q: np.ndarray, k: int, clause: Clause, ef: int | None) -> list[Hit]:
        """The top ``k`` by HNSW with candidate list ``ef``, or by an exact scan for None."""
        where, params = clause
        query = self._sql(
            "SELECT {}, embedding <#> %s AS distance FROM {}{} ORDER BY distance LIMIT %s",
            where,
            columns_first=True,
        )
        with self._conn() as conn, conn.transaction(), conn.cursor(binary=True) as cur:
            if ef is None:
                # Bitmap scans of the namespace index stay allowed; the HNSW index, which
                # only serves index scans, is out.
                cur.execute("SELECT set_config('enable_indexscan', 'off', true)")
            elif ef > MAX_EF_SEARCH:
                return []  # more than HNSW can return: the caller scans exactly
            else:
                cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef)])
            # Ordering by the selected distance computes it once per row; never prepared,
            # because a generic plan cannot see how selective the filter's values are.
            rows = cur.execute(query, [q, *params, k], prepare=False).fetchall()
        # <#> is the negative inner product; for unit vectors, minus the cosine.
        return [Hit(entry_of(row[:-1]), -float(row[-1])) for row in rows]

    def similarities(self, query: str | np.ndarray, ids: Sequence[str]) -> np.ndarray:
        """Cosine similarity of ``query`` to each entry of ``ids``, from stored vectors.

        Raises:
            ConfigError: An id no entry has.
        """
        q = self._query(query)
        if not ids:
            return np.zeros(0, dtype=np.float32)
        scores: np.ndarray = self._vectors(ids) @ q[0]
        return scores

    def scope(self, namespace: str) -> MemoryScope:
        """A view that adds to, searches and lists ``namespace`` only."""
        return MemoryScope(self, namespace)
