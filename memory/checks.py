"""Checks every memory backend applies the same way: entries, ids, vectors and queries.

Keeping them in one place is what makes the FAISS and PostgreSQL memories raise the same
`ConfigError` for the same bad input, and compare the same unit vectors.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from relaygraph.errors import ConfigError, first_problem
from relaygraph.memory.entry import MemoryEntry

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from relaygraph.memory.embedding import Embedder

QUERY_CACHE_SIZE = 64
"""Query vectors a memory keeps, most recently used first."""


def validate_entry(item: MemoryEntry | Mapping[str, Any]) -> MemoryEntry:
    """``item`` as a `MemoryEntry`; an invalid field is a `ConfigError` naming it."""
    if isinstance(item, MemoryEntry):
        return item
    try:
        return MemoryEntry.model_validate(dict(item))
    except ValidationError as exc:
        field, problem = first_problem(exc.errors())
        raise ConfigError(f"memory entry: {field}: {problem}", parameter=field) from None


def check_distinct(ids: Sequence[str]) -> None:
    """Refuse a batch that names one id twice."""
    if len(set(ids)) != len(ids):
        repeated = Counter(ids).most_common(1)[0][0]
        raise ConfigError(
            f"id {repeated!r} appears twice in one add_many", parameter="id", value=repeated
        )


def already_there(entry_id: str) -> ConfigError:
    """The error for adding an id the memory already has."""
    return ConfigError(
        f"memory already has an entry with id {entry_id!r}; use update() to "
        "change it or leave id out to get a fresh one",
        parameter="id",
        value=entry_id,
    )


def missing(entry_id: str) -> ConfigError:
    """The error for naming an id no entry has."""
    return ConfigError(f"no memory entry has id {entry_id!r}", parameter="id", value=entry_id)


def unit_rows(vectors: np.ndarray, dim: int, source: str) -> np.ndarray:
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


def embed_rows(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """``embedder``'s vectors of ``texts`` as checked unit rows, one per text."""
    vectors = unit_rows(embedder.embed(texts), embedder.dim, "embedder")
    if len(vectors) != len(texts):
        raise ConfigError(
            f"the embedder returned {len(vectors)} vectors for {len(texts)} texts",
            parameter="embedder",
        )
    return vectors


class QueryVectors:
    """Queries as ``(1, dim)`` unit vectors, text embedded once per recent query; thread-safe.

    Agents of one run route by the same query (the task, plus the plan once there is one)
    step after step; embedding it is most of a selection's cost.
    """

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._dim = embedder.dim
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, query: str | np.ndarray) -> np.ndarray:
        """The query (text, or a vector of the embedder's size) as a unit row.

        Raises:
            ConfigError: A blank query or a vector of the wrong size.
        """
        if isinstance(query, str):
            if not query.strip():
                raise ConfigError("query is blank; give text to search for", parameter="query")
            with self._lock:
                cached = self._cache.get(query)
                if cached is not None:
                    self._cache.move_to_end(query)
                    return cached
            vector = embed_rows(self._embedder, [query])
            vector.setflags(write=False)
            with self._lock:
                self._cache[query] = vector
                if len(self._cache) > QUERY_CACHE_SIZE:
                    self._cache.popitem(last=False)
            return vector
        array = np.asarray(query, dtype=np.float32)
        if array.size != self._dim or array.ndim > 2:
            raise ConfigError(
                f"query vector has shape {array.shape}; expected ({self._dim},)",
                parameter="query",
            )
        return unit_rows(array.reshape(1, self._dim), self._dim, "query")
