"""Saving shared memory to a directory so that a crash never leaves it half-written.

Layout::

    directory/
      CURRENT                 names the live snapshot (one line)
      snapshot-<id>/
        manifest.json         format version, count, embedder, dim, index config, sha256s
        entries.jsonl         one MemoryEntry per line, row i of the arrays below
        vectors.npy           float32 (count, dim)
        labels.npy            int64 (count,), each entry's label in the index
        index.faiss           the faiss index (faiss.serialize_index / read_index format)

A save writes a complete snapshot into ``.partial-<id>/``, fsyncs it, renames it to
``snapshot-<id>/``, then switches ``CURRENT`` to it with an atomic ``os.replace``, and
only then removes older snapshots. A process killed at any point leaves ``CURRENT``
naming a complete snapshot, the old or the new one; leftovers are cleared by the next
save. One writer saves into a directory at a time; readers may load while it saves.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relaygraph.errors import ConfigError, first_problem
from relaygraph.memory.entry import MemoryEntry
from relaygraph.memory.index import IndexConfig

if TYPE_CHECKING:
    from pathlib import Path

FORMAT_VERSION = 1
POINTER = "CURRENT"
MANIFEST = "manifest.json"
ENTRIES = "entries.jsonl"
VECTORS = "vectors.npy"
LABELS = "labels.npy"
INDEX = "index.faiss"
_SNAPSHOT = re.compile(r"snapshot-[0-9a-f]+")
_RETRIES = 3
"""Loads that race a save retry on the snapshot it switched to at most this many times."""


class Manifest(BaseModel):
    """What a snapshot holds, and the checksums that prove its files are whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["relaygraph-memory"] = "relaygraph-memory"
    version: int
    count: int = Field(ge=0)
    embedder: str
    dim: int = Field(ge=1)
    index: IndexConfig
    next_label: int = Field(ge=0)
    created_at: float
    sha256: dict[str, str]
    """File name to the sha256 hex digest of its bytes."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A memory's whole state, as saved.

    Attributes:
        entries: In memory order.
        vectors: ``(len(entries), dim)`` float32; row i belongs to ``entries[i]``.
        labels: ``(len(entries),)`` int64; each entry's label in the index.
        index: The faiss index as bytes (`faiss.serialize_index`).
        embedder: Name of the embedder that made the vectors.
        config: How the index was configured.
        next_label: The label the next added vector gets.
    """

    entries: list[MemoryEntry]
    vectors: np.ndarray
    labels: np.ndarray
    index: np.ndarray
    embedder: str
    config: IndexConfig
    next_label: int


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    # A rename or a new file is durable only once its directory is synced.
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _remove_stale(directory: Path, keep: str) -> None:
    for path in directory.iterdir():
        if path.name == keep:
            continue
        if path.name.startswith((".partial-", "snapshot-")) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(f".{POINTER}."):
            path.unlink(missing_ok=True)


def write_snapshot(directory: Path, snapshot: Snapshot) -> Path:
    """Save ``snapshot`` under ``directory`` atomically; returns the snapshot's folder."""
    directory.mkdir(parents=True, exist_ok=True)
    ident = f"{time.time_ns():x}{uuid.uuid4().hex[:8]}"
    partial = directory / f".partial-{ident}"
    partial.mkdir()
    try:
        final = _write_partial(directory, partial, ident, snapshot)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    pointer = directory / f".{POINTER}.{ident}"
    _write_file(pointer, f"{final.name}\n".encode())
    pointer.replace(directory / POINTER)
    _fsync_dir(directory)
    _remove_stale(directory, keep=final.name)
    return final


def _write_partial(directory: Path, partial: Path, ident: str, snapshot: Snapshot) -> Path:
    """Write the snapshot's files into ``partial`` and rename it to its final name."""
    files = {
        ENTRIES: "".join(e.model_dump_json() + "\n" for e in snapshot.entries).encode(),
        VECTORS: _npy(snapshot.vectors),
        LABELS: _npy(snapshot.labels),
        INDEX: snapshot.index.tobytes(),
    }
    for name, data in files.items():
        _write_file(partial / name, data)
    manifest = Manifest(
        version=FORMAT_VERSION,
        count=len(snapshot.entries),
        embedder=snapshot.embedder,
        dim=int(snapshot.vectors.shape[1]),
        index=snapshot.config,
        next_label=snapshot.next_label,
        created_at=time.time(),
        sha256={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    )
    _write_file(partial / MANIFEST, manifest.model_dump_json(indent=2).encode())
    _fsync_dir(partial)
    final = directory / f"snapshot-{ident}"
    partial.rename(final)
    _fsync_dir(directory)  # the rename is durable before CURRENT may name it
    return final


def _broken(directory: Path, problem: str) -> ConfigError:
    return ConfigError(
        f"cannot load shared memory from {directory}: {problem}", parameter="directory"
    )


def _read(path: Path, directory: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _broken(directory, f"{path.name} is missing from {path.parent.name}") from None
    except OSError as exc:
        raise _broken(directory, f"cannot read {path.name}: {exc.strerror or exc}") from None


def _manifest(snapshot: Path, directory: Path) -> Manifest:
    raw = _read(snapshot / MANIFEST, directory)
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        field, problem = first_problem(exc.errors())
        raise _broken(directory, f"manifest.json: {field or 'manifest'}: {problem}") from None
    if manifest.version != FORMAT_VERSION:
        raise _broken(
            directory,
            f"format version {manifest.version} is not supported (this relaygraph reads "
            f"version {FORMAT_VERSION}); save it again with a matching relaygraph",
        )
    return manifest


def _array(data: bytes, name: str, directory: Path) -> np.ndarray:
    try:
        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise _broken(directory, f"{name} is not a .npy array: {exc}") from None
    return array


def _entries(data: bytes, directory: Path) -> list[MemoryEntry]:
    entries = []
    for number, line in enumerate(data.decode().splitlines(), start=1):
        try:
            entries.append(MemoryEntry.model_validate_json(line))
        except ValidationError as exc:
            field, problem = first_problem(exc.errors())
            raise _broken(directory, f"{ENTRIES} line {number}: {field}: {problem}") from None
    return entries


def _current(directory: Path) -> str:
    if not directory.is_dir():
        raise _broken(directory, "no such directory")
    try:
        return (directory / POINTER).read_text().strip()
    except FileNotFoundError:
        raise _broken(
            directory, f"no {POINTER} file; it is not a directory SharedMemory.save wrote"
        ) from None


def read_snapshot(directory: Path) -> tuple[Snapshot, faiss.Index]:
    """The snapshot ``CURRENT`` names, checked whole, and its faiss index.

    Raises:
        ConfigError: No saved memory there, or one that is damaged: an unreadable or
            invalid manifest, a missing file, a checksum mismatch, arrays whose shapes
            disagree with the manifest, or an index faiss cannot read.
    """
    name = _current(directory)
    for _ in range(_RETRIES):
        try:
            return _read_folder(directory, name)
        except ConfigError:
            # A save that finished meanwhile removes the snapshot being read; read the
            # one it switched to instead. An unchanged pointer means real damage.
            latest = _current(directory)
            if latest == name:
                raise
            name = latest
    return _read_folder(directory, name)


def _read_folder(directory: Path, name: str) -> tuple[Snapshot, faiss.Index]:
    if not _SNAPSHOT.fullmatch(name) or not (directory / name).is_dir():
        raise _broken(directory, f"{POINTER} names {name!r}, which is not a snapshot here")
    folder = directory / name
    manifest = _manifest(folder, directory)
    files: dict[str, bytes] = {}
    for file in (ENTRIES, VECTORS, LABELS, INDEX):
        data = _read(folder / file, directory)
        expected = manifest.sha256.get(file)
        if expected is None:
            raise _broken(directory, f"manifest.json has no checksum for {file}")
        if hashlib.sha256(data).hexdigest() != expected:
            raise _broken(directory, f"{file} does not match its checksum; the file is damaged")
        files[file] = data

    entries = _entries(files[ENTRIES], directory)
    vectors = _array(files[VECTORS], VECTORS, directory)
    labels = _array(files[LABELS], LABELS, directory)
    n = manifest.count
    if len(entries) != n:
        raise _broken(directory, f"{ENTRIES} has {len(entries)} entries, manifest says {n}")
    if vectors.dtype != np.float32 or vectors.shape != (n, manifest.dim):
        raise _broken(
            directory,
            f"{VECTORS} is {vectors.dtype} {vectors.shape}, expected float32 {(n, manifest.dim)}",
        )
    if labels.dtype != np.int64 or labels.shape != (n,) or len(np.unique(labels)) != n:
        raise _broken(directory, f"{LABELS} must hold {n} distinct int64 labels")
    if len({e.id for e in entries}) != n:
        raise _broken(directory, f"{ENTRIES} repeats an entry id")
    try:
        index = faiss.deserialize_index(np.frombuffer(files[INDEX], dtype=np.uint8))
    except RuntimeError as exc:
        raise _broken(directory, f"{INDEX} is not a faiss index: {exc}") from None
    if index.d != manifest.dim:
        raise _broken(directory, f"{INDEX} holds {index.d}-d vectors, manifest says {manifest.dim}")
    snapshot = Snapshot(
        entries=entries,
        vectors=vectors,
        labels=labels,
        index=np.frombuffer(files[INDEX], dtype=np.uint8),
        embedder=manifest.embedder,
        config=manifest.index,
        next_label=manifest.next_label,
    )
    return snapshot, index
