"""JSON values as the docs show them: escaped text, formatted numbers, HTML tables.

Every string taken from a benchmark's JSON passes through here on its way to a page, so
this is where escaping happens: table cells and code with `html.escape`, Markdown text
with its punctuation backslash-escaped too.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

MAX_ROWS = 60
"""Rows of one table before the rest is left to the JSON (a sweep has hundreds)."""
MAX_INLINE = 12
"""Lists of numbers up to this long are shown in full; longer ones as a count."""


# --- escaping and formatting -------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|])")
"""What Python-Markdown (with tables) unescapes after a backslash; ``<>&`` become entities."""


def md_text(value: object) -> str:
    """A string safe to place in Markdown prose, a heading or a table cell: its HTML is
    escaped to entities and its Markdown punctuation backslash-escaped, on one line."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A value as a table cell shows it (HTML-escaped)."""
    if isinstance(value, list):
        if len(value) <= MAX_INLINE and all(is_scalar(v) for v in value):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return f"<em>{len(value)} values</em>"
    if isinstance(value, dict):
        return f"<em>{len(value)} fields</em>"
    if value is None or isinstance(value, bool | int | float):
        return _fmt_number(value)
    text = str(value)
    return f"<pre>{esc(text)}</pre>" if "\n" in text else esc(text)


def _fmt_number(value: float | None) -> str:
    """Four significant digits; thousands whole and grouped; nan and inf as Python
    writes them; booleans as yes/no; None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if not math.isfinite(value) or value == 0:
        return esc(value) if value else "0"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def is_inline(value: object) -> bool:
    """Shown in a cell: a scalar, or a short list of scalars."""
    return is_scalar(value) or (
        isinstance(value, list) and len(value) <= MAX_INLINE and all(is_scalar(v) for v in value)
    )


def is_values(value: object) -> bool:
    """A list of scalars of any length (a table cell counts the long ones)."""
    return isinstance(value, list) and all(is_scalar(v) for v in value)


def flatten(record: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Nested fields as dotted columns, ``depth`` levels down; deeper ones as they are."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and depth > 0:
            flat |= flatten(value, f"{name}.", depth - 1)
        else:
            flat[name] = value
    return flat


# --- tables ------------------------------------------------------------------------------


def kv_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{fmt(v)}</td></tr>" for k, v in items.items())
    head = "<thead><tr><th>field</th><th>value</th></tr></thead>"
    return f"<table>\n{head}\n<tbody>{rows}</tbody>\n</table>"


def record_table(records: list[tuple[str | None, dict[str, Any]]]) -> str:
    """Rows of flattened records; a first column names them when they have names."""
    columns: list[str] = []
    for _, record in records:
        columns += [c for c in record if c not in columns]
    named = any(name is not None for name, _ in records)
    head = ("<th></th>" if named else "") + "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for name, record in records[:MAX_ROWS]:
        cells = (f"<td><strong>{esc(name)}</strong></td>" if named else "") + "".join(
            f"<td>{fmt(record.get(c))}</td>" for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    table = f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{''.join(body)}</tbody>\n</table>"
    if len(records) > MAX_ROWS:
        table += f"\n\n*The first {MAX_ROWS} of {len(records)} rows; the rest are in the JSON.*"
    return table


def labelled(
    rows: list[tuple[str | None, dict[str, Any]]],
) -> list[tuple[str | None, dict[str, Any]]]:
    """Name unnamed records by their first text field that tells them all apart."""
    if any(name is not None for name, _ in rows):
        return rows
    for column in rows[0][1]:
        values = [r.get(column) for _, r in rows]
        if all(isinstance(v, str) for v in values) and len(set(values)) == len(values):
            return [(str(r[column]), {k: v for k, v in r.items() if k != column}) for _, r in rows]
    return [(f"#{i + 1}", r) for i, (_, r) in enumerate(rows)]


def transposed(
    rows: list[tuple[str | None, dict[str, Any]]],
) -> list[tuple[str | None, dict[str, Any]]]:
    """Fields as rows and records as columns."""
    named = labelled(rows)
    fields: list[str] = []
    for _, record in named:
        fields += [f for f in record if f not in fields]
    return [(f, {str(n): r.get(f) for n, r in named}) for f in fields]


def as_records(
    value: Any, *, nested: bool = False
) -> list[tuple[str | None, dict[str, Any]]] | None:
    """``value`` as table rows, if it is a list or mapping of flat-enough records (or of any
    records, with ``nested``: a commentary's table picks its columns)."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows: list[tuple[str | None, dict[str, Any]]] = [(None, flatten(v)) for v in value]
    elif (
        isinstance(value, dict)
        and len(value) > 1
        and all(isinstance(v, dict) and v for v in value.values())
    ):
        rows = [(str(k), flatten(v)) for k, v in value.items()]
    else:
        return None
    cells = [v for _, r in rows for v in r.values()]
    if not nested and not all(is_inline(v) or isinstance(v, list) for v in cells):
        return None
    return rows
