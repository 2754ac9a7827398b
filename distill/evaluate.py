"""How close a student acts and reasons to its teacher, on held-out steps.

For each held-out example the student answers the exact prompt the teacher saw, started
the way the runtime starts a step (``Thought:``), greedily, stopping where the runtime
stops. Then:

- **ACT exact match**: the student's parsed action equals the teacher's (tool and
  argument, or the final answer; compared after collapsing whitespace and case);
- **REASON perplexity under the teacher**: how likely the teacher finds the student's
  REASON text after the same prompt (exp of the mean negative log-probability per token);
- **speed**: completion tokens per second of the student.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel
from rich.progress import track

from relaygraph.agents.react import FinalAnswer, ReActParseError, parse_react
from relaygraph.distill.spans import NoStructureError, find_spans
from relaygraph.llm.types import ChatPrompt, GenerationParams

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.distill.dataset import DistillExample
    from relaygraph.llm.protocol import LLM

STOPS = ("\nObservation:", "Observation:")
"""Where the runtime stops a step's reply (agents/step.py)."""


class StudentScores(BaseModel):
    """A student's agreement with its teacher on held-out steps."""

    model: str
    examples: int
    act_match: float
    parsed: float
    """Share of replies with a REASON/ACT structure at all."""
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


def score_student(
    student: LLM, teacher: LLM, examples: Sequence[DistillExample], *, max_tokens: int = 128
) -> StudentScores:
    """Run ``student`` on every example's prompt and compare with the teacher's reply."""
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0, stop=STOPS)
    matches = parsed = tokens = 0
    seconds = 0.0
    nll = 0.0
    reason_tokens = 0
    for example in track(examples, description=f"scoring {student.name}"):
        prompt = ChatPrompt(messages=tuple(example.messages), prefill="Thought:")
        began = time.perf_counter()
        completion = student.complete(prompt, params)
        seconds += time.perf_counter() - began
        tokens += completion.usage.completion_tokens
        reply = "Thought:" + completion.text
        key = action_key(reply)
        parsed += key is not None
        matches += key is not None and key == action_key(example.target)
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
        act_match=matches / n,
        parsed=parsed / n,
        reason_perplexity=math.exp(nll / reason_tokens) if reason_tokens else None,
        tokens_per_s=tokens / seconds if seconds else 0.0,
    )
