"""Counting tokens of text pieces with a model's tokenizer, remembering each answer.

Context routing counts every candidate item at every step; an item's text never changes,
so its count is computed once per model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaygraph.llm.protocol import LLM


class TokenCounter:
    """``counter(text)``: tokens of ``text`` (no special tokens) under ``llm``'s tokenizer.

    The memo is dropped whole when it reaches ``max_entries`` (a long run's items are
    counted again, nothing breaks).

    Example:
        >>> counter = TokenCounter(load_llm("smollm2-135m"))  # doctest: +SKIP
        >>> counter("The Seine flows through Paris.")         # doctest: +SKIP
        7
    """

    def __init__(self, llm: LLM, *, max_entries: int = 50_000) -> None:
        self._llm = llm
        self._max_entries = max_entries
        self._counts: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        count = self._counts.get(text)
        if count is None:
            if len(self._counts) >= self._max_entries:
                self._counts.clear()
            count = len(self._llm.tokenize(text))
            self._counts[text] = count
        return count
