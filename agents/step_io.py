"""What a step takes from the run and gives back: `StepInput`, `StepOutput`, the budget it
sees, and `fail_step` for the structured errors that end a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from relaygraph.agents.record import FailureKind, StepFailure, StepRecord
from relaygraph.routing.context import ContextItem

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.memory import MemoryScope


class StepBudget(Protocol):
    """The graph's budget, as a step sees it."""

    def admit(self, role: str, model: str, prompt_tokens: int, max_tokens: int) -> tuple[int, str]:
        """Completion tokens this call may use (0: refused) and why."""
        ...

    def remaining(self, role: str) -> tuple[int | None, float | None]:
        """Tokens and seconds left for this role (None: unlimited)."""
        ...

    def charge(
        self, role: str, model: str, prompt_tokens: int, completion_tokens: int, seconds: float
    ) -> None:
        """Count one model call of the step in progress."""
        ...


@dataclass(slots=True)
class StepInput:
    """What a step needs from the run."""

    task: str
    items: Sequence[ContextItem]
    run_step: int
    turn_step: int
    budget: StepBudget
    count_tokens: Callable[[str], int]
    """Tokens of a piece of text under the agent's model (memoised by the graph)."""
    on_token: Callable[[str], None] | None = None
    last_observation: str | None = None
    last_error: str | None = None
    memory: MemoryScope | None = None
    """The run's shared-memory scope, when the graph has a memory."""
    tool_calls_in_turn: int = 0
    """Tool calls this agent has made in its current turn (for its tool policy)."""


@dataclass(slots=True)
class StepOutput:
    """The step's effect on the run: new log items, the answer when it finished, its record."""

    record: StepRecord
    items: list[ContextItem] = field(default_factory=list)
    finished: bool = False
    answer: str | None = None
    structured: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        """The step ended the run with a structured error (``record.error``)."""
        return self.record.error is not None


def fail_step(record: StepRecord, kind: FailureKind, message: str) -> StepOutput:
    record.error = StepFailure(kind=kind, message=message)
    item = ContextItem(
        f"{record.step}.err", message, "error", record.agent, record.role, record.step
    )
    return StepOutput(record, [item], finished=True)
