"""Where durable runs are saved: a sqlite file on this machine, or a PostgreSQL that
several processes share (LangGraph's own checkpointers for both).

With PostgreSQL, a run that one process started and lost (killed, scaled down) resumes
in any other process that points at the same database, by its thread id.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from relaygraph.database import connect, is_postgres_url, schema_lock

if TYPE_CHECKING:
    import psycopg

Checkpointer = str | Path | BaseCheckpointSaver[Any] | None
"""A sqlite file path, a ``postgresql://`` URL, any LangGraph checkpointer, or None."""

_SETUP_LOCK = 0x72676370  # "rgcp": one process at a time runs the checkpointer's migrations


class Closeable(Protocol):
    def close(self) -> None: ...


def open_checkpointer(
    spec: Checkpointer,
) -> tuple[BaseCheckpointSaver[Any] | None, Closeable | None]:
    """The checkpointer ``spec`` names, and the connection to close with the graph (None
    when the caller passed a checkpointer object, whose lifetime is theirs).

    Raises:
        ConfigError: A PostgreSQL URL whose server cannot be reached.
    """
    if spec is None or isinstance(spec, BaseCheckpointSaver):
        return spec, None
    if is_postgres_url(spec):
        return _postgres(str(spec))
    path = Path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    return SqliteSaver(conn), conn


def _postgres(url: str) -> tuple[BaseCheckpointSaver[Any], psycopg.Connection[Any]]:
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    conn = connect(url)
    # The saver's queries expect rows as dicts, and prepared statements do not survive
    # the connection poolers (pgbouncer) that sit in front of shared databases.
    conn.row_factory = dict_row
    conn.prepare_threshold = None
    saver = PostgresSaver(conn)
    # Replicas starting together would race on the migrations table otherwise; some
    # migrations create indexes CONCURRENTLY, which no transaction may hold.
    with schema_lock(conn, _SETUP_LOCK, transaction=False):
        saver.setup()
    return saver, conn
