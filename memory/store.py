"""`SharedMemory`: what a team of agents has written, searchable by meaning.

State, kept consistent under one lock:

- ``_entries``: id -> entry, in insertion order;
- ``_matrix[:n]``: the unit vectors, one row per entry (``_ids[row]`` names it, ``_rows``
  maps back), compact: a removed row is filled with the last one;
- ``_labels[:n]``: each row's int64 label in the faiss index (``_by_label`` maps back).
  A changed vector gets a fresh label, since HNSW keeps the old one as a tombstone;
- ``_namespaces``: namespace -> ids, in insertion order (for listing);
- ``_row_ns[:n]``: each row's namespace as an int code (``_ns_codes``), so a namespace
  filter finds its rows with one vectorised comparison instead of a Python loop.

Embedding runs outside the lock, so one agent embedding a long batch does not stall the
others' searches.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import faiss
import numpy as np
from pydantic import ValidationError

from relaygraph.errors import ConfigError, first_problem
from relaygraph.memory.embedding import DEFAULT_EMBEDDER, Embedder, SentenceEmbedder
from relaygraph.memory.entry import Hit, MemoryEntry, MetadataValue
from relaygraph.memory.index import IndexConfig, IndexKind, make_index
from relaygraph.memory.persistence import Snapshot, read_snapshot, write_snapshot
from relaygraph.memory.scope import MemoryScope

if TYPE_CHECKING:
    from collections.abc import Iterable

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
QUERY_CACHE_SIZE = 64
"""Query vectors a memory keeps, most recently used first."""


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


def _validate(item: MemoryEntry | Mapping[str, Any]) -> MemoryEntry:
    if isinstance(item, MemoryEntry):
        return item
    try:
        return MemoryEntry.model_validate(dict(item))
    except ValidationError as exc:
        field, problem = first_problem(exc.errors())
        raise ConfigError(f"memory entry: {field}: {problem}", parameter=field) from None


def _unit_rows(vectors: np.ndarray, dim: int, source: str) -> np.ndarray:
    """``vectors`` as float32 rows of unit length, checked.

    Normalising here keeps inner product equal to cosine whatever the embedder does.
    """
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ConfigError(
            f"{source} has shape {array.shape}; expected rows of {dim} numbers",
            parameter=source,
        )
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ConfigError(
            f"{source} holds a zero or non-finite vector, which has no direction to compare",
            parameter=source,
        )
    return np.ascontiguousarray(array / norms)


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
        self._entries: dict[str, MemoryEntry] = {}
        self._namespaces: dict[str, dict[str, None]] = {}
        self._matrix = np.zeros((0, self._dim), dtype=np.float32)
        self._labels = np.zeros(0, dtype=np.int64)
        self._row_ns = np.zeros(0, dtype=np.int32)
        self._ns_codes: dict[str, int] = {}
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._by_label: dict[int, str] = {}
        self._next_label = 0
        # Agents of one run route by the same query (the task, plus the plan once there is
        # one) step after step; embedding it is most of a selection's cost.
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def index_config(self) -> IndexConfig:
        return self._config

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def count(self, namespace: str | None = None) -> int:
        """Entries in ``namespace``, or in all of them."""
        with self._lock:
            if namespace is None:
                return len(self._entries)
            return len(self._namespaces.get(namespace, ()))

    def get(self, entry_id: str) -> MemoryEntry:
        """The entry with this id.

        Raises:
            ConfigError: No entry has it.
        """
        with self._lock:
            return self._entry(entry_id)

    def _entry(self, entry_id: str) -> MemoryEntry:
        entry = self._entries.get(entry_id)
        if entry is None:
            raise ConfigError(
                f"no memory entry has id {entry_id!r}", parameter="id", value=entry_id
            )
        return entry

    def vector(self, entry_id: str) -> np.ndarray:
        """A copy of the entry's stored unit vector."""
        with self._lock:
            self._entry(entry_id)
            vector: np.ndarray = self._matrix[self._rows[entry_id]].copy()
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
        if namespace is None:
            pool: Iterable[MemoryEntry] = self._entries.values()
        else:
            pool = (self._entries[i] for i in self._namespaces.get(namespace, ()))
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
        entries = [_validate(item) for item in items]
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            repeated = Counter(ids).most_common(1)[0][0]
            raise ConfigError(
                f"id {repeated!r} appears twice in one add_many", parameter="id", value=repeated
            )
        with self._lock:
            self._check_new(ids)
        vectors = self._embed([e.text for e in entries])
        with self._lock:
            # Checked again: another thread may have added one of these ids meanwhile.
            self._check_new(ids)
            self._append(entries, vectors)
            self._refresh_index()
        return entries

    def _check_new(self, ids: Iterable[str]) -> None:
        for entry_id in ids:
            if entry_id in self._entries:
                raise ConfigError(
                    f"memory already has an entry with id {entry_id!r}; use update() to "
                    "change it or leave id out to get a fresh one",
                    parameter="id",
                    value=entry_id,
                )

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
                old = self._entry(entry_id)
            new = _validate({**old.model_dump(), **changes})
            vector = self._embed([new.text]) if new.text != old.text else None
            with self._lock:
                # Another thread changed the entry while this one embedded: start over
                # from its version, so neither change is lost.
                if self._entries.get(entry_id) is not old:
                    continue
                self._replace(old, new, vector)
                self._refresh_index()
                return new

    def delete(self, entry_id: str) -> MemoryEntry:
        """Remove an entry; returns it.

        Raises:
            ConfigError: No entry has this id.
        """
        with self._lock:
            entry = self._entry(entry_id)
            self._remove([entry_id])
            return entry

    def delete_namespace(self, namespace: str) -> int:
        """Remove every entry of ``namespace``; returns how many there were."""
        with self._lock:
            ids = list(self._namespaces.get(namespace, ()))
            self._remove(ids)
            return len(ids)

    def _embed(self, texts: list[str]) -> np.ndarray:
        vectors = _unit_rows(self._embedder.embed(texts), self._dim, "embedder")
        if len(vectors) != len(texts):
            raise ConfigError(
                f"the embedder returned {len(vectors)} vectors for {len(texts)} texts",
                parameter="embedder",
            )
        return vectors

    def _ns_code(self, namespace: str) -> int:
        # Codes are never reused, so a code in _row_ns always means one namespace.
        return self._ns_codes.setdefault(namespace, len(self._ns_codes))

    def _register(self, entry: MemoryEntry, row: int) -> None:
        """Record an entry whose vector and label are already at ``row``."""
        self._entries[entry.id] = entry
        self._namespaces.setdefault(entry.namespace, {})[entry.id] = None
        self._ids.append(entry.id)
        self._rows[entry.id] = row
        self._by_label[int(self._labels[row])] = entry.id
        self._row_ns[row] = self._ns_code(entry.namespace)

    def _append(self, entries: list[MemoryEntry], vectors: np.ndarray) -> None:
        n, extra = len(self._ids), len(entries)
        if n + extra > len(self._matrix):
            # Grow by doubling so a run of single adds costs amortised O(1) copies.
            capacity = max(n + extra, 2 * len(self._matrix), 64)
            matrix = np.zeros((capacity, self._dim), dtype=np.float32)
            matrix[:n] = self._matrix[:n]
            labels = np.zeros(capacity, dtype=np.int64)
            labels[:n] = self._labels[:n]
            row_ns = np.zeros(capacity, dtype=np.int32)
            row_ns[:n] = self._row_ns[:n]
            self._matrix, self._labels, self._row_ns = matrix, labels, row_ns
        new_labels = np.arange(self._next_label, self._next_label + extra, dtype=np.int64)
        self._next_label += extra
        self._matrix[n : n + extra] = vectors
        self._labels[n : n + extra] = new_labels
        for row, entry in enumerate(entries, start=n):
            self._register(entry, row)
        self._index.add(vectors, new_labels)

    def _replace(self, old: MemoryEntry, new: MemoryEntry, vector: np.ndarray | None) -> None:
        self._entries[new.id] = new  # an existing key keeps its place in the order
        row = self._rows[new.id]
        if new.namespace != old.namespace:
            self._drop_from_namespace(old)
            self._namespaces.setdefault(new.namespace, {})[new.id] = None
            self._row_ns[row] = self._ns_code(new.namespace)
        if vector is None:
            return
        old_label = int(self._labels[row])
        label = self._next_label
        self._next_label += 1
        self._index.remove(np.array([old_label], dtype=np.int64))
        self._index.add(vector, np.array([label], dtype=np.int64))
        del self._by_label[old_label]
        self._by_label[label] = new.id
        self._matrix[row] = vector[0]
        self._labels[row] = label

    def _drop_from_namespace(self, entry: MemoryEntry) -> None:
        members = self._namespaces[entry.namespace]
        del members[entry.id]
        if not members:
            del self._namespaces[entry.namespace]

    def _remove(self, ids: list[str]) -> None:
        if not ids:
            return
        gone = np.array([self._labels[self._rows[i]] for i in ids], dtype=np.int64)
        for entry_id in ids:
            entry = self._entries.pop(entry_id)
            self._drop_from_namespace(entry)
            row = self._rows.pop(entry_id)
            del self._by_label[int(self._labels[row])]
            last = len(self._ids) - 1
            if row != last:
                # Keep rows compact: the last row moves into the hole.
                moved = self._ids[last]
                self._matrix[row] = self._matrix[last]
                self._labels[row] = self._labels[last]
                self._row_ns[row] = self._row_ns[last]
                self._ids[row] = moved
                self._rows[moved] = row
            self._ids.pop()
        self._index.remove(gone)
        self._refresh_index()

    def _refresh_index(self) -> None:
        if self._index.stale:
            n = len(self._ids)
            self._index.rebuild(self._matrix[:n], self._labels[:n])

    # -- searching -------------------------------------------------------------------

    def _query(self, query: str | np.ndarray) -> np.ndarray:
        """The query as a ``(1, dim)`` unit vector."""
        if isinstance(query, str):
            if not query.strip():
                raise ConfigError("query is blank; give text to search for", parameter="query")
            with self._lock:
                cached = self._queries.get(query)
                if cached is not None:
                    self._queries.move_to_end(query)
                    return cached
            vector = self._embed([query])
            vector.setflags(write=False)
            with self._lock:
                self._queries[query] = vector
                if len(self._queries) > QUERY_CACHE_SIZE:
                    self._queries.popitem(last=False)
            return vector
        array = np.asarray(query, dtype=np.float32)
        if array.size != self._dim or array.ndim > 2:
            raise ConfigError(
                f"query vector has shape {array.shape}; expected ({self._dim},)",
                parameter="query",
            )
        return _unit_rows(array.reshape(1, self._dim), self._dim, "query")

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
        with self._lock:
            if not self._entries:
                return []
            if namespace is None and where is None:
                rows: np.ndarray | None = None
                n = len(self._ids)
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
            allowed = None if rows is None or n == len(self._ids) else self._labels[rows]
            scores, labels = self._index.search(q, want, allowed)
            if len(labels) < want:
                everything = np.arange(len(self._ids), dtype=np.int64)
                return self._scan(q, everything if rows is None else rows, k)
            return [
                Hit(self._entries[self._by_label[label]], score)
                for score, label in zip(scores.tolist(), labels.tolist(), strict=True)
            ]

    def _candidate_rows(self, namespace: str | None, where: Where | None) -> np.ndarray:
        if where is None and namespace is not None:
            code = self._ns_codes.get(namespace)
            if code is None:
                return np.zeros(0, dtype=np.int64)
            return np.flatnonzero(self._row_ns[: len(self._ids)] == code)
        candidates = self._candidates(namespace, where)
        return np.fromiter((self._rows[e.id] for e in candidates), np.int64, len(candidates))

    def _scan(self, q: np.ndarray, rows: np.ndarray, k: int) -> list[Hit]:
        """Exact top ``k`` among ``rows``, from the stored vectors."""
        scores = self._matrix[rows] @ q[0]
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        best = top[np.argsort(-scores[top], kind="stable")]
        return [
            Hit(self._entries[self._ids[int(rows[i])]], float(scores[i])) for i in best.tolist()
        ]

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
                self._entry(entry_id)
            scores: np.ndarray = self._matrix[[self._rows[i] for i in ids]] @ q[0]
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
                order = [self._rows[i] for i in self._entries]
                snapshot = Snapshot(
                    entries=list(self._entries.values()),
                    vectors=self._matrix[order],
                    labels=self._labels[order],
                    index=faiss.serialize_index(self._index.native),
                    embedder=self._embedder.name,
                    config=self._config,
                    next_label=self._next_label,
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
        self._matrix = np.array(snapshot.vectors, dtype=np.float32, copy=True)
        self._labels = np.array(snapshot.labels, dtype=np.int64, copy=True)
        self._row_ns = np.zeros(len(labels), dtype=np.int32)
        self._next_label = snapshot.next_label
        for row, entry in enumerate(snapshot.entries):
            self._register(entry, row)
