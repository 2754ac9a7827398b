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
from typing import TYPE_CHECKING, Any

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
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
