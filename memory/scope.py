"""`MemoryScope`: one namespace of a shared `Memory`, so callers need not repeat it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaygraph.errors import ConfigError
from relaygraph.memory.entry import MemoryEntry

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import numpy as np

    from relaygraph.memory.entry import Hit
    from relaygraph.memory.protocol import Memory
    from relaygraph.memory.store import Where


class MemoryScope:
    """A view of one namespace: what it adds lands there, what it reads comes from there.

    Example:
        >>> run = memory.scope("run-42")  # doctest: +SKIP
        >>> run.add("The bridge opened in 1932.", author="researcher")  # doctest: +SKIP
        >>> run.search("When did the bridge open?", k=1)[0].entry.namespace  # doctest: +SKIP
        'run-42'
    """

    def __init__(self, memory: Memory, namespace: str) -> None:
        if not namespace:
            raise ConfigError("namespace must not be empty", parameter="namespace")
        self._memory = memory
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def memory(self) -> Memory:
        return self._memory

    def entry_id(self, item_id: str) -> str:
        """The memory id of a run-log item written back to this namespace."""
        return f"{self._namespace}/{item_id}"

    def _check(self, given: object) -> None:
        if given is not None and given != self._namespace:
            raise ConfigError(
                f"entry has namespace {given!r} but this scope is {self._namespace!r}; "
                "add it through memory.scope of its own namespace",
                parameter="namespace",
                value=given,
            )

    def _place(self, item: MemoryEntry | Mapping[str, Any]) -> MemoryEntry | dict[str, Any]:
        if isinstance(item, MemoryEntry):
            self._check(item.namespace)
            return item
        self._check(item.get("namespace"))
        return {**item, "namespace": self._namespace}

    def add(self, text: str, **fields: Any) -> MemoryEntry:
        """`Memory.add` into this namespace."""
        self._check(fields.get("namespace"))
        return self._memory.add(text, **{**fields, "namespace": self._namespace})

    def add_many(self, items: Sequence[MemoryEntry | Mapping[str, Any]]) -> list[MemoryEntry]:
        """`Memory.add_many` into this namespace."""
        return self._memory.add_many([self._place(item) for item in items])

    def search(
        self, query: str | np.ndarray, k: int = 5, *, where: Where | None = None
    ) -> list[Hit]:
        """`Memory.search` within this namespace."""
        return self._memory.search(query, k, namespace=self._namespace, where=where)

    def entries(
        self, *, where: Where | None = None, kinds: Iterable[str] | None = None
    ) -> list[MemoryEntry]:
        """`Memory.entries` of this namespace."""
        return self._memory.entries(namespace=self._namespace, where=where, kinds=kinds)

    def __len__(self) -> int:
        return self._memory.count(self._namespace)
