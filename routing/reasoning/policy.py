"""Reasoning policies: at each step, reason then act, act directly, or stop.

The default `ReActPolicy` always reasons before acting, until the agent's step limit.
A learned, resource-aware policy plugs in with the same interface
(`relaygraph.routing.reasoning.learned.PolicyReasoner`), and may also pick the step's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from relaygraph.llm.protocol import LLM

ReasoningAction: TypeAlias = Literal["reason_and_act", "act", "stop"]


@dataclass(frozen=True, slots=True)
class ReasoningState:
    """What a reasoning policy sees before a step.

    Attributes:
        agent: The agent about to act.
        role: Its role.
        step_in_turn: Steps this agent already took in its current turn.
        max_steps: The agent's step limit per turn.
        run_steps: Steps the whole run took so far.
        remaining_tokens: Tokens left in the tightest applicable budget (None: unlimited).
        remaining_s: Seconds left in the run's wall-time budget (None: unlimited).
        last_observation: The last tool result this agent saw, if any.
        last_error: The last error this agent hit (a bad tool call, a parse failure).
    """

    agent: str
    role: str
    step_in_turn: int
    max_steps: int
    run_steps: int
    remaining_tokens: int | None
    remaining_s: float | None
    last_observation: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class ReasoningDecision:
    """What to do at this step, and why (kept in the trace)."""

    action: ReasoningAction
    reason: str
    max_tokens: int | None = None
    """Cap on this step's completion tokens; None keeps the agent's setting."""
    model: LLM | None = None
    """The model this step runs on; None keeps the agent's own."""


@runtime_checkable
class ReasoningPolicy(Protocol):
    """Decides whether and how much an agent reasons at a step."""

    name: str

    def decide(self, state: ReasoningState) -> ReasoningDecision: ...


class ReActPolicy:
    """Reason, then act, at every step until the agent's step limit."""

    name = "react"

    def decide(self, state: ReasoningState) -> ReasoningDecision:
        if state.step_in_turn >= state.max_steps:
            return ReasoningDecision("stop", f"step limit of {state.max_steps} reached")
        return ReasoningDecision("reason_and_act", "default ReAct step")
