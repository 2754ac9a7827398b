"""Context routing over shared memory: the four policies, the hard budget, RCR's scoring,
and iterative routing inside a real graph (real embeddings, real FAISS)."""

from __future__ import annotations

import pytest
from embedders import HashEmbedder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaygraph.agents import Agent
from relaygraph.graph import AgentGraph
from relaygraph.llm.local import LocalLLM
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.memory import SharedMemory
from relaygraph.routing import (
    ContextItem,
    ContextRequest,
    FullContext,
    RCRContext,
    RCRWeights,
    RecencyWindow,
    TopKSimilarity,
    render_item,
)
from relaygraph.routing.rcr import term_coverage

POLICIES = [FullContext(), RecencyWindow(), TopKSimilarity(), RCRContext()]
FACTS = [
    "The Seine flows through Paris.",
    "The Eiffel Tower was completed in 1889.",
    "Rome is the capital of Italy.",
    "The Thames flows through London.",
    "Mount Fuji is the highest mountain in Japan.",
    "Paris is the capital of France.",
]


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def memory() -> SharedMemory:
    return SharedMemory()


def seeded(memory: SharedMemory, namespace: str, texts: list[str], kind: str = "fact"):  # type: ignore[no-untyped-def]
    scope = memory.scope(namespace)
    scope.add_many(
        [{"id": f"{namespace}/{i}", "text": t, "kind": kind} for i, t in enumerate(texts)]
    )
    return scope


kinds = st.sampled_from(["fact", "plan", "observation", "answer", "thought"])
texts = st.text(alphabet="abc ", min_size=0, max_size=60)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(st.tuples(texts, kinds), max_size=25),
    budget=st.integers(min_value=0, max_value=150),
    policy=st.sampled_from(POLICIES),
    role=st.sampled_from(["solver", "planner", "reviewer"]),
)
def test_no_policy_ever_exceeds_the_budget_on_the_log(
    items: list[tuple[str, str]], budget: int, policy: object, role: str
) -> None:
    log = [ContextItem(str(i), t, k, step=i) for i, (t, k) in enumerate(items)]
    request = ContextRequest("a", role, "abc", log, budget, words, stage="answer", step=len(log))
    selection = policy.select(request)  # type: ignore[attr-defined]
    assert selection.tokens <= budget
    assert selection.tokens == sum(words(render_item(i)) + 1 for i in selection.items)
    assert words(selection.render()) <= selection.tokens
    assert len({i.id for i in selection.items}) == len(selection.items)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.sampled_from([*FACTS, "x " * 80, "Paris"]), min_size=0, max_size=12),
    budget=st.integers(min_value=0, max_value=120),
    policy=st.sampled_from(POLICIES),
    data=st.data(),
)
def test_no_policy_ever_exceeds_the_budget_on_memory(
    memory: SharedMemory, texts: list[str], budget: int, policy: object, data: st.DataObject
) -> None:
    namespace = f"prop-{data.draw(st.integers(0, 10**9))}"
    scope = memory.scope(namespace)
    if texts:
        scope.add_many([{"text": t, "kind": "fact", "round": i} for i, t in enumerate(texts)])
    request = ContextRequest(
        "a", "solver", "Which river flows through Paris?", [], budget, words, memory=scope
    )
    selection = policy.select(request)  # type: ignore[attr-defined]
    assert selection.tokens <= budget
    assert selection.tokens == sum(words(render_item(i)) + 1 for i in selection.items)
    memory.delete_namespace(namespace)


def test_rcr_picks_the_relevant_facts_under_a_tight_budget(memory: SharedMemory) -> None:
    scope = seeded(memory, "rcr-1", FACTS)
    request = ContextRequest(
        "answerer", "solver", "Which river flows through Paris?", [], 20, words, memory=scope
    )
    chosen = [i.text for i in RCRContext().select(request).items]
    assert "The Seine flows through Paris." in chosen
    assert "Mount Fuji is the highest mountain in Japan." not in chosen
    assert sum(words(f"[user/fact] {t}") + 1 for t in chosen) <= 20


def test_term_coverage_weighs_rare_query_words_over_shared_ones() -> None:
    texts = [
        "Arthur's Magazine was an American literary periodical.",
        "First for Women is a woman's magazine published in the USA.",
        "The magazine closed in 1846.",
    ]
    scores = term_coverage("Which magazine was started first, Arthur's Magazine?", texts)
    assert scores[0] > scores[2] > 0  # "arthur" is rare here; "magazine" is everywhere
    assert term_coverage("the of and", texts) == [0.0, 0.0, 0.0]  # stopwords only


def test_the_lexical_term_finds_the_item_naming_the_query_entity() -> None:
    # Hash vectors make cosine noise, so only the lexical term can find the right item.
    scope = SharedMemory(HashEmbedder()).scope("names")
    scope.add_many([
        {"id": "generic", "text": "The band was founded in a small town.", "kind": "fact"},
        {"id": "named", "text": "Zolbrecht Varnaby played in Mirefield.", "kind": "fact"},
        {"id": "other", "text": "Many bands were founded in the sixties.", "kind": "fact"},
    ])  # fmt: skip
    query = "In which year was the band of Zolbrecht Varnaby founded?"
    request = ContextRequest("a", "solver", query, [], 9, words, memory=scope)  # one fits
    lexical_only = RCRContext(weights=RCRWeights(semantic=0, lexical=1, role=0, stage=0))
    assert [i.id for i in lexical_only.select(request).items] == ["named"]


def test_only_candidates_that_can_matter_are_token_counted(memory: SharedMemory) -> None:
    scope = seeded(
        memory, "rcr-lazy", [f"Fact number {i} about rivers and towns." for i in range(40)]
    )
    counted: list[str] = []

    def counting(text: str) -> int:
        counted.append(text)
        return words(text)

    request = ContextRequest("a", "solver", "rivers", [], 12, counting, memory=scope)
    selection = RCRContext(coverage=2.0).select(request)
    assert selection.tokens <= 12 and selection.items
    assert len(counted) < 10  # two budgets' worth of 10-word items, not all 40

    huge = " ".join(["rivers"] * 200)  # the best match, but larger than the budget
    scope.add(huge, kind="fact")
    selection = RCRContext(coverage=2.0).select(request)
    assert selection.items and huge not in [i.text for i in selection.items]


def test_role_and_stage_change_what_an_agent_sees(memory: SharedMemory) -> None:
    scope = memory.scope("rcr-roles")
    scope.add_many(
        [
            {"id": "rcr-roles/plan", "text": "First find the river.", "kind": "plan"},
            {"id": "rcr-roles/fact", "text": "The Seine is long.", "kind": "fact"},
        ]
    )
    only_role = RCRContext(weights=RCRWeights(semantic=0, role=1, stage=0, recency=0))

    def first(role: str, stage: str | None, policy: RCRContext) -> str:
        request = ContextRequest("a", role, "q", [], 6, words, stage=stage, memory=scope)
        return policy.select(request).items[0].id  # room for one item only

    assert first("planner", None, only_role) == "rcr-roles/plan"
    assert first("solver", None, only_role) == "rcr-roles/fact"
    only_stage = RCRContext(weights=RCRWeights(semantic=0, role=0, stage=1, recency=0))
    assert first("solver", "retrieve", only_stage) == "rcr-roles/plan"
    assert first("solver", "answer", only_stage) == "rcr-roles/fact"


def test_edge_cases_are_documented_behaviour(memory: SharedMemory) -> None:
    empty = memory.scope("rcr-empty")
    for policy in POLICIES:
        request = ContextRequest("a", "solver", "q", [], 50, words, memory=empty)
        assert policy.select(request).items == []
    scope = seeded(memory, "rcr-big", ["huge " * 100, "The Seine flows through Paris."])
    selection = RCRContext().select(
        ContextRequest("a", "solver", "river Paris", [], 30, words, memory=scope)
    )
    assert [i.text for i in selection.items] == ["The Seine flows through Paris."]
    assert "larger than the whole budget" in selection.reason
    tiny = RCRContext().select(ContextRequest("a", "solver", "q", [], 2, words, memory=scope))
    assert tiny.items == [] and tiny.tokens == 0
    assert len(scope) == 2, "routing never removes entries"


def test_recency_and_topk_baselines(memory: SharedMemory) -> None:
    scope = seeded(memory, "rcr-base", FACTS)
    request = ContextRequest(
        "a", "solver", "Which river flows through Paris?", [], 20, words, memory=scope
    )
    newest = RecencyWindow().select(request).items
    assert newest[-1].text == FACTS[-1] and [i.text for i in newest] == FACTS[-len(newest) :]
    similar = TopKSimilarity(k=1).select(request).items
    assert [i.text for i in similar] == ["The Seine flows through Paris."]


def run_team(memory: SharedMemory, thread: str, plan: str) -> tuple[str, object]:
    """A planner (scripted to write ``plan``) then a solver, both routed by RCR over
    ``FACTS`` in ``thread``'s namespace; returns the solver's prompt and the result."""
    seeded(memory, thread, FACTS)
    seen: list[str] = []

    def solver_reply(prompt: object) -> str:
        seen.append(prompt.messages[-1].content)  # type: ignore[attr-defined]
        return "done"

    policy = RCRContext()
    graph = AgentGraph("team", model=ScriptedLLM([plan]), memory=memory)
    graph.add_agent(
        Agent(name="planner", role="planner", stage="plan", answer_format="plain",
              context_policy=policy, context_budget=20)
    )  # fmt: skip
    graph.add_agent(
        Agent(name="solver", role="solver", stage="answer", answer_format="plain",
              model=ScriptedLLM(solver_reply), context_policy=policy, context_budget=20)
    )  # fmt: skip
    graph.add_edge("planner", "solver").set_entry("planner").set_finish("solver")
    result = graph.compile().invoke("Answer the question.", thread_id=thread)
    return seen[0], result


def test_a_team_routes_iteratively_over_memory_written_back_each_step(
    memory: SharedMemory,
) -> None:
    """The planner's plan reaches memory as a structured entry and steers what the next
    agent is shown: the same task and facts, two plans, two different contexts."""
    river, result = run_team(memory, "team-river", "Find which river flows through Paris.")
    mountain, _ = run_team(memory, "team-mountain", "Find the highest mountain in Japan.")
    assert "The Seine flows through Paris." in river and "Mount Fuji" not in river
    assert "Mount Fuji is the highest mountain in Japan." in mountain and "Seine" not in mountain
    plan = memory.get("team-river/0.0")
    assert (plan.kind, plan.author, plan.role, plan.stage) == ("plan", "planner", "planner", "plan")
    solver_step = result.trace.steps[1]  # type: ignore[attr-defined]
    assert solver_step.context.policy == "rcr" and solver_step.context.tokens <= 20
    assert "team-river/0.0" in solver_step.context.items


@pytest.mark.slow
def test_budgets_hold_with_a_real_tokenizer(memory: SharedMemory, smollm2: LocalLLM) -> None:
    scope = seeded(memory, "real-tok", FACTS * 3)

    def count(text: str) -> int:
        return len(smollm2.tokenize(text))

    for policy in POLICIES:
        for budget in (0, 7, 30, 100):
            request = ContextRequest("a", "solver", "rivers", [], budget, count, memory=scope)
            selection = policy.select(request)
            assert count(selection.render()) <= selection.tokens <= budget
