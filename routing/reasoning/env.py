"""The reasoning-policy environment, with the gymnasium API, over recorded or live episodes.

An observation is the feature vector of the current `StepView`; an action is an index
into the `ActionSpace`'s names. Each step pays the executor's probe and the chosen
module's work, priced by the `ResourceProfile`; the reward is the task's success (1 when
the engine says the goal is reached) minus ``lam`` times the latency spent over the
profile's budget:

    R = 1[won] - lam * (seconds spent / budget_s)

so that ``lam`` means the same on every deployment (at ``lam = 1`` spending the whole
budget costs as much as a success is worth). The episode ends when the goal is reached,
the agent stops, or it runs out of commands; it is truncated when the budget is spent.

Replay mode reads states from a `StateBook`; given a ``source`` (e.g. the ALFWorld
`Recorder`), states the book lacks are played live, with real model calls, and kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import numpy as np

from relaygraph.errors import ConfigError
from relaygraph.routing.reasoning.features import StepView
from relaygraph.routing.reasoning.modules import STOP
from relaygraph.routing.reasoning.profiles import EXECUTOR
from relaygraph.routing.reasoning.record import state_key

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.routing.reasoning.features import Featurizer
    from relaygraph.routing.reasoning.modules import ActionSpace
    from relaygraph.routing.reasoning.profiles import ResourceProfile
    from relaygraph.routing.reasoning.record import EpisodeSpec, StateBook, StateRecord


class StateSource(Protocol):
    """Plays a state the book does not hold (the live half of the environment)."""

    def state(self, episode: EpisodeSpec, commands: tuple[str, ...]) -> StateRecord: ...


class StepPolicy(Protocol):
    """Chooses an action name at each step of an episode."""

    @property
    def name(self) -> str: ...

    def choose(self, view: StepView) -> str: ...


@dataclass(slots=True)
class EpisodeResult:
    """How one episode went under one policy and profile."""

    episode: str
    won: bool
    reward: float
    latency_s: float
    tokens: int
    actions: list[str] = field(default_factory=list)


class ReasoningEnv(gym.Env[np.ndarray, np.int64]):
    """Episodes of a `StateBook` (and, with ``source``, live ones) as a gymnasium env.

    Args:
        book: The recorded states.
        episodes: The episodes `reset` draws from (or names, in ``options``).
        space: The action space the book was recorded with.
        profile: Prices the work; must cover every module.
        featurizer: Turns a `StepView` into the observation.
        lam: Weight of latency in the reward (per budget spent).
        source: Plays states missing from the book; None: replay only.

    Raises:
        ConfigError: No episodes, a profile missing a module, or ``lam`` < 0.
    """

    def __init__(
        self,
        book: StateBook,
        episodes: Sequence[EpisodeSpec],
        space: ActionSpace,
        profile: ResourceProfile,
        featurizer: Featurizer,
        *,
        lam: float,
        source: StateSource | None = None,
    ) -> None:
        if not episodes:
            raise ConfigError("the environment needs at least one episode")
        if lam < 0:
            raise ConfigError(f"lam must be >= 0, got {lam}", parameter="lam")
        profile.require(space)
        self.book, self.episodes, self.space = book, list(episodes), space
        self.profile, self.featurizer, self.lam, self.source = profile, featurizer, lam, source
        self.action_space = gym.spaces.Discrete(len(space.names))
        low, high = featurizer.bounds
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._episode: EpisodeSpec | None = None
        self._state: StateRecord | None = None
        self._commands: tuple[str, ...] = ()
        self._spent = 0.0
        self._tokens = 0

    # -- gymnasium API ----------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: ``options={"episode": id}``, or one drawn from ``episodes``."""
        super().reset(seed=seed)
        wanted = (options or {}).get("episode")
        if wanted is None:
            episode = self.episodes[int(self.np_random.integers(len(self.episodes)))]
        else:
            matches = [e for e in self.episodes if e.id == wanted]
            if not matches:
                raise ConfigError(f"episode {wanted!r} is not one of this environment's")
            episode = matches[0]
        self._episode, self._commands, self._spent, self._tokens = episode, (), 0.0, 0
        self._state = self._lookup(())
        return self._observe(), {"episode": episode.id}

    def step(self, action: int | np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        episode, state = self._episode, self._state
        if episode is None or state is None:
            raise ConfigError("call reset() before step()")
        if not 0 <= action < len(self.space.names):
            raise ConfigError(f"action {action} is not in 0..{len(self.space.names) - 1}")
        name = self.space.names[int(action)]
        cost = self.profile.price(EXECUTOR, state.probe.work)
        tokens = _tokens(state.probe.work)
        if name == STOP:
            self._charge(cost, tokens)
            info = self._info(name, won=False)
            self._state = None
            return self._observe_end(), self._cost_reward(cost), True, False, info
        outcome = state.outcomes[name]
        cost += self.profile.price(name, outcome.work)
        self._charge(cost, tokens + _tokens(outcome.work))
        transition = state.transitions[outcome.command]
        self._commands = (*self._commands, outcome.command)
        reward = self._cost_reward(cost) + float(transition.won)
        out_of_steps = len(self._commands) >= episode.max_steps
        terminated = transition.won or out_of_steps
        truncated = not terminated and self._spent >= self.profile.budget_s
        info = self._info(name, won=transition.won, command=outcome.command)
        if terminated or truncated:
            self._state = None
            return self._observe_end(), reward, terminated, truncated, info
        self._state = self._lookup(self._commands)
        return self._observe(), reward, False, False, info

    # -- helpers ----------------------------------------------------------------------

    def view(self) -> StepView:
        """The current decision point, as a policy sees it."""
        state, episode = self._state, self._episode
        if state is None or episode is None:
            raise ConfigError("no decision is pending: call reset()")
        probe = state.probe
        return StepView(
            step=state.step,
            max_steps=episode.max_steps,
            spent_s=self._spent,
            budget_s=self.profile.budget_s,
            last_valid=state.last_valid,
            repeated=state.repeated,
            confidence=probe.confidence,
            margin=probe.margin,
            entropy=probe.entropy,
            candidates=probe.candidates,
            text=state.text,
        )

    def _lookup(self, commands: tuple[str, ...]) -> StateRecord:
        episode = self._episode
        assert episode is not None
        found = self.book.state(state_key(episode.id, commands))
        if found is not None:
            return found
        if self.source is None:
            raise ConfigError(
                f"episode {episode.id!r}: the state after {list(commands)} is not recorded; "
                "record the episode first or give the environment a live source"
            )
        return self.source.state(episode, commands)

    def _observe(self) -> np.ndarray:
        return self.featurizer(self.view())

    def _observe_end(self) -> np.ndarray:
        return np.zeros(len(self.featurizer.names), dtype=np.float32)

    def _charge(self, seconds: float, tokens: int) -> None:
        self._spent += seconds
        self._tokens += tokens

    def _cost_reward(self, seconds: float) -> float:
        return -self.lam * seconds / self.profile.budget_s

    def _info(self, action: str, *, won: bool, command: str | None = None) -> dict[str, Any]:
        return {
            "action": action,
            "command": command,
            "won": won,
            "latency_s": self._spent,
            "tokens": self._tokens,
        }


def rollout(env: ReasoningEnv, policy: StepPolicy, episode: str) -> EpisodeResult:
    """Play ``episode`` once with ``policy``."""
    env.reset(options={"episode": episode})
    result = EpisodeResult(episode=episode, won=False, reward=0.0, latency_s=0.0, tokens=0)
    while True:
        action = policy.choose(env.view())
        _, reward, terminated, truncated, info = env.step(env.space.names.index(action))
        result.reward += reward
        result.actions.append(action)
        result.won, result.latency_s, result.tokens = info["won"], info["latency_s"], info["tokens"]
        if terminated or truncated:
            return result


def _tokens(work: Sequence[Any]) -> int:
    return sum(w.prompt_tokens + w.completion_tokens for w in work)
