"""FAISS indexes behind `SharedMemory`: exact, IVF and HNSW, all by inner product.

Vectors are unit length, so inner product is cosine similarity. Each index maps int64
labels (assigned by the memory) to vectors; the memory keeps the vectors themselves too,
which is what lets an index rebuild itself (IVF training, HNSW compaction) and lets
filtered searches over few entries skip the index.

faiss raises RuntimeError for problems of its own; the memory validates what it passes
in, so those would be bugs here rather than user errors, and are not translated.

faiss's bundled stubs lack some of what its Python wrapper offers (SearchParametersHNSW,
DirectMap, keyword construction of search parameters); search parameters are therefore
built by attribute, and the two missing names are marked where they are used.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

IndexKind: TypeAlias = Literal["exact", "ivf", "hnsw"]


class IndexConfig(BaseModel):
    """How shared memory indexes its vectors.

    Example:
        >>> IndexConfig(kind="ivf", nprobe=16).train_at
        1024
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: IndexKind = "exact"
    """exact: brute-force inner product; ivf: inverted lists; hnsw: a proximity graph."""
    nlist: int | None = Field(default=None, ge=1)
    """IVF lists; None picks about 4*sqrt(n) at training. Either way at most n/39, since
    faiss's k-means wants about 39 training points per list."""
    nprobe: int = Field(default=16, ge=1)
    """IVF lists visited per search; more is slower and closer to exact."""
    train_at: int = Field(default=1024, ge=39)
    """IVF trains once the memory holds this many vectors; until then it searches exactly
    (faiss's k-means wants at least 39 points per list)."""
    retrain_growth: float = Field(default=4.0, gt=1.0)
    """IVF retrains when the memory has grown this many times past the size it trained on,
    so the lists keep up with the data."""
    hnsw_m: int = Field(default=32, ge=2)
    """HNSW neighbours per node."""
    ef_construction: int = Field(default=80, ge=1)
    """HNSW candidate list size while building."""
    ef_search: int = Field(default=64, ge=1)
    """HNSW candidate list size while searching (raised to k when k is larger)."""
    tombstone_share: float = Field(default=0.25, gt=0.0, le=1.0)
    """HNSW cannot remove vectors: removed ones are hidden from results, and the graph is
    rebuilt when they pass this share of it."""
    exact_subset_limit: int = Field(default=4096, ge=0)
    """Filtered searches matching at most this many entries score them exactly instead of
    asking the index (exact, and faster for small subsets)."""


class VectorIndex(Protocol):
    """Labelled unit vectors searched by inner product."""

    @property
    def native(self) -> faiss.Index:
        """The faiss index itself (what a save writes)."""
        ...

    @property
    def stale(self) -> bool:
        """Whether `rebuild` should be called with every live vector."""
        ...

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None: ...

    def remove(self, labels: np.ndarray) -> None: ...

    def rebuild(self, vectors: np.ndarray, labels: np.ndarray) -> None: ...

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` (scores, labels) for a ``(1, dim)`` query, best first, among
        ``allowed`` labels when given; may return fewer than ``k``."""
        ...


_BULK = 256
"""Adds of at least this many vectors use faiss's OpenMP threads; smaller ones run serially."""


@contextmanager
def _serial() -> Iterator[None]:
    """Run the faiss calls inside on the calling thread alone.

    A single query or a handful of added vectors is too little work for a thread team,
    and when the cores are busy (agents, an LLM engine) waking one costs far more than it
    saves: on 2 loaded cores a 3,000-vector flat search took 12 ms with 2 OpenMP threads
    and 0.3 ms with 1, and an IVF add 12 ms against 0.02 ms. OpenMP's thread count is a
    per-thread setting (torch reads the same one), so it is restored on the way out.
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _adding(vectors: np.ndarray) -> AbstractContextManager[None]:
    return _serial() if len(vectors) < _BULK else nullcontext()


def _found(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = labels[0] >= 0  # faiss pads missing results with label -1
    return scores[0][keep], labels[0][keep]


def _flat(dim: int) -> faiss.IndexIDMap2:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _batch(labels: np.ndarray) -> faiss.IDSelectorBatch:
    # IDSelectorBatch copies the labels into its own hash set, so the array may go away.
    return faiss.IDSelectorBatch(np.ascontiguousarray(labels, dtype=np.int64))


def _params(sel: faiss.IDSelector | None) -> faiss.SearchParameters | None:
    if sel is None:
        return None
    params = faiss.SearchParameters()
    params.sel = sel  # the wrapper keeps a reference to sel while params lives
    return params


class ExactIndex:
    """Brute-force inner product (IndexFlatIP in an IndexIDMap2, so labels can be removed)."""

    def __init__(self, dim: int, native: faiss.Index | None = None) -> None:
        self._dim = dim
        self._index = native if native is not None else _flat(dim)

    @property
    def native(self) -> faiss.Index:
        return self._index

    @property
    def stale(self) -> bool:
        return False

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        with _adding(vectors):
            self._index.add_with_ids(vectors, labels)

    def remove(self, labels: np.ndarray) -> None:
        with _serial():
            self._index.remove_ids(_batch(labels))

    def rebuild(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        self._index = _flat(self._dim)
        self.add(vectors, labels)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        sel = None if allowed is None else _batch(allowed)
        with _serial():
            return _found(*self._index.search(query, k, params=_params(sel)))


class IVFIndex:
    """Inverted lists (IndexIVFFlat), exact until there are enough vectors to train on.

    The lists are trained on the memory's own vectors once it holds ``train_at`` of them,
    and trained again whenever it has grown ``retrain_growth`` times since.
    """

    def __init__(self, dim: int, config: IndexConfig, native: faiss.Index | None = None) -> None:
        self._dim = dim
        self._config = config
        self._index = native if native is not None else _flat(dim)
        # A loaded IVF index does not record how many vectors it trained on; its size now
        # is a fair stand-in, and only delays the next retraining.
        self._trained_on = self._index.ntotal if isinstance(self._index, faiss.IndexIVF) else 0

    @property
    def native(self) -> faiss.Index:
        return self._index

    @property
    def stale(self) -> bool:
        n = self._index.ntotal
        if not self._trained_on:
            return n >= self._config.train_at
        return n >= self._config.retrain_growth * self._trained_on

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        with _adding(vectors):
            self._index.add_with_ids(vectors, labels)

    def remove(self, labels: np.ndarray) -> None:
        # With a hash-table direct map faiss removes only by IDSelectorArray, which
        # points into the array: keep it alive through the call.
        ids = np.ascontiguousarray(labels, dtype=np.int64)
        with _serial():
            self._index.remove_ids(faiss.IDSelectorArray(ids))

    def rebuild(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        n = len(vectors)
        if n < self._config.train_at:
            self._index, self._trained_on = _flat(self._dim), 0
            self.add(vectors, labels)
            return
        nlist = self._config.nlist or round(4 * math.sqrt(n))
        nlist = max(1, min(nlist, n // 39))
        ivf = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(self._dim), self._dim, nlist, faiss.METRIC_INNER_PRODUCT
        )
        ivf.train(vectors)
        # A hash table from label to list entry makes removals cheap instead of a scan
        # of every list.
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        ivf.add_with_ids(vectors, labels)
        self._index, self._trained_on = ivf, n

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        sel = None if allowed is None else _batch(allowed)
        if not isinstance(self._index, faiss.IndexIVF):
            with _serial():
                return _found(*self._index.search(query, k, params=_params(sel)))
        params = faiss.SearchParametersIVF()
        params.nprobe = self._config.nprobe
        params.sel = sel
        with _serial():
            return _found(*self._index.search(query, k, params=params))


class HNSWIndex:
    """A navigable small-world graph (IndexHNSWFlat in an IndexIDMap2).

    HNSW cannot delete, so removed labels become tombstones that searches exclude; once
    they pass ``tombstone_share`` of the graph, it is rebuilt from the live vectors.
    """

    def __init__(
        self,
        dim: int,
        config: IndexConfig,
        native: faiss.Index | None = None,
        live: np.ndarray | None = None,
    ) -> None:
        """``native`` and ``live`` restore a saved index: labels it holds that are not
        live are its tombstones."""
        self._dim = dim
        self._config = config
        self._index = native if native is not None else self._empty()
        self._tombstones: set[int] = set()
        if isinstance(native, faiss.IndexIDMap) and live is not None:
            held = faiss.vector_to_array(native.id_map)
            self._tombstones = set(np.setdiff1d(held, live).tolist())
        self._hide: faiss.IDSelector | None = None

    def _empty(self) -> faiss.IndexIDMap2:
        graph = faiss.IndexHNSWFlat(self._dim, self._config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self._config.ef_construction
        return faiss.IndexIDMap2(graph)

    @property
    def native(self) -> faiss.Index:
        return self._index

    @property
    def tombstones(self) -> int:
        """Removed labels still in the graph."""
        return len(self._tombstones)

    @property
    def stale(self) -> bool:
        return len(self._tombstones) > self._config.tombstone_share * self._index.ntotal

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        with _adding(vectors):
            self._index.add_with_ids(vectors, labels)

    def remove(self, labels: np.ndarray) -> None:
        self._tombstones.update(labels.tolist())
        self._hide = None

    def rebuild(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        self._index = self._empty()
        self._tombstones.clear()
        self._hide = None
        if len(vectors):
            self.add(vectors, labels)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        # ``allowed`` only ever names live labels, so it already leaves tombstones out.
        if allowed is not None:
            sel: faiss.IDSelector | None = _batch(allowed)
        elif self._tombstones:
            if self._hide is None:
                dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
                self._hide = faiss.IDSelectorNot(_batch(dead))
            sel = self._hide
        else:
            sel = None
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = max(self._config.ef_search, k)
        params.sel = sel
        with _serial():
            return _found(*self._index.search(query, k, params=params))


def _inner(native: faiss.Index) -> faiss.Index | None:
    return faiss.downcast_index(native.index) if isinstance(native, faiss.IndexIDMap2) else None


def _check_native(kind: IndexKind, native: faiss.Index, dim: int) -> None:
    """Raise ConfigError unless a loaded index has the structure ``kind`` builds."""
    inner = _inner(native)
    if kind == "exact":
        fits = isinstance(inner, faiss.IndexFlatIP)
    elif kind == "ivf":
        fits = isinstance(inner, faiss.IndexFlatIP) or isinstance(native, faiss.IndexIVFFlat)
    else:
        fits = isinstance(inner, faiss.IndexHNSWFlat)
    if not fits or native.d != dim or native.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ConfigError(
            f"the saved faiss index ({type(native).__name__} of {native.d}-d vectors) is not "
            f"a {kind!r} index of {dim}-d vectors by inner product; the snapshot is damaged",
            parameter="index",
        )


def make_index(
    config: IndexConfig,
    dim: int,
    native: faiss.Index | None = None,
    live: np.ndarray | None = None,
) -> VectorIndex:
    """A new index for ``config``, or one around a loaded ``native`` faiss index whose
    ``live`` labels are the memory's entries.

    Raises:
        ConfigError: ``native`` is not the kind of index ``config`` names.
    """
    if native is not None:
        _check_native(config.kind, native, dim)
    if config.kind == "exact":
        return ExactIndex(dim, native)
    if config.kind == "ivf":
        return IVFIndex(dim, config, native)
    return HNSWIndex(dim, config, native, live)
