"""ReAct's Wikipedia tools, offline: ``search[title]`` and ``lookup[keyword]`` over the
question's own ten paragraphs.

ReAct's `search` returns the first sentences of the page with that title, or similar
titles when there is none; `lookup` returns the next sentence of the current page that
contains a keyword. Here the "wiki" is the question's context, so the tools are exact and
free, and an agent's score measures its reasoning, not a search engine.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relaygraph.agents import Tool
from relaygraph.eval.answers import normalize_answer

if TYPE_CHECKING:
    from relaygraph.eval.hotpotqa.data import HotpotExample, Paragraph

SEARCH_SENTENCES = 5
"""Sentences a search shows, as ReAct's Wikipedia search does."""


@dataclass(slots=True)
class ParagraphTools:
    """The search/lookup state of one question: the current page and lookup position.

    Example:
        >>> from relaygraph.eval.hotpotqa.data import HotpotExample
        >>> ex = HotpotExample.model_validate({"_id": "1", "question": "q", "answer": "a",
        ...     "type": "bridge", "supporting_titles": ["Seine"],
        ...     "context": [["Seine", ["The Seine is a river.", "It flows through Paris."]]]})
        >>> tools = ParagraphTools(ex)
        >>> tools.search("seine")
        'The Seine is a river. It flows through Paris.'
        >>> tools.lookup("Paris")
        '(Result 1 / 1) It flows through Paris.'
    """

    example: HotpotExample
    page: Paragraph | None = None
    _keyword: str = ""
    _hits: list[str] = field(default_factory=list)
    _next: int = 0

    def search(self, title: str) -> str:
        """Search for an entity by title; returns the start of its page, or similar titles."""
        by_key = {normalize_answer(p.title): p for p in self.example.context}
        page = by_key.get(normalize_answer(title))
        if page is None:
            close = difflib.get_close_matches(
                normalize_answer(title), list(by_key), n=1, cutoff=0.8
            )
            page = by_key[close[0]] if close else None
        if page is None:
            titles = ", ".join(p.title for p in self.example.context)
            return f"Could not find [{title}]. Similar: [{titles}]."
        self.page, self._keyword, self._hits, self._next = page, "", [], 0
        return " ".join(page.sentences[:SEARCH_SENTENCES]).strip()

    def lookup(self, keyword: str) -> str:
        """Find the next sentence with a keyword in the page last searched."""
        if self.page is None:
            return "No page yet: search[title] first."
        if keyword.lower() != self._keyword:
            self._keyword = keyword.lower()
            self._hits = [s.strip() for s in _sentences(self.page) if self._keyword in s.lower()]
            self._next = 0
        if self._next >= len(self._hits):
            return "No more results."
        self._next += 1
        return f"(Result {self._next} / {len(self._hits)}) {self._hits[self._next - 1]}"

    def tools(self) -> list[Tool]:
        """The two tools, bound to this question."""
        return [Tool.from_function(self.search), Tool.from_function(self.lookup)]


def _sentences(page: Paragraph) -> list[str]:
    """A page's sentences (the paragraph layout has one string per page: split it)."""
    if len(page.sentences) > 1:
        return page.sentences
    text = page.sentences[0] if page.sentences else ""
    return [s + "." for s in text.rstrip(".").split(". ") if s]
