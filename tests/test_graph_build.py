"""Every structural error surfaces at compile(), naming the offender."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relaygraph.agents import Agent
from relaygraph.errors import ConfigError
from relaygraph.graph import END, AgentGraph
from relaygraph.llm.scripted import ScriptedLLM


def graph(max_steps: int | None = 50) -> AgentGraph:
    g = AgentGraph("g", model=ScriptedLLM([]), max_steps=max_steps)
    for name in ("a", "b", "c"):
        g.add_agent(Agent(name=name))
    return g


def opaque_tool(x: object, y) -> str:  # type: ignore[no-untyped-def]
    """Has an untyped parameter."""
    return ""


CASES: list[tuple[str, Callable[[AgentGraph], object], str]] = [
    ("no entry", lambda g: g.set_finish("a"), "has no entry"),
    ("unknown entry", lambda g: g.set_entry("zz"), "entry 'zz' is not an agent"),
    ("dangling edge", lambda g: g.set_entry("a").add_edge("a", "zz"), "no agent named 'zz'"),
    ("edge from unknown", lambda g: g.set_entry("a").add_edge("zz", "a"), "unknown agent 'zz'"),
    (
        "no way out",
        lambda g: g.set_entry("a").add_edge("a", "b").set_finish("c"),
        "agent 'b' has no way out",
    ),
    (
        "two ways out",
        lambda g: g.set_entry("a").add_edge("a", "b").set_finish("a"),
        "more than one kind",
    ),
    (
        "condition target",
        lambda g: g.set_entry("a").add_conditional_edges("a", lambda r: "b", ["b", "zz"]),
        "no agent named 'zz'",
    ),
]


@pytest.mark.parametrize(("label", "build", "message"), CASES, ids=[c[0] for c in CASES])
def test_structural_errors(label: str, build: Callable[[AgentGraph], object], message: str) -> None:
    g = graph()
    build(g)
    with pytest.raises(ConfigError, match=message):
        g.compile()


def test_empty_graph() -> None:
    with pytest.raises(ConfigError, match="has no agents"):
        AgentGraph("empty", model=ScriptedLLM([])).compile()


def test_cycle_without_exit_needs_a_step_limit() -> None:
    g = graph(max_steps=None).set_entry("a").add_edge("a", "b").add_edge("b", "a").set_finish("c")
    with pytest.raises(ConfigError, match="cycle a -> b -> a has no conditional exit"):
        g.compile()
    # With a step limit the same cycle is allowed (the run ends at the limit).
    graph(max_steps=10).set_entry("a").add_edge("a", "b").add_edge("b", "a").set_finish(
        "c"
    ).compile()
    # With a conditional exit it is allowed without one.
    g = graph(max_steps=None).set_entry("a").add_edge("a", "b").set_finish("c")
    g.add_conditional_edges("b", lambda run: "a" if len(run.answers) < 3 else END, ["a", END])
    g.compile()


def test_tool_without_schema_fails_at_compile_naming_agent_and_tool() -> None:
    g = AgentGraph("g", model=ScriptedLLM([]))
    g.add_agent(Agent(name="a", tools=[opaque_tool])).set_entry("a").set_finish("a")
    with pytest.raises(
        ConfigError, match="agent 'a': tool 'opaque_tool': parameter 'y' has no type hint"
    ):
        g.compile()


def test_unknown_model_fails_at_compile() -> None:
    g = AgentGraph("g", model="no-such-model")
    g.add_agent(Agent(name="a")).set_entry("a").set_finish("a")
    with pytest.raises(ConfigError, match="unknown model 'no-such-model'"):
        g.compile()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "not an id"}, "must be an identifier"),
        ({"name": "a", "role": "Chief Planner"}, "must be a lowercase identifier"),
        ({"name": "a", "max_steps": 0}, "max_steps must be in 1..100"),
        ({"name": "a", "temperature": 3.0}, "temperature"),
        ({"name": "a", "context_budget": 0}, "context_budget"),
    ],
)
def test_bad_agent_definitions(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Agent(**kwargs)  # type: ignore[arg-type]


def test_reserved_tool_name_and_duplicates() -> None:
    def finish(x: str) -> str:
        """Clashes with the built-in action."""
        return x

    g = AgentGraph("g", model=ScriptedLLM([]))
    g.add_agent(Agent(name="a", tools=[finish])).set_entry("a").set_finish("a")
    with pytest.raises(ConfigError, match="'finish' is reserved"):
        g.compile()
    with pytest.raises(ConfigError, match="already added"):
        g.add_agent(Agent(name="a"))


def test_langgraph_is_reachable() -> None:
    g = graph().set_entry("a").add_edge("a", "b").add_edge("b", "c").set_finish("c")
    compiled = g.compile()
    nodes = set(compiled.langgraph.get_graph().nodes)
    assert {"a", "b", "c", "__start__", "__end__"} <= nodes
    assert compiled.state_graph.nodes.keys() == {"a", "b", "c"}
