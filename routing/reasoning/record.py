"""Recorded decision points: what every reasoning module did at each state of an episode.

A `StateBook` is the replay memory of the reasoning-policy environment. Each
`StateRecord` is one decision point of one episode: what the agent observed, the
executor's proposal and its confidence (the probe every step pays for), and, per
module, the command it produced with the model work it took (`Work`: tokens and the
seconds they took here). Following a module's command leads to the child state, so a
book holds a tree per episode; a policy replays it without a model call, and each
deployment profile prices the recorded tokens its own way.

The book is an append-only JSON-lines file: a state is written whole (and synced) when
its modules are done, so a recording that dies keeps every finished state and resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relaygraph.errors import ConfigError, first_problem
from relaygraph.fileio import append_line, complete_lines

if TYPE_CHECKING:
    from collections.abc import Iterator


class Work(BaseModel):
    """One request's model work: its size and measured time.

    Attributes:
        model: The model that did it.
        prompt_tokens: Tokens the model read (a prompt once, plus every scored candidate).
        completion_tokens: Tokens it generated.
        seconds: Wall time measured when it was recorded.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    calls: int = Field(default=1, ge=1)
    """Engine calls it took (scoring makes one per candidate command)."""
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    seconds: float = Field(ge=0)


class Probe(BaseModel):
    """The executor's proposal at a state and how sure it is (the uncertainty features).

    Attributes:
        command: The executor's likeliest command.
        confidence: Its probability among the candidates.
        margin: Confidence minus the runner-up's probability.
        entropy: Entropy of the candidate distribution over log(candidates), in [0, 1].
        candidates: How many commands it chose among.
        work: What the probe cost.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str
    confidence: float = Field(ge=0, le=1)
    margin: float = Field(ge=0, le=1)
    entropy: float = Field(ge=0, le=1)
    candidates: int = Field(ge=1)
    work: list[Work]


class ModuleOutcome(BaseModel):
    """What one module produced at a state: a command, the thought behind it, its cost
    beyond the probe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str
    thought: str | None = None
    work: list[Work] = Field(default_factory=list)


class Transition(BaseModel):
    """Where a command leads: the next state's key, and whether the episode ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    next_key: str
    won: bool
    valid: bool
    """The engine accepted the command (an invalid one still costs a step)."""


class StateRecord(BaseModel):
    """One decision point of one recorded episode.

    Attributes:
        key: Unique within the book: the episode and the commands the agent sent.
        episode: The episode's id.
        step: Commands the agent already sent in this episode.
        goal: The task, as the agent reads it.
        observation: The last observation.
        last_valid: The agent's last command was admissible (True at the first step).
        repeated: The agent's last command repeats an earlier one of the episode.
        probe: The executor's proposal.
        outcomes: Module name → what it produced.
        transitions: Command → where it leads (one per distinct command in ``outcomes``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    episode: str
    step: int = Field(ge=0)
    goal: str
    observation: str
    last_valid: bool = True
    repeated: bool = False
    probe: Probe
    outcomes: dict[str, ModuleOutcome]
    transitions: dict[str, Transition]

    @property
    def text(self) -> str:
        """The goal and the last observation: what a policy embeds."""
        return f"{self.goal}\n{self.observation}"


class EpisodeSpec(BaseModel):
    """One episode of the environment: a game, entered ``remaining`` expert commands before
    its goal, with ``max_steps`` commands for the agent.

    Attributes:
        id: Unique within the book, ``<game>@<remaining>/<max_steps>``.
        game: The game's name.
        split: The split the game is from (train, tune and report splits stay apart).
        task_type: The game's task type.
        remaining: Expert commands left when the agent takes over.
        max_steps: Commands the agent may send.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    game: str
    split: str
    task_type: str
    remaining: int = Field(ge=1)
    max_steps: int = Field(ge=1)

    @property
    def root(self) -> str:
        return state_key(self.id, ())


KEY_SEPARATOR = " | "


def state_key(episode: str, commands: tuple[str, ...]) -> str:
    """The key of the state reached by sending ``commands`` in ``episode``."""
    return KEY_SEPARATOR.join((episode, *commands))


def key_commands(episode: str, key: str) -> tuple[str, ...]:
    """The commands that `state_key` joined into ``key``.

    Raises:
        ConfigError: ``key`` is not a state of ``episode``.
    """
    first, *commands = key.split(KEY_SEPARATOR)
    if first != episode:
        raise ConfigError(f"state {key!r} is not in episode {episode!r}")
    return tuple(commands)


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")

    episode: EpisodeSpec | None = None
    state: StateRecord | None = None


class StateBook:
    """Episodes and their recorded states, kept in memory and appended to ``path``.

    Raises:
        ConfigError: A line of the file is not a record (the file is not a book).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.episodes: dict[str, EpisodeSpec] = {}
        self.states: dict[str, StateRecord] = {}
        if self.path is not None and self.path.exists():
            for number, raw in enumerate(complete_lines(self.path, repair=True), start=1):
                try:
                    line = _Line.model_validate_json(raw)
                except ValidationError as exc:
                    field, problem = first_problem(exc.errors())
                    raise ConfigError(
                        f"{self.path}:{number} is not a state-book record: {field}: {problem}",
                        parameter="book",
                    ) from None
                self._keep(line)

    def add_episode(self, episode: EpisodeSpec) -> None:
        """Keep ``episode`` (once; a different spec under the same id is an error)."""
        known = self.episodes.get(episode.id)
        if known == episode:
            return
        if known is not None:
            raise ConfigError(f"episode {episode.id!r} is already recorded with other settings")
        self._write(_Line(episode=episode))

    def add_state(self, state: StateRecord) -> None:
        """Keep ``state``; its episode must be known."""
        if state.episode not in self.episodes:
            raise ConfigError(f"state {state.key!r} names an unknown episode {state.episode!r}")
        self._write(_Line(state=state))

    def state(self, key: str) -> StateRecord | None:
        return self.states.get(key)

    def playable(self, *splits: str) -> list[EpisodeSpec]:
        """The episodes of ``splits`` whose every reachable state is recorded (replay
        never needs a model), in recording order."""
        return [e for e in self.episodes.values() if e.split in splits and not self.missing(e)]

    def missing(self, episode: EpisodeSpec) -> list[str]:
        """Keys of states reachable in ``episode`` that are not recorded yet (the frontier
        a recorder still has to play; empty when replay never needs a model)."""
        return [key for key, state in self._walk(episode) if state is None]

    def reachable(self, episode: EpisodeSpec) -> list[StateRecord]:
        """The recorded states reachable from ``episode``'s root, breadth first."""
        return [state for _, state in self._walk(episode) if state is not None]

    def _walk(self, episode: EpisodeSpec) -> Iterator[tuple[str, StateRecord | None]]:
        frontier, seen = [episode.root], set()
        while frontier:
            key = frontier.pop(0)
            if key in seen:
                continue
            seen.add(key)
            state = self.states.get(key)
            yield key, state
            if state is None:
                continue
            for transition in state.transitions.values():
                if not transition.won and state.step + 1 < episode.max_steps:
                    frontier.append(transition.next_key)

    def _write(self, line: _Line) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_line(self.path, json.dumps(line.model_dump(mode="json", exclude_none=True)))
        self._keep(line)

    def _keep(self, line: _Line) -> None:
        if line.episode is not None:
            self.episodes[line.episode.id] = line.episode
        if line.state is not None:
            self.states[line.state.key] = line.state
