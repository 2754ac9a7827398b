"""The REASON/ACT parser on the shapes small models actually produce."""

from __future__ import annotations

import pytest

from relaygraph.agents.react import FinalAnswer, ReActParseError, ToolCall, parse_react


@pytest.mark.parametrize(
    ("reply", "reason", "action"),
    [
        ("Thought: look it up\nAction: search[Paris]", "look it up", ToolCall("search", "Paris")),
        ("thought: x\naction: search(Paris)", "x", ToolCall("search", "Paris")),
        (
            "**Thought:** x\n**Action:** `search[Eiffel Tower]`",
            "x",
            ToolCall("search", "Eiffel Tower"),
        ),
        (
            'Reasoning: sum\nAction: add[{"a": 1, "b": 2}]',
            "sum",
            ToolCall("add", '{"a": 1, "b": 2}'),
        ),
        ("Thought: done\nAction: finish[Paris]", "done", FinalAnswer("Paris")),
        ("Thought: done\nAction: Finish[ Paris ]", "done", FinalAnswer("Paris")),
        ("Thought: ok\nFinal Answer: 42", "ok", FinalAnswer("42")),
        (
            "Thought: ok\nAction: search[Paris]\nObservation: Paris is big.\nThought: more",
            "ok",
            ToolCall("search", "Paris"),
        ),
        (
            "Thought: cut by a stop string\nAction: search[Paris",
            "cut by a stop string",
            ToolCall("search", "Paris"),
        ),
        ("Thought: a\nAction\uff1a search[x]", "a", ToolCall("search", "x")),
        ("Action: finish[no thought]", "", FinalAnswer("no thought")),
        (
            "Thought: multi\nline reasoning\nAction: lookup[term]",
            "multi\nline reasoning",
            ToolCall("lookup", "term"),
        ),
    ],
)
def test_variants_parse(reply: str, reason: str, action: ToolCall | FinalAnswer) -> None:
    step = parse_react(reply)
    assert step.reason == reason
    assert step.action == action
    assert step.raw == reply


@pytest.mark.parametrize(
    "reply",
    ["The Eiffel Tower is in Paris.", "Thought: only a thought", "Action: ???", ""],
)
def test_unparseable_replies_say_why(reply: str) -> None:
    with pytest.raises(ReActParseError, match=r"Action|action"):
        parse_react(reply)
