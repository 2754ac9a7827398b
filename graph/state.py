"""The run state LangGraph carries between steps (and checkpoints).

Values are plain JSON-compatible dicts and lists so any LangGraph checkpointer stores them
without custom serialisers; typed views (`ContextItem`, `StepRecord`) are rebuilt from
them where used. Lists grow by concatenation and dicts by key-wise merge, so agents that
run in the same super-step never overwrite each other.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


def merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Key-wise merge; the right side wins on a shared key."""
    return {**left, **right}


def latest(left: Any, right: Any) -> Any:
    """The newest value (for fields that agents in one super-step may both set)."""
    return right


class Turn(TypedDict):
    """An agent's current turn: steps taken and whether it has finished."""

    step: int
    finished: bool


class RunState(TypedDict):
    """Shared state of one run.

    Attributes:
        run_id: Identifier of the run (stable across resumes).
        task: The input the graph was invoked with.
        log: Every item agents wrote (thoughts, actions, observations, answers), as
            `ContextItem` dicts, oldest first.
        records: One `StepRecord` dict per step, in order.
        routes: Routing decisions taken when a turn ended.
        turns: Per agent, its current turn.
        next: Per agent, where the graph goes when its turn ends.
        answers: Per agent, its last answer.
        structured: Per agent, its last answer parsed into its output schema.
        answer: The last answer given by any agent (the run's result).
        error: The structured error that ended the run, if one did.
        allowed_tools: The tools agents may use in this run (None: all of their own).
        answer_format: The JSON schema format (dumped) that finishing agents' answers
            follow in this run (None: their own output schemas).
    """

    run_id: str
    task: str
    log: Annotated[list[dict[str, Any]], operator.add]
    records: Annotated[list[dict[str, Any]], operator.add]
    routes: Annotated[list[dict[str, Any]], operator.add]
    turns: Annotated[dict[str, Turn], merge]
    next: Annotated[dict[str, list[str]], merge]
    answers: Annotated[dict[str, str], merge]
    structured: Annotated[dict[str, dict[str, Any]], merge]
    answer: Annotated[str | None, latest]
    error: Annotated[dict[str, Any] | None, latest]
    allowed_tools: list[str] | None
    answer_format: dict[str, Any] | None


def initial_state(
    run_id: str,
    task: str,
    allowed_tools: list[str] | None = None,
    answer_format: dict[str, Any] | None = None,
) -> RunState:
    return RunState(
        run_id=run_id,
        task=task,
        log=[],
        records=[],
        routes=[],
        turns={},
        next={},
        answers={},
        structured={},
        answer=None,
        error=None,
        allowed_tools=allowed_tools,
        answer_format=answer_format,
    )
