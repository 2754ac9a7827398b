"""`open_memory`: the shared memory a URL names, or the in-process default without one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.database import is_postgres_url
from relaygraph.errors import ConfigError
from relaygraph.memory.store import SharedMemory

if TYPE_CHECKING:
    from relaygraph.memory.embedding import Embedder
    from relaygraph.memory.index import IndexConfig, IndexKind
    from relaygraph.memory.protocol import Memory


def open_memory(
    url: str | None = None,
    *,
    table: str = "relaygraph_memory",
    embedder: Embedder | None = None,
    index: IndexKind | IndexConfig | None = None,
) -> Memory:
    """A `PostgresMemory` in ``table`` for a ``postgresql://`` URL; a new in-process FAISS
    `SharedMemory` for None.

    Args:
        url: Where the memory lives, or None for this process only.
        table: The PostgreSQL table (ignored without a URL).
        embedder: Turns texts into vectors; the packaged all-MiniLM-L6-v2 when None.
        index: How to search; by default ``"exact"`` in process and ``"hnsw"`` in
            PostgreSQL, where memories shared by many are large.

    Example:
        >>> open_memory(None).count()
        0

    Raises:
        ConfigError: A URL that is not ``postgresql://``, or what opening it raises.
    """
    if url is None:
        return SharedMemory(embedder, index if index is not None else "exact")
    if not is_postgres_url(url):
        raise ConfigError(
            f"a shared memory URL must start with postgresql:// (or be None for an "
            f"in-process memory), not {url.split('://')[0]!r}://…",
            parameter="url",
        )
    from relaygraph.memory.postgres import PostgresMemory

    return PostgresMemory(
        url, table=table, embedder=embedder, index=index if index is not None else "hnsw"
    )
