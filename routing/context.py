"""Context routing: which items of the run and of shared memory an agent sees.

A `ContextPolicy` gets the candidates (the run's log, or the run's shared-memory scope
when the graph has a memory, to which the log is written back) and a token budget counted
with the answering model's tokenizer, and returns the items to show. The budget is a
hard cap on the rendered context: a policy never returns a selection whose rendered
lines add up to more tokens than the budget.

Four policies share the interface: `FullContext` (everything, oldest dropped first),
`RecencyWindow` (newest first), `TopKSimilarity` (most similar to the query first) and
`RCRContext` (role-, stage-, recency- and similarity-scored knapsack, in `routing.rcr`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.memory import MemoryEntry, MemoryScope

_WORD = re.compile(r"\w+")

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
    kind: ItemKind | str
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

    @classmethod
    def from_entry(cls, entry: MemoryEntry) -> ContextItem:
        """A shared-memory entry as a candidate (its round is the step)."""
        return cls(
            entry.id, entry.text, entry.kind, entry.author, entry.role, entry.round, entry.stage
        )


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
        stage: The agent's task stage, when the graph names stages.
        step: The run step about to be taken (recency is measured from it).
        memory: The run's shared-memory scope, holding the log and anything added to
            it; when given, policies choose from it rather than from ``items``.
    """

    agent: str
    role: str
    query: str
    items: Sequence[ContextItem]
    budget_tokens: int | None
    count_tokens: Callable[[str], int]
    stage: str | None = None
    step: int = 0
    memory: MemoryScope | None = None

    def candidates(self) -> list[ContextItem]:
        """Every candidate, oldest first: the memory scope's entries, or the log."""
        if self.memory is None:
            return list(self.items)
        return [ContextItem.from_entry(e) for e in self.memory.entries()]

    def cost(self, item: ContextItem) -> int:
        """Tokens an item adds to the context: its line plus one for the line break."""
        return self.count_tokens(render_item(item)) + 1


@dataclass(frozen=True, slots=True)
class ContextSelection:
    """The chosen items (in prompt order), their token cost and why."""

    items: list[ContextItem]
    tokens: int
    dropped: list[str] = field(default_factory=list)
    policy: str = ""
    reason: str = ""
    costs: dict[str, int] = field(default_factory=dict)
    """Tokens of each item the policy counted, by id (every chosen item among them)."""
    scores: dict[str, float] = field(default_factory=dict)
    """The policy's score of each candidate it ranked, by id (empty for unranked policies)."""

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
        items = request.candidates()
        costs = [request.cost(i) for i in items]
        total = sum(costs)
        budget = request.budget_tokens
        by_id = {item.id: cost for item, cost in zip(items, costs, strict=True)}
        if budget is None or total <= budget:
            return ContextSelection(items, total, policy=self.name, reason="fits", costs=by_id)
        keep = [True] * len(items)
        order = [i for i, item in enumerate(items) if item.kind != "task"]
        order += [i for i, item in enumerate(items) if item.kind == "task"]
        for index in order:  # oldest non-task items first, the task last
            if total <= budget:
                break
            keep[index] = False
            total -= costs[index]
        chosen = [item for item, k in zip(items, keep, strict=True) if k]
        dropped = [item.id for item, k in zip(items, keep, strict=True) if not k]
        return ContextSelection(
            chosen,
            total,
            dropped=dropped,
            policy=self.name,
            reason=f"dropped the {len(dropped)} oldest items to fit {budget} tokens",
            costs=by_id,
        )


class RecencyWindow:
    """The newest items that fit the budget (at most ``max_items``), in order.

    Example:
        >>> items = [ContextItem(str(i), "word " * 10, "observation") for i in range(5)]
        >>> req = ContextRequest("a", "solver", "q", items, 40, lambda s: len(s.split()))
        >>> [i.id for i in RecencyWindow().select(req).items]
        ['2', '3', '4']
    """

    name = "recency"

    def __init__(self, max_items: int | None = None) -> None:
        self.max_items = max_items

    def select(self, request: ContextRequest) -> ContextSelection:
        items = request.candidates()
        budget = request.budget_tokens
        chosen: list[ContextItem] = []
        costs: dict[str, int] = {}
        total = 0
        for item in reversed(items):
            if self.max_items is not None and len(chosen) >= self.max_items:
                break
            cost = costs[item.id] = request.cost(item)
            if budget is not None and total + cost > budget:
                break  # a window: older items may not jump over a newer one that did not fit
            chosen.append(item)
            total += cost
        chosen.reverse()
        kept = {i.id for i in chosen}
        return ContextSelection(
            chosen,
            total,
            dropped=[i.id for i in items if i.id not in kept],
            policy=self.name,
            reason=f"newest {len(chosen)} of {len(items)} items",
            costs=costs,
        )


class TopKSimilarity:
    """The items most similar to the query, best first, while they fit (at most ``k``).

    Similarity is cosine over the memory's embeddings when the run has a memory, and
    word overlap (Jaccard) over the log otherwise. Chosen items are shown oldest first.
    """

    name = "topk"

    def __init__(self, k: int | None = None, pool: int = 256) -> None:
        self.k = k
        self.pool = pool

    def select(self, request: ContextRequest) -> ContextSelection:
        ranked = ranked_by_similarity(request, self.pool)
        budget = request.budget_tokens
        chosen: list[ContextItem] = []
        costs: dict[str, int] = {}
        total = 0
        for item, _ in ranked:
            if self.k is not None and len(chosen) >= self.k:
                break
            cost = costs[item.id] = request.cost(item)
            if budget is not None and total + cost > budget:
                continue  # a smaller, less similar item may still fit
            chosen.append(item)
            total += cost
        chosen.sort(key=lambda i: i.step)
        kept = {i.id for i in chosen}
        return ContextSelection(
            chosen,
            total,
            dropped=[i.id for i, _ in ranked if i.id not in kept],
            policy=self.name,
            reason=f"{len(chosen)} most similar of {len(ranked)} candidates",
            costs=costs,
            scores={item.id: score for item, score in ranked},
        )


def ranked_by_similarity(request: ContextRequest, pool: int) -> list[tuple[ContextItem, float]]:
    """Candidates with their similarity to the query, most similar first.

    With a memory, the ``pool`` nearest entries come from its index (so selection stays
    fast on large memories); without one, every log item is scored by word overlap.
    """
    if request.memory is not None:
        hits = request.memory.search(request.query, k=pool) if len(request.memory) else []
        return [(ContextItem.from_entry(h.entry), h.score) for h in hits]
    scored = [(item, word_overlap(request.query, item.text)) for item in request.items]
    return sorted(scored, key=lambda pair: -pair[1])


def word_overlap(a: str, b: str) -> float:
    """Jaccard overlap of two texts' lowercased word sets (0 when either is empty)."""
    x, y = words(a), words(b)
    return len(x & y) / len(x | y) if x and y else 0.0


def words(text: str) -> set[str]:
    """The lowercased words of ``text``."""
    return set(_WORD.findall(text.lower()))
