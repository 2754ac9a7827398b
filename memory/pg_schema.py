"""The PostgreSQL memory's tables: creating them once, and checking what they were made for.

A memory is one table of entries (one row each, its unit vector in a pgvector column);
``relaygraph_memories`` records, per table, the embedder and dimension it was created
with, so a process opening it with another embedder fails before mixing vectors of two
models. Creation happens under an advisory lock: processes that open a new memory at the
same moment create it once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from psycopg import sql

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    import psycopg

    from relaygraph.memory.index import IndexConfig

REGISTRY = "relaygraph_memories"
"""The table naming each memory table's embedder and dimension."""
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
# Any constant: it names the lock every memory's creation takes, across the database.
_CREATION_LOCK = 0x7265_6C61_7967_7261


def check_table_name(table: str) -> str:
    """``table`` when it is a plain lowercase SQL name short enough for its index names."""
    if not isinstance(table, str) or not _NAME.fullmatch(table):
        raise ConfigError(
            f"memory table name {table!r} must be 1-48 lowercase letters, digits or '_', "
            "not starting with a digit",
            parameter="table",
            value=table,
        )
    return table


def recorded(conn: psycopg.Connection[Any], table: str) -> tuple[str, int] | None:
    """The (embedder, dimension) ``table`` was created with, or None when it is new."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [REGISTRY]).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(
        sql.SQL("SELECT embedder, dim FROM {} WHERE name = %s").format(sql.Identifier(REGISTRY)),
        [table],
    ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def _extension(conn: psycopg.Connection[Any]) -> None:
    import psycopg

    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    try:
        with conn.transaction():
            # IF NOT EXISTS is no guard against another process creating it at the same
            # moment (a unique violation); the lock makes the second wait and find it.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATION_LOCK])
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege:
        raise ConfigError(
            "the database lacks the pgvector extension and this user may not create it; "
            "ask its owner to run CREATE EXTENSION vector",
            parameter="url",
        ) from None
    except psycopg.errors.FeatureNotSupported:
        raise ConfigError(
            "this PostgreSQL server has no pgvector; install pgvector (0.5 or later) on it",
            parameter="url",
        ) from None


def create(conn: psycopg.Connection[Any], table: str, embedder: str, dim: int) -> tuple[str, int]:
    """Create ``table`` for ``embedder``'s ``dim``-d vectors unless it exists; returns what
    it records (which differs from the arguments when another process made it first)."""
    _extension(conn)
    name = sql.Identifier(table)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATION_LOCK])
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, embedder text NOT NULL,"
                " dim integer NOT NULL)"
            ).format(sql.Identifier(REGISTRY))
        )
        found = recorded(conn, table)
        if found is not None:
            return found
        # seq orders entries as they were added; version changes with every update, so an
        # update that embedded a new text outside any transaction can tell whether the
        # row changed meanwhile.
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} ("
                " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " id text NOT NULL UNIQUE,"
                " text text NOT NULL,"
                " author text, role text, stage text,"
                " round integer NOT NULL,"
                " kind text NOT NULL,"
                " timestamp double precision NOT NULL,"
                " namespace text NOT NULL,"
                " metadata jsonb NOT NULL,"
                " embedding vector({}) NOT NULL,"
                " version bigint NOT NULL DEFAULT 0)"
            ).format(name, sql.Literal(dim))
        )
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} (namespace, seq)").format(
                sql.Identifier(f"{table}_namespace"), name
            )
        )
        conn.execute(
            sql.SQL("INSERT INTO {} (name, embedder, dim) VALUES (%s, %s, %s)").format(
                sql.Identifier(REGISTRY)
            ),
            [table, embedder, dim],
        )
        return embedder, dim


def hnsw_index(conn: psycopg.Connection[Any], table: str, config: IndexConfig) -> None:
    """Give ``table`` its HNSW index by inner product unless it has one.

    Vectors are unit length, so inner product is cosine. An index made earlier keeps the
    parameters it was made with.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATION_LOCK])
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_ip_ops)"
                " WITH (m = {}, ef_construction = {})"
            ).format(
                sql.Identifier(f"{table}_hnsw"),
                sql.Identifier(table),
                sql.Literal(config.hnsw_m),
                sql.Literal(config.ef_construction),
            )
        )
