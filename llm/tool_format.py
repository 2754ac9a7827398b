"""How a model without native tool support is told about tools and writes its calls.

The embedded models' chat templates (SmolLM2's ChatML, Gemma's plain transcript) know
nothing of tools, so relaygraph uses one documented text convention, the Hermes /
Qwen one that many open chat models were trained on:

* the tools are listed in the system message, as JSON schemas inside ``<tools>``;
* a call is ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, one per call;
* an earlier assistant turn's calls are written back in that form, and a tool result
  is a user turn ``<tool_response>\\n...\\n</tool_response>``.

The grammar (`llm.grammar`) makes the model write calls exactly so; `ToolCallSplitter`
reads them back out of the generated text, also while it streams.

Example:
    >>> splitter = ToolCallSplitter()
    >>> splitter.feed('<tool_call>\\n{"name": "add", "arguments": {"a": 1}}\\n</tool_call>')
    ('', [ToolCall(id=..., name='add', arguments='{"a": 1}')])
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError
from relaygraph.llm.constraints import ToolCall, ToolSpec
from relaygraph.llm.types import ChatPrompt, Message

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.llm.types import GenerationParams, Prompt

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
RESPONSE_OPEN = "<tool_response>"
RESPONSE_CLOSE = "</tool_response>"


def tools_instruction(tools: Sequence[ToolSpec]) -> str:
    """The system-prompt block that lists the tools and shows how to call one."""
    listed = "\n".join(
        json.dumps(
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            },
            ensure_ascii=False,
        )
        for t in tools
    )
    return (
        "You can call functions. Their signatures are inside <tools></tools>:\n"
        f"<tools>\n{listed}\n</tools>\n"
        "To call a function, reply with its name and arguments as JSON inside "
        "<tool_call></tool_call>:\n"
        f'{CALL_OPEN}\n{{"name": "function name", "arguments": {{"argument": "value"}}}}\n'
        f"{CALL_CLOSE}"
    )


def call_text(call: ToolCall) -> str:
    """A call as the model writes it."""
    try:
        arguments = json.dumps(json.loads(call.arguments), ensure_ascii=False)
    except json.JSONDecodeError:  # a client's own broken history: keep it as given
        arguments = call.arguments
    body = f'{{"name": {json.dumps(call.name)}, "arguments": {arguments}}}'
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def messages_for_template(
    messages: Sequence[Message], tools: Sequence[ToolSpec]
) -> tuple[Message, ...]:
    """Rewrite a tool conversation into plain system/user/assistant turns.

    The tool list joins the first system message (or becomes one); assistant calls become
    their call text; tool results become user turns wrapped in ``<tool_response>``.
    Messages of a conversation without tools come back unchanged.
    """
    out: list[Message] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            text = "\n".join(call_text(c) for c in m.tool_calls)
            content = f"{m.content}\n{text}" if m.content else text
            out.append(Message(role="assistant", content=content))
        elif m.role == "tool":
            result = f"{RESPONSE_OPEN}\n{m.content}\n{RESPONSE_CLOSE}"
            out.append(Message(role="user", content=result))
        else:
            out.append(m)
    if tools:
        block = tools_instruction(tools)
        if out and out[0].role == "system":
            out[0] = Message(role="system", content=f"{out[0].content}\n\n{block}")
        else:
            out.insert(0, Message(role="system", content=block))
    return tuple(out)


def prompt_with_tools(prompt: Prompt, params: GenerationParams) -> Prompt:
    """The prompt as the model sees it in a tool conversation (`llm.tool_format`).

    The packaged templates have no tool support, so tools are listed in the system
    message and earlier calls and results are written in the model's call syntax. Tools
    under ``tool_choice="none"`` are not shown: the model may not call them.

    Raises:
        ConfigError: Tools with a prompt that is not chat messages.
    """
    shown = params.tools if params.calls_tools else ()
    if not isinstance(prompt, ChatPrompt):
        if shown:
            raise ConfigError(
                "tools need a chat prompt (messages), not raw text or token ids",
                parameter="tools",
            )
        return prompt
    if not shown and not any(m.tool_calls or m.role == "tool" for m in prompt.messages):
        return prompt
    messages = messages_for_template(prompt.messages, shown)
    return ChatPrompt(messages=messages, prefill=prompt.prefill)


class ToolCallSplitter:
    """Separates a reply's prose from its tool calls, incrementally.

    Invariant: text that could still turn out to open a call (a suffix that is a prefix
    of ``<tool_call>``) is held back, so streamed content never shows a partial marker.
    A call is returned once its closing marker arrives.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._in_call = False
        self.calls: list[ToolCall] = []
        self.content = ""

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        """Add generated text; return the content that is safe to show and new calls."""
        self._pending += text
        shown = ""
        made: list[ToolCall] = []
        while True:
            if self._in_call:
                end = self._pending.find(CALL_CLOSE)
                if end < 0:
                    break
                body = self._pending[:end]
                self._pending = self._pending[end + len(CALL_CLOSE) :]
                self._in_call = False
                call = _parse_call(body)
                if call is None:  # not a call after all: the model's text, shown as such
                    shown += f"{CALL_OPEN}{body}{CALL_CLOSE}"
                else:
                    made.append(call)
                continue
            start = self._pending.find(CALL_OPEN)
            if start >= 0:
                shown += self._visible(self._pending[:start], made)
                self._pending = self._pending[start + len(CALL_OPEN) :]
                self._in_call = True
                continue
            keep = _open_prefix_length(self._pending)
            shown += self._visible(self._pending[: len(self._pending) - keep], made)
            self._pending = self._pending[len(self._pending) - keep :]
            break
        self.content += shown
        self.calls.extend(made)
        return shown, made

    def finish(self) -> tuple[str, list[ToolCall]]:
        """Flush at the end of generation; an unclosed call stays text (it was cut short)."""
        rest = (CALL_OPEN if self._in_call else "") + self._pending
        self._pending, self._in_call = "", False
        shown = self._visible(rest, [])
        self.content += shown
        return shown, []

    def _visible(self, segment: str, made: list[ToolCall]) -> str:
        # The line breaks around calls are layout, not content.
        return "" if (self.calls or made) and not segment.strip() else segment


def _open_prefix_length(text: str) -> int:
    for length in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-length:]):
            return length
    return 0


def _parse_call(body: str) -> ToolCall | None:
    """The call a marked body holds, or None when it is not one (only an unconstrained
    writer, such as a remote model without a grammar, can produce that)."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", {})
    if not isinstance(arguments, dict):
        return None
    return ToolCall(name=data["name"], arguments=json.dumps(arguments, ensure_ascii=False))
