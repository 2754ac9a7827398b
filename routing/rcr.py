"""RCR-style context routing: score memory by relevance, role, stage and recency, then
pack the best items into a hard token budget.

For an agent with role R at stage S, step t, and budget B, each candidate m gets

    alpha(m) = w_sem · max(0, cos(m, query)) + w_lex · terms(m, query)
         + w_role · role(kind(m), R) + w_stage · stage(kind(m), S) + w_rec · exp(-λ · (t - t_m))

and the selection maximises the sum of u(m) = exp((alpha(m) - max alpha) / tau) under
sum tokens <= B (RCR-Router's objective, PAPERS.md section 1, with a sharpened utility;
the weights and tables are this project's, see benchmarks/context_routing.py). Why not
alpha itself: its role, stage and recency terms are large offsets shared by most items,
and under a budget they make the knapsack prefer many short, irrelevant items (packing
raw alpha, the benchmark's supporting-fact recall fell well below plain top-k
similarity's); u keeps only items near the best valuable. It is a 0/1 knapsack; the
policy takes the better of two greedy packings, by u per token and by u, which is
within a factor 2 of the optimum and runs in O(n log n).

``terms`` is the IDF-weighted share of the query's content words that the item contains,
the IDF taken over the candidates themselves. Dense similarity alone ranks a sentence
about the same topic above the one that names the question's entity, which the lexical
term corrects. w_lex and tau are the best point of a grid searched on a tuning split
that shares no question with the reported ones (benchmarks/context_routing.py, part
``tune``; its results page has the grid and the recall the term gains).

The query is the task plus the latest plan in memory, so once a planner has written
sub-questions, the next agents are routed by them (iterative routing).

Candidates are the ``pool`` entries nearest to the query in the run's memory plus the
run's own log; without a memory, the log alone, scored by word overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from relaygraph.routing.context import (
    ContextItem,
    ContextRequest,
    ContextSelection,
    word_overlap,
    words,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

KindTable = dict[str, dict[str, float]]

STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "has",
    "have", "he", "her", "his", "how", "in", "is", "it", "its", "of", "on", "or", "she",
    "that", "the", "their", "them", "they", "this", "to", "was", "were", "what", "when",
    "where", "which", "who", "whom", "whose", "why", "with",
})  # fmt: skip
"""Words too common to tell items apart; everything else in a query is a content word."""

ROLE_RELEVANCE: KindTable = {
    "planner": {"task": 1.0, "plan": 0.8, "answer": 0.5, "fact": 0.4, "observation": 0.3},
    "researcher": {"task": 1.0, "plan": 1.0, "fact": 0.8, "observation": 0.7, "answer": 0.3},
    "solver": {"task": 1.0, "fact": 1.0, "observation": 0.8, "answer": 0.7, "plan": 0.6},
    "critic": {"task": 1.0, "answer": 1.0, "fact": 0.8, "observation": 0.6, "plan": 0.4},
    "executor": {"task": 1.0, "plan": 1.0, "observation": 0.8, "fact": 0.6, "answer": 0.4},
}
"""How much an agent of a role wants each kind of item; kinds not listed get 0.2."""

STAGE_PRIORITY: KindTable = {
    "plan": {"task": 1.0, "plan": 0.6, "fact": 0.4},
    "retrieve": {"plan": 1.0, "fact": 0.8, "observation": 0.8},
    "answer": {"fact": 1.0, "observation": 0.9, "answer": 0.6, "plan": 0.5},
    "verify": {"answer": 1.0, "fact": 0.9, "observation": 0.7},
}
"""Which kinds matter at each task stage; kinds not listed get 0.2."""

UNLISTED = 0.2
UNKNOWN = 0.5
"""The relevance of any item for a role or stage the tables do not know (no signal)."""


@dataclass(frozen=True, slots=True)
class RCRWeights:
    """The weights of alpha's five terms, the recency decay λ per step, and tau.

    ``lexical`` and ``temperature`` are tuned (benchmarks/context_routing.py, part tune);
    role, stage and recency are set by hand: the benchmark's candidates are all facts of
    one round, which these terms cannot tell apart.
    """

    semantic: float = 1.0
    lexical: float = 1.0
    role: float = 0.3
    stage: float = 0.2
    recency: float = 0.1
    decay: float = 0.1
    temperature: float = 0.05
    """tau: how fast an item's utility falls with its distance to the best item's alpha."""


@dataclass(slots=True)
class RCRContext:
    """Role- and stage-aware context routing under a hard token budget (RCR-Router).

    Example:
        >>> items = [ContextItem("1", "Paris is in France.", "fact"),
        ...          ContextItem("2", "Buy milk.", "plan"),
        ...          ContextItem("3", "The Seine flows through Paris.", "fact")]
        >>> req = ContextRequest("a", "solver", "What flows through Paris?", items, 8,
        ...                      lambda s: len(s.split()))
        >>> [i.id for i in RCRContext().select(req).items]
        ['3']
    """

    weights: RCRWeights = field(default_factory=RCRWeights)
    role_relevance: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: ROLE_RELEVANCE
    )
    stage_priority: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: STAGE_PRIORITY
    )
    pool: int = 128
    """Nearest memory entries considered (besides the run's log)."""
    coverage: float = 4.0
    """Candidates are token-counted best first until they hold this many budgets of tokens;
    the rest are left out uncounted (their utility is too small to matter, and counting is
    most of a step's cost on a cold tokenizer memo)."""
    name: str = "rcr"

    def select(self, request: ContextRequest) -> ContextSelection:
        query, candidates, similarity = self._candidates(request)
        terms = term_coverage(query, [c.text for c in candidates])
        alphas = [
            self.score(item, sim, request, lexical=lex)
            for item, sim, lex in zip(candidates, similarity, terms, strict=True)
        ]
        best = max(alphas, default=0.0)
        utility = [math.exp((a - best) / self.weights.temperature) for a in alphas]
        budget = request.budget_tokens
        order = sorted(range(len(candidates)), key=lambda i: -utility[i])
        costed, costs, fitting = [], [], 0
        for i in order:
            if budget is not None and fitting >= self.coverage * budget:
                break
            costed.append(i)
            costs.append(request.cost(candidates[i]))
            if budget is None or costs[-1] <= budget:  # one that cannot fit covers nothing
                fitting += costs[-1]
        scores = [utility[i] for i in costed]
        if budget is None:
            chosen = list(range(len(costed)))
        else:
            chosen = max(
                _pack(scores, costs, budget, by_density=True),
                _pack(scores, costs, budget, by_density=False),
                key=lambda picked: sum(scores[j] for j in picked),
            )
        picked = {costed[j] for j in chosen}
        items = sorted((candidates[i] for i in picked), key=lambda item: item.step)
        oversized = sum(budget is not None and c > budget for c in costs)
        return ContextSelection(
            items,
            sum(costs[j] for j in chosen),
            dropped=[c.id for i, c in enumerate(candidates) if i not in picked],
            policy=self.name,
            reason=f"{len(items)} of {len(candidates)} candidates by role/stage/recency/relevance"
            + (f"; {oversized} larger than the whole budget" if oversized else ""),
            costs={candidates[i].id: cost for i, cost in zip(costed, costs, strict=True)},
            scores={candidates[i].id: utility[i] for i in costed},
        )

    def score(
        self, item: ContextItem, similarity: float, request: ContextRequest, *, lexical: float = 0.0
    ) -> float:
        """alpha of one item for this request, given its cosine and term coverage."""
        w = self.weights
        role = _lookup(self.role_relevance, request.role, item.kind)
        stage = _lookup(self.stage_priority, request.stage, item.kind)
        age = max(0, request.step - item.step)
        return (
            w.semantic * max(0.0, similarity)
            + w.lexical * lexical
            + w.role * role
            + w.stage * stage
            + w.recency * math.exp(-w.decay * age)
        )

    def _candidates(self, request: ContextRequest) -> tuple[str, list[ContextItem], list[float]]:
        """The (plan-expanded) query, the candidates and their similarity to it."""
        if request.memory is None:
            query = _with_plan(request.query, request.items)
            items = list(request.items)
            return query, items, [word_overlap(query, i.text) for i in items]
        scope = request.memory
        log = [replace(i, id=scope.entry_id(i.id)) for i in request.items]
        query = _with_plan(request.query, log)
        hits = scope.search(query, k=self.pool) if len(scope) else []
        items = [ContextItem.from_entry(h.entry) for h in hits]
        similarity = [h.score for h in hits]
        seen = {i.id for i in items}
        extra = [i for i in log if i.id not in seen and i.id in scope.memory]
        if extra:
            items += extra
            similarity += scope.memory.similarities(query, [i.id for i in extra]).tolist()
        return query, items, similarity


def term_coverage(query: str, texts: Sequence[str]) -> list[float]:
    """For each text, the IDF-weighted share of the query's content words it contains.

    IDF is computed over ``texts`` themselves (no corpus needed): a word every candidate
    shares, such as the paragraph's topic, counts little; a rare name counts a lot.
    """
    content = words(query) - STOPWORDS
    if not content or not texts:
        return [0.0] * len(texts)
    bags = [words(t) for t in texts]
    idf = {w: math.log((len(bags) + 1) / (sum(w in b for b in bags) + 0.5)) for w in content}
    total = sum(idf.values())
    return [sum(v for w, v in idf.items() if w in bag) / total for bag in bags]


def _with_plan(query: str, log: Sequence[ContextItem]) -> str:
    plan = next((i.text for i in reversed(log) if i.kind == "plan"), None)
    return f"{query}\n{plan}" if plan else query


def _lookup(table: Mapping[str, Mapping[str, float]], key: str | None, kind: str) -> float:
    row = table.get(key) if key is not None else None
    return UNKNOWN if row is None else row.get(kind, UNLISTED)


def _pack(
    scores: Sequence[float], costs: Sequence[int], budget: int, *, by_density: bool
) -> list[int]:
    """Greedy 0/1 knapsack: take items in order of utility per token (or utility) while they fit."""
    order = sorted(
        range(len(scores)),
        key=lambda i: -(scores[i] / max(costs[i], 1)) if by_density else -scores[i],
    )
    picked, total = [], 0
    for i in order:
        if total + costs[i] <= budget:
            picked.append(i)
            total += costs[i]
    return picked
