"""The PostgreSQL memory's tables: creating them once, checking what they were made for,
and the index settings pgvector accepts.

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

from relaygraph.database import redacted, schema_lock
from relaygraph.errors import ConfigError
from relaygraph.memory.embedding import DEFAULT_EMBEDDER, SentenceEmbedder
from relaygraph.memory.index import IndexConfig

if TYPE_CHECKING:
    import psycopg

    from relaygraph.memory.embedding import Embedder

REGISTRY = "relaygraph_memories"
"""The table naming each memory table's embedder and dimension."""
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
# Any constant: it names the lock every memory's creation takes, across the database.
_CREATION_LOCK = 0x7265_6C61_7967_7261
MAX_EF_SEARCH = 1000
"""pgvector's largest ``hnsw.ef_search``; a larger ``k`` falls back to an exact scan."""


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


def index_config(index: str | IndexConfig) -> IndexConfig:
    """The `IndexConfig` that ``index`` names, refused unless pgvector can build it.

    Raises:
        ConfigError: Not ``"exact"`` or ``"hnsw"``, or HNSW settings out of pgvector's range.
    """
    if isinstance(index, IndexConfig):
        config = index
    elif index in ("exact", "hnsw"):
        config = IndexConfig(kind=index)
    else:
        raise ConfigError(
            f"index must be 'exact' or 'hnsw' (or an IndexConfig), not {index!r}",
            parameter="index",
            value=index,
        )
    if config.kind not in ("exact", "hnsw"):
        raise ConfigError(
            f"PostgresMemory indexes by 'exact' or 'hnsw', not {config.kind!r}",
            parameter="index",
            value=config.kind,
        )
    if config.kind == "hnsw" and not (
        2 <= config.hnsw_m <= 100
        and 2 * config.hnsw_m <= config.ef_construction <= 1000
        and config.ef_search <= MAX_EF_SEARCH
    ):
        raise ConfigError(
            "pgvector's HNSW needs 2 <= hnsw_m <= 100, 2*hnsw_m <= ef_construction <= 1000 "
            f"and ef_search <= {MAX_EF_SEARCH}; got hnsw_m={config.hnsw_m}, "
            f"ef_construction={config.ef_construction}, ef_search={config.ef_search}",
            parameter="index",
        )
    return config


def open_table(
    conn: psycopg.Connection[Any],
    table: str,
    embedder: Embedder | None,
    config: IndexConfig,
    *,
    url: str,
) -> Embedder:
    """The embedder of memory ``table``, which is created for it when missing (with its
    HNSW index when ``config`` asks for one).

    ``embedder`` None means the one the table was made with, which must be the packaged
    default, since only its name is recorded.

    Raises:
        ConfigError: The table holds vectors of another embedder or dimension.
    """
    found = recorded(conn, table)
    if embedder is None:
        if found is not None and found[0] != DEFAULT_EMBEDDER:
            raise ConfigError(
                f"memory table {table!r} holds vectors of embedder {found[0]!r};"
                " pass that embedder to open it",
                parameter="embedder",
                value=found[0],
            )
        embedder = SentenceEmbedder()
    name, dim = create(conn, table, embedder.name, embedder.dim)
    if (name, dim) != (embedder.name, embedder.dim):
        raise ConfigError(
            f"memory table {table!r} at {redacted(url)} holds {dim}-d "
            f"vectors from embedder {name!r}, but the given embedder is "
            f"{embedder.name!r} with {embedder.dim} dimensions; open it with the "
            "embedder that wrote it, or use another table",
            parameter="embedder",
            value=embedder.name,
        )
    if config.kind == "hnsw":
        hnsw_index(conn, table, config)
    return embedder


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
        with schema_lock(conn, _CREATION_LOCK):
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
    with schema_lock(conn, _CREATION_LOCK):
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
    with schema_lock(conn, _CREATION_LOCK):
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
