"""What shared memory stores: one `MemoryEntry` per remembered item, and search `Hit`s.

Entries cross process boundaries (they are saved as JSON lines) and come from user code,
so they are validated pydantic models that forbid unknown fields.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator

MetadataValue: TypeAlias = str | int | float | bool | None
"""What a metadata value may be: scalars only, so entries stay flat JSON and filterable."""

_KIND = re.compile(r"[a-z][a-z0-9_]*")


class MemoryEntry(BaseModel):
    """One remembered item: its text, who wrote it, when and where it belongs.

    Example:
        >>> e = MemoryEntry(text="Paris is the capital of France.", author="researcher")
        >>> e.kind, e.namespace, e.round
        ('fact', 'default', 0)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1)
    """Unique within a memory; a random hex uuid when not given."""
    text: str = Field(min_length=1)
    """The content that is embedded and searched."""
    author: str | None = None
    """The agent that wrote it (None for the user or the task)."""
    role: str | None = None
    """The author's role."""
    stage: str | None = None
    """The task stage it belongs to, when the graph names stages."""
    round: int = Field(default=0, ge=0)
    """The run round or step it was written at."""
    kind: str = "fact"
    """What it is: fact, plan, observation, answer, thought, action, task… (a lowercase
    identifier)."""
    timestamp: float = Field(default_factory=time.time)
    """When it was written, seconds since the epoch."""
    namespace: str = Field(default="default", min_length=1)
    """The partition it lives in (a run, a team, a user); searches can stay inside one."""
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    """Free scalar fields, filterable with ``where``."""

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank; a memory entry needs some content to embed")
        return value

    @field_validator("kind")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _KIND.fullmatch(value):
            raise ValueError(
                f"kind {value!r} is not a lowercase identifier (letters, digits, '_', "
                "starting with a letter), e.g. 'fact' or 'observation'"
            )
        return value

    @field_validator("timestamp")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("timestamp must be a finite number of seconds")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _scalars_only(cls, value: Any) -> Any:
        # Checked before pydantic's union coercion, whose five-way error for a list says
        # nothing about which key holds it.
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError(f"metadata keys must be strings, not {key!r}")
                if item is not None and not isinstance(item, str | int | float | bool):
                    raise ValueError(
                        f"metadata[{key!r}] is a {type(item).__name__}; metadata values must "
                        "be str, int, float, bool or None (store a list as a joined string "
                        "or as separate keys)"
                    )
        return value


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result: the entry and its cosine similarity to the query (higher is closer).

    Attributes:
        entry: The matching entry.
        score: Cosine similarity in [-1, 1].
    """

    entry: MemoryEntry
    score: float
