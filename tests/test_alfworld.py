"""ALFWorld: the shipped games, the real TextWorld engine, demonstrations, the ReAct agent.

Every environment here is the real engine (a reset takes 2-10 s), so each fast test
resets at most one game, chosen small.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from relaygraph.errors import ConfigError, RelayGraphError
from relaygraph.eval.alfworld.agent import (
    CONTEXT_BUDGET,
    INSTRUCTIONS,
    MAX_TOKENS,
    alfworld_react,
    alfworld_react_scored,
    run_game,
)
from relaygraph.eval.alfworld.demos import build_demos, coherent, load_demos, think
from relaygraph.eval.alfworld.env import AlfworldEnv, AlfworldEnvError, normalize_command
from relaygraph.eval.alfworld.games import AlfworldGame, load_games
from relaygraph.eval.alfworld.suite import AlfworldSuite
from relaygraph.llm import LocalLLM
from relaygraph.llm.scripted import ScriptedLLM

SMALL_GAME = "look_at_obj_in_light-AlarmClock-None-DeskLamp-323/trial_T20190909_044715_250790"
"""A valid_seen bedroom game with a three-command walkthrough; it resets in about 2 s."""
TWO_BOXES = "pick_two_obj_and_place-Box-None-CoffeeTable-230/trial_T20190908_124255_946115"
"""A valid_train living-room game; one command from its goal, SmolLM2 with scored choices
sends the winning one (greedy, so always)."""


@pytest.fixture(scope="module")
def seen() -> list[AlfworldGame]:
    return load_games("valid_seen")


@pytest.fixture(scope="module")
def small_game(seen: list[AlfworldGame]) -> AlfworldGame:
    return next(g for g in seen if g.name == SMALL_GAME)


# -- games ---------------------------------------------------------------------------


def test_valid_unseen_has_the_standard_134_games_by_type() -> None:
    games = load_games("valid_unseen")
    assert len(games) == 134
    assert Counter(g.task_type for g in games) == {
        "clean": 31,
        "pick": 24,
        "heat": 23,
        "cool": 21,
        "look": 18,
        "pick_two": 17,
    }
    names = [g.name for g in games]
    assert names == sorted(names) and len(set(names)) == 134
    assert all(g.split == "valid_unseen" and g.path.is_file() and g.walkthrough for g in games)
    assert load_games("valid_unseen", limit=3) == games[:3]


def test_other_splits_and_fields(seen: list[AlfworldGame], small_game: AlfworldGame) -> None:
    assert len(seen) == 140
    assert len(load_games("valid_train")) == 200
    assert small_game.task_type == "look"
    assert small_game.goal == "look at alarmclock under the desklamp"
    assert small_game.walkthrough == (
        "go to desk 1",
        "use desklamp 1",
        "take alarmclock 2 from desk 1",
    )


def test_a_split_is_extracted_once_into_the_cache(tmp_path: Path) -> None:
    first = load_games("valid_seen", limit=2, cache_dir=tmp_path)
    (extracted,) = (tmp_path / "alfworld").iterdir()  # no temporary folder left behind
    assert extracted.name.startswith("valid_seen-")
    stamp = extracted.stat().st_mtime_ns
    again = load_games("valid_seen", limit=2, cache_dir=tmp_path)
    assert [g.name for g in again] == [g.name for g in first]
    assert extracted.stat().st_mtime_ns == stamp
    assert first[0].path.is_relative_to(extracted)


def test_a_user_directory_of_the_same_layout_loads(
    tmp_path: Path, small_game: AlfworldGame
) -> None:
    trial = tmp_path / "json_2.1.1" / "valid_seen" / Path(small_game.name)
    trial.mkdir(parents=True)
    (trial / "game.tw-pddl").write_bytes(small_game.path.read_bytes())
    (game,) = load_games("valid_seen", data_dir=tmp_path)
    assert game.model_dump(exclude={"path"}) == small_game.model_dump(exclude={"path"})
    assert game.path == trial / "game.tw-pddl"


def test_bad_data_is_reported_with_its_file(tmp_path: Path, small_game: AlfworldGame) -> None:
    with pytest.raises(ConfigError, match=r"json_2\.1\.1/train is not a folder"):
        load_games("train", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not ship"):
        load_games("train")
    trial = tmp_path / "json_2.1.1" / "valid_seen" / Path(small_game.name)
    trial.mkdir(parents=True)
    game_file = trial / "game.tw-pddl"
    data = json.loads(small_game.path.read_text())
    game_file.write_text(json.dumps({**data, "walkthrough": []}))
    with pytest.raises(ConfigError, match=r"game\.tw-pddl: walkthrough: List should have at least"):
        load_games("valid_seen", data_dir=tmp_path)
    game_file.write_text("{not json")
    with pytest.raises(ConfigError, match=r"game\.tw-pddl is not JSON"):
        load_games("valid_seen", data_dir=tmp_path)
    odd = tmp_path / "json_2.1.1" / "valid_seen" / "juggle-Ball-1" / "trial_1"
    odd.mkdir(parents=True)
    (odd / "game.tw-pddl").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"juggle-Ball-1/trial_1/game\.tw-pddl: task folder"):
        load_games("valid_seen", data_dir=tmp_path)


# -- the real environment ------------------------------------------------------------


def test_the_expert_walkthrough_wins_by_the_engines_own_check(small_game: AlfworldGame) -> None:
    with AlfworldEnv(small_game) as env:
        first = env.reset()
        assert first.text.startswith("You are in the middle of a room.")
        assert first.text.endswith("Your task is to: look at alarmclock under the desklamp.")
        assert "go to desk 1" in first.admissible_commands and not first.won
        observations = [env.step(command) for command in small_game.walkthrough]
    assert [o.won for o in observations] == [False, False, True]
    last = observations[-1]
    assert last.done and last.valid and last.steps == 3
    assert last.feedback == "You pick up the alarmclock 2 from the desk 1."
    assert "You completed the task! The episode is over. Finish now: finish[done]" in last.text
    assert env.won and env.done


def test_invalid_commands_get_a_clear_observation_and_cost_a_step(
    small_game: AlfworldGame,
) -> None:
    with AlfworldEnv(small_game, max_steps=3) as env:
        env.reset()
        wrong = env.step("go to desk")
        assert not wrong.valid and wrong.feedback == "Nothing happens."
        assert wrong.text.startswith('Nothing happens: "go to desk" is not a valid command here.')
        assert "Valid commands include: go to desk 1;" in wrong.text
        assert wrong.steps == 1 and not wrong.done
        tidy = env.step("  Go to Desk 1. ")  # normalised to ALFWorld's spelling
        assert tidy.valid and tidy.feedback.startswith("You arrive at desk 1.")
        out = env.step("take the alarmclock")
        assert out.done and not out.won and out.steps == 3
        assert "the task was not completed. Finish now: finish[failed]" in out.text
        late = env.step("look")
        assert late.done and late.steps == 3 and env.late_commands == 1
        assert late.text.startswith("The episode is over")


def test_normalize_command() -> None:
    assert normalize_command(' "Take Mug 1 from  Desk 1." ') == "take mug 1 from desk 1"


def test_an_engine_failure_is_a_typed_error_and_a_lost_game(
    tmp_path: Path, small_game: AlfworldGame
) -> None:
    broken = tmp_path / "game.tw-pddl"
    data = json.loads(small_game.path.read_text())
    broken.write_text(json.dumps({**data, "pddl_problem": "(define (problem broken"}))
    game = small_game.model_copy(update={"path": broken})
    env = AlfworldEnv(game)
    with pytest.raises(AlfworldEnvError, match="the engine failed loading it") as caught:
        env.reset()
    assert isinstance(caught.value, RelayGraphError) and caught.value.game == game.name
    with pytest.raises(ConfigError, match="reset"):
        env.step("look")
    outcome = run_game(alfworld_react, "smollm2-135m", game)  # fails before any model call
    assert not outcome.won and outcome.steps == 0 and outcome.result is None
    assert outcome.error is not None and "ParseError" in outcome.error


def test_max_steps_is_checked(small_game: AlfworldGame) -> None:
    with pytest.raises(ConfigError, match="max_steps"):
        AlfworldEnv(small_game, max_steps=0)


# -- demonstrations ------------------------------------------------------------------


def test_shipped_demos_cover_every_type_from_seen_games_only(seen: list[AlfworldGame]) -> None:
    demos = load_demos()
    assert sorted(d.task_type for d in demos.demos) == sorted(
        ["pick", "clean", "heat", "cool", "look", "pick_two"]
    )
    unseen = {g.name for g in load_games("valid_unseen")}
    by_name = {g.name: g for g in seen}
    for demo in demos.demos:
        assert demo.split == "valid_seen" and demo.game not in unseen
        game = by_name[demo.game]
        assert tuple(s.action for s in demo.steps) == game.walkthrough
        assert coherent(game.walkthrough)
        assert "You completed the task!" in demo.steps[-1].observation
        assert demo.render().endswith("Action: finish[done]")


def test_think_writes_a_thought_per_action() -> None:
    actions = [
        "go to countertop 1",
        "take mug 1 from countertop 1",
        "go to sinkbasin 1",
        "clean mug 1 with sinkbasin 1",
        "go to coffeemachine 1",
        "move mug 1 to coffeemachine 1",
    ]
    assert think("put a clean mug in coffeemachine", actions) == [
        "My task is to put a clean mug in coffeemachine. First I need to find a mug. "
        "I will look at the countertop 1.",
        "I found the mug 1. I will take it.",
        "Now I need to clean the mug 1 with the sinkbasin 1. I will go to the sinkbasin 1.",
        "I will clean the mug 1 with the sinkbasin 1.",
        "Now I will bring the mug 1 to the coffeemachine 1.",
        "I will move the mug 1 to the coffeemachine 1.",
    ]
    assert coherent(actions)
    assert not coherent(["go to drawer 17", "open drawer 11"])


def test_build_demos_replays_in_the_real_engine_and_refuses_unseen_games(
    seen: list[AlfworldGame],
) -> None:
    with pytest.raises(ConfigError, match="evaluation split"):
        build_demos("valid_unseen")  # type: ignore[arg-type]
    (demo,) = build_demos("valid_seen", candidates=1, task_types=["look"]).demos
    game = next(g for g in seen if g.name == demo.game)
    assert demo.task_type == game.task_type == "look" and demo.split == "valid_seen"
    assert demo.task.endswith(f"Your task is to: {game.goal}.")
    assert tuple(s.action for s in demo.steps) == game.walkthrough


def test_a_prompt_with_its_demo_fits_the_small_models_context(smollm2: LocalLLM) -> None:
    for demo in load_demos().demos:
        instructions = smollm2.count_tokens(INSTRUCTIONS.format(demo=demo.render()))
        # A large kitchen's task is under 300 tokens; the framework's own prompt text
        # (role line, tool list, format) about 100.
        worst = instructions + 300 + 100 + CONTEXT_BUDGET
        assert worst <= 1600 and worst + MAX_TOKENS < 2048, demo.task_type
        assert smollm2.count_tokens(demo.task) < 300


# -- the agent -----------------------------------------------------------------------


def test_run_game_with_a_scripted_model_that_plays_the_walkthrough(
    small_game: AlfworldGame,
) -> None:
    replies = [f"Thought: next.\nAction: act[{c}]" for c in small_game.walkthrough]
    llm = ScriptedLLM([*replies, "Thought: The task is complete.\nAction: finish[done]"])
    outcome = run_game(alfworld_react, llm, small_game)
    assert outcome.won and outcome.finished and outcome.error is None
    assert outcome.steps == 3 and outcome.task_type == "look"
    assert outcome.result is not None and outcome.result.ok
    trace = outcome.result.trace
    assert [s.action for s in trace.steps][-1] == {"type": "finish", "answer": "done"}
    assert "You completed the task!" in (trace.steps[2].observation or "")


def test_an_agent_that_acts_after_winning_is_stopped(small_game: AlfworldGame) -> None:
    replies = [f"Thought: next.\nAction: act[{c}]" for c in small_game.walkthrough]
    llm = ScriptedLLM([*replies, *["Thought: more.\nAction: act[look]"] * 5])
    outcome = run_game(alfworld_react, llm, small_game)
    assert outcome.won and not outcome.finished and outcome.steps == 3
    assert outcome.result is not None and outcome.result.error is not None
    assert outcome.result.error.message.endswith("the episode is over and the agent did not finish")
    steps = outcome.result.trace.steps
    assert steps[3].observation is not None and steps[3].observation.startswith("You completed")
    assert len(steps) == 5  # three commands, one told that the episode is over, the stop


def test_a_game_that_runs_out_of_commands_is_lost_not_an_error(
    small_game: AlfworldGame,
) -> None:
    llm = ScriptedLLM(["Thought: look around.\nAction: act[look]"] * 6)
    record, _ = AlfworldSuite(alfworld_react, llm, max_steps=2).run(small_game)
    assert record.success == 0.0 and record.steps == 2
    assert record.error is None and record.prediction == "lost: out of commands"


def test_a_game_entered_before_its_goal_shows_the_expert_steps_as_the_agents(
    small_game: AlfworldGame,
) -> None:
    go, use, take = small_game.walkthrough
    llm = ScriptedLLM(
        [f"Thought: take it.\nAction: act[{take}]", "Thought: done.\nAction: finish[done]"]
    )
    outcome = run_game(alfworld_react, llm, small_game, max_steps=2, remaining=1)
    assert outcome.won and outcome.finished and outcome.steps == 1  # the agent's only
    assert outcome.result is not None
    task = outcome.result.trace.steps[0].prompt[-1].content
    shown = task[task.index("Done so far:") :].splitlines()
    assert shown[1].startswith("Thought: ") and shown[2] == f"Action: act[{go}]"
    assert shown[3].startswith("Observation: You arrive at desk 1.")
    assert (
        shown[5] == f"Action: act[{use}]" and shown[6] == "Observation: You turn on the desklamp 1."
    )
    assert take not in task  # the command left to play is the agent's to find


@pytest.mark.parametrize("remaining", [0, 4])
def test_remaining_must_leave_the_agent_part_of_the_walkthrough(
    small_game: AlfworldGame, remaining: int
) -> None:
    with pytest.raises(ConfigError, match=r"remaining must be in 1\.\.3") as caught:
        run_game(alfworld_react, ScriptedLLM([]), small_game, remaining=remaining)
    assert caught.value.parameter == "remaining"


@pytest.mark.slow
def test_smollm2_with_scored_choices_wins_one_command_from_the_goal(smollm2: LocalLLM) -> None:
    game = next(g for g in load_games("valid_train") if g.name == TWO_BOXES)
    record, trace = AlfworldSuite(alfworld_react_scored, smollm2, max_steps=2, remaining=1).run(
        game
    )
    assert record.success == 1.0 and record.steps == 1 and record.error is None
    assert trace is not None
    step = trace.steps[0]
    scores = step.model.choice_scores
    assert scores is not None and len(scores) > 10  # every admissible command, scored
    best = max(scores, key=scores.__getitem__)
    assert best == game.walkthrough[-1]
    assert step.action == {"type": "tool", "tool": "act", "arguments": best}
    assert step.output.startswith("Thought: ") and step.output.endswith(f"Action: act[{best}]")
    assert step.reason and "\n" not in step.reason


@pytest.mark.slow
def test_smollm2_plays_a_few_steps_of_an_unseen_game(smollm2: LocalLLM) -> None:
    game = load_games("valid_unseen", limit=1)[0]
    outcome = run_game(alfworld_react, smollm2, game, max_steps=3)
    assert outcome.error is None and outcome.game == game.name
    assert 1 <= outcome.steps <= 3 and outcome.seconds > 0
    assert outcome.result is not None
    steps = outcome.result.trace.steps
    assert steps and all(s.model.name == "smollm2-135m" for s in steps if s.prompt)
    assert any(s.action and s.action.get("tool") == "act" for s in steps)
