"""Agents with structured steps: the step grammar, the tool policy, native tool calling,
LangChain tools, direct-return tools and schema-decoded answers.

Control flow runs on `ScriptedLLM`; every feature also runs on the real SmolLM2, and
native tool calling over a real relaygraph worker with the openai-format client.
"""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel

from relaygraph.agents import Agent, Tool
from relaygraph.agents.react import parse_react
from relaygraph.agents.react_grammar import react_grammar
from relaygraph.errors import ConfigError
from relaygraph.graph import AgentGraph
from relaygraph.llm import LocalLLM, OpenAICompatLLM
from relaygraph.llm.scripted import ScriptedLLM

CORPUS = {
    "Paris": "Paris is the capital of France. The Seine flows through Paris.",
    "Rome": "Rome is the capital of Italy. The Tiber flows through Rome.",
}
searched: list[str] = []


def search(query: str) -> str:
    """Look a city up in the notes."""
    searched.append(query)
    hits = [text for title, text in CORPUS.items() if title.lower() in query.lower()]
    return hits[0] if hits else f"No note on {query!r}."


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class City(BaseModel):
    name: str
    country: str


def one_agent(llm: object, **agent: object) -> AgentGraph:
    graph = AgentGraph("one", model=llm, max_steps=8)  # type: ignore[arg-type]
    graph.add_agent(Agent(name="worker", role="researcher", **agent))  # type: ignore[arg-type]
    return graph.set_entry("worker").set_finish("worker")


# -- the step grammar and the policy, without a model ----------------------------------


def test_step_grammar_lists_the_allowed_actions() -> None:
    tools = [Tool.from_function(search), Tool.from_function(add)]
    grammar = react_grammar(tools, finish=True, thought=True)
    assert grammar.startswith(
        'start: THOUGHT "\\nAction: " action\naction: tool_0 | tool_1 | finish'
    )
    assert 'tool_0: "search[" ARG_0 "]"' in grammar  # one string parameter: text
    assert 'tool_1: "add[" %json' in grammar  # several parameters: a JSON object
    required = react_grammar(tools[:1], finish=False, thought=False)
    assert "finish" not in required and required.startswith("start: action\naction: tool_0")
    answer = react_grammar([], finish=True, thought=False, output_schema=City.model_json_schema())
    assert 'finish: "finish[" %json' in answer
    with pytest.raises(ValueError, match="at least one tool or finish"):
        react_grammar([], finish=False, thought=True)


def test_choices_need_a_text_tool() -> None:
    with pytest.raises(ConfigError, match="choices need a tool of one string parameter"):
        Tool.from_function(add, choices=lambda: ["1"])


def test_tool_policies_are_checked_when_the_graph_is_built() -> None:
    with pytest.raises(ConfigError, match="'lookup' is not auto, required or one of its tools"):
        one_agent(ScriptedLLM([]), tools=[search], tool_choice="lookup").compile()
    with pytest.raises(ConfigError, match="'required' needs tools"):
        one_agent(ScriptedLLM([]), tool_choice="required").compile()
    with pytest.raises(ConfigError, match="leaves no step to finish"):
        Agent(name="a", tools=[search], tool_choice="required", min_tool_calls=4, max_steps=4)
    with pytest.raises(ConfigError, match="below the 2 calls"):
        Agent(name="a", tools=[search], tool_choice="required", min_tool_calls=2, max_tool_calls=1)


def test_a_required_call_comes_before_finish_even_from_a_model_that_skips_it() -> None:
    llm = ScriptedLLM(
        [
            "Thought: I know it.\nAction: finish[Seine]",  # refused: no search yet
            "Thought: look it up.\nAction: search[Paris]",
            "Thought: found it.\nAction: finish[Seine]",
        ]
    )
    graph = one_agent(llm, tools=[search], tool_choice="required", react_decoding="guided")
    result = graph.compile().invoke("Which river flows through Paris?")
    assert result.answer == "Seine"
    first, second = result.trace.steps
    assert first.parse_retries == 1 and first.action == {
        "type": "tool",
        "tool": "search",
        "arguments": "Paris",
    }
    assert "must call a tool (search) before you finish" in str(llm.prompts[1])
    assert second.action == {"type": "finish", "answer": "Seine"}


def test_max_tool_calls_then_finish() -> None:
    llm = ScriptedLLM(
        [
            "Thought: a.\nAction: search[Paris]",
            "Thought: again.\nAction: search[Rome]",  # refused: one call is the cap
            "Thought: done.\nAction: finish[Seine]",
        ]
    )
    graph = one_agent(llm, tools=[search], max_tool_calls=1, react_decoding="guided")
    result = graph.compile().invoke("Which river flows through Paris?")
    assert result.answer == "Seine"
    assert [s.action["type"] for s in result.trace.steps if s.action] == ["tool", "finish"]


def test_a_direct_return_tool_answers_for_the_agent() -> None:
    llm = ScriptedLLM(['Thought: add.\nAction: add[{"a": 2, "b": 40}]'])
    direct = Tool.from_function(add, return_direct=True)
    result = one_agent(llm, tools=[direct], react_decoding="guided").compile().invoke("2 + 40?")
    assert result.answer == "42" and len(result.trace.steps) == 1


def test_a_required_direct_return_tool_needs_no_finishing_step() -> None:
    direct = Tool.from_function(add, return_direct=True)
    llm = ScriptedLLM(['Thought: add.\nAction: add[{"a": 2, "b": 40}]'])
    graph = one_agent(llm, tools=[direct], tool_choice="add", max_steps=1, react_decoding="guided")
    assert graph.compile().invoke("2 + 40?").answer == "42"
    with pytest.raises(ConfigError, match="leaves no step to finish"):
        Agent(name="a", tools=[add], tool_choice="add", max_steps=1)  # add's output is not final


def test_langchain_tools_work_beside_functions() -> None:
    from langchain_core.tools import tool as lc_tool

    @lc_tool
    def capital(country: str) -> str:
        """The capital of a country."""
        return {"France": "Paris", "Italy": "Rome"}.get(country, "unknown")

    @lc_tool(return_direct=True)
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    converted = Tool.from_any(capital)
    assert converted.name == "capital" and converted.parameters == ["country"]
    assert converted.call("France") == "Paris"
    assert Tool.from_any(shout).return_direct
    llm = ScriptedLLM(
        [
            "Thought: ask.\nAction: capital[France]",
            "Thought: found.\nAction: search[Paris]",
            "Thought: done.\nAction: finish[Seine]",
        ]
    )
    result = (
        one_agent(llm, tools=[capital, search], react_decoding="guided")
        .compile()
        .invoke("Which river flows through the capital of France?")
    )
    assert result.answer == "Seine"
    assert result.trace.steps[0].observation == "Paris"


def test_native_tool_calling_records_the_same_fields() -> None:
    llm = ScriptedLLM(
        [
            '<tool_call>\n{"name": "search", "arguments": {"query": "Paris"}}\n</tool_call>',
            "The Seine.",
        ]
    )
    graph = one_agent(llm, tools=[search], tool_calling="native", tool_choice="required")
    result = graph.compile().invoke("Which river flows through Paris?")
    assert result.answer == "The Seine."
    call, answer = result.trace.steps
    assert call.action == {"type": "tool", "tool": "search", "arguments": '{"query": "Paris"}'}
    assert call.observation == CORPUS["Paris"]
    assert call.model.native_tools
    assert answer.action == {"type": "finish", "answer": "The Seine."}


# -- the real model --------------------------------------------------------------------


@pytest.mark.slow
def test_grammar_steps_always_parse_and_follow_the_policy(smollm2: LocalLLM) -> None:
    searched.clear()
    graph = one_agent(
        smollm2, tools=[search, add], tool_choice="search", max_tool_calls=1, max_tokens=48
    )
    for question in ("Which river flows through Paris?", "What is the capital of Italy?"):
        result = graph.compile().invoke(question)
        assert result.ok, result.error
        steps = result.trace.steps
        assert steps[0].action and steps[0].action["tool"] == "search"
        assert steps[-1].action and steps[-1].action["type"] == "finish"
        for step in steps:
            assert step.parse_retries == 0 and step.model.react_decoding == "grammar"
            parse_react(step.output)  # parses without help
    assert len(searched) == 2 and all(q.strip() for q in searched)


@pytest.mark.slow
def test_output_schema_answers_are_decoded_under_the_schema(smollm2: LocalLLM) -> None:
    for answer_format in ("react", "plain"):
        result = (
            one_agent(smollm2, output_schema=City, answer_format=answer_format, max_tokens=64)
            .compile()
            .invoke("Name a city and its country.")
        )
        assert result.ok, result.error
        assert City.model_validate(result.structured["worker"])


class Verdict(BaseModel):
    verdict: Literal["APPROVE", "REVISE"]


@pytest.mark.slow
def test_native_tool_calling_on_the_engine_and_over_a_worker(
    smollm2: LocalLLM, remote_smollm2: OpenAICompatLLM
) -> None:
    for llm in (smollm2, remote_smollm2):
        searched.clear()
        graph = one_agent(
            llm, tools=[search], tool_calling="native", tool_choice="required", max_tokens=48
        )
        result = graph.compile().invoke("Which river flows through Paris?")
        assert result.ok, result.error
        first = result.trace.steps[0]
        assert first.action and first.action["tool"] == "search"
        assert json.loads(first.action["arguments"])["query"] == searched[0]
        assert result.trace.steps[-1].action["type"] == "finish"  # type: ignore[index]
        assert result.answer


@pytest.mark.slow
def test_a_tool_with_choices_is_called_with_one_of_them(smollm2: LocalLLM) -> None:
    moves: list[str] = []

    def act(command: str) -> str:
        """Run one command in the house; returns what happens."""
        moves.append(command)
        return f"You {command}."

    valid = ["go to desk 1", "open drawer 2", "take apple 1 from table 1"]
    grammar = react_grammar(
        [Tool.from_function(act, choices=lambda: valid)], finish=True, thought=True
    )
    assert '"act[" ("go to desk 1" | "open drawer 2" | "take apple 1 from table 1") "]"' in grammar
    tool = Tool.from_function(act, choices=lambda: valid)
    graph = one_agent(smollm2, tools=[tool], tool_choice="act", max_tool_calls=2, max_tokens=48)
    result = graph.compile().invoke("Put an apple on the desk.")
    assert result.ok, result.error
    assert moves and all(move in valid for move in moves)


# -- scored choices ------------------------------------------------------------------------


def test_scored_choices_need_one_react_tool_with_choices() -> None:
    with_choices = Tool.from_function(search, choices=lambda: ["Paris", "Rome"])
    refused = [
        {"tools": []},
        {"tools": [search]},  # a function: no choices
        {"tools": [Tool.from_function(search)]},
        {"tools": [with_choices, add]},
        {"tools": [with_choices], "tool_calling": "native"},
    ]
    for settings in refused:
        with pytest.raises(ConfigError, match="choice_scoring='calibrated'") as caught:
            Agent(name="worker", choice_scoring="calibrated", **settings)  # type: ignore[arg-type]
        assert caught.value.parameter == "choice_scoring"
    with pytest.raises(ConfigError, match="choice_scoring must be one of decode, calibrated"):
        Agent(name="worker", tools=[with_choices], choice_scoring="best")  # type: ignore[arg-type]


@pytest.mark.slow
def test_scored_choices_follow_the_task_and_are_recorded(smollm2: LocalLLM) -> None:
    valid = ["go to desk 1", "open drawer 2", "take apple 1 from table 1"]
    for task, expected in [
        ("Take the apple 1 from the table 1.", "take apple 1 from table 1"),
        ("Open the drawer 2.", "open drawer 2"),
    ]:
        moves: list[str] = []

        def act(command: str) -> str:
            """Run one command in the house; returns what happens."""
            moves.append(command)  # noqa: B023 - each graph runs before the next is built
            return f"You {command}."

        tool = Tool.from_function(act, choices=lambda: valid)
        graph = one_agent(
            smollm2,
            tools=[tool],
            choice_scoring="calibrated",
            tool_choice="act",
            max_tool_calls=1,
            max_tokens=32,
        )
        result = graph.compile().invoke(task)
        assert moves == [expected], task
        step = result.trace.steps[0]
        assert step.model.choice_scores is not None and set(step.model.choice_scores) == set(valid)
        assert max(step.model.choice_scores, key=step.model.choice_scores.__getitem__) == expected
        assert step.output.endswith(f"\nAction: act[{expected}]")
        assert step.prompt_tokens > 0 and step.latency_s > 0


@pytest.mark.slow
def test_prior_scores_are_kept_per_model_and_charged_once(smollm2: LocalLLM) -> None:
    from relaygraph.agents.priors import prior_scores
    from relaygraph.llm.types import ChatPrompt, Message

    class Counting:
        """SmolLM2, counting its scoring calls."""

        def __init__(self) -> None:
            self.calls = 0

        def score(self, prompt: ChatPrompt, continuation: str) -> object:
            self.calls += 1
            return smollm2.score(prompt, continuation)

    model = Counting()
    prompt = ChatPrompt(messages=(Message(role="user", content="Task: "),), prefill="Action: act[")
    first = prior_scores(model, prompt, ["go to desk 1]", "open drawer 2]"])  # type: ignore[arg-type]
    again = prior_scores(model, prompt, ["open drawer 2]", "look]"])  # type: ignore[arg-type]
    assert model.calls == 3  # "open drawer 2]" was kept
    assert [new for _, new in first.values()] == [True, True]
    assert again["open drawer 2]"] == (first["open drawer 2]"][0], False)
    assert again["look]"][1] is True
    other = ChatPrompt(messages=prompt.messages, prefill="Action: go[")
    assert prior_scores(model, other, ["open drawer 2]"])["open drawer 2]"][1] is True  # type: ignore[arg-type]
    fresh = Counting()
    prior_scores(fresh, prompt, ["go to desk 1]"])  # type: ignore[arg-type]
    assert fresh.calls == 1  # kept per model, not shared between models


def test_scored_choices_on_a_model_that_cannot_score_fail_the_step_clearly() -> None:
    tool = Tool.from_function(search, choices=lambda: ["Paris", "Rome"])
    llm = ScriptedLLM(["Thought: look Paris up."])  # the thought; it cannot score
    graph = one_agent(llm, tools=[tool], choice_scoring="calibrated", max_tool_calls=1)
    result = graph.compile().invoke("Which river flows through Paris?")
    assert not result.ok and result.error is not None
    assert "choice_scoring='calibrated' needs a model that scores text" in result.error.message
