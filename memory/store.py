"""`SharedMemory`: what a team of agents has written, searchable by meaning.

Its entries and vectors live in a `RowTable`, its vectors also in a faiss index that
holds the table's labels; both change together under one lock. Embedding runs outside
the lock, so one agent embedding a long batch does not stall the others' searches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import faiss
import numpy as np

from relaygraph.errors import ConfigError
from relaygraph.memory.checks import (
    QUERY_CACHE_SIZE,
    QueryVectors,
    already_there,
    check_distinct,
    embed_rows,
    validate_entry,
)
from relaygraph.memory.embedding import DEFAULT_EMBEDDER, Embedder, SentenceEmbedder
from relaygraph.memory.entry import Hit, MemoryEntry, MetadataValue
from relaygraph.memory.index import IndexConfig, IndexKind, make_index
from relaygraph.memory.persistence import Snapshot, read_snapshot, write_snapshot
from relaygraph.memory.rows import RowTable
from relaygraph.memory.scope import MemoryScope

if TYPE_CHECKING:
    from collections.abc import Iterable

# QUERY_CACHE_SIZE is re-exported: it was defined here before the checks moved out.
__all__ = ["QUERY_CACHE_SIZE", "SharedMemory", "Where"]

Where: TypeAlias = (
    Mapping[str, MetadataValue | Sequence[MetadataValue] | AbstractSet[MetadataValue]]
    | Callable[[MemoryEntry], bool]
)
"""A filter: a predicate on entries, or key -> a value (equal to it) or a list, tuple or
set of values (any of them). Keys naming an entry field (author, role, stage, round, kind,
namespace, id…) test the field; other keys test ``metadata``, where a missing key never
matches; a metadata key that shadows a field needs a predicate."""

_FIELDS = frozenset(MemoryEntry.model_fields) - {"metadata"}
_MISSING = object()


def _matches(entry: MemoryEntry, where: Mapping[str, Any]) -> bool:
    for key, wanted in where.items():
        value = getattr(entry, key) if key in _FIELDS else entry.metadata.get(key, _MISSING)
        if value is _MISSING:
            return False
        if isinstance(wanted, Collection) and not isinstance(wanted, str):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


class SharedMemory:
    """Entries written by agents, embedded and indexed for search; thread-safe.

    Args:
        embedder: Turns texts into vectors; the packaged all-MiniLM-L6-v2 when None.
        index: ``"exact"``, ``"ivf"`` or ``"hnsw"``, or an `IndexConfig` to tune one.

    Example:
        >>> memory = SharedMemory()
        >>> _ = memory.add("The Eiffel Tower is in Paris.", author="scout", kind="fact")
        >>> _ = memory.add("Buy milk on the way home.", author="planner", kind="plan")
        >>> memory.search("Where is the Eiffel Tower?", k=1)[0].entry.author
        'scout'
    """

    def __init__(
        self, embedder: Embedder | None = None, index: IndexKind | IndexConfig = "exact"
    ) -> None:
        if isinstance(index, IndexConfig):
            self._config = index
        elif index in ("exact", "ivf", "hnsw"):
            self._config = IndexConfig(kind=index)
        else:
            raise ConfigError(
                f"index must be 'exact', 'ivf' or 'hnsw' (or an IndexConfig), not {index!r}",
                parameter="index",
                value=index,
            )
        self._embedder = embedder if embedder is not None else SentenceEmbedder()
        self._dim = self._embedder.dim
        self._index = make_index(self._config, self._dim)
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()
        self._table = RowTable(self._dim)
        self._query = QueryVectors(self._embedder)

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def index_config(self) -> IndexConfig:
        return self._config

    def close(self) -> None:
        """Nothing to release: the index lives in this process (`Memory` callers close
        whichever memory they opened alike)."""

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._table

    def count(self, namespace: str | None = None) -> int:
        """Entries in ``namespace``, or in all of them."""
        with self._lock:
            return self._table.count(namespace)

    def namespaces(self) -> list[str]:
        """Namespaces holding at least one entry, sorted."""
        with self._lock:
            return self._table.namespaces()

    def get(self, entry_id: str) -> MemoryEntry:
        """The entry with this id.

        Raises:
            ConfigError: No entry has it.
        """
        with self._lock:
            return self._table.entry(entry_id)

    def vector(self, entry_id: str) -> np.ndarray:
        """A copy of the entry's stored unit vector."""
        with self._lock:
            self._table.entry(entry_id)
            vector: np.ndarray = self._table.vectors([entry_id])[0]
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
        wanted = None if kinds is None else frozenset(kinds)
        with self._lock:
            return [
                e for e in self._candidates(namespace, where) if wanted is None or e.kind in wanted
            ]

    def _candidates(self, namespace: str | None, where: Where | None) -> list[MemoryEntry]:
        pool = self._table.entries(namespace)
        if where is None:
            return list(pool)
        if callable(where):
            return [e for e in pool if where(e)]
        return [e for e in pool if _matches(e, where)]

    # -- writing ---------------------------------------------------------------------

    def add(self, text: str, **fields: Any) -> MemoryEntry:
        """Embed and store one entry; ``fields`` are `MemoryEntry` fields.

        Raises:
            ConfigError: An invalid field (blank text, non-scalar metadata…) or an id
                already in memory.
        """
        return self.add_many([{**fields, "text": text}])[0]

    def add_many(self, items: Sequence[MemoryEntry | Mapping[str, Any]]) -> list[MemoryEntry]:
        """Store several entries, embedded in one batch; all are added or none.

        Raises:
            ConfigError: An invalid item, or an id repeated or already in memory.
        """
        entries = [validate_entry(item) for item in items]
        ids = [e.id for e in entries]
        check_distinct(ids)
        with self._lock:
            self._check_new(ids)
        vectors = self._embed([e.text for e in entries])
        with self._lock:
            # Checked again: another thread may have added one of these ids meanwhile.
            self._check_new(ids)
            self._index.add(vectors, self._table.append(entries, vectors))
            self._refresh_index()
        return entries

    def _check_new(self, ids: Iterable[str]) -> None:
        for entry_id in ids:
            if entry_id in self._table:
                raise already_there(entry_id)

    def update(self, entry_id: str, **changes: Any) -> MemoryEntry:
        """Replace fields of an entry (``metadata`` as a whole); a new text is re-embedded.

        Example:
            >>> memory.update(entry.id, text="Paris is France's capital.")  # doctest: +SKIP

        Raises:
            ConfigError: No such entry, a change to ``id``, or an invalid field.
        """
        if "id" in changes:
            raise ConfigError(
                "an entry's id cannot change; delete it and add a new one", parameter="id"
            )
        while True:
            with self._lock:
                old = self._table.entry(entry_id)
            new = validate_entry({**old.model_dump(), **changes})
            vector = self._embed([new.text]) if new.text != old.text else None
            with self._lock:
                # Another thread changed the entry while this one embedded: start over
                # from its version, so neither change is lost.
                if self._table.get(entry_id) is not old:
                    continue
                swapped = self._table.replace(old, new, vector)
                if swapped is not None and vector is not None:
                    old_label, label = swapped
                    self._index.remove(np.array([old_label], dtype=np.int64))
                    self._index.add(vector, np.array([label], dtype=np.int64))
                self._refresh_index()
                return new

    def delete(self, entry_id: str) -> MemoryEntry:
        """Remove an entry; returns it.

        Raises:
            ConfigError: No entry has this id.
        """
        with self._lock:
            entry = self._table.entry(entry_id)
            self._remove([entry_id])
            return entry

    def delete_namespace(self, namespace: str) -> int:
        """Remove every entry of ``namespace``; returns how many there were."""
        with self._lock:
            ids = self._table.ids_of(namespace)
            self._remove(ids)
            return len(ids)

    def _embed(self, texts: list[str]) -> np.ndarray:
        return embed_rows(self._embedder, texts)

    def _remove(self, ids: list[str]) -> None:
        if not ids:
            return
        self._index.remove(self._table.remove(ids))
        self._refresh_index()

    def _refresh_index(self) -> None:
        if self._index.stale:
            self._index.rebuild(*self._table.live())

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

        Filters are exact whatever the index: a filter matching few entries
        (``IndexConfig.exact_subset_limit``) scores them directly; otherwise the index
        searches with the matching labels as an allow-list, and when an approximate
        index finds fewer than ``k`` of them the matching entries are scored directly.

        Raises:
            ConfigError: ``k`` < 1, a blank query, or a vector of the wrong size.
        """
        if k < 1:
            raise ConfigError("k must be >= 1", parameter="k", value=k)
        q = self._query(query)
        table = self._table
        with self._lock:
            if not len(table):
                return []
            if namespace is None and where is None:
                rows: np.ndarray | None = None
                n = len(table)
            else:
                rows = self._candidate_rows(namespace, where)
                n = len(rows)
                if n == 0:
                    return []
                if n <= self._config.exact_subset_limit:
                    return self._scan(q, rows, k)
            want = min(k, n)
            # A filter every entry passes (one run's namespace holding the whole memory)
            # needs no allow-list, which would cost more than the search itself.
            allowed = None if rows is None or n == len(table) else table.labels_at(rows)
            scores, labels = self._index.search(q, want, allowed)
            if len(labels) < want:
                everything = np.arange(len(table), dtype=np.int64)
                return self._scan(q, everything if rows is None else rows, k)
            return [
                Hit(table.at_label(label), score)
                for score, label in zip(scores.tolist(), labels.tolist(), strict=True)
            ]

    def _candidate_rows(self, namespace: str | None, where: Where | None) -> np.ndarray:
        if where is None and namespace is not None:
            return self._table.namespace_rows(namespace)
        return self._table.rows_of(self._candidates(namespace, where))

    def _scan(self, q: np.ndarray, rows: np.ndarray, k: int) -> list[Hit]:
        """Exact top ``k`` among ``rows``, from the stored vectors."""
        scores = self._table.scores(q[0], rows)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        best = top[np.argsort(-scores[top], kind="stable")]
        return [Hit(self._table.at_row(int(rows[i])), float(scores[i])) for i in best.tolist()]

    def similarities(self, query: str | np.ndarray, ids: Sequence[str]) -> np.ndarray:
        """Cosine similarity of ``query`` to each entry of ``ids``, from stored vectors.

        Nothing is re-embedded but the query (when it is text), so scoring a whole
        candidate list costs one matrix-vector product.

        Raises:
            ConfigError: An id no entry has.
        """
        q = self._query(query)
        with self._lock:
            for entry_id in ids:
                self._table.entry(entry_id)
            scores: np.ndarray = self._table.vectors(ids) @ q[0]
            return scores

    def scope(self, namespace: str) -> MemoryScope:
        """A view that adds to, searches and lists ``namespace`` only."""
        return MemoryScope(self, namespace)

    # -- persistence -----------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Save atomically into ``directory``; returns the snapshot folder written.

        A crash mid-save leaves the previous save loadable (see `persistence`).
        """
        with self._save_lock:
            with self._lock:
                entries, vectors, labels = self._table.in_order()
                snapshot = Snapshot(
                    entries=entries,
                    vectors=vectors,
                    labels=labels,
                    index=faiss.serialize_index(self._index.native),
                    embedder=self._embedder.name,
                    config=self._config,
                    next_label=self._table.next_label,
                )
            return write_snapshot(Path(directory), snapshot)

    @classmethod
    def load(cls, directory: str | Path, embedder: Embedder | None = None) -> SharedMemory:
        """The memory last saved into ``directory``.

        Args:
            directory: Where `save` wrote.
            embedder: The embedder queries use; it must have the saved embedder's name and
                dimension. None loads the packaged all-MiniLM-L6-v2 when that is what
                was saved.

        Raises:
            ConfigError: No complete save there, damaged files, or an embedder that does
                not match the saved vectors.
        """
        path = Path(directory)
        snapshot, native = read_snapshot(path)
        if embedder is None:
            if snapshot.embedder != DEFAULT_EMBEDDER:
                raise ConfigError(
                    f"{path} was saved with embedder {snapshot.embedder!r}; pass that "
                    "embedder to SharedMemory.load",
                    parameter="embedder",
                    value=snapshot.embedder,
                )
            embedder = SentenceEmbedder()
        dim = snapshot.vectors.shape[1]
        if embedder.name != snapshot.embedder or embedder.dim != dim:
            raise ConfigError(
                f"{path} holds {dim}-d vectors from embedder {snapshot.embedder!r}, but the "
                f"given embedder is {embedder.name!r} with {embedder.dim} dimensions; load "
                "with the embedder that saved it",
                parameter="embedder",
                value=embedder.name,
            )
        memory = cls(embedder, snapshot.config)
        memory._restore(snapshot, native, path)
        return memory

    def _restore(self, snapshot: Snapshot, native: faiss.Index, path: Path) -> None:
        labels = snapshot.labels
        held = native.ntotal
        # exact and ivf hold exactly the live vectors; hnsw may hold tombstones too.
        if held < len(labels) or (self._config.kind != "hnsw" and held != len(labels)):
            raise ConfigError(
                f"cannot load shared memory from {path}: the index holds {held} vectors "
                f"for {len(labels)} entries",
                parameter="directory",
            )
        if len(labels) and int(labels.max()) >= snapshot.next_label:
            raise ConfigError(
                f"cannot load shared memory from {path}: a label is past next_label",
                parameter="directory",
            )
        if (
            isinstance(native, faiss.IndexIDMap)
            and not np.isin(labels, faiss.vector_to_array(native.id_map)).all()
        ):
            raise ConfigError(
                f"cannot load shared memory from {path}: entries' labels are missing from "
                "the index",
                parameter="directory",
            )
        self._index = make_index(self._config, self._dim, native, labels)
        self._table = RowTable.restored(
            snapshot.entries, snapshot.vectors, snapshot.labels, snapshot.next_label
        )
