"""The resource-aware reasoning policy: state books, profiles, the gymnasium environment,
REINFORCE training, the policy file, baselines, and real ALFWorld episodes.

Control-flow tests replay hand-built books (no model); the last tests record real states
with SmolLM2 and Gemma-3 in the real engine and run a learned policy in the runtime.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from commands import relaygraph_cli
from gymnasium.utils.env_checker import check_env

from relaygraph.errors import ConfigError
from relaygraph.eval.alfworld.agent import alfworld_react, run_game
from relaygraph.eval.alfworld.games import load_games
from relaygraph.eval.alfworld.modules import AlfworldModules, Recorder
from relaygraph.llm import LocalLLM
from relaygraph.routing.reasoning import ReActPolicy, ReasoningState
from relaygraph.routing.reasoning.baselines import (
    Always,
    BudgetThreshold,
    FixedSchedule,
    UncertaintyThreshold,
)
from relaygraph.routing.reasoning.env import ReasoningEnv, rollout
from relaygraph.routing.reasoning.features import Featurizer, StepView
from relaygraph.routing.reasoning.learned import LearnedPolicy, PolicyReasoner, load_policy
from relaygraph.routing.reasoning.modules import ActionSpace, ModuleSpec
from relaygraph.routing.reasoning.pipeline import EpisodeSplits, SplitEnvs, train_and_deploy
from relaygraph.routing.reasoning.profiles import (
    SHIPPED,
    ModuleCost,
    ResourceProfile,
    fit_profile,
    load_profile,
)
from relaygraph.routing.reasoning.record import (
    EpisodeSpec,
    ModuleOutcome,
    Probe,
    StateBook,
    StateRecord,
    Transition,
    Work,
    state_key,
)
from relaygraph.routing.reasoning.safe import check_improvement, constant_policy
from relaygraph.routing.reasoning.train import TrainConfig, TrainResult, evaluate, train_policy

SPACE = ActionSpace.default("small", "large")
SMALL_GAME = "look_at_obj_in_light-AlarmClock-None-DeskLamp-323/trial_T20190909_044715_250790"


def _profile(budget_s: float = 10.0) -> ResourceProfile:
    """One second per request of the executor and of small reasoning, three of large."""
    return ResourceProfile(
        name="unit",
        description="hand-made",
        budget_s=budget_s,
        modules={
            "executor": ModuleCost(base_s=1.0, prompt_s=0, completion_s=0),
            "act": ModuleCost(base_s=0, prompt_s=0, completion_s=0),
            "reason_small": ModuleCost(base_s=1.0, prompt_s=0, completion_s=0),
            "reason_large": ModuleCost(base_s=3.0, prompt_s=0, completion_s=0),
        },
    )


def _work(model: str) -> list[Work]:
    return [Work(model=model, prompt_tokens=10, completion_tokens=2, seconds=0.5)]


def _add_episode(
    book: StateBook,
    name: str,
    confidence: float,
    wins: dict[str, bool],
    *,
    max_steps: int = 2,
    split: str = "unit",
) -> EpisodeSpec:
    """An episode whose every state sends one command per module: ``<module>-<step>``;
    at the root, a module wins when ``wins`` says so; nothing wins later."""
    episode = EpisodeSpec(
        id=name, game=name, split=split, task_type="pick", remaining=1, max_steps=max_steps
    )
    book.add_episode(episode)

    def add(commands: tuple[str, ...]) -> None:
        step = len(commands)
        outcomes = {
            m: ModuleOutcome(command=f"{m}-{step}", work=[] if m == "act" else _work(m))
            for m in ("act", "reason_small", "reason_large")
        }
        transitions = {
            o.command: Transition(
                next_key=state_key(name, (*commands, o.command)),
                won=step == 0 and wins.get(m, False),
                valid=True,
            )
            for m, o in outcomes.items()
        }
        book.add_state(
            StateRecord(
                key=state_key(name, commands),
                episode=name,
                step=step,
                goal="put a mug in the coffeemachine",
                observation=f"step {step} of {name}",
                probe=Probe(
                    command="act-0",
                    confidence=confidence,
                    margin=confidence / 2,
                    entropy=1 - confidence,
                    candidates=10,
                    work=_work("small"),
                ),
                outcomes=outcomes,
                transitions=transitions,
            )
        )
        for transition in transitions.values():
            if not transition.won and step + 1 < max_steps:
                add((*commands, transition.next_key.split(" | ")[-1]))

    add(())
    return episode


def _env(
    book: StateBook, episodes: list[EpisodeSpec], lam: float = 1.0, **kw: float
) -> ReasoningEnv:
    return ReasoningEnv(book, episodes, SPACE, _profile(**kw), Featurizer(), lam=lam)


# -- books --------------------------------------------------------------------------


def test_book_keeps_finished_states_across_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "book.jsonl"
    book = StateBook(path)
    episode = _add_episode(book, "e", 0.9, {"act": True})
    with path.open("a") as out:
        out.write('{"state": {"key": "e | half')  # a write that died mid-way
    again = StateBook(path)
    assert again.episodes == {"e": episode}
    assert set(again.states) == set(book.states)
    assert again.missing(episode) == []
    assert [s.step for s in again.reachable(episode)] == [
        0,
        1,
        1,
    ]  # the winner's child is not needed


def test_book_names_what_is_left_to_record(tmp_path: Path) -> None:
    book = StateBook()
    episode = EpisodeSpec(
        id="x", game="x", split="unit", task_type="pick", remaining=1, max_steps=1
    )
    book.add_episode(episode)
    assert book.missing(episode) == ["x"]
    with pytest.raises(ConfigError, match="already recorded with other settings"):
        book.add_episode(episode.model_copy(update={"max_steps": 3}))
    (tmp_path / "bad.jsonl").write_text('{"state": {"key": 1}}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1 is not a state-book record: state\."):
        StateBook(tmp_path / "bad.jsonl")


# -- profiles -----------------------------------------------------------------------


def test_shipped_profiles_price_every_default_module() -> None:
    space = ActionSpace.default("smollm2-135m", "gemma3-270m")
    for name in SHIPPED:
        profile = load_profile(name)
        profile.require(space)
        assert profile.budget_s > 0 and profile.description
    work = Work(model="m", calls=2, prompt_tokens=1000, completion_tokens=20, seconds=0)
    cost = load_profile("congested-network").modules["reason_large"]
    assert cost.seconds(work) == pytest.approx(1.5 + 2 * 0.01 + 1000 * 0.00006 + 20 * 0.005)


def test_a_profile_missing_a_module_or_a_budget_is_refused(tmp_path: Path) -> None:
    profile = _profile().model_copy(update={"modules": {"executor": _profile().modules["act"]}})
    book = StateBook()
    episode = _add_episode(book, "e", 0.5, {})
    with pytest.raises(ConfigError, match=r"no cost for \['act', 'reason_small', 'reason_large'\]"):
        ReasoningEnv(book, [episode], SPACE, profile, Featurizer(), lam=1)
    spent = json.loads(_profile().model_dump_json()) | {"budget_s": 0}
    (tmp_path / "spent.json").write_text(json.dumps(spent))
    with pytest.raises(ConfigError, match="budget_s"):
        load_profile(tmp_path / "spent.json")
    with pytest.raises(ConfigError, match="shipped profiles are"):
        load_profile("moon-base")


def test_fit_recovers_a_linear_machine() -> None:
    book = StateBook()
    rng = np.random.default_rng(0)
    truth = {"executor": (0.05, 0.001, 0.0), "reason_small": (0.02, 0.0005, 0.03)}

    def work(module: str, calls: int, prompt: int, completion: int) -> Work:
        base, per_prompt, per_completion = truth[module]
        seconds = calls * base + prompt * per_prompt + completion * per_completion
        return Work(
            model="m",
            calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            seconds=seconds,
        )

    book.add_episode(
        EpisodeSpec(id="e", game="e", split="u", task_type="pick", remaining=1, max_steps=1)
    )
    for i in range(20):
        calls, prompt, completion = (int(v) for v in rng.integers([5, 500, 1], [30, 1500, 40]))
        book.add_state(
            StateRecord(
                key=f"e{i}",
                episode="e",
                step=0,
                goal="g",
                observation="o",
                probe=Probe(
                    command="c",
                    confidence=1,
                    margin=1,
                    entropy=0,
                    candidates=calls,
                    work=[work("executor", calls, prompt, 0)],
                ),
                outcomes={
                    "reason_small": ModuleOutcome(
                        command="c",
                        work=[
                            work("reason_small", 1, prompt, completion),
                            work("reason_small", calls, prompt, 0),
                        ],
                    )
                },
                transitions={"c": Transition(next_key="x", won=False, valid=True)},
            )
        )
    space = ActionSpace(
        executor="m",
        modules=(
            ModuleSpec(name="act", chooser="m"),
            ModuleSpec(name="reason_small", reasoner="m", chooser="m"),
        ),
    )
    profile = fit_profile(book, space, name="here", budget_s=5)
    fitted = profile.modules["reason_small"]
    assert (fitted.base_s, fitted.prompt_s, fitted.completion_s) == pytest.approx(
        truth["reason_small"], rel=1e-6
    )
    assert profile.fit["reason_small"]["r2"] == pytest.approx(1.0)
    assert profile.modules["act"].seconds(work("executor", 3, 100, 0)) == 0  # act adds nothing


# -- environment --------------------------------------------------------------------


def test_env_rewards_success_minus_priced_latency() -> None:
    book = StateBook()
    episode = _add_episode(book, "e", 0.3, {"reason_large": True})
    env = _env(book, [episode], lam=0.5)
    check_env(env, skip_render_check=True)
    names = SPACE.names
    # Reason with the large model: the probe (1 s) and one large request (3 s).
    env.reset(options={"episode": "e"})
    _, reward, terminated, truncated, info = env.step(names.index("reason_large"))
    assert (terminated, truncated, info["won"]) == (True, False, True)
    assert info["latency_s"] == pytest.approx(4.0) and reward == pytest.approx(1 - 0.5 * 4 / 10)
    # Acting twice loses: out of commands after the second; only probes are paid.
    env.reset(options={"episode": "e"})
    env.step(names.index("act"))
    _, reward, terminated, _, info = env.step(names.index("act"))
    assert terminated and not info["won"] and info["latency_s"] == pytest.approx(2.0)
    # Stop ends at once, paying the probe that informed it.
    env.reset(options={"episode": "e"})
    _, reward, terminated, _, info = env.step(names.index("stop"))
    assert terminated and reward == pytest.approx(-0.5 * 1 / 10)
    # A budget spent mid-episode truncates it.
    tight = _env(book, [episode], budget_s=2.0)  # the probe and small reasoning: 2 s
    tight.reset(options={"episode": "e"})
    _, _, terminated, truncated, _ = tight.step(names.index("reason_small"))
    assert (terminated, truncated) == (False, True)


def test_replay_refuses_an_unrecorded_state_and_an_unknown_episode() -> None:
    book = StateBook()
    book.add_episode(
        EpisodeSpec(id="hole", game="g", split="u", task_type="pick", remaining=1, max_steps=2)
    )
    env = _env(book, list(book.episodes.values()))
    with pytest.raises(ConfigError, match="not recorded; record the episode first"):
        env.reset(options={"episode": "hole"})
    with pytest.raises(ConfigError, match="not one of this environment's"):
        env.reset(options={"episode": "elsewhere"})


def _task_book(count: int, seed: int) -> tuple[StateBook, list[EpisodeSpec]]:
    """The executor is right when it is confident; otherwise only the large model wins."""
    rng = np.random.default_rng(seed)
    book = StateBook()
    episodes = []
    for i in range(count):
        confidence = float(rng.uniform(0.05, 0.95))
        sure = confidence >= 0.5
        wins = {"act": sure, "reason_small": sure, "reason_large": True}
        episodes.append(_add_episode(book, f"{seed}-{i}", confidence, wins))
    return book, episodes


def test_reinforce_learns_to_reason_only_when_the_executor_is_unsure() -> None:
    train_book, train_episodes = _task_book(40, seed=1)
    test_book, test_episodes = _task_book(40, seed=2)
    train_env = _env(train_book, train_episodes, lam=1.0)
    test_env = _env(test_book, test_episodes, lam=1.0)
    result = train_policy(train_env, test_env, TrainConfig(updates=150, batch=16, seed=0))
    learned = evaluate(result.policy, test_env)
    always = {m: evaluate(Always(m), test_env) for m in ("act", "reason_small", "reason_large")}
    assert learned["success"] >= 0.95
    assert learned["reward"] > max(a["reward"] for a in always.values()) + 0.05
    assert learned["latency_s"] < always["reason_large"]["latency_s"]
    tuned = [p for p in result.curve if p.tune_reward is not None]
    assert tuned[-1].tune_reward > tuned[0].tune_reward  # it learned, not started there


def test_baselines_follow_their_rules() -> None:
    view = StepView(step=1, max_steps=3, spent_s=6, budget_s=10, confidence=0.4)
    assert Always("reason_large").choose(view) == "reason_large"
    assert FixedSchedule("reason_large", "act", every=2).choose(view) == "act"
    assert BudgetThreshold("reason_large", "act", keep=0.5).choose(view) == "act"
    assert BudgetThreshold("reason_large", "act", keep=0.3).choose(view) == "reason_large"
    assert UncertaintyThreshold("reason_large", "act", below=0.5).choose(view) == "reason_large"


def test_a_policy_is_deployed_only_on_a_confident_gain_over_never_reasoning() -> None:
    book, episodes = _task_book(40, seed=4)
    tune = _env(book, episodes, lam=0.1)
    helps = UncertaintyThreshold("reason_large", "act", below=0.5)
    confident = check_improvement(helps, Always("act"), tune)
    assert confident.kept and confident.lower > 0 and confident.episodes == 40
    # one episode of 40 where reasoning wins: no confident gain
    lucky_book = StateBook()
    lucky = [_add_episode(lucky_book, f"sure-{i}", 0.9, {"act": True}) for i in range(39)]
    lucky.append(_add_episode(lucky_book, "unsure", 0.1, {"reason_large": True}))
    check = check_improvement(helps, Always("act"), _env(lucky_book, lucky, lam=0.1))
    assert check.gain > 0 and not check.kept
    assert check.as_dict()["kept"] is False and check.default == "always act"


def test_the_fallback_is_a_policy_file_that_never_reasons(tmp_path: Path) -> None:
    book, episodes = _task_book(10, seed=5)
    env = _env(book, episodes)
    trained = train_policy(env, env, TrainConfig(updates=2, batch=2)).policy
    fallback = constant_policy(trained, "act", {"safety": "not kept"})
    loaded = load_policy(fallback.save(tmp_path / "policy.json"), SPACE)
    assert isinstance(loaded, LearnedPolicy) and loaded.training == {"safety": "not kept"}
    assert evaluate(loaded, env) == evaluate(Always("act"), env)


def test_the_pipeline_splits_a_book_and_keeps_the_best_seed() -> None:
    book = StateBook()
    rng = np.random.default_rng(6)
    for split in ("valid_train", "valid_seen", "valid_unseen", "elsewhere"):
        for i in range(6):
            confidence = float(rng.uniform(0.05, 0.95))
            wins = {"act": confidence > 0.5, "reason_large": True}
            _add_episode(book, f"{split}-{i}", confidence, wins, split=split)
    splits = EpisodeSplits.of(book)
    assert [e.split for e in splits.train] == ["valid_train"] * 6
    assert [e.split for e in splits.tune] == ["valid_seen"] * 6
    assert [e.split for e in splits.report] == ["valid_unseen"] * 6
    envs = SplitEnvs.build(book, splits, SPACE, _profile(), Featurizer(), lam=0.5)
    assert (envs.train.episodes, envs.report.episodes) == (splits.train, splits.report)
    seeds: list[TrainResult] = []
    configs = [TrainConfig(updates=4, batch=4, eval_every=2, seed=s) for s in (0, 1, 2)]
    unchecked = train_and_deploy(envs, configs, safe=False, on_trained=seeds.append)
    assert [r.policy.training["seed"] for r in seeds] == [0, 1, 2]
    assert unchecked.result is max(seeds, key=lambda r: r.policy.training["tune_reward"])
    assert unchecked.deployed is unchecked.network and unchecked.check is None
    checked = train_and_deploy(envs, configs[:1])
    assert checked.check is not None and checked.check.episodes == 6
    assert (checked.deployed is checked.network) == checked.check.kept
    assert checked.network.training["safety"] == checked.check.as_dict()
    only_train = StateBook()
    _add_episode(only_train, "t", 0.5, {}, split="valid_train")
    with pytest.raises(ConfigError, match="the book has no complete valid_seen episode"):
        EpisodeSplits.of(only_train)


# -- policy file and runtime ----------------------------------------------------------


def test_policy_file_round_trips_and_refuses_another_action_space(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book, episodes = _task_book(10, seed=3)
    env = _env(book, episodes)
    policy = train_policy(env, env, TrainConfig(updates=5, batch=4)).policy
    path = policy.save(tmp_path / "policy.json")
    loaded = load_policy(path, SPACE)
    assert isinstance(loaded, LearnedPolicy)
    views = [env.reset(options={"episode": e.id}) and env.view() for e in episodes]
    assert [loaded.choose(v) for v in views] == [policy.choose(v) for v in views]
    other = ActionSpace.default("small", "huge")
    with pytest.raises(ConfigError, match=r"trained for actions .* this run has"):
        load_policy(path, other)
    with caplog.at_level(logging.WARNING):
        assert load_policy(path, other, fallback=ReActPolicy()).name == "react"
    assert "falling back to react" in caplog.text
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a reasoning-policy file"):
        load_policy(tmp_path / "junk.json", SPACE)


def _state(step: int, remaining_s: float | None) -> ReasoningState:
    return ReasoningState(
        agent="player",
        role="executor",
        step_in_turn=step,
        max_steps=4,
        run_steps=step,
        remaining_tokens=None,
        remaining_s=remaining_s,
    )


def test_reasoner_maps_modules_to_decisions_and_refuses_a_spent_budget() -> None:
    models: dict[str, object] = {}
    reasoner = PolicyReasoner(
        Always("reason_large"), SPACE, budget_s=10, load=lambda n: models.setdefault(n, n)
    )  # type: ignore[arg-type]
    decision = reasoner.decide(_state(1, 5.0))
    assert (decision.action, decision.model) == ("reason_and_act", "large")
    acting = PolicyReasoner(Always("act"), SPACE, budget_s=10, load=lambda n: n)  # type: ignore[arg-type]
    assert (acting.decide(_state(0, None)).action, acting.decide(_state(0, None)).model) == (
        "act",
        "small",
    )
    with pytest.raises(ConfigError, match="already spent at its first step"):
        reasoner.decide(_state(0, 0.0))
    falling = PolicyReasoner(Always("act"), SPACE, budget_s=10, fallback=ReActPolicy())
    assert falling.decide(_state(0, 0.0)).action == "reason_and_act"
    with pytest.raises(ConfigError, match="budget_s must be > 0"):
        PolicyReasoner(Always("act"), SPACE, budget_s=0)


@pytest.mark.slow
def test_cli_fits_a_profile_and_trains_a_policy(tmp_path: Path) -> None:
    path = tmp_path / "book.jsonl"
    book = StateBook(path)
    rng = np.random.default_rng(5)
    for split in ("valid_train", "valid_seen", "valid_unseen"):
        for i in range(6):
            confidence = float(rng.uniform(0.05, 0.95))
            wins = {"act": confidence > 0.5, "reason_large": True}
            _add_episode(book, f"{split}-{i}", confidence, wins, split=split)
    models = ("--small", "small", "--large", "large")
    fitted = relaygraph_cli(
        "reasoning",
        "profile",
        "--book",
        str(path),
        "--out",
        str(tmp_path / "here.json"),
        "--budget",
        "5",
        *models,
    )
    assert fitted.returncode == 0, fitted.stderr
    assert load_profile(tmp_path / "here.json").budget_s == 5
    trained = relaygraph_cli(
        "reasoning",
        "train",
        "--book",
        str(path),
        "--profile",
        str(tmp_path / "here.json"),
        "--lam",
        "0.1",
        "--updates",
        "20",
        "--out",
        str(tmp_path / "policy.json"),
        *models,
    )
    assert trained.returncode == 0, trained.stderr
    assert "valid_unseen, 6 episodes" in trained.stdout and "always act" in trained.stdout
    assert "gain over never reasoning on valid_seen" in trained.stdout
    assert isinstance(load_policy(tmp_path / "policy.json", SPACE), LearnedPolicy)
    empty = relaygraph_cli(
        "reasoning", "train", "--book", str(tmp_path / "none.jsonl"), "--out", "x.json", *models
    )
    assert empty.returncode == 2 and "no complete valid_train episode" in empty.stderr
    unknown = relaygraph_cli(
        "reasoning", "train", "--book", str(path), "--profile", "moon", "--out", "x.json", *models
    )
    assert unknown.returncode == 2 and "shipped profiles are" in unknown.stderr


# -- real models, real engine ------------------------------------------------------


@pytest.fixture(scope="module")
def real_space() -> ActionSpace:
    small, large = "smollm2-135m", "gemma3-270m"
    return ActionSpace(
        executor=small,
        modules=(
            ModuleSpec(name="act", chooser=small),
            ModuleSpec(name="reason_small", reasoner=small, chooser=small, thought_tokens=16),
            ModuleSpec(name="reason_large", reasoner=large, chooser=large, thought_tokens=16),
        ),
    )


@pytest.mark.slow
def test_recorder_plays_real_states_and_replay_reproduces_them(
    tmp_path: Path, real_space: ActionSpace, smollm2: LocalLLM, gemma3: LocalLLM
) -> None:
    game = next(g for g in load_games("valid_seen") if g.name == SMALL_GAME)
    modules = AlfworldModules(real_space, llms={"smollm2-135m": smollm2, "gemma3-270m": gemma3})
    book = StateBook(tmp_path / "book.jsonl")
    recorder = Recorder(modules, book)
    episode = recorder.episode(game, remaining=1, max_steps=1)
    assert recorder.record(episode) == 1 and book.missing(episode) == []
    root = book.state(episode.root)
    assert root is not None
    assert set(root.outcomes) == {"act", "reason_small", "reason_large"}
    assert root.outcomes["act"].command == root.probe.command
    assert root.outcomes["reason_large"].thought is not None
    # The thought, the choice and (first time) the command priors, all on the large model.
    large_work = root.outcomes["reason_large"].work
    assert len(large_work) == 3 and {w.model for w in large_work} == {"gemma3-270m"}
    assert len(root.probe.work) == 2  # the choice and the priors, on the executor
    assert root.probe.candidates >= 2 and 0 < root.probe.confidence <= 1
    # The expert's last command wins; a module that sends it must be recorded as winning.
    for outcome in root.outcomes.values():
        transition = root.transitions[outcome.command]
        assert transition.won == (outcome.command == game.walkthrough[-1])
    # Replay after reload gives the same outcome without a model.
    again = StateBook(tmp_path / "book.jsonl")
    env = ReasoningEnv(
        again, [episode], real_space, load_profile("cloud-gpu"), Featurizer(), lam=0.5
    )
    for module in ("act", "reason_large"):
        result = rollout(env, Always(module), episode.id)
        assert result.won == root.transitions[root.outcomes[module].command].won
        assert result.latency_s > 0 and result.tokens > 0
    # Live mode: a longer episode of the same game is played on demand and kept.
    longer = recorder.episode(game, remaining=1, max_steps=2)
    live = ReasoningEnv(
        book, [longer], real_space, load_profile("this-cpu"), Featurizer(), lam=0.5, source=recorder
    )
    rollout(live, Always("act"), longer.id)
    assert book.state(longer.root) is not None


def test_learned_policy_runs_the_alfworld_agent_on_real_models(
    tmp_path: Path, real_space: ActionSpace, smollm2: LocalLLM, gemma3: LocalLLM
) -> None:
    book, episodes = _task_book(10, seed=4)
    env = ReasoningEnv(book, episodes, real_space, _profile(), Featurizer(), lam=1.0)
    path = train_policy(env, env, TrainConfig(updates=5, batch=4)).policy.save(tmp_path / "p.json")
    policy = load_policy(path, real_space)
    models = {"smollm2-135m": smollm2, "gemma3-270m": gemma3}
    reasoner = PolicyReasoner(policy, real_space, budget_s=60, load=models.__getitem__)
    game = next(g for g in load_games("valid_seen") if g.name == SMALL_GAME)
    outcome = run_game(
        partial(alfworld_react, reasoning_policy=reasoner), smollm2, game, max_steps=2
    )
    assert outcome.error is None and outcome.result is not None
    steps = [s for s in outcome.result.trace.steps if s.reasoning.policy == "alfworld-episode"]
    assert steps
    for step in steps:
        chosen = step.reasoning.reason.split(": ")[-1]
        if chosen == "stop":
            continue
        module = real_space.module(chosen)
        wanted = module.reasoner or module.chooser
        assert step.model.name == wanted, (step.reasoning.reason, step.model.name)
        assert step.reasoning.action == ("act" if real_space.proposes(module) else "reason_and_act")
