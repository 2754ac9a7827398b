"""Typed tools: schemas from type hints or pydantic models; errors become observations."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from relaygraph.agents import Tool, ToolCallError, tool
from relaygraph.agents.tools import MAX_OBSERVATION_CHARS
from relaygraph.errors import ConfigError


def search(query: str, limit: int = 3) -> list[str]:
    """Search the notes for a query.

    Longer explanation that is not part of the description.
    """
    return [f"{query} #{i}" for i in range(limit)]


class Transfer(BaseModel):
    to: str
    amount: float


def pay(request: Transfer) -> str:
    """Send money."""
    return f"sent {request.amount} to {request.to}"


def test_schema_from_type_hints() -> None:
    t = Tool.from_function(search)
    assert t.name == "search" and t.description == "Search the notes for a query."
    schema = t.json_schema()["function"]["parameters"]
    assert schema["properties"]["query"]["type"] == "string"
    assert schema["properties"]["limit"]["default"] == 3
    assert schema["required"] == ["query"]
    assert t.signature() == 'search[{"query": …, "limit": …}]'


def test_call_with_json_and_single_argument() -> None:
    assert Tool.from_function(search).call('{"query": "Paris", "limit": 1}') == '["Paris #0"]'

    @tool
    def shout(text: str) -> str:
        """Upper-case text."""
        return text.upper()

    assert shout.signature() == "shout[<text>]"
    assert shout.call("hello there") == "HELLO THERE"
    assert shout.call('"quoted"') == "QUOTED"


def test_pydantic_model_tool() -> None:
    t = Tool.from_function(pay)
    assert t.takes_model and t.parameters == ["to", "amount"]
    assert t.call('{"to": "bob", "amount": 3}') == "sent 3.0 to bob"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"query": "x", "limit": "many"}', "invalid argument 'limit'"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not valid JSON|expects a JSON object"),
        ('{"limit": 2}', "invalid argument 'query'"),
    ],
)
def test_bad_arguments_are_tool_call_errors(raw: str, message: str) -> None:
    with pytest.raises(ToolCallError, match=message):
        Tool.from_function(search).call(raw)


def test_exceptions_inside_a_tool_are_reported_not_raised() -> None:
    @tool
    def explode(x: int) -> int:
        """Always fails."""
        raise RuntimeError("disk on fire")

    with pytest.raises(ToolCallError, match="explode failed: RuntimeError: disk on fire"):
        explode.call("1")


def test_long_results_are_cut() -> None:
    @tool(name="dump", description="Return a lot.")
    def dump(n: int) -> str:
        return "x" * n

    out = dump.call(str(MAX_OBSERVATION_CHARS + 500))
    assert out.endswith("[500 more characters cut]")


def no_hints(query):  # type: ignore[no-untyped-def]
    """Missing type hints."""
    return query


def star(*args: str) -> str:
    """Variadic."""
    return ""


def undocumented(x: int) -> int:
    return x


class Opaque:
    pass


def opaque(x: Opaque) -> str:
    """A type pydantic cannot describe."""
    return ""


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (no_hints, "parameter 'query' has no type hint"),
        (star, r"\*args cannot be described"),
        (undocumented, "has no description"),
        (opaque, "cannot be turned into a JSON schema"),
        (lambda x: x, "must be an identifier"),
    ],
)
def test_bad_signatures_are_refused(fn: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Tool.from_function(fn)
