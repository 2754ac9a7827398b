"""`Memory`: what routing, agents and graphs need of a shared memory, whatever stores it.

`SharedMemory` (in-process FAISS) and `PostgresMemory` (PostgreSQL + pgvector, shared by
processes and machines) both implement it, so a policy written against one runs on the
other unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import numpy as np

    from relaygraph.memory.embedding import Embedder
    from relaygraph.memory.entry import Hit, MemoryEntry
    from relaygraph.memory.scope import MemoryScope
    from relaygraph.memory.store import Where


@runtime_checkable
class Memory(Protocol):
    """Entries written by agents, embedded and searchable by meaning; safe across threads.

    Example:
        >>> from relaygraph.memory import Memory, SharedMemory
        >>> isinstance(SharedMemory(), Memory)
        True
    """

    @property
    def embedder(self) -> Embedder:
        """What turns texts (entries and queries) into vectors."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, entry_id: object) -> bool: ...

    def count(self, namespace: str | None = None) -> int:
        """Entries in ``namespace``, or in all of them."""
        ...

    def namespaces(self) -> list[str]:
        """Namespaces holding at least one entry, sorted."""
        ...

    def get(self, entry_id: str) -> MemoryEntry:
        """The entry with this id (`ConfigError` when none has it)."""
        ...

    def vector(self, entry_id: str) -> np.ndarray:
        """The entry's stored unit vector."""
        ...

    def entries(
        self,
        namespace: str | None = None,
        *,
        where: Where | None = None,
        kinds: Iterable[str] | None = None,
    ) -> list[MemoryEntry]:
        """Entries in insertion order, optionally filtered."""
        ...

    def add(self, text: str, **fields: Any) -> MemoryEntry:
        """Embed and store one entry."""
        ...

    def add_many(self, items: Sequence[MemoryEntry | Mapping[str, Any]]) -> list[MemoryEntry]:
        """Store several entries; all are added or none."""
        ...

    def update(self, entry_id: str, **changes: Any) -> MemoryEntry:
        """Replace fields of an entry; a new text is re-embedded."""
        ...

    def delete(self, entry_id: str) -> MemoryEntry:
        """Remove an entry; returns it."""
        ...

    def delete_namespace(self, namespace: str) -> int:
        """Remove every entry of ``namespace``; returns how many there were."""
        ...

    def search(
        self,
        query: str | np.ndarray,
        k: int = 5,
        *,
        namespace: str | None = None,
        where: Where | None = None,
    ) -> list[Hit]:
        """The ``k`` entries most similar to ``query``, best first."""
        ...

    def similarities(self, query: str | np.ndarray, ids: Sequence[str]) -> np.ndarray:
        """Cosine similarity of ``query`` to each entry of ``ids``."""
        ...

    def scope(self, namespace: str) -> MemoryScope:
        """A view that adds to, searches and lists ``namespace`` only."""
        ...

    def close(self) -> None:
        """Release what the memory holds open (a database's connections); its entries
        stay where they are stored."""
        ...
