"""What the viewer can show: the run directories and trace files under its roots.

Every file the viewer opens is named by a key it handed out itself (``<root>/<path>``,
the path relative to that root) and resolved back under that root; a key that leaves
its root (``..``, an absolute path, a symlink pointing out) is refused, so a request
can never read a file the user did not point the viewer at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError
from relaygraph.eval.report import summarize
from relaygraph.graph.runs import MANIFEST, read_items, read_manifest
from relaygraph.graph.trace import Trace

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from relaygraph.eval.report import Summary
    from relaygraph.graph.runs import ItemRecord, RunManifest

RUN_FILES = frozenset({MANIFEST, "summary.json"})
"""JSON files of a run directory that are not traces."""


class NotFoundError(ConfigError):
    """A key names nothing the viewer may show (missing, or outside every root)."""


@dataclass(frozen=True, slots=True)
class Run:
    """One evaluation run: where it is, what it ran, its items and their summary."""

    key: str
    path: Path
    manifest: RunManifest
    items: list[ItemRecord]
    summary: Summary

    @property
    def plots(self) -> list[str]:
        """The PNG files of the run directory, by name."""
        return sorted(p.name for p in self.path.glob("*.png") if p.is_file())


class Catalog:
    """The run directories and trace files under ``roots``.

    A root is a folder (searched recursively for runs, ``run.json``, and for loose trace
    files) or one trace file.

    Example:
        >>> catalog = Catalog(["runs/"])            # doctest: +SKIP
        >>> [run.manifest.suite for run in catalog.runs()]  # doctest: +SKIP
    """

    def __init__(self, roots: Sequence[str | Path]) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        missing = [str(r) for r in self.roots if not r.exists()]
        if missing:
            raise ConfigError(f"no such file or folder: {', '.join(missing)}")

    def runs(self) -> list[Run]:
        """Every run under the roots, newest first; an unreadable run is skipped."""
        found = []
        for key in self._run_keys():
            try:
                found.append(self.run(key))
            except ConfigError:
                continue  # a half-written or foreign run.json: not the viewer's to fail on
        return sorted(found, key=lambda r: -r.manifest.created)

    def run(self, key: str) -> Run:
        """The run a key names.

        Raises:
            NotFoundError: No run there, or the key leaves its root.
        """
        path = self.resolve(key)
        if not (path / MANIFEST).is_file():
            raise NotFoundError(f"no run {key!r}")
        manifest = read_manifest(path)
        items = list(read_items(path).values())
        return Run(key, path, manifest, items, summarize(manifest, items))

    def traces(self) -> list[tuple[str, Trace]]:
        """The trace files under the roots that are not part of a run, by key."""
        found = []
        for key in self._trace_keys():
            try:
                found.append((key, self.trace(key)))
            except ConfigError:
                continue  # some other JSON file
        return found

    def trace(self, key: str) -> Trace:
        """The trace file a key names.

        Raises:
            NotFoundError: No file there, or the key leaves its root.
            ConfigError: The file is not a trace.
        """
        path = self.resolve(key)
        if not path.is_file():
            raise NotFoundError(f"no trace {key!r}")
        return Trace.load(path)

    def item_trace(self, run: Run, item: ItemRecord) -> Trace:
        """An item's trace, read from its run directory.

        Raises:
            NotFoundError: The item has no trace, or its path leaves the run directory.
        """
        if item.trace is None:
            raise NotFoundError(f"item {item.id!r} has no trace")
        path = (run.path / item.trace).resolve()
        if not path.is_relative_to(run.path) or not path.is_file():
            raise NotFoundError(f"no trace for item {item.id!r}")
        return Trace.load(path)

    def plot(self, run: Run, name: str) -> Path:
        """A plot of the run, by a name `Run.plots` lists.

        Raises:
            NotFoundError: The run has no such plot, or it links out of the run.
        """
        path = (run.path / name).resolve()
        if name not in run.plots or not path.is_relative_to(run.path):
            raise NotFoundError(f"run {run.key!r} has no plot {name!r}")
        return path

    def resolve(self, key: str) -> Path:
        """The path a key names, inside its root.

        Raises:
            NotFoundError: A malformed key, or one whose path leaves its root.
        """
        index, _, relative = key.partition("/")
        if not index.isdigit() or int(index) >= len(self.roots):
            raise NotFoundError(f"no such root in {key!r}")
        root = self.roots[int(index)]
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise NotFoundError(f"{key!r} is outside the folders the viewer was given")
        return path

    def key(self, root: int, path: Path) -> str:
        """The key of ``path`` under root number ``root``."""
        relative = path.relative_to(self.roots[root]).as_posix()
        return f"{root}/{'' if relative == '.' else relative}"

    def _run_keys(self) -> Iterator[str]:
        for index, root in enumerate(self.roots):
            if root.is_dir():
                for manifest in sorted(root.rglob(MANIFEST)):
                    yield self.key(index, manifest.parent)

    def _trace_keys(self) -> Iterator[str]:
        for index, root in enumerate(self.roots):
            if root.is_file():
                yield f"{index}/"
                continue
            runs = [m.parent for m in root.rglob(MANIFEST)]
            for path in sorted(root.rglob("*.json")):
                in_run = any(path.is_relative_to(run) for run in runs)
                if not in_run and path.name not in RUN_FILES and _looks_like_trace(path):
                    yield self.key(index, path)


def _looks_like_trace(path: Path) -> bool:
    """A cheap check before a full load: a JSON object with a run id and steps."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and b'"run_id"' in head and b'"steps"' in head


def item_by_id(run: Run, item_id: str) -> ItemRecord:
    """The run's item with this id.

    Raises:
        NotFoundError: The run has no such item.
    """
    for item in run.items:
        if item.id == item_id:
            return item
    raise NotFoundError(f"run {run.key!r} has no item {json.dumps(item_id)}")


__all__ = ["Catalog", "NotFoundError", "Run", "item_by_id"]
