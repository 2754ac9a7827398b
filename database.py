"""PostgreSQL, where several processes or machines share relaygraph's state.

The local defaults (a sqlite checkpoint file, the in-process FAISS memory, trace files)
need no server. What replicas behind a load balancer must all see (durable runs, the
shared memory, traces, evaluation records) may instead live in one PostgreSQL, named by
a ``postgresql://`` URL wherever a path is accepted. The drivers come with the
``distributed`` extra (``pip install 'relaygraph[distributed]'``) and load only when a
URL is used.
"""

from __future__ import annotations

import importlib
import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import psycopg
    from psycopg_pool import ConnectionPool

SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(value: object) -> bool:
    """Whether ``value`` names a PostgreSQL database rather than a local path."""
    return isinstance(value, str) and value.startswith(SCHEMES)


def redacted(url: str) -> str:
    """``url`` with its password replaced, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _driver(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"a postgresql:// URL needs {module}: pip install 'relaygraph[distributed]'"
        ) from exc


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection to ``url``; an unreachable server is a `ConfigError` naming it."""
    driver = _driver("psycopg")
    try:
        connection: psycopg.Connection[Any] = driver.connect(url, autocommit=autocommit)
    except driver.OperationalError as exc:
        raise ConfigError(f"cannot connect to PostgreSQL at {redacted(url)}: {exc}") from None
    return connection


def connection_pool(url: str, *, max_size: int = 8) -> ConnectionPool:
    """A pool of autocommit connections to ``url``, opened and checked before it returns,
    for the threads of one process (a server's requests, an evaluation's items)."""
    pool_module = _driver("psycopg_pool")
    pool: ConnectionPool = pool_module.ConnectionPool(
        url, min_size=1, max_size=max_size, kwargs={"autocommit": True}, open=False
    )
    try:
        pool.open(wait=True, timeout=10)
    except pool_module.PoolTimeout:
        pool.close()
        raise ConfigError(f"cannot connect to PostgreSQL at {redacted(url)}") from None
    return pool


@contextmanager
def schema_lock(
    conn: psycopg.Connection[Any], key: int, *, transaction: bool = True
) -> Iterator[None]:
    """Run the block holding PostgreSQL advisory lock ``key``, so that processes creating
    the same tables at the same moment do it one at a time, and the later ones find them
    made (``IF NOT EXISTS`` alone still races into unique violations).

    By default the block is one transaction and the lock ends with it. With
    ``transaction=False`` it is a session lock released when the block ends, for
    statements that cannot run in a transaction (``CREATE INDEX CONCURRENTLY``).

    Example:
        >>> with schema_lock(conn, 0x7267):  # doctest: +SKIP
        ...     conn.execute("CREATE TABLE IF NOT EXISTS t (id text)")
    """
    if transaction:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            yield
        return
    conn.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [key])
