"""Constraint types, grammar writing, tool-call syntax and the wire format: pure functions."""

from __future__ import annotations

import json

import pytest

from relaygraph.errors import ConfigError
from relaygraph.llm import GenerationParams, Message
from relaygraph.llm.constraints import (
    ChoiceFormat,
    GrammarFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    RegexFormat,
    ToolCall,
    ToolSpec,
)
from relaygraph.llm.grammar import SAFE_INTEGER, closed, grammar_for
from relaygraph.llm.openai_wire import (
    ToolCallDeltas,
    format_fields,
    message_json,
    tool_fields,
)
from relaygraph.llm.tool_format import (
    CALL_OPEN,
    ToolCallSplitter,
    call_text,
    messages_for_template,
)

ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
ECHO = ToolSpec(name="echo", parameters={"type": "object", "properties": {"text": {}}})
CALL = f'{CALL_OPEN}\n{{"name": "add", "arguments": {{"a": 1, "b": 2}}}}\n</tool_call>'


def test_params_check_the_tool_choice_against_the_tools() -> None:
    with pytest.raises(ValueError, match="'sub', which is not among the tools"):
        GenerationParams(tools=(ADD,), tool_choice=NamedToolChoice(name="sub"))
    with pytest.raises(ValueError, match="needs at least one tool"):
        GenerationParams(tool_choice="required")
    with pytest.raises(ValueError, match="share a name"):
        GenerationParams(tools=(ADD, ADD))
    wire = GenerationParams(
        tools=(ADD,), tool_choice={"type": "function", "function": {"name": "add"}}
    )  # type: ignore[arg-type]
    assert wire.tool_choice == NamedToolChoice(name="add")
    assert not GenerationParams(tools=(ADD,), tool_choice="none").calls_tools
    assert GenerationParams(response_format=ChoiceFormat(choices=("a",))).constrained


def test_messages_check_their_tool_fields() -> None:
    with pytest.raises(ValueError, match="only assistant"):
        Message(role="user", content="x", tool_calls=(ToolCall(name="add", arguments="{}"),))
    with pytest.raises(ValueError, match="only tool messages"):
        Message(role="user", content="x", tool_call_id="c1")
    calling = Message.model_validate(
        {"role": "assistant", "content": None, "tool_calls": [{"name": "add", "arguments": "{}"}]}
    )
    assert calling.content == ""
    with pytest.raises(ValueError, match="content is required"):
        Message.model_validate({"role": "user"})


def test_closed_schemas_allow_only_declared_properties_and_safe_integers() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0},
            "inner": {"type": "object", "properties": {"x": {"type": "string"}}},
            "open": {"type": "object", "properties": {}, "additionalProperties": True},
        },
    }
    out = closed(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["inner"]["additionalProperties"] is False
    assert out["properties"]["open"]["additionalProperties"] is True
    assert out["properties"]["n"] == {"type": "integer", "minimum": 0, "maximum": SAFE_INTEGER}
    assert "additionalProperties" not in schema  # the caller's schema is left alone


def test_grammars_for_each_kind_of_request() -> None:
    assert grammar_for(GenerationParams()) is None
    assert grammar_for(GenerationParams(tools=(ADD,), tool_choice="none")) is None
    choice = grammar_for(GenerationParams(response_format=ChoiceFormat(choices=('say "hi"', "no"))))
    assert choice == 'start: content\ncontent: "say \\"hi\\"" | "no"'
    lark = "start: /[0-9]+/"
    assert grammar_for(GenerationParams(response_format=GrammarFormat(grammar=lark))) == lark
    gbnf = grammar_for(
        GenerationParams(response_format=GrammarFormat(grammar='root ::= "a" | "b"', syntax="gbnf"))
    )
    assert gbnf is not None and "start" in gbnf
    required = grammar_for(GenerationParams(tools=(ADD, ECHO), tool_choice="required"))
    assert required is not None and required.startswith("start: calls\n")
    assert '"name\\": \\"add\\"' in required and '"name\\": \\"echo\\"' in required
    named = grammar_for(
        GenerationParams(tools=(ADD, ECHO), tool_choice=NamedToolChoice(name="echo"))
    )
    assert named is not None and '\\"add\\"' not in named
    single = grammar_for(
        GenerationParams(tools=(ADD,), tool_choice="required", parallel_tool_calls=False)
    )
    assert single is not None and "calls: call\n" in single
    auto = grammar_for(GenerationParams(tools=(ADD,)), turn_end="\nUser:")
    assert auto is not None and auto.startswith('start: content | calls "\\nUser:"?')
    with pytest.raises(ConfigError, match="cannot be combined with tools"):
        grammar_for(GenerationParams(tools=(ADD,), response_format=GrammarFormat(grammar=lark)))


def test_the_splitter_streams_content_and_calls_in_any_pieces() -> None:
    reply = f"Let me add.\n{CALL}\n{CALL}"
    whole = ToolCallSplitter()
    content, calls = whole.feed(reply)
    rest, more = whole.finish()
    assert content + rest == "Let me add.\n" and len(calls + more) == 2
    pieces = ToolCallSplitter()
    shown = ""
    for char in reply:
        text, _ = pieces.feed(char)
        assert "<" not in text  # a marker is never shown in part
        shown += text
    shown += pieces.finish()[0]
    assert shown == "Let me add.\n"
    assert [c.parsed_arguments() for c in pieces.calls] == [{"a": 1, "b": 2}] * 2


def test_a_marked_body_that_is_not_a_call_stays_text() -> None:
    splitter = ToolCallSplitter()
    text, calls = splitter.feed(f"{CALL_OPEN}not json</tool_call>")
    assert calls == [] and text == f"{CALL_OPEN}not json</tool_call>"
    cut = ToolCallSplitter()
    cut.feed(f'{CALL_OPEN}\n{{"name": "add"')
    assert cut.finish() == (f'{CALL_OPEN}\n{{"name": "add"', [])


def test_tool_turns_are_rewritten_for_a_template_without_tools() -> None:
    call = ToolCall(id="c1", name="add", arguments='{"a":1,"b":2}')
    messages = messages_for_template(
        [
            Message(role="system", content="Be brief."),
            Message(role="user", content="1+2?"),
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", content="3", tool_call_id="c1"),
        ],
        [ADD],
    )
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].content.startswith("Be brief.\n\nYou can call functions.")
    assert '"name": "add"' in messages[0].content
    assert messages[2].content == call_text(call) == CALL
    assert messages[3].content == "<tool_response>\n3\n</tool_response>"


def test_wire_format_both_ways() -> None:
    assert format_fields(JsonSchemaFormat(json_schema={"type": "object"}, name="x")) == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
        }
    }
    assert format_fields(RegexFormat(pattern="a+")) == {"structured_outputs": {"regex": "a+"}}
    fields = tool_fields(GenerationParams(tools=(ADD,), tool_choice=NamedToolChoice(name="add")))
    assert fields["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert fields["tools"][0]["function"]["parameters"] == ADD.parameters
    call = ToolCall(id="c1", name="add", arguments="{}")
    assert message_json(Message(role="assistant", tool_calls=(call,)))["content"] is None
    deltas = ToolCallDeltas()
    deltas.feed([{"index": 1, "id": "b", "function": {"name": "echo", "arguments": "{}"}}])
    deltas.feed([{"index": 0, "id": "a", "function": {"name": "add", "arguments": '{"a": '}}])
    deltas.feed([{"index": 0, "function": {"arguments": "1}"}}])
    made = deltas.finish(source="test")
    assert [(c.id, c.name, json.loads(c.arguments)) for c in made] == [
        ("a", "add", {"a": 1}),
        ("b", "echo", {}),
    ]
