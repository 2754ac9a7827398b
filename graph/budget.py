"""Budgets per run and per role, enforced before every model call.

A step's prompt is counted with the answering model's tokenizer before it is sent. The
call is refused when the prompt alone would exceed a prompt-token, time or cost limit;
its completion is cut (``max_tokens`` lowered) to what the completion-token and cost
limits leave. Either way the reason lands in the step's trace record. Usage is summed
from the run's step records, so it survives a resume.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from relaygraph.llm.types import Usage

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence


class Limits(BaseModel):
    """Caps for one scope (the whole run, or one role); None means no cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int | None = Field(default=None, ge=0)
    """Prompt tokens summed over the scope's steps."""
    completion_tokens: int | None = Field(default=None, ge=0)
    """Completion tokens summed over the scope's steps."""
    time_s: float | None = Field(default=None, ge=0)
    """Seconds spent in the scope's steps (model calls and tools), summed across resumes."""
    cost: float | None = Field(default=None, ge=0)
    """Cost in the price table's currency."""


class Price(BaseModel):
    """Price of a model per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_per_mtok: float = Field(default=0.0, ge=0)
    """Price of one million prompt tokens."""
    completion_per_mtok: float = Field(default=0.0, ge=0)
    """Price of one million completion tokens."""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.prompt_per_mtok + completion_tokens * self.completion_per_mtok
        ) / 1e6


class Budget(BaseModel):
    """Limits for a run and for each role, and the price table that turns tokens into cost.

    Example:
        >>> Budget(run=Limits(completion_tokens=2000), roles={"planner": Limits(cost=0.01)},
        ...        prices={"gpt-x": Price(prompt_per_mtok=1.0, completion_per_mtok=4.0)}).run
        Limits(prompt_tokens=None, completion_tokens=2000, time_s=None, cost=None)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Limits = Field(default_factory=Limits)
    """Caps on the whole run."""
    roles: dict[str, Limits] = Field(default_factory=dict)
    """Caps per role."""
    prices: dict[str, Price] = Field(default_factory=dict)
    """Price per model name; a model missing from it costs 0."""

    def price(self, model: str) -> Price:
        return self.prices.get(model, Price())


class RunUsage(Usage):
    """What a scope of a run used: tokens (as a model call's `Usage` counts them), steps,
    seconds and cost. Usages add up (``a + b``)."""

    steps: int = 0
    latency_s: float = 0.0
    cost: float = 0.0

    def __add__(self, other: Usage) -> RunUsage:
        more = other if isinstance(other, RunUsage) else RunUsage(**other.model_dump())
        return RunUsage(
            steps=self.steps + more.steps,
            prompt_tokens=self.prompt_tokens + more.prompt_tokens,
            completion_tokens=self.completion_tokens + more.completion_tokens,
            latency_s=self.latency_s + more.latency_s,
            cost=self.cost + more.cost,
        )

    @classmethod
    def of(cls, records: Iterable[Mapping[str, Any]], role: str | None = None) -> RunUsage:
        """Summed usage of step records (dicts, as the run state holds them), of one role
        or all; each record is one step."""
        used = cls()
        for r in records:
            if role is None or r["role"] == role:
                used += cls(
                    steps=1,
                    prompt_tokens=r["prompt_tokens"],
                    completion_tokens=r["completion_tokens"],
                    latency_s=r["latency_s"],
                    cost=r["cost"],
                )
        return used


class BudgetLedger:
    """The budget of one run as its steps see it (implements the agents' `StepBudget`)."""

    def __init__(self, budget: Budget, records: Sequence[Mapping[str, Any]]) -> None:
        self._budget = budget
        self._records: list[Mapping[str, Any]] = list(records)

    def charge(
        self, role: str, model: str, prompt_tokens: int, completion_tokens: int, seconds: float
    ) -> None:
        """Count a call of the step in progress (a step may call the model several times)."""
        cost = self.cost(model, prompt_tokens, completion_tokens)
        self._records.append(
            {
                "role": role,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "latency_s": seconds,
                "cost": cost,
            }
        )

    def _scopes(self, role: str) -> list[tuple[str, Limits, RunUsage]]:
        scopes = [("run", self._budget.run, RunUsage.of(self._records))]
        if role in self._budget.roles:
            used = RunUsage.of(self._records, role)
            scopes.append((f"role {role}", self._budget.roles[role], used))
        return scopes

    def admit(self, role: str, model: str, prompt_tokens: int, max_tokens: int) -> tuple[int, str]:
        allowed, cuts = max_tokens, []
        price = self._budget.price(model)
        for scope, limits, used in self._scopes(role):
            cap, refusal = _scope_cap(scope, limits, used, prompt_tokens, price)
            if refusal:
                return 0, refusal
            if cap is not None and cap <= 0:
                return 0, f"refused: {scope} leaves no completion tokens"
            if cap is not None and cap < allowed:
                allowed = cap
                cuts.append(scope)
        if allowed < max_tokens:
            return allowed, f"cut to {allowed} tokens by the {' and '.join(cuts)} budget"
        return allowed, "ok"

    def remaining(self, role: str) -> tuple[int | None, float | None]:
        tokens: int | None = None
        seconds: float | None = None
        for _, limits, used in self._scopes(role):
            if limits.completion_tokens is not None:
                left = limits.completion_tokens - used.completion_tokens
                tokens = left if tokens is None else min(tokens, left)
            if limits.time_s is not None:
                left_s = limits.time_s - used.latency_s
                seconds = left_s if seconds is None else min(seconds, left_s)
        return tokens, seconds

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        return self._budget.price(model).cost(prompt_tokens, completion_tokens)


def _scope_cap(
    scope: str, limits: Limits, used: RunUsage, prompt_tokens: int, price: Price
) -> tuple[int | None, str | None]:
    """The completion tokens one scope still allows (None: no cap), or why it refuses."""
    if limits.time_s is not None and used.latency_s >= limits.time_s:
        return 0, f"refused: {scope} used {used.latency_s:.1f} s of {limits.time_s} s"
    if (
        limits.prompt_tokens is not None
        and used.prompt_tokens + prompt_tokens > limits.prompt_tokens
    ):
        return 0, (
            f"refused: {scope} prompt tokens {used.prompt_tokens} + {prompt_tokens} "
            f"> {limits.prompt_tokens}"
        )
    caps = []
    if limits.completion_tokens is not None:
        caps.append(limits.completion_tokens - used.completion_tokens)
    if limits.cost is not None:
        left = limits.cost - used.cost - price.cost(prompt_tokens, 0)
        if left < 0:
            return (
                0,
                f"refused: {scope} cost {used.cost:.6f} plus this prompt exceeds {limits.cost}",
            )
        if price.completion_per_mtok > 0:
            caps.append(math.floor(left * 1e6 / price.completion_per_mtok))
    return (min(caps) if caps else None), None
