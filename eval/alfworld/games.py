"""ALFWorld games: the shipped splits (or a user's copy) as validated `AlfworldGame` records.

The splits ship as ``eval/data/alfworld_<split>.tar.gz`` in ALFWorld's own layout,
``json_2.1.1/<split>/<task folder>/<trial>/game.tw-pddl``; each file is JSON with
``pddl_domain``, ``grammar``, ``pddl_problem``, ``solvable`` and an expert
``walkthrough``. The TextWorld engine reads games from disk, so a split is extracted
once into the cache (``$RELAYGRAPH_CACHE_DIR`` or ``~/.cache/relaygraph``, under
``alfworld/``). A directory of the same layout, e.g. ALFWorld's full download, works
unchanged through ``data_dir``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relaygraph.errors import ConfigError, first_problem
from relaygraph.llm.catalog import cache_dir as relaygraph_cache_dir

Split: TypeAlias = Literal["valid_unseen", "valid_seen", "valid_train", "train"]
"""ALFWorld splits; all but ``train`` ship with relaygraph (``train`` needs ``data_dir``)."""

SHIPPED_SPLITS: tuple[Split, ...] = ("valid_unseen", "valid_seen", "valid_train")

TaskType: TypeAlias = Literal["pick", "clean", "heat", "cool", "look", "pick_two"]

TASK_TYPES: dict[str, TaskType] = {
    "pick_and_place_simple": "pick",
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
    "look_at_obj_in_light": "look",
    "pick_two_obj_and_place": "pick_two",
}
"""ALFWorld's task folder prefixes (before the first ``-``) and their short names."""

LAYOUT = "json_2.1.1"
GAME_FILE = "game.tw-pddl"
_GOAL = re.compile(r"Your task is to: ([^\"\n]+)")


class AlfworldGame(BaseModel):
    """One ALFWorld game: where its file is, what kind of task it is, the expert's actions.

    Example:
        >>> game = load_games("valid_seen", limit=1)[0]             # doctest: +SKIP
        >>> game.name, game.task_type, game.goal                    # doctest: +SKIP
        ('look_at_obj_in_light-AlarmClock-None-DeskLamp-323/trial_T20190909_044715_250790',
         'look', 'look at alarmclock under the desklamp')

    Attributes:
        name: ``<task folder>/<trial>``, unique within a split.
        split: The split it belongs to.
        task_type: pick, clean, heat, cool, look or pick_two.
        goal: The task as the game states it, e.g. ``put a clean mug in coffeemachine``.
        path: The ``game.tw-pddl`` file the engine loads.
        walkthrough: The expert's action list, which wins the game.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    split: Split
    task_type: TaskType
    goal: str
    path: Path
    walkthrough: tuple[str, ...]

    def expert_prefix(self, remaining: int) -> tuple[str, ...]:
        """The expert commands before the last ``remaining``: what is played before an
        episode that starts ``remaining`` commands from the goal.

        Raises:
            ConfigError: ``remaining`` is not in 1..len(walkthrough).
        """
        if not 1 <= remaining <= len(self.walkthrough):
            raise ConfigError(
                f"remaining must be in 1..{len(self.walkthrough)} for {self.name}, got {remaining}",
                parameter="remaining",
                value=remaining,
            )
        return self.walkthrough[:-remaining]


class _GameFile(BaseModel):
    """The fields of a ``game.tw-pddl`` file that relaygraph relies on."""

    model_config = ConfigDict(extra="ignore")

    pddl_domain: str = Field(min_length=1)
    pddl_problem: str = Field(min_length=1)
    grammar: str = Field(min_length=1)
    walkthrough: list[str] = Field(min_length=1)


def extract_split(split: Split, cache_dir: str | Path | None = None) -> Path:
    """The folder holding ``json_2.1.1/<split>``, extracting the shipped archive once.

    The archive is extracted into a temporary folder beside the target and renamed into
    place, so a killed extraction never leaves a partial split under the final name. The
    target's name carries the archive's hash: a new relaygraph version with new data
    never reads an old extraction.

    Raises:
        ConfigError: ``split`` does not ship with relaygraph.
    """
    if split not in SHIPPED_SPLITS:
        raise ConfigError(
            f"split {split!r} does not ship with relaygraph (shipped: "
            f"{', '.join(SHIPPED_SPLITS)}); pass data_dir= with a folder holding {LAYOUT}/{split}",
            parameter="split",
            value=split,
        )
    data = files("relaygraph.eval").joinpath("data", f"alfworld_{split}.tar.gz").read_bytes()
    root = (Path(cache_dir) if cache_dir is not None else relaygraph_cache_dir()) / "alfworld"
    target = root / f"{split}-{hashlib.sha256(data).hexdigest()[:12]}"
    if (target / LAYOUT / split).is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=root, prefix=f".{split}-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            archive.extractall(partial, filter="data")
        try:
            partial.rename(target)
        except OSError:
            if not (target / LAYOUT / split).is_dir():  # not a concurrent extraction that won
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def load_games(
    split: Split = "valid_unseen",
    limit: int | None = None,
    data_dir: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
) -> list[AlfworldGame]:
    """The games of a split, sorted by name (the same order on every machine).

    Args:
        split: Which split; ``valid_unseen`` is the standard evaluation split.
        limit: Keep the first ``limit`` games of the sorted list.
        data_dir: A folder holding ``json_2.1.1/<split>/...``; None uses the shipped data.
        cache_dir: Where shipped splits are extracted (default: the relaygraph cache).

    Raises:
        ConfigError: An unknown split, a ``limit`` below 0, a missing folder, an unknown
            task folder, or an unreadable or malformed game file (the message names it).
    """
    if limit is not None and limit < 0:
        raise ConfigError("limit must be >= 0 or None", parameter="limit", value=limit)
    root = Path(data_dir) if data_dir is not None else extract_split(split, cache_dir)
    folder = root / LAYOUT / split
    if not folder.is_dir():
        raise ConfigError(
            f"{folder} is not a folder; data_dir must hold {LAYOUT}/{split}/<task>/<trial>/"
            f"{GAME_FILE}",
            parameter="data_dir",
            value=str(root),
        )
    paths = sorted(folder.glob(f"*/*/{GAME_FILE}"), key=lambda p: p.relative_to(folder).as_posix())
    if not paths:
        raise ConfigError(f"{folder} holds no <task>/<trial>/{GAME_FILE} files")
    return [_load_game(path, split) for path in paths[:limit]]


def _load_game(path: Path, split: Split) -> AlfworldGame:
    task_folder = path.parent.parent.name
    prefix = task_folder.split("-")[0]
    if prefix not in TASK_TYPES:
        raise ConfigError(
            f"{path}: task folder {task_folder!r} starts with {prefix!r}, not one of "
            f"ALFWorld's task types ({', '.join(TASK_TYPES)})"
        )
    try:
        game = _GameFile.model_validate(json.loads(path.read_bytes()))
    except OSError as exc:
        raise ConfigError(f"cannot read game file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    except ValidationError as exc:
        field, problem = first_problem(exc.errors())
        raise ConfigError(f"{path}: {field}: {problem}", parameter=field) from None
    goal = _GOAL.search(game.grammar)
    if goal is None:
        raise ConfigError(f"{path}: its grammar states no 'Your task is to: ...' line")
    return AlfworldGame(
        name=f"{task_folder}/{path.parent.name}",
        split=split,
        task_type=TASK_TYPES[prefix],
        goal=goal.group(1).strip().rstrip("."),
        path=path,
        walkthrough=tuple(game.walkthrough),
    )
