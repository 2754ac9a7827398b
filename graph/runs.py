"""A run directory on disk: its manifest, one JSONL line per finished item, traces.

Evaluations write run directories and distillation reads them, so the format lives here,
below both.

A run directory holds ``run.json`` (what was run: suite, dataset fingerprint, graph,
model, settings), ``items.jsonl`` (one `ItemRecord` per line, appended and fsynced as
each item finishes) and ``traces/``. A killed run loses at most the items in flight: on
resume, finished items are read back, a torn last line is cut off, and only the rest run.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from relaygraph.errors import ConfigError
from relaygraph.fileio import append_line, complete_lines, read_model, write_atomic
from relaygraph.graph.budget import RunUsage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.graph.postgres import SharedRecords
    from relaygraph.graph.trace import Trace

MANIFEST = "run.json"
ITEMS = "items.jsonl"
TRACES = "traces"


class ItemRecord(BaseModel):
    """The scored outcome of one item; a failure is a record too, never a lost item.

    Attributes:
        id: The item's id in its dataset.
        groups: What the report breaks results down by (question type, level, task type).
        success: The suite's headline score for this item, in [0, 1] (EM, or won).
        metrics: Every metric of the item (em, f1, sp_f1, aq…).
        error: Why the item failed to produce an answer (run error, environment error).
    """

    id: str
    groups: dict[str, str] = Field(default_factory=dict)
    success: float
    metrics: dict[str, float] = Field(default_factory=dict)
    prediction: str | None = None
    gold: str | None = None
    error: str | None = None
    steps: int = 0
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    roles: dict[str, RunUsage] = Field(default_factory=dict)
    trace: str | None = None
    """The trace file, relative to the run directory."""

    @classmethod
    def from_trace(cls, trace: Trace | None, **fields: Any) -> ItemRecord:
        """A record whose tokens, cost and per-role totals are read from the item's trace
        (none without one); ``fields`` give the rest."""
        usage = trace.by_role() if trace is not None else {}
        return cls(
            prompt_tokens=sum(u.prompt_tokens for u in usage.values()),
            completion_tokens=sum(u.completion_tokens for u in usage.values()),
            cost=sum(u.cost for u in usage.values()),
            roles=usage,
            **fields,
        )


class RunManifest(BaseModel):
    """What a run directory holds results of; a resume must match it."""

    suite: str
    headline: str
    """What an item's success means (EM, success rate)."""
    dataset: str
    fingerprint: str
    """sha256 of the item ids in order: a resume on other data is refused."""
    items: int
    graph: str
    model: str
    seed: int
    settings: dict[str, Any] = Field(default_factory=dict)
    created: float = Field(default_factory=time.time)


def fingerprint(ids: Sequence[str]) -> str:
    """A short hash identifying a list of item ids."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


class RunStore:
    """A run directory, opened for a new run or to resume one; with ``shared``, each item
    and its trace are also stored in that database under the directory's name, where
    every replica and the viewer of another machine read them.

    Raises (from `open`):
        ConfigError: The directory holds another run (without ``resume``), a run of
            another suite, dataset, graph or model (with ``resume``), or a bad manifest.
    """

    def __init__(
        self,
        directory: Path,
        manifest: RunManifest,
        done: dict[str, ItemRecord],
        shared: SharedRecords | None = None,
    ):
        self.directory = directory
        self.manifest = manifest
        self.done = done
        self.shared = shared
        self._lock = threading.Lock()
        if shared is not None:
            self._share_missing(shared)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        manifest: RunManifest,
        *,
        resume: bool,
        shared: SharedRecords | None = None,
    ) -> RunStore:
        root = Path(directory)
        existing = root / MANIFEST
        if not existing.exists():
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(existing, manifest.model_dump_json(indent=2))
            return cls(root, manifest, {}, shared)
        if not resume:
            raise ConfigError(
                f"{root} already holds a run; pass --resume to continue it or choose another --out",
                parameter="out",
            )
        old = read_manifest(root)
        for key in ("suite", "fingerprint", "graph", "model"):
            if getattr(old, key) != getattr(manifest, key):
                raise ConfigError(
                    f"{root} holds a run with {key}={getattr(old, key)!r}, not "
                    f"{getattr(manifest, key)!r}; resume with the same settings or another --out",
                    parameter="out",
                )
        return cls(root, old, read_items(root, repair=True), shared)

    def record(self, item: ItemRecord, trace: Trace | None) -> None:
        """Persist one finished item (its trace first, then its JSONL line, fsynced; then
        the shared copy, which a resumed run rewrites if the process died in between)."""
        if trace is not None:
            name = f"{item_file_stem(item.id)}.json"
            trace.save(self.directory / TRACES / name)
            item = item.model_copy(update={"trace": f"{TRACES}/{name}"})
        with self._lock:
            append_line(self.directory / ITEMS, item.model_dump_json())
            self.done[item.id] = item
        if self.shared is not None:
            self.shared.save_item(self.name, item, trace)

    @property
    def name(self) -> str:
        """The run's name in a shared database: its directory's name."""
        return self.directory.resolve().name

    def _share_missing(self, shared: SharedRecords) -> None:
        # Items a process recorded here but died before sharing (or recorded before the
        # run had a database) reach it when the run is opened again.
        stored = shared.items(self.name)
        for item_id, item in self.done.items():
            if item_id not in stored:
                trace = None
                if item.trace is not None and (self.directory / item.trace).is_file():
                    from relaygraph.graph.trace import Trace

                    trace = Trace.load(self.directory / item.trace)
                shared.save_item(self.name, item, trace)


def read_manifest(directory: str | Path) -> RunManifest:
    """The manifest of a run directory.

    Raises:
        ConfigError: No run there, or the manifest is not valid.
    """
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise ConfigError(f"{directory} is not an evaluation run (no {MANIFEST})")
    return read_model(RunManifest, path, what="run manifest")


def read_items(directory: str | Path, *, repair: bool = False) -> dict[str, ItemRecord]:
    """Finished items of a run, by id (a later line for the same id wins).

    A last line without its newline is a write the run died in: it is ignored, and cut
    off when ``repair`` (so the next append starts on a fresh line). A bad line anywhere
    else means the file was edited or damaged: that is an error, not silently skipped.

    Raises:
        ConfigError: A complete line that is not an item record.
    """
    path = Path(directory) / ITEMS
    if not path.exists():
        return {}
    records: dict[str, ItemRecord] = {}
    for number, line in enumerate(complete_lines(path, repair=repair), start=1):
        if not line.strip():
            continue
        try:
            item = ItemRecord.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f"{path}:{number} is not an item record: {exc}") from None
        records[item.id] = item
    return records


def item_file_stem(item_id: str) -> str:
    """A file name for an item id (ids may hold slashes); the hash keeps names distinct."""
    digest = hashlib.sha256(item_id.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', item_id)[:80]}-{digest}"
