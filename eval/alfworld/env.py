"""`AlfworldEnv`: one ALFWorld game in the real TextWorld engine, as an agent plays it.

The engine is TextWorld's PDDL backend with ALFWorld's wrappers (``AlfredDemangler``
gives objects their readable names, ``AlfredInfos`` the game file), the same setup as
ALFWorld's own text environment. Winning is the engine's own goal check (``won``).

Two things differ from talking to the engine directly, both for small models:

- A command that is not admissible (ALFWorld answers those with a bare "Nothing
  happens.") gets an observation that says it is not a valid command and lists the
  closest valid ones. It still costs a step, as it does in ALFWorld.
- When the episode ends, the observation says so and tells the agent to finish.

Whatever the engine raises becomes an `AlfworldEnvError`, and the environment keeps it
(``error``), so a harness can score the game as a failure instead of crashing.
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relaygraph.errors import ConfigError, RelayGraphError

if TYPE_CHECKING:
    from types import TracebackType

    from relaygraph.eval.alfworld.games import AlfworldGame

WELCOME = "-= Welcome to TextWorld, ALFRED! =-"
NOTHING_HAPPENS = "Nothing happens."
SUGGESTIONS = 5
"""How many valid commands an invalid-command observation lists."""
MAX_STEPS_LIMIT = 99
"""Upper bound on ``max_steps`` (ALFWorld's standard budget is 50)."""
_ENGINE_ERRORS = (Exception, SystemExit)
"""What the engine may raise: fast-downward's PDDL translator raises SystemExit for
input it does not support, which must end the game, not the process."""


class AlfworldEnvError(RelayGraphError):
    """The ALFWorld engine failed: it could not load, reset, step or close a game.

    Attributes:
        game: The game's name.
        command: The command being run when it failed (None for load, reset, close).
    """

    def __init__(self, message: str, *, game: str, command: str | None = None) -> None:
        super().__init__(message)
        self.game = game
        self.command = command


@dataclass(frozen=True, slots=True)
class Observation:
    """What the agent sees after a reset or a command.

    Attributes:
        text: The observation for the agent (the engine's feedback, plus a note when
            the command was invalid or the episode ended).
        feedback: The engine's own feedback, unchanged.
        admissible_commands: The commands valid in the new state, sorted.
        won: The engine's goal check.
        done: The episode is over: won, or out of steps.
        steps: Commands taken so far, invalid ones included.
        valid: Whether the command was admissible (True after a reset).
    """

    text: str
    feedback: str
    admissible_commands: tuple[str, ...]
    won: bool
    done: bool
    steps: int
    valid: bool = True


class AlfworldEnv:
    """One ALFWorld game in the real TextWorld engine; close it (or use ``with``).

    Example:
        >>> game = load_games("valid_seen", limit=1)[0]              # doctest: +SKIP
        >>> with AlfworldEnv(game) as env:                            # doctest: +SKIP
        ...     first = env.reset()
        ...     for command in game.walkthrough:
        ...         obs = env.step(command)
        ...     obs.won
        True

    Args:
        game: The game to play.
        max_steps: Commands allowed before the episode ends (ALFWorld's standard is 50).
    """

    def __init__(self, game: AlfworldGame, max_steps: int = 50) -> None:
        if not 1 <= max_steps <= MAX_STEPS_LIMIT:
            raise ConfigError(
                f"max_steps must be in 1..{MAX_STEPS_LIMIT}, got {max_steps}",
                parameter="max_steps",
                value=max_steps,
            )
        self.game = game
        self.max_steps = max_steps
        self.error: AlfworldEnvError | None = None
        """The first engine failure, if any; the episode is over after one."""
        self.late_commands = 0
        """Commands sent after the episode ended (the agent should have finished)."""
        self._engine: Any = None
        self._last: Observation | None = None

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> AlfworldEnv:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except AlfworldEnvError:
            if exc is None:  # never hide the error that is already on its way out
                raise

    def close(self) -> None:
        """Release the engine; safe to call twice.

        Raises:
            AlfworldEnvError: The engine failed to close.
        """
        engine, self._engine = self._engine, None
        if engine is None:
            return
        # TextWorld loads a private copy of fast-downward's library per game and never
        # unloads it. Unloading it here (fast_downward.close_lib) made the interpreter
        # segfault at exit, so each copy stays mapped until the process ends.
        try:
            engine.close()
        except _ENGINE_ERRORS as exc:
            raise self._failed("closing it", exc) from exc

    # -- the episode ------------------------------------------------------------------

    @property
    def won(self) -> bool:
        return self._last is not None and self._last.won

    @property
    def done(self) -> bool:
        """The episode is over: won, out of steps, or the engine failed."""
        return self.error is not None or (self._last is not None and self._last.done)

    @property
    def admissible_commands(self) -> tuple[str, ...]:
        """The commands valid in the current state (none before a reset or once over)."""
        return () if self._last is None or self.done else self._last.admissible_commands

    @property
    def steps(self) -> int:
        return 0 if self._last is None else self._last.steps

    def reset(self) -> Observation:
        """Start the game from its initial state.

        Raises:
            ConfigError: textworld or alfworld is not installed.
            AlfworldEnvError: The engine could not load or reset the game.
        """
        self.close()
        self.error, self.late_commands = None, 0
        engine_type, wrappers, infos = _engine_parts()
        try:
            self._engine = engine_type(
                [str(self.game.path)],
                infos,
                max_episode_steps=self.max_steps,
                wrappers=wrappers,
            )
            # TextWorld's PDDL loader leaves the game file open; the ResourceWarning it
            # causes is not ours (and pytest turns it into a failure). catch_warnings is
            # process-wide: concurrent resets can at worst leave this one filter behind.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                feedback, info = self._engine.reset()
        except _ENGINE_ERRORS as exc:
            raise self._failed("loading it", exc) from exc
        text = str(feedback).replace(WELCOME, "").strip()
        self._last = Observation(
            text=text,
            feedback=str(feedback),
            admissible_commands=tuple(info["admissible_commands"]),
            won=bool(info["won"]),
            done=False,
            steps=0,
        )
        return self._last

    def step(self, command: str) -> Observation:
        """Run one command; every command, valid or not, costs a step.

        After the episode has ended, the engine is not called: the observation repeats
        that it is over (and ``late_commands`` counts the call).

        Raises:
            ConfigError: `reset` was not called.
            AlfworldEnvError: The engine failed (kept in ``error``; the episode is over).
        """
        last = self._last
        if last is None or self._engine is None:
            raise ConfigError("call reset() before step()")
        if self.done:
            self.late_commands += 1
            return Observation(
                text=_over_note(last.won, self.error),
                feedback="",
                admissible_commands=(),
                won=last.won,
                done=True,
                steps=last.steps,
                valid=False,
            )
        wanted = normalize_command(command)
        valid = wanted in last.admissible_commands
        try:
            feedback, _, engine_done, info = self._engine.step(wanted)
        except _ENGINE_ERRORS as exc:
            raise self._failed(f"running {command!r}", exc, command=command) from exc
        admissible = tuple(info["admissible_commands"])
        won = bool(info["won"])
        steps = last.steps + 1
        done = won or bool(engine_done) or steps >= self.max_steps
        text = str(feedback).strip()
        if not valid and text == NOTHING_HAPPENS:
            text = _invalid_note(wanted, last.admissible_commands)
        if done:
            text = f"{text}\n{_over_note(won, None, steps=steps)}"
        self._last = Observation(
            text=text,
            feedback=str(feedback),
            admissible_commands=admissible,
            won=won,
            done=done,
            steps=steps,
            valid=valid,
        )
        return self._last

    def _failed(
        self, what: str, exc: BaseException, *, command: str | None = None
    ) -> AlfworldEnvError:
        error = AlfworldEnvError(
            f"ALFWorld game {self.game.name}: the engine failed {what} "
            f"({type(exc).__name__}: {exc}); the game counts as lost",
            game=self.game.name,
            command=command,
        )
        self.error = self.error or error  # the first failure is the one to report
        return error


def normalize_command(command: str) -> str:
    """The command as ALFWorld spells commands: lower case, single spaces, no quotes or
    final full stop.

    Example:
        >>> normalize_command("  Go to  Desk 1. ")
        'go to desk 1'
    """
    text = re.sub(r"\s+", " ", command).strip().strip("\"'`").strip()
    return text.rstrip(".!").strip().lower()


def closest_commands(command: str, admissible: tuple[str, ...]) -> list[str]:
    """The admissible commands nearest to ``command``: most shared words, then most
    similar text; ties keep ALFWorld's sorted order.

    Example:
        >>> closest_commands("go to countertop", ("go to cabinet 1", "go to countertop 1",
        ...                                       "go to countertop 2", "look"))[:2]
        ['go to countertop 1', 'go to countertop 2']
    """
    words = set(command.split())

    def nearness(candidate: str) -> tuple[int, float]:
        shared = len(words & set(candidate.split()))
        return shared, difflib.SequenceMatcher(None, command, candidate).ratio()

    return sorted(admissible, key=nearness, reverse=True)[:SUGGESTIONS]


def _invalid_note(command: str, admissible: tuple[str, ...]) -> str:
    """Why nothing happened, and the valid commands closest to what was tried."""
    shown = "; ".join(closest_commands(command, admissible))
    return (
        f'Nothing happens: "{command}" is not a valid command here. '
        f"Valid commands include: {shown}."
    )


def _over_note(won: bool, error: AlfworldEnvError | None, *, steps: int | None = None) -> str:
    if error is not None:
        return f"The episode is over: the environment failed ({error}). Finish now."
    if won:
        return "You completed the task! The episode is over. Finish now: finish[done]"
    limit = f" after {steps} steps" if steps is not None else ""
    return f"The episode is over{limit}: the task was not completed. Finish now: finish[failed]"


def _engine_parts() -> tuple[Any, list[Any], Any]:
    """TextWorld's gym environment class, ALFWorld's wrappers and the infos to request.

    Imported here, not at module level: the engine is an optional dependency that
    loading games or building demonstrations from the shipped file does not need.
    """
    try:
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
        from textworld.gym.envs import TextworldGymEnv
    except ImportError as exc:
        raise ConfigError(
            f"the ALFWorld environment needs textworld and alfworld ({exc}); "
            "`make install` installs them (see the Makefile for why pip's defaults cannot)"
        ) from None
    infos = textworld.EnvInfos(won=True, admissible_commands=True)
    return TextworldGymEnv, [AlfredDemangler(shuffle=False), AlfredInfos], infos
