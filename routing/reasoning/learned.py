"""The learned reasoning policy: a small network over step features, saved as one JSON file.

`LearnedPolicy` chooses an action from a `StepView` (greedy at run time). The file keeps
the action space, the featurizer (with its embedding projection) and the weights, so a
policy cannot be loaded for an action space it was not trained on. `PolicyReasoner` puts
any `StepPolicy` behind the runtime's `ReasoningPolicy` interface: the chosen module
becomes the step's decision (act or reason) and the model it runs on.

Example:
    >>> policy = load_policy("runs/reasoning/this-cpu-0.25.json", space)        # doctest: +SKIP
    >>> agent = Agent("player", reasoning_policy=PolicyReasoner(policy, space,   # doctest: +SKIP
    ...     budget_s=30))
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ValidationError
from torch import nn

from relaygraph.errors import ConfigError, first_problem
from relaygraph.fileio import write_atomic
from relaygraph.llm.registry import load_llm
from relaygraph.routing.reasoning.features import Featurizer, StepView
from relaygraph.routing.reasoning.modules import STOP, ActionSpace
from relaygraph.routing.reasoning.policy import ReasoningDecision

if TYPE_CHECKING:
    from collections.abc import Callable

    from relaygraph.llm.protocol import LLM
    from relaygraph.memory.embedding import Embedder
    from relaygraph.routing.reasoning.env import StepPolicy
    from relaygraph.routing.reasoning.policy import ReasoningPolicy, ReasoningState

FORMAT = "relaygraph.reasoning-policy/1"
log = logging.getLogger(__name__)


class PolicyNet(nn.Module):
    """Action logits and a value estimate from one hidden layer shared by both heads."""

    def __init__(self, inputs: int, actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh())
        self.logits = nn.Linear(hidden, actions)
        self.value = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(features)
        return self.logits(hidden), self.value(hidden).squeeze(-1)


class LearnedPolicy:
    """A trained `PolicyNet` over a `Featurizer`: the likeliest action at each step.

    Args:
        net: The network.
        space: The action space it was trained on (its output order).
        featurizer: Builds its input.
        training: What produced it (profile, lam, seed, ...), kept in the file.
    """

    def __init__(
        self,
        net: PolicyNet,
        space: ActionSpace,
        featurizer: Featurizer,
        training: dict[str, Any] | None = None,
        name: str = "learned",
    ) -> None:
        self.net, self.space, self.featurizer = net, space, featurizer
        self.training = training or {}
        self.name = name

    def choose(self, view: StepView) -> str:
        with torch.no_grad():
            logits, _ = self.net(torch.from_numpy(self.featurizer(view)))
        return self.space.names[int(torch.argmax(logits))]

    def save(self, path: str | Path) -> Path:
        """Write the policy file (atomically)."""
        data = {
            "format": FORMAT,
            "actions": list(self.space.names),
            "space": self.space.model_dump(mode="json"),
            "featurizer": self.featurizer.state_dict(),
            "hidden": self.net.logits.in_features,
            "weights": {k: v.tolist() for k, v in self.net.state_dict().items()},
            "training": self.training,
        }
        return write_atomic(path, json.dumps(data) + "\n")


def load_policy(
    path: str | Path,
    space: ActionSpace,
    *,
    embedder: Embedder | None = None,
    fallback: ReasoningPolicy | None = None,
) -> LearnedPolicy | ReasoningPolicy:
    """The policy in ``path``, trained for ``space``.

    Args:
        path: A file `LearnedPolicy.save` wrote.
        space: The action space the caller runs; the file must have been trained on it.
        embedder: The sentence embedder the policy's features use (the packaged
            all-MiniLM-L6-v2 by default, loaded only when the policy has embedding features).
        fallback: Returned instead (with a warning that says why) when the file cannot
            be used; without it such a file is an error.

    Raises:
        ConfigError: The file is missing, not a policy file, or for another action space.
    """
    try:
        return _load(Path(path), space, embedder)
    except ConfigError as exc:
        if fallback is None:
            raise
        log.warning(
            "reasoning policy %s not used (%s); falling back to %s", path, exc, fallback.name
        )
        return fallback


def _load(path: Path, space: ActionSpace, embedder: Embedder | None) -> LearnedPolicy:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read reasoning policy {path}: {exc}", parameter="policy"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a reasoning-policy file ({FORMAT})", parameter="policy")
    try:
        trained_on = ActionSpace.model_validate(data["space"])
    except (KeyError, ValidationError) as exc:
        problem = (
            ": ".join(first_problem(exc.errors()))
            if isinstance(exc, ValidationError)
            else f"no {exc}"
        )
        raise ConfigError(f"{path}: bad action space: {problem}", parameter="policy") from None
    if trained_on != space:
        raise ConfigError(
            f"{path} was trained for actions {list(trained_on.names)} on "
            f"{trained_on.executor!r} and {sorted(_models(trained_on))}; this run has "
            f"{list(space.names)} on {space.executor!r} and {sorted(_models(space))}",
            parameter="policy",
        )
    features = data["featurizer"]
    if features["components"] is not None and embedder is None:
        # Imported here: sentence-transformers takes seconds to import, and a policy
        # without embedding features never needs it.
        from relaygraph.memory.embedding import SentenceEmbedder

        embedder = SentenceEmbedder()
    featurizer = Featurizer.from_state_dict(features, embedder)
    net = PolicyNet(len(featurizer.names), len(space.names), hidden=int(data["hidden"]))
    state = {k: torch.tensor(v, dtype=torch.float32) for k, v in data["weights"].items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not fit the network: {exc}") from None
    return LearnedPolicy(
        net, space, featurizer, data.get("training", {}), name=f"learned ({path.name})"
    )


def _models(space: ActionSpace) -> set[str]:
    return {space.executor, *(m.chooser for m in space.modules)} | {
        m.reasoner for m in space.modules if m.reasoner is not None
    }


class PolicyReasoner:
    """A `StepPolicy` as the runtime's `ReasoningPolicy`.

    The chosen module becomes the decision: ``act`` (no thought) on the executor for a
    proposing module, ``reason_and_act`` on the module's reasoner otherwise, ``stop``
    for stop. The runtime has no executor probe, so the uncertainty features are absent
    (``probe_known`` = 0), unlike in training.

    Args:
        policy: Chooses the module.
        space: Its action space (module → model).
        budget_s: The latency budget the features are relative to (the run's remaining
            wall time is measured against it).
        load: Model name → `LLM` (the registry's `load_llm` by default).
        fallback: Decides instead when the budget is already spent at the first step;
            without it that is an error.
    """

    def __init__(
        self,
        policy: StepPolicy,
        space: ActionSpace,
        *,
        budget_s: float,
        load: Callable[[str], LLM] | None = None,
        fallback: ReasoningPolicy | None = None,
    ) -> None:
        if budget_s <= 0:
            raise ConfigError(f"budget_s must be > 0, got {budget_s}", parameter="budget_s")
        self.policy, self.space, self.budget_s, self.fallback = policy, space, budget_s, fallback
        self.name = f"reasoner ({policy.name})"
        self._load = load
        self._models: dict[str, LLM] = {}

    def decide(self, state: ReasoningState) -> ReasoningDecision:
        spent = 0.0 if state.remaining_s is None else self.budget_s - state.remaining_s
        if state.step_in_turn == 0 and state.remaining_s is not None and state.remaining_s <= 0:
            if self.fallback is None:
                raise ConfigError(
                    f"{state.agent}'s time budget is already spent at its first step; "
                    "give the run more time or the reasoner a fallback policy",
                    parameter="budget",
                )
            decision = self.fallback.decide(state)
            return ReasoningDecision(
                decision.action, f"budget spent at step 0: {self.fallback.name}: {decision.reason}"
            )
        if state.step_in_turn >= state.max_steps:
            return ReasoningDecision("stop", f"step limit of {state.max_steps} reached")
        view = StepView(
            step=state.step_in_turn,
            max_steps=state.max_steps,
            spent_s=max(0.0, spent),
            budget_s=self.budget_s,
            last_valid=state.last_error is None,
            text=state.last_observation or "",
        )
        name = self.policy.choose(view)
        if name == STOP:
            return ReasoningDecision("stop", f"{self.policy.name} chose to stop")
        module = self.space.module(name)
        if self.space.proposes(module):
            return ReasoningDecision(
                "act", f"{self.policy.name}: {name}", model=self._model(module.chooser)
            )
        model = self._model(module.reasoner or module.chooser)
        return ReasoningDecision("reason_and_act", f"{self.policy.name}: {name}", model=model)

    def _model(self, name: str) -> LLM:
        if name not in self._models:
            self._models[name] = (self._load or load_llm)(name)
        return self._models[name]
