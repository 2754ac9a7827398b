"""A ReAct step as a grammar: every reply is one thought line and one valid action.

Under this grammar (`llm.grammar`'s Lark dialect, decoded by the engine's token mask)
a reply cannot fail to parse:

    Thought: <one line>
    Action: <tool>[<argument>]     one of the allowed tools, argument as its schema says
    Action: finish[<answer>]       unless the tool policy still requires a call

A tool with one string parameter takes one line of text without ``]`` (``search[Eiffel
Tower]``), nor the ``<>`` of the placeholders the prompt shows (``search[<query>]``), or
one of its current ``choices`` when it has them (a game's admissible commands); any other
tool takes a JSON object under its
arguments schema (``add[{"a": 2, "b": 3}]``). With an output schema, the finish answer is
a JSON value under that schema.

Example:
    >>> print(react_grammar([], finish=True, thought=False))
    start: action
    action: finish
    finish: "finish[" ANSWER "]"
    ANSWER: /[^\\]\\n<>]{1,400}/
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from relaygraph.llm.grammar import json_rule

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.agents.tools import Tool

THOUGHT_CHARS = 400
"""Longest thought line; the action must still fit the step's token cap after it."""
ARGUMENT_CHARS = 200
ANSWER_CHARS = 400
_TEXT = "/[^\\]\\n<>]{{1,{}}}/"
"""A text argument: one line, no closing bracket, no placeholder brackets (the prompt
writes placeholders as ``<query>``, which small models would otherwise copy)."""


def react_grammar(
    tools: Sequence[Tool],
    *,
    finish: bool,
    thought: bool,
    output_schema: dict[str, Any] | None = None,
) -> str:
    """The Lark grammar of a step's reply after its prefill (``Thought:`` or ``Action:``).

    Args:
        tools: The tools the step may call.
        finish: Whether ``finish`` is allowed (a tool policy can require a call first).
        thought: Whether the reply starts with a thought line (after ``Thought:``).
        output_schema: JSON schema the finish answer must follow.

    Raises:
        ValueError: Neither a tool nor finish is allowed.
    """
    if not tools and not finish:
        raise ValueError("a step must allow at least one tool or finish")
    names = [f"tool_{i}" for i in range(len(tools))] + (["finish"] if finish else [])
    rules = [
        'start: THOUGHT "\\nAction: " action' if thought else "start: action",
        "action: " + " | ".join(names),
    ]
    if thought:
        rules.append(f"THOUGHT: /[^\\n]{{1,{THOUGHT_CHARS}}}/")
    for i, tool in enumerate(tools):
        opening = json.dumps(f"{tool.name}[")
        valid = list(tool.choices()) if tool.choices is not None else []
        if valid:
            options = " | ".join(json.dumps(v, ensure_ascii=False) for v in valid)
            rules.append(f'tool_{i}: {opening} ({options}) "]"')
        elif tool.takes_text:
            rules.append(f'tool_{i}: {opening} ARG_{i} "]"')
            rules.append(f"ARG_{i}: {_TEXT.format(ARGUMENT_CHARS)}")
        else:
            rules.append(
                f'tool_{i}: {opening} {json_rule(tool.args_model.model_json_schema())} "]"'
            )
    if finish:
        if output_schema is None:
            rules.append('finish: "finish[" ANSWER "]"')
            rules.append(f"ANSWER: {_TEXT.format(ANSWER_CHARS)}")
        else:
            rules.append(f'finish: "finish[" {json_rule(output_schema)} "]"')
    return "\n".join(rules)
