"""What a graph run gives back: its result, the events of a stream, and the view of
the run a condition routes on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from relaygraph.agents.record import StepRecord
from relaygraph.graph.trace import RunFailure, Trace

if TYPE_CHECKING:
    from relaygraph.routing.context import ContextItem


@dataclass(frozen=True, slots=True)
class RunView:
    """What a condition sees when an agent's turn ends.

    Attributes:
        task: The run's input.
        last_agent: The agent whose turn just ended.
        answer: That turn's answer (None if it gave none).
        answers: Every agent's last answer.
        structured: Answers parsed into agents' output schemas.
        log: Everything agents wrote so far, oldest first.
        steps: Steps taken so far.
    """

    task: str
    last_agent: str
    answer: str | None
    answers: dict[str, str]
    structured: dict[str, dict[str, Any]]
    log: list[ContextItem]
    steps: int


class RunResult(BaseModel):
    """The outcome of a run: its answer or structured error, and its trace."""

    thread_id: str
    answer: str | None
    answers: dict[str, str]
    structured: dict[str, dict[str, Any]]
    error: RunFailure | None
    trace: Trace

    @property
    def ok(self) -> bool:
        return self.error is None


class StepEvent(BaseModel):
    """Streamed after every agent step."""

    kind: Literal["step"] = "step"
    record: StepRecord


class TokenEvent(BaseModel):
    """Streamed for every text delta a model produces (``stream(..., tokens=True)``)."""

    kind: Literal["token"] = "token"
    agent: str
    text: str


class ResultEvent(BaseModel):
    """Streamed last."""

    kind: Literal["result"] = "result"
    result: RunResult


RunEvent = StepEvent | TokenEvent | ResultEvent
