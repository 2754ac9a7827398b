"""The reasoning-policy training pipeline: from a recorded state book to the policy to
deploy, for ``relaygraph reasoning train`` and the reasoning-policy benchmark alike.

A book's ALFWorld splits have fixed roles: ``valid_train`` episodes train the network
(`train.train_policy`), ``valid_seen`` episodes tune (the checkpoint, the best of several
seeds, and, through `safe.deploy`, whether the network is deployed at all) and
``valid_unseen`` episodes report, never seen by either. The steps:

1. `EpisodeSplits.of`: each role's playable episodes (every reachable state recorded).
2. `fit_featurizer`: the observation's embedding projection, fitted on the states of
   the training episodes only.
3. `SplitEnvs.build`: one replay environment per role, for one resource profile and
   latency weight ``lam`` (a benchmark builds several over the same featurizer).
4. `train_and_deploy`: a policy trained per configuration (seed), the best on the
   tuning episodes kept, and the policy to deploy.

The trained network, the deployed policy and `baselines.tuned_baselines` are then
compared on ``envs.report`` with `train.evaluate`.

Example:
    >>> book = StateBook("runs/reasoning/book.jsonl")                  # doctest: +SKIP
    >>> splits = EpisodeSplits.of(book)                                # doctest: +SKIP
    >>> envs = SplitEnvs.build(book, splits, ActionSpace.default("smollm2-135m",
    ...     "gemma3-270m"), load_profile("this-cpu"), fit_featurizer(book, splits.train),
    ...     lam=0.25)                                                  # doctest: +SKIP
    >>> trained = train_and_deploy(envs, [TrainConfig(updates=300)])   # doctest: +SKIP
    >>> trained.deployed.save("runs/reasoning/policy.json")            # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError
from relaygraph.memory.embedding import SentenceEmbedder
from relaygraph.routing.reasoning.env import ReasoningEnv
from relaygraph.routing.reasoning.features import Featurizer
from relaygraph.routing.reasoning.safe import deploy
from relaygraph.routing.reasoning.train import train_policy

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.routing.reasoning.learned import LearnedPolicy
    from relaygraph.routing.reasoning.modules import ActionSpace
    from relaygraph.routing.reasoning.profiles import ResourceProfile
    from relaygraph.routing.reasoning.record import EpisodeSpec, StateBook
    from relaygraph.routing.reasoning.safe import SafetyCheck
    from relaygraph.routing.reasoning.train import TrainConfig, TrainResult

TRAIN_SPLIT, TUNE_SPLIT, REPORT_SPLIT = "valid_train", "valid_seen", "valid_unseen"


@dataclass(frozen=True, slots=True)
class EpisodeSplits:
    """A book's playable episodes by role, each list in recording order."""

    train: list[EpisodeSpec]
    """``valid_train``: the network learns on these."""
    tune: list[EpisodeSpec]
    """``valid_seen``: checkpoint, seed and deployment are chosen on these."""
    report: list[EpisodeSpec]
    """``valid_unseen``: the comparison is reported on these."""

    @classmethod
    def of(cls, book: StateBook) -> EpisodeSplits:
        """The playable episodes of ``book``'s three splits.

        Raises:
            ConfigError: A split without a complete episode (nothing to train, tune or
                report on).
        """
        splits = {split: book.playable(split) for split in (TRAIN_SPLIT, TUNE_SPLIT, REPORT_SPLIT)}
        for split, episodes in splits.items():
            if not episodes:
                raise ConfigError(
                    f"{book.path or 'the book'} has no complete {split} episode; record some first",
                    parameter="book",
                )
        return cls(splits[TRAIN_SPLIT], splits[TUNE_SPLIT], splits[REPORT_SPLIT])


def fit_featurizer(
    book: StateBook, episodes: Sequence[EpisodeSpec], *, dims: int = 8
) -> Featurizer:
    """The observation's features, its embedding projection fitted (``dims`` components)
    on the states reachable in ``episodes`` (the training episodes: the tuning and
    report states stay unseen).

    Raises:
        ConfigError: Too few distinct states for ``dims`` components.
    """
    texts = [state.text for episode in episodes for state in book.reachable(episode)]
    return Featurizer.fit(texts, SentenceEmbedder(), dims=dims)


@dataclass(frozen=True, slots=True)
class SplitEnvs:
    """One replay environment per role, sharing the book, actions, profile, features
    and latency weight."""

    train: ReasoningEnv
    tune: ReasoningEnv
    report: ReasoningEnv

    @classmethod
    def build(
        cls,
        book: StateBook,
        splits: EpisodeSplits,
        space: ActionSpace,
        profile: ResourceProfile,
        featurizer: Featurizer,
        *,
        lam: float,
    ) -> SplitEnvs:
        """Environments over ``splits``' episodes (see `ReasoningEnv` for the rest).

        Raises:
            ConfigError: A profile missing a module of ``space``, or ``lam`` < 0.
        """

        def env(episodes: list[EpisodeSpec]) -> ReasoningEnv:
            return ReasoningEnv(book, episodes, space, profile, featurizer, lam=lam)

        return cls(env(splits.train), env(splits.tune), env(splits.report))


@dataclass(frozen=True, slots=True)
class TrainedPolicy:
    """What `train_and_deploy` chose."""

    result: TrainResult
    """The best run on the tuning episodes: its network, learning curve, best update."""
    deployed: LearnedPolicy
    """The policy to save: the network, or never reasoning where the safety check did
    not keep it."""
    check: SafetyCheck | None
    """The safe-improvement check; None when it was not asked for."""

    @property
    def network(self) -> LearnedPolicy:
        """The trained network, whether deployed or not."""
        return self.result.policy


def train_and_deploy(
    envs: SplitEnvs,
    configs: Sequence[TrainConfig],
    *,
    safe: bool = True,
    on_trained: Callable[[TrainResult], None] | None = None,
) -> TrainedPolicy:
    """Train a policy per configuration (typically one per seed) on ``envs.train``, keep
    the one with the best greedy reward on ``envs.tune`` (ties: the first), and with
    ``safe`` deploy it only if `safe.deploy` keeps it over never reasoning there.

    ``on_trained`` is called after each configuration's training (progress reports).
    """
    if not configs:
        raise ConfigError("train_and_deploy needs at least one training configuration")
    results: list[TrainResult] = []
    for config in configs:
        results.append(train_policy(envs.train, envs.tune, config))
        if on_trained is not None:
            on_trained(results[-1])
    best = max(results, key=lambda result: result.policy.training["tune_reward"])
    if not safe:
        return TrainedPolicy(best, best.policy, None)
    deployed, check = deploy(best.policy, envs.tune)
    return TrainedPolicy(best, deployed, check)
