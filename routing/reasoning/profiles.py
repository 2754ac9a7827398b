"""Resource profiles: what a module's model work costs in seconds on one deployment.

Recorded states keep each model invocation's tokens (`Work`); a profile prices them:
``rtt_s + calls * base_s + prompt_tokens * prompt_s + completion_tokens * completion_s`` with
the coefficients of the module that did the work (``executor`` prices the probe). So
one recording replays under any deployment. ``this-cpu`` is fitted by least squares to
the recorded calls' measured seconds (`fit_profile`); the others are stated assumptions.

Example:
    >>> from relaygraph.routing.reasoning.record import Work
    >>> profile = load_profile("cloud-gpu")
    >>> round(profile.price("reason_large", [Work(model="g", prompt_tokens=1000,
    ...     completion_tokens=20, seconds=0)]), 3)
    0.25
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from relaygraph.errors import ConfigError
from relaygraph.fileio import read_model, write_atomic

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from relaygraph.routing.reasoning.modules import ActionSpace
    from relaygraph.routing.reasoning.record import StateBook, Work

EXECUTOR = "executor"
"""The profile entry that prices the executor's probe, paid at every step."""
SHIPPED = ("this-cpu", "edge-phone", "cloud-gpu", "congested-network")
SLOW_OUTLIER = 5.0
"""A request slower than the fit by this many median residuals is left out of the refit."""


class ModuleCost(BaseModel):
    """Seconds per invocation and per token for one module on one deployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_s: float = Field(ge=0)
    """Fixed cost of one engine call (scheduling, sampling setup)."""
    rtt_s: float = Field(default=0.0, ge=0)
    """Network round trip per request to where the module runs (0 on the device)."""
    prompt_s: float = Field(ge=0)
    """Per token read (prefill, and each scored candidate)."""
    completion_s: float = Field(ge=0)
    """Per token generated."""

    def seconds(self, work: Work) -> float:
        return (
            self.rtt_s
            + work.calls * self.base_s
            + work.prompt_tokens * self.prompt_s
            + work.completion_tokens * self.completion_s
        )


class ResourceProfile(BaseModel):
    """A deployment: module costs and the latency budget of one episode.

    Attributes:
        name: The profile's name.
        description: Where the figures come from (measured, or what is assumed).
        budget_s: Seconds an episode may spend on model work; past it the episode ends.
        modules: Module name (and ``executor``) → its costs.
        fit: For a measured profile, per module: how well the linear model fits (R^2),
            the requests fitted and the slow outliers left out.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    budget_s: float = Field(gt=0)
    modules: dict[str, ModuleCost]
    fit: dict[str, dict[str, float]] = Field(default_factory=dict)

    def require(self, space: ActionSpace) -> None:
        """Check that every module of ``space`` (and the executor) has a cost.

        Raises:
            ConfigError: The profile misses one, named.
        """
        needed = [EXECUTOR, *(m.name for m in space.modules)]
        missing = [name for name in needed if name not in self.modules]
        if missing:
            raise ConfigError(
                f"profile {self.name!r} has no cost for {missing}; "
                f"it prices {sorted(self.modules)}",
                parameter="profile",
            )

    def price(self, module: str, work: Iterable[Work]) -> float:
        """Seconds ``work`` takes when ``module`` does it on this deployment."""
        try:
            cost = self.modules[module]
        except KeyError:
            raise ConfigError(f"profile {self.name!r} has no cost for {module!r}") from None
        return sum(cost.seconds(w) for w in work)


def load_profile(name_or_path: str | Path) -> ResourceProfile:
    """A shipped profile by name, or a profile JSON file.

    Raises:
        ConfigError: No such profile or file, or the file is not a valid profile.
    """
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return read_model(ResourceProfile, path, what="resource profile", parameter="profile")
    if str(name_or_path) in SHIPPED:
        shipped = files("relaygraph.routing.reasoning").joinpath(f"profiles/{name_or_path}.json")
        return read_model(ResourceProfile, shipped, what="resource profile", parameter="profile")
    raise ConfigError(
        f"no profile {str(name_or_path)!r}: shipped profiles are {list(SHIPPED)}, "
        "or give a .json file",
        parameter="profile",
    )


def fit_profile(
    book: StateBook, space: ActionSpace, *, name: str, budget_s: float
) -> ResourceProfile:
    """The profile of the machine that recorded ``book``: per module, seconds per engine
    call, per prompt token and per completion token, fitted (least squares,
    non-negative) to the measured seconds of its requests.

    Raises:
        ConfigError: A module has too few recorded requests to fit.
    """
    samples: dict[str, list[Work]] = {EXECUTOR: []}
    for state in book.states.values():
        samples[EXECUTOR] += state.probe.work
        for module, outcome in state.outcomes.items():
            samples.setdefault(module, []).extend(outcome.work)
    modules: dict[str, ModuleCost] = {}
    fit: dict[str, dict[str, float]] = {}
    for module in (EXECUTOR, *(m.name for m in space.modules)):
        work = samples.get(module, [])
        if not work and module != EXECUTOR and space.proposes(space.module(module)):
            modules[module] = ModuleCost(base_s=0.0, prompt_s=0.0, completion_s=0.0)
            continue
        if len(work) < 3:
            raise ConfigError(f"{len(work)} recorded requests of {module!r}: too few to fit")
        modules[module], fit[module] = _fit(work)
    description = (
        f"measured: linear fit to {sum(len(w) for w in samples.values())} model requests "
        "recorded on this machine"
    )
    return ResourceProfile(
        name=name, description=description, budget_s=budget_s, modules=modules, fit=fit
    )


def _fit(work: Sequence[Work]) -> tuple[ModuleCost, dict[str, float]]:
    """Least squares over (calls, prompt, completion), then again without the requests
    that took far longer than the fit says (another process had the cores: the model of
    the machine should not learn that)."""
    design = np.array([[w.calls, w.prompt_tokens, w.completion_tokens] for w in work], float)
    seconds = np.array([w.seconds for w in work])
    coef = _nonnegative_lstsq(design, seconds)
    residual = seconds - design @ coef
    spread = np.median(np.abs(residual)) or 1e-9
    kept = residual < SLOW_OUTLIER * spread
    coef = _nonnegative_lstsq(design[kept], seconds[kept])
    residual = seconds[kept] - design[kept] @ coef
    total = float(np.sum((seconds[kept] - seconds[kept].mean()) ** 2)) or 1.0
    r2 = 1.0 - float(np.sum(residual**2)) / total
    cost = ModuleCost(base_s=coef[0], prompt_s=coef[1], completion_s=coef[2])
    return cost, {
        "r2": round(r2, 4),
        "requests": float(len(work)),
        "slow_outliers_dropped": float(np.sum(~kept)),
    }


def _nonnegative_lstsq(design: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0, by dropping negative terms in turn."""
    active = list(range(design.shape[1]))
    while True:
        coef = np.zeros(design.shape[1])
        coef[active] = np.linalg.lstsq(design[:, active], seconds, rcond=None)[0]
        negative = [i for i in active if coef[i] < 0]
        if not negative:
            return coef
        active.remove(negative[0])


def save_profile(profile: ResourceProfile, path: str | Path) -> Path:
    """Write ``profile`` as JSON (atomically)."""
    return write_atomic(path, json.dumps(profile.model_dump(mode="json"), indent=2) + "\n")
