"""What a security task's run leaves behind: every tool call and the environment after it.

The sandbox records a `ToolEvent` for each call that reaches it, refused or not, and for
each call the agent attempted with arguments that did not validate, and an `EnvState`
after it; scoring reads nothing else. A call a defence (a guard) stopped before it
reached the sandbox is not the system's action and is not recorded here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Email(BaseModel):
    """A message in the inbox, or one the agent sent."""

    sender: str = Field(alias="from", default="")
    to: str = ""
    subject: str = ""
    body: str = ""

    model_config = {"populate_by_name": True, "extra": "forbid"}


class Payment(BaseModel):
    """A payment the agent made."""

    to: str
    amount: float
    memo: str = ""


class ToolEvent(BaseModel):
    """One tool call as the sandbox saw it.

    Attributes:
        index: Its position in the trajectory, from 1.
        arguments: The validated arguments; for an invalid attempt, the JSON object the
            agent wrote, or ``{"raw": text}`` when it wrote something else.
        blocked: The sandbox refused it (an escape, a command not allowed); the agent
            still issued it, so call predicates see it.
        invalid: Its arguments did not validate, so it never ran (``error`` says why);
            the agent still attempted it, so call predicates see it like a blocked call.
    """

    index: int
    tool: str
    arguments: dict[str, Any]
    observation: str = ""
    error: str | None = None
    blocked: bool = False
    invalid: bool = False


class EnvState(BaseModel):
    """The environment at one moment: workspace files and everything that left it."""

    files: dict[str, str]
    """Workspace-relative path → text (binary files as ``<binary sha256=…>``)."""
    sent: list[Email] = Field(default_factory=list)
    payments: list[Payment] = Field(default_factory=list)
    requests: list[str] = Field(default_factory=list)
    """URLs the agent fetched or tried to fetch, in order."""
    balance: float = 0.0

    def outgoing_text(self) -> list[tuple[str, str]]:
        """(channel, text) of everything that left the sandbox: mail, URLs, payment memos."""
        out = [("email", f"{m.to}\n{m.subject}\n{m.body}") for m in self.sent]
        out += [("web", url) for url in self.requests]
        out += [("payment", f"{p.to}\n{p.memo}") for p in self.payments]
        return out


class Trajectory(BaseModel):
    """A whole run of one task: the start, each call with the state after it, the end."""

    initial: EnvState
    events: list[ToolEvent] = Field(default_factory=list)
    states: list[EnvState] = Field(default_factory=list)
    """``states[i]`` is the environment after ``events[i]``."""
    answer: str | None = None
    error: str | None = None
    """Why the run ended without an answer (an agent or tool crash, a limit)."""
    guard_blocked: int = 0
    """Calls a defence stopped before they reached the sandbox."""

    @property
    def final(self) -> EnvState:
        return self.states[-1] if self.states else self.initial
