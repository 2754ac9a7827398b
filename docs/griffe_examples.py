"""A griffe extension: relaygraph's ``Example:`` docstring sections are examples.

The codebase writes Google-style ``Example:`` (singular) sections of doctests. Griffe
reads only ``Examples:`` as an examples section and renders ``Example:`` as an admonition
of Markdown, where ``>>>`` lines become nested block quotes and a printed list such as
``['3']`` a broken link. This renames the section on every docstring griffe loads, so the
API reference shows doctests as code without touching the docstrings.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Read ``Example:`` as ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
