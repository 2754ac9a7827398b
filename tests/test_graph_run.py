"""Running graphs: control flow, errors as state, budgets, streaming, traces.

These tests drive the runtime with `ScriptedLLM` (given replies) so every branch is
deterministic; tests/test_graph_real_model.py runs the same machinery on SmolLM2.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from relaygraph.agents import Agent, StepRecord
from relaygraph.errors import ConfigError
from relaygraph.graph import END, AgentGraph, Budget, Limits, RunView, StepEvent, TokenEvent, Trace
from relaygraph.graph.results import ResultEvent
from relaygraph.llm.constraints import JsonSchemaFormat
from relaygraph.llm.scripted import ScriptedLLM

NOTES = {"paris": "Paris is the capital of France.", "seine": "The Seine flows through Paris."}


def search(query: str) -> str:
    """Search the notes."""
    return NOTES.get(query.lower(), "nothing found")


def broken(query: str) -> str:
    """Always raises."""
    raise OSError("index unavailable")


def research_graph(llm: ScriptedLLM, **kwargs: object) -> AgentGraph:
    g = AgentGraph("qa", model=llm, **kwargs)  # type: ignore[arg-type]
    g.add_agent(Agent(name="researcher", role="researcher", tools=[search, broken]))
    g.add_agent(Agent(name="solver", role="solver", answer_format="plain"))
    return g.add_edge("researcher", "solver").set_entry("researcher").set_finish("solver")


def test_two_agents_answer_with_a_tool() -> None:
    llm = ScriptedLLM(
        [
            "Thought: look up Paris\nAction: search[paris]",
            "Thought: found it\nAction: finish[Paris is the capital of France]",
            "Paris",
        ]
    )
    result = research_graph(llm).compile().invoke("What is the capital of France?")
    assert result.ok and result.answer == "Paris"
    assert result.answers == {"researcher": "Paris is the capital of France", "solver": "Paris"}
    steps = result.trace.steps
    assert [(s.agent, s.role) for s in steps] == [("researcher", "researcher")] * 2 + [
        ("solver", "solver")
    ]
    assert steps[0].action == {"type": "tool", "tool": "search", "arguments": "paris"}
    assert steps[0].observation == "Paris is the capital of France."
    assert steps[0].reason == "look up Paris"
    assert steps[0].output == "Thought: look up Paris\nAction: search[paris]"
    assert steps[0].prefill == "Thought:"
    # The solver saw the researcher's work through the (default) full-context policy.
    assert steps[2].context.items == ["0.0", "0.1", "0.2", "1.0", "1.1"]
    assert "[researcher/observation] Paris is the capital of France." in steps[2].prompt[-1].content
    assert [r.reason for r in result.trace.routes] == ["edge", "finish"]
    assert all(s.prompt_tokens > 0 and s.completion_tokens > 0 for s in steps)
    by_role = result.trace.by_role()
    assert by_role["researcher"].steps == 2 and by_role["solver"].steps == 1


def test_a_tool_that_raises_becomes_an_observation() -> None:
    llm = ScriptedLLM(
        [
            "Thought: try the index\nAction: broken[paris]",
            "Thought: use search\nAction: search[paris]",
            "Thought: ok\nAction: finish[Paris]",
            "Paris",
        ]
    )
    result = research_graph(llm).compile().invoke("Capital of France?")
    assert result.ok
    first = result.trace.steps[0]
    assert first.tool_error == "broken failed: OSError: index unavailable"
    assert first.observation == "Error: broken failed: OSError: index unavailable"


def test_unknown_tool_is_an_observation_listing_the_tools() -> None:
    llm = ScriptedLLM(["Thought: hm\nAction: google[paris]", "Thought: ok\nAction: finish[x]", "x"])
    result = research_graph(llm).compile().invoke("q")
    assert result.trace.steps[0].observation == (
        "Error: there is no action 'google'; use one of: search, broken, finish"
    )


def test_garbage_output_is_retried_then_ends_the_run_as_a_structured_error() -> None:
    llm = ScriptedLLM(lambda prompt: "I like turtles.")
    result = research_graph(llm).compile().invoke("q")
    assert not result.ok and result.answer is None
    assert (
        result.error is not None
        and result.error.kind == "parse"
        and result.error.agent == "researcher"
    )
    step = result.trace.steps[-1]
    assert step.parse_retries == 1
    # The retry told the model what was wrong.
    retry_prompt = llm.prompts[-1].messages[-1].content  # type: ignore[union-attr]
    assert "could not be used: could not read the action 'I like turtles.'" in retry_prompt


def test_guided_decoding_continues_a_thought_into_an_action() -> None:
    # First reply has no action: the step continues the same turn from "Action:".
    llm = ScriptedLLM(
        ["Thought: I know this one.", "Thought: I know this one.\nAction: finish[Paris]", "Paris"]
    )
    result = research_graph(llm).compile().invoke("q")
    assert result.ok
    step = result.trace.steps[0]
    assert step.output == "Thought: I know this one.\nAction: finish[Paris]"
    assert step.prefill == "Thought: I know this one.\nAction:"
    assert llm.prompts[1].prefill == "Thought: I know this one.\nAction:"  # type: ignore[union-attr]


def test_agent_step_limit_ends_the_run() -> None:
    llm = ScriptedLLM(lambda prompt: "Thought: again\nAction: search[paris]")
    result = research_graph(llm).compile().invoke("q")
    assert result.error is not None and result.error.kind == "step_limit"
    assert "step limit of 4 reached" in result.error.message
    assert len(result.trace.steps) == 5  # four steps, then the stop decision


def test_run_step_limit() -> None:
    llm = ScriptedLLM(lambda prompt: "Thought: again\nAction: search[paris]")
    result = research_graph(llm, max_steps=2).compile().invoke("q")
    assert result.error is not None and result.error.kind == "step_limit"
    assert "limit of 2 steps" in result.error.message


def test_budget_cuts_then_refuses_with_the_reason_in_the_trace() -> None:
    llm = ScriptedLLM(lambda prompt: "Thought: a b c d e f g h\nAction: search[paris]")
    budget = Budget(roles={"researcher": Limits(completion_tokens=12)})
    result = research_graph(llm, budget=budget).compile().invoke("q")
    steps = result.trace.steps
    # The agent asks for 192 tokens a step; the role has 12 in all.
    assert steps[0].budget.note == "cut to 12 tokens by the role researcher budget"
    assert steps[0].budget.verdict == "cut" and steps[1].budget.verdict == "refused"
    assert steps[0].completion_tokens == 10  # the whole scripted reply fit
    assert steps[1].budget.note.startswith("refused: role researcher leaves no completion tokens")
    assert result.error is not None and result.error.kind == "budget"
    assert result.error.message == steps[1].budget.note
    used = result.trace.by_role()["researcher"].completion_tokens
    assert used <= 12


def test_conditional_loop_planner_executor_critic() -> None:
    replies = iter(
        [
            "Thought: plan\nAction: finish[step 1: add numbers]",  # planner
            "Thought: do it\nAction: finish[3]",  # executor, round 1
            "Thought: wrong\nAction: finish[REVISE]",  # critic
            "Thought: redo\nAction: finish[4]",  # executor, round 2
            "Thought: right\nAction: finish[APPROVE]",  # critic
        ]
    )
    llm = ScriptedLLM(lambda prompt: next(replies))
    g = AgentGraph("loop", model=llm, max_steps=20)
    for name, role in (("planner", "planner"), ("executor", "executor"), ("critic", "critic")):
        g.add_agent(Agent(name=name, role=role))
    g.set_entry("planner").add_edge("planner", "executor").add_edge("executor", "critic")

    def verdict(run: RunView) -> str:
        return END if run.answer == "APPROVE" else "executor"

    g.add_conditional_edges("critic", verdict, ["executor", END])
    result = g.compile().invoke("What is 2 + 2?")
    assert result.ok and result.answers["executor"] == "4" and result.answer == "APPROVE"
    assert [s.agent for s in result.trace.steps] == [
        "planner",
        "executor",
        "critic",
        "executor",
        "critic",
    ]
    routes = [(r.source, r.reason) for r in result.trace.routes]
    assert routes == [
        ("planner", "edge"),
        ("executor", "edge"),
        ("critic", "condition -> executor"),
        ("executor", "edge"),
        ("critic", "condition -> __end__"),
    ]


def test_a_condition_returning_nonsense_is_a_routing_error() -> None:
    llm = ScriptedLLM(["Thought: x\nAction: finish[1]"])
    g = AgentGraph("g", model=llm)
    g.add_agent(Agent(name="a")).set_entry("a").add_conditional_edges("a", lambda run: "nowhere")
    result = g.compile().invoke("q")
    assert result.error is not None and result.error.kind == "routing"
    assert "returned 'nowhere'" in result.error.message


def test_output_schema() -> None:
    class Verdict(BaseModel):
        answer: str
        confidence: float

    llm = ScriptedLLM(
        [
            "Thought: x\nAction: finish[not json]",
            'Thought: x\nAction: finish[{"answer": "Paris", "confidence": 0.9}]',
        ]
    )
    g = AgentGraph("g", model=llm)
    g.add_agent(Agent(name="a", output_schema=Verdict)).set_entry("a").set_finish("a")
    result = g.compile().invoke("q")
    assert result.structured == {"a": {"answer": "Paris", "confidence": 0.9}}
    assert result.trace.steps[0].parse_retries == 1


def test_a_runs_answer_format_binds_the_finishing_agent_only() -> None:
    llm = ScriptedLLM(
        [
            "Thought: go\nAction: search[paris]",
            "Thought: ok\nAction: finish[Paris]",  # the researcher answers in free text
            '{"city": "Paris"}',  # ScriptedLLM refuses a reply that breaks the format
        ]
    )
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    result = (
        research_graph(llm)
        .compile()
        .invoke("q", answer_format=JsonSchemaFormat(json_schema=schema, name="city"))
    )
    assert result.ok, result.error
    assert result.answer == '{"city": "Paris"}'
    assert result.structured == {"solver": {"city": "Paris"}}
    assert result.answers["researcher"] == "Paris"


def test_an_answer_format_a_graph_cannot_follow_is_refused() -> None:
    graph = research_graph(ScriptedLLM([])).compile()
    array = JsonSchemaFormat(json_schema={"type": "array"})
    with pytest.raises(ConfigError, match="whose root is an object"):
        graph.invoke("q", answer_format=array)
    with pytest.raises(ConfigError, match="whose root is an object"):
        graph.stream("q", answer_format=array)


def test_stream_yields_steps_tokens_and_the_result() -> None:
    llm = ScriptedLLM(
        ["Thought: go\nAction: search[paris]", "Thought: ok\nAction: finish[P]", "Paris it is"]
    )
    events = list(research_graph(llm).compile().stream("q", tokens=True))
    steps = [e for e in events if isinstance(e, StepEvent)]
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert [e.record.agent for e in steps] == ["researcher", "researcher", "solver"]
    assert "".join(t.text for t in tokens if t.agent == "solver") == "Paris it is"
    assert isinstance(events[-1], ResultEvent) and events[-1].result.answer == "Paris it is"


def test_ainvoke() -> None:
    llm = ScriptedLLM(["Thought: ok\nAction: finish[P]", "Paris"])
    result = asyncio.run(research_graph(llm).compile().ainvoke("q"))
    assert result.answer == "Paris"


def test_empty_task_is_refused() -> None:
    with pytest.raises(ValueError, match="task is empty"):
        research_graph(ScriptedLLM([])).compile().invoke("  ")


def test_trace_round_trips_through_json(tmp_path: Path) -> None:
    llm = ScriptedLLM(
        ["Thought: go\nAction: search[paris]", "Thought: ok\nAction: finish[P]", "Paris"]
    )
    result = research_graph(llm).compile().invoke("q")
    path = result.trace.save(tmp_path / "traces" / "run.json")
    loaded = Trace.load(path)
    assert loaded == result.trace
    assert (
        json.loads(path.read_text())["steps"][0]["observation"] == "Paris is the capital of France."
    )
    (tmp_path / "bad.json").write_text('{"run_id": 1}')
    with pytest.raises(
        ValueError, match=r"trace .*bad\.json: run_id: Input should be a valid string"
    ):
        Trace.load(tmp_path / "bad.json")


def test_model_failure_is_a_structured_error() -> None:
    llm = ScriptedLLM([])  # runs out of replies: an LLMError on the first call
    result = research_graph(llm).compile().invoke("q")
    assert result.error is not None and result.error.kind == "model"
    assert "ran out of replies" in result.error.message


def test_a_run_can_restrict_the_agents_tools() -> None:
    llm = ScriptedLLM(["Thought: go\nAction: search[paris]", "Thought: ok\nAction: finish[P]", "P"])
    compiled = research_graph(llm).compile()
    result = compiled.invoke("q", tools=["broken"])  # search is not allowed in this run
    assert result.trace.steps[0].observation == (
        "Error: there is no action 'search'; use one of: broken, finish"
    )
    assert "search[" not in result.trace.steps[0].prompt[0].content
    with pytest.raises(ValueError, match="has no tool 'nope'"):
        compiled.invoke("q", tools=["nope"])


def test_a_trace_of_the_flat_layout_loads_into_sections() -> None:
    flat = {
        "step": 0,
        "agent": "a",
        "role": "solver",
        "turn_step": 0,
        "model": "smollm2-135m",
        "model_policy": "cascade",
        "model_reason": "smollm2-135m after 0 escalation(s)",
        "model_details": {
            "react_decoding": "grammar",
            "cascade": [{"model": "smollm2-135m", "decision": "accept"}],
        },
        "context_policy": "rcr",
        "context_items": ["0.0"],
        "context_tokens": 7,
        "reasoning_policy": "react",
        "reasoning_action": "act",
        "decoder": "direct",
        "decoding": {},
        "budget": "cut to 12 tokens by the run budget",
    }
    record = StepRecord.model_validate(flat)
    assert record.model.name == "smollm2-135m" and record.model.policy == "cascade"
    assert record.model.react_decoding == "grammar"
    assert record.model.cascade is not None and record.model.cascade[0].decision == "accept"
    assert record.model.policy_details == {}
    assert record.context.items == ["0.0"] and record.context.tokens == 7
    assert record.reasoning.action == "act" and record.decoding.decoder == "direct"
    assert record.budget.verdict == "cut" and record.budget.note.startswith("cut to 12")
    assert StepRecord.model_validate(record.model_dump(mode="json")) == record
