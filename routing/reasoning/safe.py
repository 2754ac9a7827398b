"""Safe policy improvement: deploy the learned policy only where the tuning episodes
show, with confidence, that it earns more than the cheap default.

Picking the best checkpoint on a few dozen tuning episodes overfits them: a policy that
reasons on some steps can beat never reasoning there by one lucky episode and lose on
new ones. High-confidence policy improvement (Thomas et al., 2015) guards against that:
the learned policy replaces the default only when a one-sided bootstrap lower bound of
its mean per-episode reward gain on the tuning episodes (paired: the same episode under
both) is above zero. Otherwise the policy file holds the default, as a constant network
in the same format, so the runtime loads either the same way.

The same tuning episodes chose the checkpoint, so the bound is optimistic: a kept policy
is less certain than the stated confidence (a separate safety split would fix that, at
the cost of tuning episodes); a fallback is only made more likely by a fairer bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from relaygraph.routing.reasoning.baselines import never_reason
from relaygraph.routing.reasoning.env import rollout
from relaygraph.routing.reasoning.learned import LearnedPolicy, PolicyNet

if TYPE_CHECKING:
    from relaygraph.routing.reasoning.env import ReasoningEnv, StepPolicy


@dataclass(frozen=True, slots=True)
class SafetyCheck:
    """How the learned policy compares with the default on the tuning episodes."""

    default: str
    gain: float
    """Mean per-episode reward of the learned policy minus the default's."""
    lower: float
    """The gain's one-sided bootstrap lower bound at ``confidence``."""
    confidence: float
    episodes: int

    @property
    def kept(self) -> bool:
        """Whether the learned policy is deployed."""
        return self.lower > 0

    def as_dict(self) -> dict[str, float | str | bool]:
        return {**asdict(self), "kept": self.kept}


def check_improvement(
    learned: StepPolicy,
    default: StepPolicy,
    tune: ReasoningEnv,
    *,
    confidence: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> SafetyCheck:
    """Bootstrap the learned policy's reward gain over ``default`` on ``tune``'s episodes."""
    gains = np.array(
        [
            rollout(tune, learned, e.id).reward - rollout(tune, default, e.id).reward
            for e in tune.episodes
        ]
    )
    draws = np.random.default_rng(seed).integers(0, len(gains), (resamples, len(gains)))
    return SafetyCheck(
        default=default.name,
        gain=float(gains.mean()),
        lower=float(np.quantile(gains[draws].mean(axis=1), 1 - confidence)),
        confidence=confidence,
        episodes=len(gains),
    )


def deploy(learned: LearnedPolicy, tune: ReasoningEnv) -> tuple[LearnedPolicy, SafetyCheck]:
    """The policy to deploy: ``learned`` where `check_improvement` keeps it over never
    reasoning on ``tune``'s episodes, else never reasoning as a `constant_policy`; the
    check goes into the policy's training record either way."""
    default = never_reason(tune.space)
    check = check_improvement(learned, default, tune)
    learned.training["safety"] = check.as_dict()
    if check.kept:
        return learned, check
    return constant_policy(learned, default.module, learned.training), check


def constant_policy(like: LearnedPolicy, module: str, training: dict[str, object]) -> LearnedPolicy:
    """A policy file's network that always chooses ``module``, over ``like``'s features
    and action space (what a failed `check_improvement` deploys)."""
    space = like.space
    net = PolicyNet(len(like.featurizer.names), len(space.names), like.net.logits.in_features)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        net.logits.bias[space.names.index(module)] = 1.0
    return LearnedPolicy(net, space, like.featurizer, training, name=f"always {module}")
