"""FullContext: everything when it fits; over budget, the oldest go first; never over."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relaygraph.routing import ContextItem, ContextRequest, FullContext, render_item


def words(text: str) -> int:
    return len(text.split())


def request(items: list[ContextItem], budget: int | None) -> ContextRequest:
    return ContextRequest("a", "solver", "q", items, budget, words)


def test_everything_fits() -> None:
    items = [ContextItem(str(i), "a b c", "observation") for i in range(3)]
    selection = FullContext().select(request(items, None))
    assert selection.items == items and selection.dropped == []


def test_oldest_dropped_first_and_task_kept() -> None:
    items = [ContextItem("t", "the task", "task")] + [
        ContextItem(str(i), "w " * 5, "observation") for i in range(4)
    ]
    # Rendered: the task is 3 words + 1, each observation 6 + 1: 4 + 4 * 7 = 32 tokens.
    selection = FullContext().select(request(items, 24))
    assert [i.id for i in selection.items] == ["t", "2", "3"]
    assert selection.dropped == ["0", "1"]


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.text(alphabet="ab ", min_size=0, max_size=40), max_size=30),
    budget=st.integers(min_value=0, max_value=200),
)
def test_budget_is_a_hard_cap(texts: list[str], budget: int) -> None:
    items = [ContextItem(str(i), t, "observation") for i, t in enumerate(texts)]
    selection = FullContext().select(request(items, budget))
    joined = selection.render()
    assert selection.tokens <= budget
    assert words(joined) <= selection.tokens
    assert sum(words(render_item(i)) + 1 for i in selection.items) == selection.tokens
    # Whatever was kept is the newest suffix, in order.
    kept = [i.id for i in selection.items]
    assert kept == [i.id for i in items][len(items) - len(kept) :]
