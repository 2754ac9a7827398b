"""Structured outputs and tool calls through `relaygraph serve`, driven by the clients users
use: the official `openai` SDK, `langchain-openai` and the OpenAI Agents SDK, on the real
embedded models (SmolLM2 and Gemma)."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from relaygraph.serving.server import BackgroundServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

MODELS = ["smollm2-135m", "gemma3-270m"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def ask_weather(client: openai.OpenAI, **request: Any) -> Any:
    """The weather question to SmolLM2 with the weather tool, greedy; ``request`` adds to
    or overrides the fields."""
    fields = {
        "model": "smollm2-135m",
        "messages": ASK_WEATHER,
        "tools": [WEATHER],
        "max_tokens": 80,
        "temperature": 0,
    }
    return client.chat.completions.create(**(fields | request))


def _check_call(call: Any, tool: dict[str, Any]) -> dict[str, Any]:
    assert call.type == "function" and call.id
    assert call.function.name == tool["function"]["name"]
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, tool["function"]["parameters"])
    return dict(arguments)


@pytest.mark.parametrize("model", MODELS)
def test_required_tool_call_is_guaranteed(client: openai.OpenAI, model: str) -> None:
    response = client.chat.completions.create(
        model=model,
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER, ADD],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=80,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        tool = WEATHER if call.function.name == "get_weather" else ADD  # type: ignore[union-attr]
        _check_call(call, tool)


@pytest.mark.parametrize("model", MODELS)
def test_named_tool_is_the_one_called(client: openai.OpenAI, model: str) -> None:
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is 17 plus 25?"}],
        tools=[WEATHER, ADD],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "add"}},
        parallel_tool_calls=False,
        max_tokens=60,
        temperature=0,
    )
    (call,) = response.choices[0].message.tool_calls or []
    _check_call(call, ADD)


def test_auto_and_none(client: openai.OpenAI) -> None:
    auto = ask_weather(client, tool_choice="auto", max_tokens=60)
    choice = auto.choices[0]
    # The model decides; either way the reply is well formed.
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        _check_call(choice.message.tool_calls[0], WEATHER)
    else:
        assert choice.message.content and "<tool_call>" not in choice.message.content
    none = ask_weather(client, tool_choice="none", max_tokens=30)
    assert not none.choices[0].message.tool_calls
    assert none.choices[0].finish_reason in ("stop", "length")


def test_streamed_tool_calls_reassemble(client: openai.OpenAI) -> None:
    stream = ask_weather(client, tool_choice="required", stream=True)
    parts: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for fragment in delta.tool_calls or []:
            part = parts.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
            part["id"] += fragment.id or ""
            part["name"] += (fragment.function and fragment.function.name) or ""
            part["arguments"] += (fragment.function and fragment.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert parts and parts[0]["name"] == "get_weather" and parts[0]["id"]
    jsonschema.validate(json.loads(parts[0]["arguments"]), WEATHER["function"]["parameters"])
    # The same request unstreamed makes the same call (greedy).
    whole = ask_weather(client, tool_choice="required")
    assert whole.choices[0].message.tool_calls[0].function.arguments == parts[0]["arguments"]  # type: ignore[index]


def test_a_tool_result_turn_is_answered(client: openai.OpenAI) -> None:
    first = ask_weather(client, tool_choice="required", parallel_tool_calls=False, max_tokens=60)
    call = (first.choices[0].message.tool_calls or [])[0]
    history = [
        *ASK_WEATHER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees celsius."},
    ]
    second = ask_weather(client, messages=history, tool_choice="none", max_tokens=40)
    assert second.choices[0].message.content
    assert not second.choices[0].message.tool_calls


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_strict_validates(client: openai.OpenAI, model: str) -> None:
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
        max_tokens=120,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content or ""), PERSON)


def test_json_object(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Give a JSON object with a colour."}],
        response_format={"type": "json_object"},
        max_tokens=200,
        temperature=0,
    )
    choice = response.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content or ""), dict)
    else:  # cut by the budget: still a prefix of an object
        assert (choice.message.content or "").startswith("{")


class City(BaseModel):
    name: str
    country: str


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Name the capital of France and its country."}],
        response_format=City,
        max_tokens=60,
        temperature=0,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City)


def test_too_few_tokens_for_the_schema_is_length(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
        max_tokens=4,
        temperature=0,
    )
    assert response.choices[0].finish_reason == "length"


def test_regex_and_choice_through_structured_outputs(server: BackgroundServer) -> None:
    url = f"{server.base_url}/chat/completions"
    ask = [{"role": "user", "content": "Is Paris in France? Answer yes or no."}]
    choice = httpx.post(
        url,
        json={
            "model": "smollm2-135m",
            "messages": ask,
            "structured_outputs": {"choice": ["yes", "no"]},
            "temperature": 0,
        },
        timeout=60,
    ).json()
    assert choice["choices"][0]["message"]["content"] in ("yes", "no")
    regex = httpx.post(
        url,
        json={
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "What year did WW2 end?"}],
            "structured_outputs": {"regex": "[12][0-9]{3}"},
            "temperature": 0,
        },
        timeout=60,
    ).json()
    content = regex["choices"][0]["message"]["content"]
    assert len(content) == 4 and content.isdigit()


def test_text_completions_take_formats_too(server: BackgroundServer) -> None:
    response = httpx.post(
        f"{server.base_url}/completions",
        json={
            "model": "gemma3-270m",
            "prompt": "Q: Is Paris the capital of France?\nA:",
            "structured_outputs": {"choice": [" yes", " no"]},
            "temperature": 0,
        },
        timeout=60,
    ).json()
    assert response["choices"][0]["text"] in (" yes", " no")
    assert response["choices"][0]["finish_reason"] == "stop"


BAD_SCHEMA = {"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}
UNKNOWN_FORMAT = {"name": "n", "schema": {"type": "string", "format": "no-such-format"}}
NAMED_X = {"type": "function", "function": {"name": "x"}}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
            "not a valid JSON schema",
        ),
        ({"response_format": {"type": "json_schema"}}, "needs a json_schema"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"tools": [WEATHER], "tool_choice": NAMED_X}, "'x'"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": [BAD_SCHEMA]}, "not a valid JSON schema"),
        ({"guided_json": {"type": "object"}}, "structured_outputs"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "exactly one"),
        ({"structured_outputs": {"regex": "(unclosed"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": UNKNOWN_FORMAT}}, "format"),
    ],
)
def test_bad_constraints_are_400s_that_name_the_problem(
    server: BackgroundServer, body: dict[str, Any], problem: str
) -> None:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "smollm2-135m", "messages": ASK_WEATHER, "max_tokens": 8, **body},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert problem in response.json()["error"]["message"]


# -- langchain-openai and the OpenAI Agents SDK ----------------------------------------


def test_langchain_bind_tools_and_structured_output(server: BackgroundServer) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"Sunny in {city}"

    with httpx.Client() as http:
        chat = ChatOpenAI(
            model="smollm2-135m",
            base_url=server.base_url,
            api_key="unused",  # type: ignore[arg-type]
            temperature=0,
            max_tokens=80,  # type: ignore[call-arg]
            max_retries=0,
            http_client=http,
        )
        reply = chat.bind_tools([get_weather], tool_choice="any").invoke("Weather in Rome?")
        structured = chat.with_structured_output(City, method="json_schema").invoke(
            "Name the capital of Italy and its country."
        )
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert isinstance(reply.tool_calls[0]["args"]["city"], str)  # type: ignore[attr-defined]
    assert isinstance(structured, City)


def _openai_agents() -> Any:
    """The OpenAI Agents SDK's ``agents`` package.

    Tests run from the repository root, whose ``agents/`` folder (relaygraph's, imported
    as ``relaygraph.agents``) would shadow the SDK's top-level ``agents``; import the SDK
    without the root on the path.
    """
    root = Path(__file__).resolve().parents[1]
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    try:
        if "agents" in sys.modules and not hasattr(sys.modules["agents"], "Runner"):
            del sys.modules["agents"]
        return importlib.import_module("agents")
    finally:
        sys.path[:] = saved


def test_agents_sdk_runs_a_function_tool(server: BackgroundServer) -> None:
    sdk = _openai_agents()

    calls: list[str] = []

    @sdk.function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        calls.append(city)
        return f"It is sunny in {city}."

    async def run() -> Any:
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key="unused", max_retries=0
        ) as client:
            agent = sdk.Agent(
                name="weather",
                instructions="Answer with the weather.",
                tools=[get_weather],
                model=sdk.OpenAIChatCompletionsModel(model="smollm2-135m", openai_client=client),
                # The first turn must call the tool; the SDK then asks again with the result.
                model_settings=sdk.ModelSettings(
                    tool_choice="required", temperature=0, max_tokens=80
                ),
                reset_tool_choice=True,
            )
            return await sdk.Runner.run(
                agent,
                "What is the weather in Oslo?",
                run_config=sdk.RunConfig(tracing_disabled=True),
            )

    result = asyncio.run(run())
    assert calls, "the SDK never ran the tool"
    assert isinstance(result.final_output, str) and result.final_output
