"""The graph runtime on the real embedded model (SmolLM2-135M), through the examples.

A 135M model's answers are often wrong and it rarely chooses to use a tool; what these
tests pin down is what the framework guarantees whatever the model writes: every step
has a parsed REASON/ACT (or a structured error), the trace accounts for every token,
routing follows the graph, and streaming, budgets and durability work on real calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relaygraph.agents import Agent
from relaygraph.graph import AgentGraph, Budget, Limits, StepEvent, TokenEvent
from relaygraph.graph.loader import load_graph
from relaygraph.graph.results import ResultEvent

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MAX_ROUNDS = 2  # examples/plan_execute_critic.py


def research_team() -> AgentGraph:
    return load_graph(f"{EXAMPLES / 'research_team.py'}:build")


def plan_execute_critic() -> AgentGraph:
    return load_graph(f"{EXAMPLES / 'plan_execute_critic.py'}:build")


pytestmark = pytest.mark.slow


def test_research_team_on_smollm2() -> None:
    result = research_team().compile().invoke("Which river flows through London?")
    assert result.ok, result.error
    agents = [s.agent for s in result.trace.steps]
    assert agents[0] == "researcher" and agents[-1] == "solver"
    for step in result.trace.steps:
        assert step.model.name == "smollm2-135m"
        assert step.prompt_tokens > 0 and step.latency_s > 0
        assert step.action is not None  # every step ended in a parsed action
        if step.agent == "researcher":
            assert step.completion_tokens > 0
            assert step.output.startswith(("Thought:", "Action:"))
            assert "\nAction: " in step.output or step.output.startswith("Action:")
        else:  # the solver extracts its answer: scored candidates, nothing generated
            assert step.completion_tokens == 0 and step.model.answer_scores
    assert result.answer == "Thames" and result.answer == result.answers["solver"]
    totals = result.trace.by_role()
    assert set(totals) == {"researcher", "solver"}
    assert sum(t.completion_tokens for t in totals.values()) == sum(
        s.completion_tokens for s in result.trace.steps
    )


def test_conditional_loop_on_smollm2() -> None:
    result = plan_execute_critic().compile().invoke("What is 6 * 7?")
    agents = [s.agent for s in result.trace.steps]
    assert result.ok, result.error
    assert agents[:3] == ["planner", "executor", "critic"]
    critic_routes = [r for r in result.trace.routes if r.source == "critic"]
    assert critic_routes and critic_routes[-1].targets == ["__end__"]
    assert all(r.reason.startswith("condition -> ") for r in critic_routes)
    rounds = sum(1 for r in critic_routes)
    assert 1 <= rounds <= MAX_ROUNDS


def test_streaming_tokens_from_the_real_model() -> None:
    events = list(research_team().compile().stream("Where is the Colosseum?", tokens=True))
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent) and e.agent == "solver")
    result = events[-1]
    assert isinstance(result, ResultEvent)
    assert tokens.strip() and result.result.answer and result.result.answer in tokens
    assert [e.record.agent for e in events if isinstance(e, StepEvent)] == [
        s.agent for s in result.result.trace.steps
    ]


def test_token_budget_holds_on_the_real_model() -> None:
    budget = Budget(run=Limits(completion_tokens=40))
    graph = research_team()
    graph.budget = budget
    result = graph.compile().invoke("Which river flows through the city of the Eiffel Tower?")
    used = sum(s.completion_tokens for s in result.trace.steps)
    assert used <= 40
    assert any(s.budget != "ok" for s in result.trace.steps)


def test_context_budget_is_counted_with_the_model_tokenizer() -> None:
    graph = AgentGraph("tight", model="smollm2-135m", max_steps=6)
    graph.add_agent(Agent(name="first", answer_format="plain", max_tokens=40))
    graph.add_agent(Agent(name="second", answer_format="plain", max_tokens=16, context_budget=12))
    graph.add_edge("first", "second").set_entry("first").set_finish("second")
    result = graph.compile().invoke("Describe the sea in two sentences.")
    second = result.trace.steps[-1]
    assert second.agent == "second" and second.context.tokens <= 12
    assert second.context.dropped  # the first agent's answer did not fit in 12 tokens
