"""`RowTable`: a memory's entries and their vectors as rows, with every way to find them.

One structure keeps what must change together consistent:

- entries by id, in insertion order, and the ids of each namespace (for listing);
- the unit vectors as compact rows of a matrix (a removed row is filled with the last
  one), with each row's id and each id's row;
- each row's int64 label in the faiss index, and each label's id. A changed vector gets
  a fresh label, since HNSW keeps the old one as a tombstone;
- each row's namespace as an int code, so a namespace filter finds its rows with one
  vectorised comparison instead of a Python loop.

The table does no locking and no embedding, and owns no index: `SharedMemory` does
those, and passes on to its index the labels the table hands out and takes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from relaygraph.memory.checks import missing

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from relaygraph.memory.entry import MemoryEntry


class RowTable:
    """Entries of ``dim``-dimensional unit vectors, by id, row, label and namespace."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._entries: dict[str, MemoryEntry] = {}
        self._namespaces: dict[str, dict[str, None]] = {}
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._labels = np.zeros(0, dtype=np.int64)
        self._row_ns = np.zeros(0, dtype=np.int32)
        self._ns_codes: dict[str, int] = {}
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._by_label: dict[int, str] = {}
        self.next_label = 0
        """The label the next new vector gets (labels are never reused)."""

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def get(self, entry_id: str) -> MemoryEntry | None:
        return self._entries.get(entry_id)

    def entry(self, entry_id: str) -> MemoryEntry:
        """The entry with this id.

        Raises:
            ConfigError: No entry has it.
        """
        entry = self._entries.get(entry_id)
        if entry is None:
            raise missing(entry_id)
        return entry

    def entries(self, namespace: str | None = None) -> Iterable[MemoryEntry]:
        """Entries in insertion order, of one namespace or all."""
        if namespace is None:
            return self._entries.values()
        return (self._entries[i] for i in self._namespaces.get(namespace, ()))

    def count(self, namespace: str | None = None) -> int:
        if namespace is None:
            return len(self._entries)
        return len(self._namespaces.get(namespace, ()))

    def namespaces(self) -> list[str]:
        """Namespaces holding at least one entry, sorted."""
        return sorted(self._namespaces)

    def ids_of(self, namespace: str) -> list[str]:
        return list(self._namespaces.get(namespace, ()))

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored unit vectors of these entries (a copy), one row each."""
        return self._matrix[[self._rows[i] for i in ids]]

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """Every row's vector and label (views: read them under the owner's lock)."""
        n = len(self._ids)
        return self._matrix[:n], self._labels[:n]

    def namespace_rows(self, namespace: str) -> np.ndarray:
        code = self._ns_codes.get(namespace)
        if code is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self._row_ns[: len(self._ids)] == code)

    def rows_of(self, entries: Sequence[MemoryEntry]) -> np.ndarray:
        return np.fromiter((self._rows[e.id] for e in entries), np.int64, len(entries))

    def labels_at(self, rows: np.ndarray) -> np.ndarray:
        labels: np.ndarray = self._labels[rows]
        return labels

    def at_label(self, label: int) -> MemoryEntry:
        return self._entries[self._by_label[label]]

    def scores(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Inner products of a unit query vector with the vectors of ``rows``."""
        scores: np.ndarray = self._matrix[rows] @ query
        return scores

    def at_row(self, row: int) -> MemoryEntry:
        return self._entries[self._ids[row]]

    def in_order(self) -> tuple[list[MemoryEntry], np.ndarray, np.ndarray]:
        """Entries in insertion order, with their vectors and labels (copies)."""
        order = [self._rows[i] for i in self._entries]
        return list(self._entries.values()), self._matrix[order], self._labels[order]

    # -- writing ---------------------------------------------------------------------

    def append(self, entries: Sequence[MemoryEntry], vectors: np.ndarray) -> np.ndarray:
        """Add new entries with their unit vectors; returns the labels they got."""
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
        new_labels = np.arange(self.next_label, self.next_label + extra, dtype=np.int64)
        self.next_label += extra
        self._matrix[n : n + extra] = vectors
        self._labels[n : n + extra] = new_labels
        for row, entry in enumerate(entries, start=n):
            self._register(entry, row)
        return new_labels

    def replace(
        self, old: MemoryEntry, new: MemoryEntry, vector: np.ndarray | None
    ) -> tuple[int, int] | None:
        """Put ``new`` in ``old``'s place (same id); with a new ``vector`` (shape (1, dim)),
        returns (old label, new label) for the index to swap, else None."""
        self._entries[new.id] = new  # an existing key keeps its place in the order
        row = self._rows[new.id]
        if new.namespace != old.namespace:
            self._drop_from_namespace(old)
            self._namespaces.setdefault(new.namespace, {})[new.id] = None
            self._row_ns[row] = self._ns_code(new.namespace)
        if vector is None:
            return None
        old_label = int(self._labels[row])
        label = self.next_label
        self.next_label += 1
        del self._by_label[old_label]
        self._by_label[label] = new.id
        self._matrix[row] = vector[0]
        self._labels[row] = label
        return old_label, label

    def remove(self, ids: Sequence[str]) -> np.ndarray:
        """Remove these entries; returns their labels, for the index to drop."""
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
        return gone

    @classmethod
    def restored(
        cls,
        entries: Sequence[MemoryEntry],
        vectors: np.ndarray,
        labels: np.ndarray,
        next_label: int,
    ) -> RowTable:
        """A table of saved rows (entries in insertion order, their vectors and labels)."""
        table = cls(vectors.shape[1])
        table._matrix = np.array(vectors, dtype=np.float32, copy=True)
        table._labels = np.array(labels, dtype=np.int64, copy=True)
        table._row_ns = np.zeros(len(labels), dtype=np.int32)
        table.next_label = next_label
        for row, entry in enumerate(entries):
            table._register(entry, row)
        return table

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

    def _drop_from_namespace(self, entry: MemoryEntry) -> None:
        members = self._namespaces[entry.namespace]
        del members[entry.id]
        if not members:
            del self._namespaces[entry.namespace]
