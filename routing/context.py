"""Context routing: which items of the run (and, later, of shared memory) an agent sees.

A `ContextPolicy` gets every candidate item and a token budget counted with the
answering model's tokenizer, and returns the items to show. The budget is a hard cap on
the rendered context: a policy never returns a selection whose rendered lines add up to
more tokens than the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

ItemKind: TypeAlias = Literal[
    "task", "thought", "action", "observation", "answer", "error", "fact", "plan", "memory"
]


@dataclass(frozen=True, slots=True)
class ContextItem:
    """One piece of context an agent may be shown.

    Attributes:
        id: Stable identifier (unique within a run).
        text: The content.
        kind: What it is: the task, a thought, an action, a tool observation, an answer…
        author: The agent that wrote it (None for the task).
        role: That agent's role.
        step: The run step it was written at (0 for the task).
        stage: The task stage it belongs to, when the graph names stages.
    """

    id: str
    text: str
    kind: ItemKind
    author: str | None = None
    role: str | None = None
    step: int = 0
    stage: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form (what run state and checkpoints store)."""
        return {
            "id": self.id,
            "text": self.text,
            "kind": self.kind,
            "author": self.author,
            "role": self.role,
            "step": self.step,
            "stage": self.stage,
        }


def render_item(item: ContextItem) -> str:
    """The line an item takes in a prompt; budgets count these lines' tokens.

    Example:
        >>> render_item(ContextItem("1", "Paris", "answer", author="solver", role="solver"))
        '[solver/answer] Paris'
    """
    who = item.author or "user"
    return f"[{who}/{item.kind}] {item.text}"


@dataclass(frozen=True, slots=True)
class ContextRequest:
    """What a policy needs to choose an agent's context for one step.

    Attributes:
        agent: The agent about to act.
        role: Its role.
        query: What the agent is working on (the task, or its current sub-question).
        items: Candidates, oldest first.
        budget_tokens: Hard cap on the rendered context; None means unlimited.
        count_tokens: Token counter of the model that will read the prompt.
        stage: The current task stage, when the graph names stages.
    """

    agent: str
    role: str
    query: str
    items: Sequence[ContextItem]
    budget_tokens: int | None
    count_tokens: Callable[[str], int]
    stage: str | None = None


@dataclass(frozen=True, slots=True)
class ContextSelection:
    """The chosen items (in prompt order), their token cost and why."""

    items: list[ContextItem]
    tokens: int
    dropped: list[str] = field(default_factory=list)
    policy: str = ""
    reason: str = ""

    def render(self) -> str:
        return "\n".join(render_item(i) for i in self.items)


@runtime_checkable
class ContextPolicy(Protocol):
    """Chooses what an agent sees at a step, within a token budget."""

    name: str

    def select(self, request: ContextRequest) -> ContextSelection:
        """The items to show, whose rendered lines fit ``request.budget_tokens``."""
        ...


class FullContext:
    """Everything, in order; over the budget, the oldest items go first.

    The task item is kept while it fits (an agent that loses its task cannot work).
    Tokens are counted per rendered line, so the joined context can differ from the
    sum by the tokens of the newlines between lines; the budget is charged the sum
    plus one token per line break, which bounds the joined text from above.

    Example:
        >>> items = [ContextItem(str(i), "word " * 10, "observation") for i in range(5)]
        >>> req = ContextRequest("a", "solver", "q", items, 40, lambda s: len(s.split()))
        >>> [i.id for i in FullContext().select(req).items]
        ['2', '3', '4']
    """

    name = "full"

    def select(self, request: ContextRequest) -> ContextSelection:
        costs = [request.count_tokens(render_item(i)) + 1 for i in request.items]
        total = sum(costs)
        budget = request.budget_tokens
        if budget is None or total <= budget:
            return ContextSelection(list(request.items), total, policy=self.name, reason="fits")
        keep = [True] * len(request.items)
        order = [i for i, item in enumerate(request.items) if item.kind != "task"]
        order += [i for i, item in enumerate(request.items) if item.kind == "task"]
        for index in order:  # oldest non-task items first, the task last
            if total <= budget:
                break
            keep[index] = False
            total -= costs[index]
        chosen = [item for item, k in zip(request.items, keep, strict=True) if k]
        dropped = [item.id for item, k in zip(request.items, keep, strict=True) if not k]
        return ContextSelection(
            chosen,
            total,
            dropped=dropped,
            policy=self.name,
            reason=f"dropped the {len(dropped)} oldest items to fit {budget} tokens",
        )
