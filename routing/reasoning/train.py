"""Training the reasoning policy: REINFORCE with a learned value baseline, on torch.

Why REINFORCE and not PPO: an episode here is a handful of decisions with one sparse
terminal reward, and replayed episodes cost microseconds, so fresh on-policy batches are
free; PPO's reuse of each batch over several clipped epochs buys sample efficiency this
setting does not need, at the price of more hyper-parameters. The value head (trained on
the same returns) is the baseline that keeps the gradient's variance down, and an
entropy bonus keeps early exploration from collapsing onto the cheapest action.

Every ``eval_every`` updates the greedy policy is replayed on the tuning episodes; the
best checkpoint by tuning reward is the one returned (ties: the earlier one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from relaygraph.errors import ConfigError
from relaygraph.routing.reasoning.env import rollout
from relaygraph.routing.reasoning.learned import LearnedPolicy, PolicyNet

if TYPE_CHECKING:
    from collections.abc import Callable

    from relaygraph.routing.reasoning.env import EpisodeResult, ReasoningEnv, StepPolicy


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """REINFORCE settings.

    Attributes:
        updates: Gradient updates.
        batch: Episodes per update.
        lr: Adam learning rate.
        entropy: Weight of the entropy bonus.
        value: Weight of the value loss.
        hidden: Width of the hidden layer.
        eval_every: Updates between evaluations on the tuning episodes.
        seed: Seeds torch and the episode draws.
    """

    updates: int = 300
    batch: int = 32
    lr: float = 3e-3
    entropy: float = 0.01
    value: float = 0.5
    hidden: int = 64
    eval_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("updates", "batch", "hidden", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", parameter=name)


@dataclass(slots=True)
class CurvePoint:
    """The learning curve at one update."""

    update: int
    train_reward: float
    """Mean return of the update's sampled episodes."""
    tune_reward: float | None = None
    tune_success: float | None = None
    tune_latency_s: float | None = None


@dataclass(slots=True)
class TrainResult:
    """The chosen policy and how training went."""

    policy: LearnedPolicy
    curve: list[CurvePoint] = field(default_factory=list)
    best_update: int = 0


def summarize(results: list[EpisodeResult]) -> dict[str, float]:
    """Success rate and means of reward, latency and tokens over episodes."""
    return {
        "success": float(np.mean([r.won for r in results])),
        "reward": float(np.mean([r.reward for r in results])),
        "latency_s": float(np.mean([r.latency_s for r in results])),
        "tokens": float(np.mean([r.tokens for r in results])),
    }


def evaluate(policy: StepPolicy, env: ReasoningEnv) -> dict[str, float]:
    """``policy`` replayed once on every episode of ``env``, summarized."""
    return summarize([rollout(env, policy, e.id) for e in env.episodes])


def train_policy(
    train_env: ReasoningEnv,
    tune_env: ReasoningEnv,
    config: TrainConfig | None = None,
    *,
    on_update: Callable[[CurvePoint], None] | None = None,
) -> TrainResult:
    """Train on ``train_env``'s episodes, choose the checkpoint on ``tune_env``'s."""
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    train_env.reset(seed=config.seed)
    space = train_env.space
    net = PolicyNet(len(train_env.featurizer.names), len(space.names), config.hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    policy = LearnedPolicy(net, space, train_env.featurizer)
    result = TrainResult(policy=policy)
    best_reward, best_state = -np.inf, copy.deepcopy(net.state_dict())
    for update in range(1, config.updates + 1):
        features, actions, returns, totals = [], [], [], []
        for _ in range(config.batch):
            episode_features, episode_actions, rewards = _sample(train_env, net)
            features += episode_features
            actions += episode_actions
            totals.append(sum(rewards))
            # gamma = 1: the return of a step is every reward from it to the end.
            returns += list(np.cumsum(rewards[::-1])[::-1])
        x = torch.from_numpy(np.stack(features))
        a = torch.tensor(actions)
        g = torch.tensor(returns, dtype=torch.float32)
        logits, values = net(x)
        log_probs = logits.log_softmax(-1)
        chosen = log_probs.gather(1, a[:, None]).squeeze(1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        advantage = (g - values).detach()
        # Normalized per batch: the step size then does not depend on the reward's scale
        # (lam, the budget), only on how much better than expected an action did.
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        loss = (
            -(chosen * advantage).mean()
            + config.value * ((values - g) ** 2).mean()
            - config.entropy * entropy.mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        point = CurvePoint(update, train_reward=float(np.mean(totals)))
        if update % config.eval_every == 0 or update == config.updates:
            tuned = evaluate(policy, tune_env)
            point.tune_reward, point.tune_success = tuned["reward"], tuned["success"]
            point.tune_latency_s = tuned["latency_s"]
            if tuned["reward"] > best_reward:
                best_reward, best_state = tuned["reward"], copy.deepcopy(net.state_dict())
                result.best_update = update
        result.curve.append(point)
        if on_update is not None:
            on_update(point)
    net.load_state_dict(best_state)
    policy.training = {
        "algorithm": "REINFORCE with a value baseline",
        "profile": train_env.profile.name,
        "lam": train_env.lam,
        "train_episodes": len(train_env.episodes),
        "tune_episodes": len(tune_env.episodes),
        "best_update": result.best_update,
        "tune_reward": best_reward,
        **{k: getattr(config, k) for k in TrainConfig.__dataclass_fields__},
    }
    return result


def _sample(env: ReasoningEnv, net: PolicyNet) -> tuple[list[np.ndarray], list[int], list[float]]:
    """One episode with actions sampled from ``net``."""
    observation, _ = env.reset()
    features, actions, rewards = [], [], []
    while True:
        with torch.no_grad():
            logits, _ = net(torch.from_numpy(observation))
        action = int(torch.multinomial(logits.softmax(-1), 1))
        features.append(observation)
        actions.append(action)
        observation, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        if terminated or truncated:
            return features, actions, rewards
