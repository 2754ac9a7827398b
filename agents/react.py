"""The ReAct step format: a REASON part and an ACT part, parsed robustly from small models.

The model is asked for::

    Thought: <reasoning>
    Action: <tool>[<argument>]        or   Action: finish[<answer>]

Small models drift from any format, so the parser accepts the common variants: labels
in any case, with markdown emphasis, ``Reason:``/``Reasoning:`` for the thought,
``Final Answer: …`` for finishing, ``tool(arg)`` for ``tool[arg]``, backticks, and text
after a hallucinated ``Observation:`` (which is cut). What it cannot read raises
`ReActParseError` with the reason, which the agent gets back in a retry. `guided_reply`
produces a reply in the format even where a model's free reply cannot be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from relaygraph.errors import RelayGraphError

if TYPE_CHECKING:
    from collections.abc import Callable

F = TypeVar("F")
"""What a failed model operation returns instead of text (the runtime's failed step)."""

FINISH = "finish"
_FINISH_NAMES = {"finish", "final_answer", "answer", "final"}

# Labels as small models write them: "Action:", "**Action:**", "- action :", and the
# full-width colon some tokenizers prefer.
_LABEL = r"^[ \t>*_#`-]*{}[ \t*_`]*[:\uff1a][*_]*"
_THOUGHT = re.compile(_LABEL.format(r"(?:thought|reason(?:ing)?)"), re.IGNORECASE | re.MULTILINE)
_ACTION = re.compile(_LABEL.format(r"(?:action|act)"), re.IGNORECASE | re.MULTILINE)
_FINAL = re.compile(_LABEL.format(r"final[ _]answer"), re.IGNORECASE | re.MULTILINE)
_OBSERVATION = re.compile(_LABEL.format(r"observation"), re.IGNORECASE | re.MULTILINE)
# name[args] or name(args); a closing bracket cut off by a stop string is tolerated.
_CALL = re.compile(r"^`*\s*([A-Za-z_][\w-]*)\s*[\[(](.*?)[\])]?\s*`*\s*\.?$", re.DOTALL)


class ReActParseError(RelayGraphError, ValueError):
    """A reply that does not follow the REASON/ACT format; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """ACT: call a tool with raw argument text (validated by the tool)."""

    tool: str
    arguments: str


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """ACT: finish with an answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ReActStep:
    """One parsed reply: the reasoning and the action, with the text they came from."""

    reason: str
    action: ToolCall | FinalAnswer
    raw: str


def parse_react(reply: str) -> ReActStep:
    """Split a model reply into REASON and ACT.

    Example:
        >>> step = parse_react("Thought: I should look it up.\\nAction: search[Paris]")
        >>> step.reason, step.action
        ('I should look it up.', ToolCall(tool='search', arguments='Paris'))
        >>> parse_react("**Final Answer:** 42").action
        FinalAnswer(text='42')

    Raises:
        ReActParseError: No action and no final answer could be found.
    """
    text, _, first = _locate(reply)
    reason = text[: first.start()]
    if thought := _THOUGHT.search(reason):
        reason = reason[thought.end() :]
    body = text[first.end() :].strip()
    if first.re is _FINAL:
        return ReActStep(reason.strip(), FinalAnswer(_first_paragraph(body)), reply)
    call = _CALL.match(body.split("\n\n")[0].strip())
    if call is None:
        raise ReActParseError(
            f"could not read the action {body[:80]!r}; write it as <tool>[<argument>], "
            "e.g. search[Eiffel Tower] or finish[Paris]"
        )
    tool, arguments = call.group(1), call.group(2).strip()
    if tool.lower() in _FINISH_NAMES:
        return ReActStep(reason.strip(), FinalAnswer(arguments.strip()), reply)
    return ReActStep(reason.strip(), ToolCall(tool, arguments), reply)


def reason_act_spans(reply: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Character spans ``[start, end)`` of REASON and ACT in ``reply``.

    ACT runs from the action label (``Action:``, ``Final Answer:``) to the end of the
    paragraph the action is read from; REASON is everything before it, trailing
    whitespace off. What follows (a newline, a hallucinated observation) is neither.

    Example:
        >>> reason_act_spans("Thought: look it up.\\nAction: search[Paris]\\n")
        ((0, 20), (21, 42))

    Raises:
        ReActParseError: As `parse_react`: the reply has no action it can read.
    """
    parse_react(reply)
    text, offset, label = _locate(reply)
    matched = label.group()
    start = offset + label.start() + len(matched) - len(matched.lstrip())
    after = text[label.end() :]
    body = after.lstrip()
    end = offset + label.end() + len(after) - len(body) + len(body.split("\n\n")[0].rstrip())
    return (0, len(reply[:start].rstrip())), (start, end)


def _locate(reply: str) -> tuple[str, int, re.Match[str]]:
    """The reply stripped and cut before a hallucinated observation, where that text
    starts in the reply, and its first action label.

    Raises:
        ReActParseError: No action label.
    """
    text = reply.strip()
    offset = len(reply) - len(reply.lstrip())
    if observed := _OBSERVATION.search(text):
        text = text[: observed.start()].rstrip()
    labels = [m for m in (_ACTION.search(text), _FINAL.search(text)) if m]
    if not labels:
        raise ReActParseError(
            "no 'Action:' line found; end your reply with 'Action: <tool>[<argument>]' "
            "or 'Action: finish[<answer>]'"
        )
    return text, offset, min(labels, key=lambda m: m.start())


def _first_paragraph(text: str) -> str:
    return text.strip().split("\n\n")[0].strip()


REPLY_STOPS = ("\nObservation:", "Observation:")
"""Where a step's reply ends: the environment, not the model, writes observations."""
ACTION_TOKENS = 64
"""Room for the action line (or a constrained action's argument) after the thought."""


def guided_reply(
    call: Callable[[str, int, tuple[str, ...]], str | F],
    choose: Callable[[str], str | F | None],
    *,
    max_tokens: int,
    act_only: bool = False,
) -> str | F:
    """A REASON/ACT reply, even from a model whose free reply cannot be parsed.

    1. The reply is prefilled with ``Thought:`` (``Action:`` when ``act_only``); a reply
       that parses is used as is: one call per step for a capable model.
    2. Otherwise the first line is kept as the thought, ``choose`` picks the action name
       after ``Thought: <thought>\\nAction:`` (scoring each one), and only its argument is
       generated, up to ``]``.
    3. When ``choose`` cannot score (None), the reply continues from ``Action:`` freely.

    Args:
        call: ``(prefill, max_tokens, stop)`` → the model's continuation of the reply
            after ``prefill``, or a failure, which ends the reply and is returned.
        choose: ``base`` → the likeliest action name after it, a failure, or None.
        max_tokens: For the first, free part.
        act_only: Start from ``Action:`` (no explicit reasoning).
    """
    head = "Action:" if act_only else "Thought:"
    first = call(head, max_tokens, REPLY_STOPS)
    if not isinstance(first, str):
        return first
    text = head + first
    try:
        parse_react(text)
        return text
    except ReActParseError:
        pass
    base = "Action:" if act_only else f"Thought: {first.strip().split(chr(10))[0]}\nAction:"
    choice = choose(base)
    if choice is None:
        rest = call(base, ACTION_TOKENS, ("\n", *REPLY_STOPS))
        return base + rest if isinstance(rest, str) else rest
    if not isinstance(choice, str):
        return choice
    prefill = f"{base} {choice}["
    argument = call(prefill, ACTION_TOKENS, ("]", "\n"))
    return f"{prefill}{argument}]" if isinstance(argument, str) else argument
