"""Fixed reasoning strategies, in the same `StepPolicy` interface as the learned one.

Each names one module of the action space to reason with (``module``) and falls back to
the cheapest choice, ``act``-like proposing (``cheap``), when its rule says not to.
`tuned_baselines` builds the standard set for an action space, each rule's knob chosen
on tuning episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError
from relaygraph.routing.reasoning.train import evaluate

if TYPE_CHECKING:
    from relaygraph.routing.reasoning.env import ReasoningEnv, StepPolicy
    from relaygraph.routing.reasoning.features import StepView
    from relaygraph.routing.reasoning.modules import ActionSpace


@dataclass(frozen=True, slots=True)
class Always:
    """The same module at every step (never reason: the proposing module)."""

    module: str

    @property
    def name(self) -> str:
        return f"always {self.module}"

    def choose(self, view: StepView) -> str:
        return self.module


@dataclass(frozen=True, slots=True)
class FixedSchedule:
    """Reason with ``module`` every ``every`` steps, from the first; act otherwise."""

    module: str
    cheap: str
    every: int = 2

    @property
    def name(self) -> str:
        return f"{self.module} every {self.every}"

    def choose(self, view: StepView) -> str:
        return self.module if view.step % self.every == 0 else self.cheap


@dataclass(frozen=True, slots=True)
class BudgetThreshold:
    """Reason with ``module`` while more than ``keep`` of the budget is left; act after."""

    module: str
    cheap: str
    keep: float = 0.5

    @property
    def name(self) -> str:
        return f"{self.module} while budget > {self.keep:.0%}"

    def choose(self, view: StepView) -> str:
        return self.module if view.budget_left > self.keep else self.cheap


@dataclass(frozen=True, slots=True)
class UncertaintyThreshold:
    """Reason with ``module`` when the executor's confidence is below ``below``."""

    module: str
    cheap: str
    below: float = 0.5

    @property
    def name(self) -> str:
        return f"{self.module} if confidence < {self.below:.2f}"

    def choose(self, view: StepView) -> str:
        if view.confidence is None:
            return self.module
        return self.module if view.confidence < self.below else self.cheap


def never_reason(space: ActionSpace) -> Always:
    """Always the first module that acts on the executor's proposal: the cheap default.

    Raises:
        ConfigError: The space has no such module.
    """
    cheap = next((m.name for m in space.modules if space.proposes(m)), None)
    if cheap is None:
        raise ConfigError("the baselines need a module that acts on the executor's proposal")
    return Always(cheap)


def tuned_baselines(tune: ReasoningEnv) -> list[StepPolicy]:
    """Always each module; and, reasoning with the strongest module (the space's last),
    a fixed schedule, a budget threshold and an uncertainty threshold, each with the
    knob that earns the most reward on ``tune``'s episodes.

    Raises:
        ConfigError: The space has no module that acts on the executor's proposal.
    """
    space = tune.space
    cheap = never_reason(space).module
    strong = space.modules[-1].name
    fixed: list[StepPolicy] = [Always(m.name) for m in space.modules]
    families: list[list[StepPolicy]] = [
        [FixedSchedule(strong, cheap, every) for every in (2, 3)],
        [BudgetThreshold(strong, cheap, keep) for keep in (0.25, 0.5, 0.75)],
        [UncertaintyThreshold(strong, cheap, below) for below in (0.3, 0.5, 0.7, 0.9)],
    ]
    return fixed + [max(f, key=lambda p: evaluate(p, tune)["reward"]) for f in families]
