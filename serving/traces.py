"""Traces of graph requests, kept for ``GET /v1/traces`` and ``GET /v1/traces/{id}``."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from relaygraph.graph.postgres import SharedRecords
    from relaygraph.graph.trace import Trace

_ID = re.compile(r"^[0-9a-f]{32}$")


class TraceStore:
    """The most recent traces in memory (LRU), each also saved under ``directory`` and in
    the ``shared`` database if set.

    With a shared database, every replica pointing at it lists and finds the traces any
    of them wrote; the in-memory copy only spares the database a read.
    """

    def __init__(
        self,
        *,
        capacity: int = 1000,
        directory: Path | None = None,
        shared: SharedRecords | None = None,
    ) -> None:
        self._capacity = capacity
        self._directory = directory
        self._shared = shared
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, trace: Trace) -> str:
        with self._lock:
            self._traces[trace.run_id] = trace
            self._traces.move_to_end(trace.run_id)
            while len(self._traces) > self._capacity:
                self._traces.popitem(last=False)
        if self._directory is not None:
            trace.save(self._directory / f"{trace.run_id}.json")
        if self._shared is not None:
            self._shared.save_trace(trace)
        return trace.run_id

    def close(self) -> None:
        """Close the shared database's connections (the server's shutdown does)."""
        if self._shared is not None:
            self._shared.close()

    def recent(self, limit: int = 100) -> list[Trace]:
        """The newest traces, newest first (every replica's, with a shared database)."""
        if self._shared is not None:
            return self._shared.recent_traces(limit)
        with self._lock:
            return list(reversed(self._traces.values()))[:limit]

    def get(self, trace_id: str) -> Trace | None:
        if not _ID.match(trace_id):  # ids are uuid4 hex; anything else is not a file name
            return None
        with self._lock:
            trace = self._traces.get(trace_id)
        if trace is None and self._shared is not None:
            trace = self._shared.trace(trace_id)
        if trace is None and self._directory is not None:
            path = self._directory / f"{trace_id}.json"
            if path.is_file():
                from relaygraph.graph.trace import Trace

                return Trace.load(path)
        return trace
