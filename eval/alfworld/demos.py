"""Few-shot demonstrations, built by replaying expert walkthroughs in the real engine.

For each task type, a game of a training or development split (never ``valid_unseen``,
the evaluation split) is played with its expert walkthrough; the observations are the
engine's own, and each action gets a short Thought made from a template over the
actions (``I found the mug 1. I will take it.``). Among the games whose walkthrough has
the type's most common length, the one with the shortest transcript is kept, so a
prompt holding one demonstration stays small enough for a 135M model's context.

relaygraph ships the result as ``eval/data/alfworld_demos.json``; rebuild it with
``python -m relaygraph.eval.alfworld.demos`` (a few minutes: every candidate game is
reset and replayed).
"""

from __future__ import annotations

import argparse
from collections import Counter
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from relaygraph.errors import ConfigError
from relaygraph.eval.alfworld.env import AlfworldEnv
from relaygraph.eval.alfworld.games import TASK_TYPES, AlfworldGame, TaskType, load_games
from relaygraph.fileio import read_model

if TYPE_CHECKING:
    from collections.abc import Sequence

DemoSplit = Literal["valid_seen", "valid_train", "train"]
"""Splits demonstrations may come from: never ``valid_unseen``, the evaluation split."""

DEMOS_FILE = "alfworld_demos.json"
FINISH_THOUGHT = "The task is complete. I will finish."
_SEPARATORS = {
    "take": " from ",
    "move": " to ",
    "clean": " with ",
    "heat": " with ",
    "cool": " with ",
}
"""What stands before the receptacle in each command that acts on one."""


class DemoStep(BaseModel):
    """One step of a demonstration: the templated thought, the command, what followed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    thought: str
    action: str
    observation: str


class Demo(BaseModel):
    """A winning episode of one game, as the agent should play it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_type: TaskType
    game: str
    """The game's name, ``<task folder>/<trial>``."""
    split: DemoSplit
    task: str
    """The reset observation: the room, then the task."""
    steps: list[DemoStep] = Field(min_length=1)

    def render(self, tool: str = "act") -> str:
        """The demonstration in the ReAct format the agent writes, tool calls as
        ``tool[command]``, ending with ``finish[done]``."""
        lines = [f"Task: {self.task}"]
        for step in self.steps:
            lines += [
                f"Thought: {step.thought}",
                f"Action: {tool}[{step.action}]",
                f"Observation: {step.observation}",
            ]
        lines += [f"Thought: {FINISH_THOUGHT}", "Action: finish[done]"]
        return "\n".join(lines)


class DemoSet(BaseModel):
    """Demonstrations by task type (what ``alfworld_demos.json`` holds).

    Example:
        >>> print(load_demos().for_task("look").render())           # doctest: +SKIP
        Task: You are in the middle of a room. ... Your task is to: look at cd under the desklamp.
        Thought: My task is to look at cd under the desklamp. First I need to find a cd. ...
        Action: act[go to desk 1]
        ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    demos: list[Demo]

    def for_task(self, task_type: TaskType) -> Demo:
        """The first demonstration of ``task_type``.

        Raises:
            ConfigError: The set has none for that type.
        """
        for demo in self.demos:
            if demo.task_type == task_type:
                return demo
        have = sorted({d.task_type for d in self.demos})
        raise ConfigError(
            f"no ALFWorld demonstration for task type {task_type!r}; the set has {have}",
            parameter="demos",
        )


def load_demos(path: str | Path | None = None) -> DemoSet:
    """Demonstrations from ``path``, or the set that ships with relaygraph.

    Raises:
        ConfigError: The file is unreadable, not JSON, or not a valid demonstration set
            (the message names the file and the field).
    """
    source = (
        Path(path)
        if path is not None
        else Path(str(files("relaygraph.eval").joinpath("data", DEMOS_FILE)))
    )
    return read_model(DemoSet, source, what="demonstration set")


def build_demos(
    split: DemoSplit = "valid_seen",
    *,
    candidates: int | None = None,
    task_types: Sequence[TaskType] | None = None,
    data_dir: str | Path | None = None,
) -> DemoSet:
    """One demonstration per task type, replayed in the real engine.

    Args:
        split: Where the games come from; ``valid_unseen`` is refused.
        candidates: Replay at most this many games per type (None: every game whose
            walkthrough has the type's most common length).
        task_types: Build only these types (default: all six).
        data_dir: As in `load_games`.

    Raises:
        ConfigError: ``split`` is ``valid_unseen``, or no candidate of a type won.
        AlfworldEnvError: The engine failed.
    """
    if split not in ("valid_seen", "valid_train", "train"):
        raise ConfigError(
            f"demonstrations must not come from {split!r}: it is the evaluation split; "
            "use valid_seen, valid_train or train",
            parameter="split",
            value=split,
        )
    games = load_games(split, data_dir=data_dir)
    demos = []
    for task_type in task_types or tuple(TASK_TYPES.values()):
        of_type = [g for g in games if g.task_type == task_type]
        if not of_type:
            raise ConfigError(f"split {split!r} has no {task_type!r} game to demonstrate")
        usual = Counter(len(g.walkthrough) for g in of_type).most_common(1)[0][0]
        chosen = [g for g in of_type if len(g.walkthrough) == usual and coherent(g.walkthrough)][
            :candidates
        ]
        played = [demo for g in chosen if (demo := replay(g, split)) is not None]
        if not played:
            raise ConfigError(f"no {task_type!r} walkthrough of {split!r} won when replayed")
        demos.append(min(played, key=lambda d: len(d.render())))
    return DemoSet(demos=demos)


def replay(game: AlfworldGame, split: DemoSplit) -> Demo | None:
    """The game's walkthrough played in the engine, with thoughts; None if it did not win.

    Raises:
        AlfworldEnvError: The engine failed.
    """
    thoughts = think(game.goal, game.walkthrough)
    steps = []
    with AlfworldEnv(game, max_steps=len(game.walkthrough)) as env:
        first = env.reset()
        for thought, action in zip(thoughts, game.walkthrough, strict=True):
            observation = env.step(action)
            steps.append(DemoStep(thought=thought, action=action, observation=observation.text))
        if not env.won:
            return None
    return Demo(task_type=game.task_type, game=game.name, split=split, task=first.text, steps=steps)


def think(goal: str, actions: Sequence[str]) -> list[str]:
    """A short templated thought before each expert action.

    Example:
        >>> think("put a clean mug in coffeemachine", ["go to countertop 1",
        ...       "take mug 1 from countertop 1", "go to sinkbasin 1",
        ...       "clean mug 1 with sinkbasin 1"])[1:3]
        ['I found the mug 1. I will take it.', 'Now I need to clean the mug 1 with the sinkbasin 1. I will go to the sinkbasin 1.']
    """  # noqa: E501
    first_find = _kind(next((_object(a) for a in actions if a.startswith("take ")), "object"))
    thoughts = []
    holding: str | None = None
    taken = 0
    for index, action in enumerate(actions):
        verb = action.split()[0]
        purpose = next((a for a in actions[index + 1 :] if a.split()[0] not in ("go", "open")), "")
        if verb == "go" and index == 0:
            place = action.removeprefix("go to ")
            thoughts.append(
                f"My task is to {goal}. First I need to find {_a(first_find)}. "
                f"I will look at the {place}."
            )
        elif verb == "go":
            place = action.removeprefix("go to ")
            thoughts.append(_go_thought(place, purpose, holding, taken))
        elif verb == "open":
            thoughts.append(f"The {action.removeprefix('open ')} is closed. I will open it.")
        elif verb == "take":
            holding, taken = _object(action), taken + 1
            thoughts.append(f"I found the {holding}. I will take it.")
        elif verb in ("clean", "heat", "cool"):
            thing, tool = action.removeprefix(f"{verb} ").split(" with ")
            thoughts.append(f"I will {verb} the {thing} with the {tool}.")
        elif verb == "move":
            thing, place = action.removeprefix("move ").split(" to ")
            thoughts.append(f"I will move the {thing} to the {place}.")
            holding = None
        elif verb == "use":
            lamp = action.removeprefix("use ")
            if holding:
                thoughts.append(f"I will turn on the {lamp} to look at the {holding} under it.")
            else:
                target = _object(purpose) or "object"
                thoughts.append(f"I will turn on the {lamp}, then take the {target} under it.")
        else:
            thoughts.append(f"I will {action}.")
    return thoughts


def coherent(actions: Sequence[str]) -> bool:
    """Whether every command acts where the agent last went.

    Some expert walkthroughs go to one place and act on a neighbouring one (``go to
    drawer 17`` then ``open drawer 11``); the engine allows it, but a demonstration
    should not teach it.
    """
    here = ""
    for action in actions:
        if action.startswith("go to "):
            here = action.removeprefix("go to ")
        elif (place := _receptacle(action)) and place != here:
            return False
    return True


def _receptacle(action: str) -> str:
    """The place a command acts on (``take mug 1 from desk 1`` -> ``desk 1``), or ''."""
    verb = action.split(maxsplit=1)[0]
    if verb == "open":
        return action.removeprefix("open ")
    separator = _SEPARATORS.get(verb)
    return action.rsplit(separator, maxsplit=1)[-1] if separator else ""


def _go_thought(place: str, purpose: str, holding: str | None, taken: int) -> str:
    verb = purpose.split(maxsplit=1)[0] if purpose else ""
    if verb in ("clean", "heat", "cool") and holding:
        tool = _receptacle(purpose)
        return f"Now I need to {verb} the {holding} with the {tool}. I will go to the {place}."
    if verb == "move" and holding:
        return f"Now I will bring the {holding} to the {place}."
    if verb == "use":
        return f"Now I need a light. I will go to the {place}."
    kind = _kind(_object(purpose)) if verb == "take" else "object"
    if taken:
        return f"Now I need to find another {kind}. I will look at the {place}."
    return f"I need to find {_a(kind)}. I will look at the {place}."


def _object(action: str) -> str:
    """The object a ``take X from Y`` command names (empty for other commands)."""
    if not action.startswith("take "):
        return ""
    return action.removeprefix("take ").split(" from ")[0]


def _kind(name: str) -> str:
    """``mug 1`` -> ``mug``."""
    return " ".join(w for w in name.split() if not w.isdigit()) or "object"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def main(argv: Sequence[str] | None = None) -> None:
    """Build the demonstrations and write them where relaygraph ships them."""
    parser = argparse.ArgumentParser(description="Build the ALFWorld demonstrations.")
    parser.add_argument("--split", default="valid_seen", choices=["valid_seen", "valid_train"])
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "data" / DEMOS_FILE
    )
    args = parser.parse_args(argv)
    demos = build_demos(args.split, candidates=args.candidates)
    args.out.write_text(demos.model_dump_json(indent=1) + "\n", encoding="utf-8")
    for demo in demos.demos:
        print(
            f"{demo.task_type:9} {len(demo.steps)} steps {len(demo.render()):5} chars {demo.game}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
