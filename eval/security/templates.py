"""``{name}`` placeholders in spec text: which a value uses, and filling them in.

Only ``{identifier}`` is a placeholder, so regex quantifiers (``{2,3}``) and JSON braces in
spec text pass through untouched.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

_FIELD = re.compile(r"\{([A-Za-z_]\w*)\}")


def fields_of(value: Any) -> set[str]:
    """Placeholder names in a string, or in the keys and strings of nested dicts and lists."""
    if isinstance(value, str):
        return set(_FIELD.findall(value))
    if isinstance(value, dict):
        return {name for k, v in value.items() for name in fields_of(k) | fields_of(v)}
    if isinstance(value, list | tuple):
        return {name for v in value for name in fields_of(v)}
    return set()


def fill(value: Any, values: Mapping[str, str]) -> Any:
    """``value`` with each placeholder that ``values`` binds filled in (others left)."""
    if isinstance(value, str):
        return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {fill(k, values): fill(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [fill(v, values) for v in value]
    return value
