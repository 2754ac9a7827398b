"""Agent graphs served as chat models, through the official `openai` client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from pydantic import BaseModel

from relaygraph.agents import Agent
from relaygraph.graph import AgentGraph
from relaygraph.graph.loader import load_graph
from relaygraph.llm import LocalLLM
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.serving.server import BackgroundServer

pytestmark = pytest.mark.server


def lookup(key: str) -> str:
    """Look up a key."""
    return f"the value of {key} is 42"


def scripted_team() -> AgentGraph:
    def reply(prompt: object) -> str:
        text = str(prompt)
        if "You are solver" in text:
            return "42"
        if "/observation]" in text:
            return "Thought: found\nAction: finish[42]"
        return "Thought: look\nAction: lookup[x]"

    graph = AgentGraph("team", model=ScriptedLLM(reply))
    graph.add_agent(Agent(name="researcher", role="researcher", tools=[lookup]))
    graph.add_agent(Agent(name="solver", role="solver", answer_format="plain"))
    return graph.add_edge("researcher", "solver").set_entry("researcher").set_finish("solver")


def failing_graph() -> AgentGraph:
    graph = AgentGraph("broken", model=ScriptedLLM(lambda prompt: "gibberish"))
    return graph.add_agent(Agent(name="a")).set_entry("a").set_finish("a")


@pytest.fixture(scope="module")
def graph_server(smollm2: LocalLLM) -> Iterator[BackgroundServer]:
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "research_team.py"
    models = {
        "smollm2-135m": smollm2,
        "team": scripted_team().compile(),
        "broken": failing_graph().compile(),
        "research-team": load_graph(f"{example}:build").compile(),
    }
    with BackgroundServer(models) as server:
        yield server


@pytest.fixture(scope="module")
def client(graph_server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=graph_server.base_url, api_key="unused", max_retries=0)


MESSAGES = [{"role": "user", "content": "What is the value of x?"}]


def test_graphs_are_listed_as_models(client: openai.OpenAI) -> None:
    owners = {m.id: m.owned_by for m in client.models.list()}
    assert owners["team"] == "relaygraph-graph" and owners["smollm2-135m"] == "relaygraph"


def test_chat_with_a_graph(client: openai.OpenAI, graph_server: BackgroundServer) -> None:
    response = client.chat.completions.create(model="team", messages=MESSAGES)  # type: ignore[arg-type]
    assert response.choices[0].message.content == "42"
    extra = response.model_extra or {}
    trace_id = extra["relaygraph"]["trace_id"]
    trace = httpx.get(f"{graph_server.base_url}/traces/{trace_id}").json()
    assert [s["agent"] for s in trace["steps"]] == ["researcher", "researcher", "solver"]
    assert response.usage is not None
    assert response.usage.completion_tokens == sum(s["completion_tokens"] for s in trace["steps"])
    assert response.usage.prompt_tokens == sum(s["prompt_tokens"] for s in trace["steps"])


def test_streaming_a_graph(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="team",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = list(stream)
    events = [(c.model_extra or {}).get("relaygraph", {}).get("event") for c in chunks]
    assert events[0] == "start" and "step" in events and "token" in events and "result" in events
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "42"  # agents' tokens travel as events, not as the assistant's content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_graph_on_the_real_model(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="research-team",
        messages=[{"role": "user", "content": "Which river flows through London?"}],  # type: ignore[list-item]
    )
    assert response.choices[0].message.content
    assert response.usage is not None and response.usage.prompt_tokens > 100


def test_a_failing_graph_is_a_graph_error_with_its_trace(
    client: openai.OpenAI, graph_server: BackgroundServer
) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="broken", messages=MESSAGES)  # type: ignore[arg-type]
    error = info.value.body
    assert isinstance(error, dict) and error["type"] == "graph_error" and error["code"] == "parse"
    trace_id = error["message"].rsplit("trace ", 1)[1]
    assert (
        httpx.get(f"{graph_server.base_url}/traces/{trace_id}").json()["error"]["kind"] == "parse"
    )


def test_graph_only_answers_chat(graph_server: BackgroundServer) -> None:
    response = httpx.post(
        f"{graph_server.base_url}/completions", json={"model": "team", "prompt": "hi"}
    )
    assert response.status_code == 400 and "agent graph" in response.json()["error"]["message"]


def test_unknown_trace(graph_server: BackgroundServer) -> None:
    for trace_id in ("0" * 32, "../../etc/passwd"):
        response = httpx.get(f"{graph_server.base_url}/traces/{trace_id}")
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


def test_conversation_becomes_the_task(
    client: openai.OpenAI, graph_server: BackgroundServer
) -> None:
    messages = [
        {"role": "user", "content": "Remember x."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "What is the value of x?"},
    ]
    response = client.chat.completions.create(model="team", messages=messages)  # type: ignore[arg-type]
    trace_id = (response.model_extra or {})["relaygraph"]["trace_id"]
    task = httpx.get(f"{graph_server.base_url}/traces/{trace_id}").json()["task"]
    assert (
        task
        == "Conversation so far:\nuser: Remember x.\nassistant: Noted.\n\nWhat is the value of x?"
    )


def test_request_tools_choose_the_graphs_tools(
    client: openai.OpenAI, graph_server: BackgroundServer
) -> None:
    lookup_tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    ok = client.chat.completions.create(model="team", messages=MESSAGES, tools=[lookup_tool])  # type: ignore[arg-type,list-item]
    assert ok.choices[0].message.content == "42"
    # tool_choice none: the researcher's lookup is not available in this run.
    none = client.chat.completions.create(model="team", messages=MESSAGES, tool_choice="none")  # type: ignore[arg-type]
    trace_id = (none.model_extra or {})["relaygraph"]["trace_id"]
    first = httpx.get(f"{graph_server.base_url}/traces/{trace_id}").json()["steps"][0]
    assert first["observation"] == "Error: there is no action 'lookup'; use one of: finish"
    unknown = {"type": "function", "function": {"name": "launch_rockets"}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="team", messages=MESSAGES, tools=[unknown])  # type: ignore[arg-type,list-item]
    assert "has no tool 'launch_rockets'; its tools: ['lookup']" in str(info.value)


class River(BaseModel):
    river: str
    length_km: int | None


def test_a_response_format_binds_the_finishing_agents_answer(
    client: openai.OpenAI, graph_server: BackgroundServer
) -> None:
    question = [{"role": "user", "content": "Which river flows through London?"}]
    parsed = client.chat.completions.parse(
        model="research-team",
        messages=question,  # type: ignore[arg-type]
        response_format=River,
    )
    river = parsed.choices[0].message.parsed
    assert isinstance(river, River) and river.river
    trace_id = (parsed.model_extra or {})["relaygraph"]["trace_id"]
    steps = httpx.get(f"{graph_server.base_url}/traces/{trace_id}").json()["steps"]
    # Only the finishing agent is bound: the researcher still searched in ReAct.
    assert steps[0]["action"]["tool"] == "search" and steps[-1]["agent"] == "solver"

    stream = client.chat.completions.create(
        model="research-team",
        messages=question,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
        stream=True,
    )
    content = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(content), dict)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"structured_outputs": {"regex": "[a-z]+"}},
            "takes a json_schema or json_object format, not regex",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "xs", "schema": {"type": "array"}},
                }
            },
            "whose root is an object",
        ),
    ],
)
def test_a_format_a_graph_cannot_follow_is_a_400(
    graph_server: BackgroundServer, extra: dict[str, object], message: str
) -> None:
    body = {"model": "research-team", "messages": MESSAGES, **extra}
    response = httpx.post(f"{graph_server.base_url}/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"] and error["param"] == "response_format"
