"""Requests in OpenAI's wire format (chat messages, constraints, tools), and tool calls
both ways.

One place for the JSON shapes the client sends to workers and the server reads from
clients, so the two never drift apart:

* ``response_format``: OpenAI's ``{"type": "json_schema", "json_schema": {...}}`` and
  ``{"type": "json_object"}``; regex, choice and grammar go in vLLM's
  ``structured_outputs`` object (``{"regex": ...}``, ``{"choice": [...]}``,
  ``{"grammar": ...}``), which relaygraph's server reads too;
* ``tools`` / ``tool_choice`` / ``parallel_tool_calls``: OpenAI's function tools;
* tool calls in replies (``message.tool_calls``) and in streams (``delta.tool_calls``
  fragments, reassembled by `ToolCallDeltas`).

Example:
    >>> from relaygraph.llm.constraints import RegexFormat
    >>> format_fields(RegexFormat(pattern="[0-9]+"))
    {'structured_outputs': {'regex': '[0-9]+'}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaygraph.errors import LLMError
from relaygraph.llm.constraints import (
    ChoiceFormat,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    RegexFormat,
    ToolCall,
    new_call_id,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from relaygraph.llm.constraints import ResponseFormat, ToolSpec
    from relaygraph.llm.types import ChatPrompt, GenerationParams, Message


def format_fields(fmt: ResponseFormat) -> dict[str, Any]:
    """Request fields that carry a response format."""
    if isinstance(fmt, JsonSchemaFormat):
        schema = {"name": fmt.name, "schema": fmt.json_schema, "strict": fmt.strict}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    if isinstance(fmt, JsonObjectFormat):
        return {"response_format": {"type": "json_object"}}
    if isinstance(fmt, RegexFormat):
        return {"structured_outputs": {"regex": fmt.pattern}}
    if isinstance(fmt, ChoiceFormat):
        return {"structured_outputs": {"choice": list(fmt.choices)}}
    return {"structured_outputs": {"grammar": fmt.grammar}}


def tool_json(tool: ToolSpec) -> dict[str, Any]:
    """One entry of OpenAI's ``tools`` list."""
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    if tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def tool_fields(params: GenerationParams) -> dict[str, Any]:
    """Request fields that carry tools (none when the request has no tools)."""
    if not params.tools:
        return {}
    choice = params.tool_choice
    return {
        "tools": [tool_json(t) for t in params.tools],
        "tool_choice": (
            {"type": "function", "function": {"name": choice.name}}
            if isinstance(choice, NamedToolChoice)
            else choice
        ),
        "parallel_tool_calls": params.parallel_tool_calls,
    }


def call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    """A call as OpenAI writes it in ``tool_calls`` (with ``index`` in a stream)."""
    body: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    return body if index is None else {"index": index, **body}


def message_json(message: Message) -> dict[str, Any]:
    """A chat message in OpenAI's shape."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [call_json(c) for c in message.tool_calls]
        out["content"] = message.content or None
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def calls_from_json(raw: Sequence[Mapping[str, Any]] | None, *, source: str) -> list[ToolCall]:
    """Tool calls of a reply's ``message.tool_calls``.

    Raises:
        LLMError: An entry without a function name (``source`` says whose reply).
    """
    calls = []
    for entry in raw or ():
        function = entry.get("function") or {}
        if not isinstance(function.get("name"), str):
            raise LLMError(f"{source} returned a tool call without a function name: {entry}")
        arguments = function.get("arguments") or "{}"
        calls.append(
            ToolCall(
                id=entry.get("id") or new_call_id(),
                name=function["name"],
                arguments=arguments if isinstance(arguments, str) else str(arguments),
            )
        )
    return calls


class ToolCallDeltas:
    """Reassembles streamed ``delta.tool_calls`` fragments into whole calls.

    Fragments of one call share an ``index``; the first carries the id and name, later
    ones append to the arguments text.

    Example:
        >>> d = ToolCallDeltas()
        >>> d.feed([{"index": 0, "id": "c1", "function": {"name": "add", "arguments": '{"a"'}}])
        >>> d.feed([{"index": 0, "function": {"arguments": ': 1}'}}])
        >>> [(c.id, c.name, c.arguments) for c in d.finish(source="test")]
        [('c1', 'add', '{"a": 1}')]
    """

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, Any]] = {}

    def feed(self, fragments: Sequence[Mapping[str, Any]] | None) -> None:
        for fragment in fragments or ():
            index = int(fragment.get("index", len(self._parts)))
            part = self._parts.setdefault(index, {"id": None, "name": "", "arguments": ""})
            part["id"] = fragment.get("id") or part["id"]
            function = fragment.get("function") or {}
            part["name"] += function.get("name") or ""
            part["arguments"] += function.get("arguments") or ""

    def finish(self, *, source: str) -> list[ToolCall]:
        """The whole calls, in index order; the assembler is empty afterwards."""
        raw = [
            {"id": p["id"], "function": {"name": p["name"] or None, "arguments": p["arguments"]}}
            for _, p in sorted(self._parts.items())
        ]
        self._parts = {}
        return calls_from_json(raw, source=source)


def chat_fields(prompt: ChatPrompt) -> dict[str, Any]:
    """Messages, with a prefill sent as vLLM's ``continue_final_message``."""
    messages = [message_json(m) for m in prompt.messages]
    if not prompt.prefill:
        return {"messages": messages}
    messages.append({"role": "assistant", "content": prompt.prefill})
    return {"messages": messages, "continue_final_message": True, "add_generation_prompt": False}
