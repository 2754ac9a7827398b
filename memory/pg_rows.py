"""Entries as rows of a PostgreSQL memory table: the entry columns, the statements that
name the table and its columns, the binary ``COPY`` of new entries, and rows back to
entries.

Only identifiers from `MemoryEntry`'s fields and the checked table name are written into
statements; every value travels as a bound parameter.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from psycopg import sql

from relaygraph.errors import ConfigError
from relaygraph.memory.entry import MemoryEntry
from relaygraph.memory.pg_filters import FIELDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import psycopg

COLUMNS = (*FIELDS, "metadata")
"""An entry's columns, in the order rows are selected and copied."""
_COPY_TYPES = [{"round": "int4", "timestamp": "float8"}.get(name, "text") for name in FIELDS]
"""Binary COPY's type of each field column (every other field is text)."""


def columns() -> sql.Composed:
    """The entry columns as a comma-separated list of identifiers."""
    return sql.SQL(", ").join(map(sql.Identifier, COLUMNS))


def statement(table: str, template: str, *parts: Any, columns_first: bool = False) -> sql.Composed:
    """``template`` with ``table``'s name for its first ``{}`` (after the entry columns
    when ``columns_first``) and ``parts`` for the rest.

    Example:
        ``statement("m", "SELECT {} FROM {} WHERE id = %s", columns_first=True)`` reads
        ``SELECT "id", "text", ..., "metadata" FROM "m" WHERE id = %s``.
    """
    name = sql.Identifier(table)
    if columns_first:
        return sql.SQL(template).format(columns(), name, *parts)
    return sql.SQL(template).format(name, *parts)


def update_statement(table: str, assigned: Sequence[str]) -> sql.Composed:
    """An update of ``assigned`` columns that lands only on the row version it read
    (parameters: the new values, then the id and that version)."""
    return sql.SQL("UPDATE {} SET {}, version = version + 1 WHERE id = %s AND version = %s").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in assigned),
    )


def copy_rows(
    cur: psycopg.Cursor[Any], table: str, entries: Sequence[MemoryEntry], vectors: np.ndarray
) -> None:
    """Write ``entries`` and their vectors into ``table`` with one binary ``COPY``."""
    from psycopg.types.json import Jsonb

    copying = sql.SQL("COPY {} ({}, embedding) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), columns()
    )
    with cur.copy(copying) as copy:
        copy.set_types([*_COPY_TYPES, "jsonb", "vector"])
        for entry, vector in zip(entries, vectors, strict=True):
            values = [getattr(entry, name) for name in FIELDS]
            copy.write_row([*values, Jsonb(entry.metadata), vector])


def storable(entry: MemoryEntry) -> MemoryEntry:
    """``entry``, refused when JSON (jsonb) cannot hold one of its metadata values."""
    for key, value in entry.metadata.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"metadata[{key!r}] is {value}; PostgreSQL's jsonb holds only finite numbers",
                parameter="metadata",
                value=value,
            )
    return entry


def entry_of(row: Sequence[Any]) -> MemoryEntry:
    """The entry of a row selected with `columns`."""
    # Rows were validated on their way in; constructing skips validating them again.
    return MemoryEntry.model_construct(**dict(zip(COLUMNS, row, strict=True)))
