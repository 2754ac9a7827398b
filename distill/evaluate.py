"""How close a student acts and reasons to its teacher, on held-out steps.

For each held-out example the student answers the exact prompt the teacher saw, greedily,
the way the runtime produces a step's reply (`agents.react.guided_reply`: ``Thought:``
first, and where that does not parse, the likeliest of the agent's action names and its
argument), so the teacher's own replies are reproduced. Then:

- **ACT exact match**: the student's parsed action equals the teacher's (tool and
  argument, or the final answer; compared after collapsing whitespace and case);
- **replies that parse before any guidance** (the share of free first attempts with a
  REASON/ACT structure): how much of the format the model has learned by itself;
- **REASON perplexity under the teacher**: how likely the teacher finds the student's
  REASON text after the same prompt (exp of the mean negative log-probability per token);
- **speed**: reply tokens per second of the student, guidance (action scoring) included.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel
from rich.progress import track

from relaygraph.agents.react import (
    FinalAnswer,
    ReActParseError,
    guided_reply,
    parse_react,
)
from relaygraph.distill.spans import NoStructureError, find_spans
from relaygraph.llm.types import ChatPrompt, GenerationParams

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from relaygraph.distill.dataset import DistillExample
    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import Message


class StudentScores(BaseModel):
    """A student's agreement with its teacher on held-out steps."""

    model: str
    examples: int
    act_match: float
    act_matches: list[bool]
    """Per example, in the order scored: whether the actions matched."""
    parsed: float
    """Share of first, unguided attempts with a REASON/ACT structure."""
    reason_perplexity: float | None
    """Over the replies that have a non-empty REASON span."""
    tokens_per_s: float


def action_key(reply: str) -> str | None:
    """The action of a reply, normalised for comparison; None if it has none."""
    try:
        action = parse_react(reply).action
    except ReActParseError:
        return None
    if isinstance(action, FinalAnswer):
        return "finish:" + " ".join(action.text.lower().split())
    return f"{action.tool.lower()}:{' '.join(action.arguments.lower().split())}"


def agent_actions(examples: Sequence[DistillExample]) -> dict[str, list[str]]:
    """Each agent's action names (its tools and ``finish``), as its teacher's replies use
    them: the candidates a guided step chooses among."""
    actions: dict[str, set[str]] = {}
    for example in examples:
        key = action_key(example.target)
        if key is not None:
            actions.setdefault(example.agent, {"finish"}).add(key.split(":", 1)[0])
    return {agent: sorted(names) for agent, names in actions.items()}


def runtime_reply(
    llm: LLM, messages: Sequence[Message], actions: Sequence[str], *, max_tokens: int
) -> tuple[str, bool]:
    """The reply a step of the runtime would get from ``llm`` (greedy), and whether its
    first, free attempt parsed."""
    free_parse = True

    def call(prefill: str, tokens: int, stop: tuple[str, ...]) -> str:
        prompt = ChatPrompt(messages=tuple(messages), prefill=prefill)
        params = GenerationParams(max_tokens=tokens, temperature=0.0, stop=stop)
        return llm.complete(prompt, params).text

    def choose(base: str) -> str:
        nonlocal free_parse
        free_parse = False
        prompt = ChatPrompt(messages=tuple(messages), prefill=base)
        return max(actions, key=lambda name: llm.score(prompt, f" {name}[").total_logprob)

    reply = guided_reply(call, choose, max_tokens=max_tokens)
    return reply, free_parse


def score_student(
    student: LLM,
    teacher: LLM,
    examples: Sequence[DistillExample],
    actions: Mapping[str, Sequence[str]],
    *,
    max_tokens: int = 128,
) -> StudentScores:
    """Run ``student`` on every example's prompt and compare with the teacher's reply.

    Args:
        actions: Each agent's action names (`agent_actions`).
        max_tokens: The cap of replies whose step did not record its own.
    """
    matches: list[bool] = []
    parsed = tokens = 0
    seconds = 0.0
    nll = 0.0
    reason_tokens = 0
    for example in track(examples, description=f"scoring {student.name}"):
        began = time.perf_counter()
        cap = example.max_tokens or max_tokens
        reply, free = runtime_reply(
            student, example.messages, actions[example.agent], max_tokens=cap
        )
        seconds += time.perf_counter() - began
        tokens += len(student.tokenize(reply))
        parsed += free
        key = action_key(reply)
        matches.append(key is not None and key == action_key(example.target))
        try:
            start, end = find_spans(reply).reason
        except NoStructureError:
            continue
        if end > start:
            scored = teacher.score(ChatPrompt(messages=tuple(example.messages)), reply[start:end])
            nll -= scored.total_logprob
            reason_tokens += len(scored.tokens)
    n = max(len(examples), 1)
    return StudentScores(
        model=student.name,
        examples=len(examples),
        act_match=sum(matches) / n,
        act_matches=matches,
        parsed=parsed / n,
        reason_perplexity=math.exp(nll / reason_tokens) if reason_tokens else None,
        tokens_per_s=tokens / seconds if seconds else 0.0,
    )
