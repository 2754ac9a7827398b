"""`where=` filters as SQL for the PostgreSQL memory, with the FAISS memory's semantics.

`SharedMemory` tests ``value == wanted`` in Python: a key naming an entry field tests the
field, any other key tests ``metadata`` (where a missing key never matches), and a
collection of wanted values matches any of them. The SQL below gives the same answers,
which takes care where Python's equality crosses types: ``True == 1 == 1.0``, a string
never equals a number, NaN equals nothing. Values travel as bound parameters; only
column names, which come from `MemoryEntry`'s fields, are written into the statement.
Builders return the SQL and its parameters in order.

Example:
    ``{"kind": ["fact", "plan"], "source": 1}`` becomes
    ``kind = ANY(%s::text[]) AND (metadata -> %s) = ANY(%s::jsonb[])`` with the
    parameters ``["fact", "plan"]``, ``"source"`` and ``["1", "true"]``: a stored
    ``true`` matches 1, as it does in Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from psycopg import sql

from relaygraph.memory.entry import MemoryEntry

if TYPE_CHECKING:
    from collections.abc import Iterable

    from relaygraph.memory.entry import MetadataValue

FIELDS = tuple(name for name in MemoryEntry.model_fields if name != "metadata")
"""Entry fields stored as columns, by their own names."""
_TEXT_FIELDS = frozenset({"id", "text", "author", "role", "stage", "kind", "namespace"})
_NOTHING = sql.SQL("FALSE")
_P = sql.Placeholder()
Clause = tuple[sql.Composable, list[Any]]
"""SQL with ``%s`` placeholders, and the values that fill them in order."""


def _wanted(value: Any) -> list[Any]:
    if isinstance(value, Collection) and not isinstance(value, str):
        return list(value)
    return [value]


def _number(value: object) -> float | int | None:
    """``value`` when it is a finite number (bools count, as Python's ``True == 1``)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _joined(arms: list[sql.Composable], params: list[Any]) -> Clause:
    if not arms:
        return _NOTHING, []
    return sql.SQL("({})").format(sql.SQL(" OR ").join(arms)), params


def _field(name: str, values: list[Any]) -> Clause:
    column = sql.Identifier(name)
    arms: list[sql.Composable] = []
    params: list[Any] = []
    if any(v is None for v in values):
        arms.append(sql.SQL("{} IS NULL").format(column))
    if name in _TEXT_FIELDS:
        texts = [v for v in values if isinstance(v, str)]
        if texts:
            arms.append(sql.SQL("{} = ANY({}::text[])").format(column, _P))
            params.append(texts)
    else:
        numbers = [n for n in map(_number, values) if n is not None]
        if name == "round":  # an integer column equals only integral values
            whole = [int(n) for n in numbers if float(n).is_integer()]
            if whole:
                arms.append(sql.SQL("{} = ANY({}::int8[])").format(column, _P))
                params.append(whole)
        elif numbers:
            floats = [float(n) for n in numbers]
            arms.append(sql.SQL("{} = ANY({}::float8[])").format(column, _P))
            params.append(floats)
    return _joined(arms, params)


def _metadata(key: str, values: list[Any]) -> Clause:
    # jsonb equality already is Python's within a type (numbers compare as decimals, so
    # 1 equals 1.0, and floats are written the shortest way that reads back, as Python
    # and the stored JSON write them) and never holds across types; bools are the one
    # crossing to add. A missing key gives SQL NULL, which equals nothing.
    wanted: list[str] = []
    for value in values:
        number = _number(value)
        if value is None or isinstance(value, str):
            wanted.append(json.dumps(value))
        elif number is not None:
            wanted.append(repr(number))
            if number in (0, 1):
                wanted.append(json.dumps(bool(number)))
    if not wanted:
        return _NOTHING, []
    return sql.SQL("(metadata -> %s) = ANY(%s::jsonb[])"), [key, wanted]


def where_sql(where: Mapping[str, MetadataValue | Collection[MetadataValue]]) -> list[Clause]:
    """One condition per key of a mapping filter (all must hold)."""
    return [
        _field(key, _wanted(wanted)) if key in FIELDS else _metadata(key, _wanted(wanted))
        for key, wanted in where.items()
    ]


def conditions(
    namespace: str | None,
    where: Mapping[str, Any] | None,
    kinds: Iterable[str] | None = None,
    ids: list[str] | None = None,
) -> Clause:
    """A ``WHERE`` clause (or nothing) for these restrictions, all of which must hold."""
    parts: list[Clause] = []
    if namespace is not None:
        parts.append((sql.SQL("namespace = %s"), [namespace]))
    if kinds is not None:
        parts.append((sql.SQL("kind = ANY(%s::text[])"), [sorted(set(kinds))]))
    if ids is not None:
        parts.append((sql.SQL("id = ANY(%s::text[])"), [ids]))
    if where is not None:
        parts.extend(where_sql(where))
    if not parts:
        return sql.SQL(""), []
    clause = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(part for part, _ in parts)
    return clause, [value for _, values in parts for value in values]
