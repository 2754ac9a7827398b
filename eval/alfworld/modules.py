"""Reasoning modules played on real ALFWorld states, and the recorder that explores them.

An episode (`EpisodeSpec`) enters a game after all but its last ``remaining`` expert
commands and gives the agent ``max_steps`` commands: short enough for the packaged
models to win sometimes, and for every module's effect to show. At each state the
executor scores every valid command (``Action: act[<command>]``) and proposes the best;
each module then produces its command (`AlfworldModules.decide`).

A command's score is its log-probability after the state minus its log-probability
after an empty task (its prior under the demonstration alone): pointwise mutual
information with the state, the "domain-conditional PMI" of Holtzman et al. (2021,
"Surface form competition"). By probability alone the packaged models pick the short
``go to`` commands the demonstrations are full of, whatever the state: on ten states one
command from the goal, SmolLM2 chose the winning command 0 times by probability and 5
times by PMI. Priors are cached per model and task type, so a state pays only for the
priors of commands not seen before (mostly an episode's first state).

The
`Recorder` plays states in the real engine with real model calls and writes them to a
`StateBook`, following every distinct command, so the book holds the episode's whole
tree and a policy can be replayed on it without a model.

Example:
    >>> modules = AlfworldModules(ActionSpace.default("smollm2-135m", "gemma3-270m"))
    >>> recorder = Recorder(modules, StateBook("runs/reasoning/book.jsonl"))   # doctest: +SKIP
    >>> episode = recorder.episode(game, remaining=2, max_steps=3)              # doctest: +SKIP
    >>> recorder.record(episode)                                                # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import chain, zip_longest
from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError
from relaygraph.eval.alfworld.demos import DemoSet, load_demos
from relaygraph.eval.alfworld.env import AlfworldEnv
from relaygraph.eval.alfworld.games import TASK_TYPES
from relaygraph.llm.registry import load_llm
from relaygraph.llm.types import ChatPrompt, GenerationParams, Message
from relaygraph.routing.reasoning.record import (
    EpisodeSpec,
    ModuleOutcome,
    Probe,
    StateBook,
    StateRecord,
    Transition,
    Work,
    key_commands,
    state_key,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.eval.alfworld.env import Observation
    from relaygraph.eval.alfworld.games import AlfworldGame
    from relaygraph.llm.protocol import LLM
    from relaygraph.routing.reasoning.modules import ActionSpace, ModuleSpec

INSTRUCTIONS = """\
You are in a house. Do the task one command at a time with act[command]. Write places \
and objects exactly as you see them, with their numbers.

Example:
{demo}"""
HISTORY_STEPS = 6
"""Earlier steps shown to the models (expert and agent steps alike), newest last."""


@dataclass(frozen=True, slots=True)
class AlfworldState:
    """A state as the models see it: the task, the recent steps, the valid commands."""

    game: AlfworldGame
    task: str
    history: tuple[tuple[str, str], ...]
    """(command, observation) pairs, oldest first."""
    admissible: tuple[str, ...]


@dataclass(slots=True)
class AlfworldModules:
    """Runs an action space's modules on ALFWorld states with real models.

    Args:
        space: The executor and the modules.
        demos: Demonstrations, one per task type, shown in every prompt.
        llms: Model name → model; loaded by name (`load_llm`) when missing.
    """

    space: ActionSpace
    demos: DemoSet = field(default_factory=load_demos)
    llms: dict[str, LLM] = field(default_factory=dict)
    _priors: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict, repr=False)

    def llm(self, name: str) -> LLM:
        if name not in self.llms:
            self.llms[name] = load_llm(name)
        return self.llms[name]

    def probe(self, state: AlfworldState) -> Probe:
        """The executor's proposal and its confidence."""
        scores, work = self._choose(self.space.executor, state, "")
        return _probe(scores, work)

    def decide(self, state: AlfworldState, module: ModuleSpec, probe: Probe) -> ModuleOutcome:
        """The command ``module`` sends at ``state`` (the probe's, when it only proposes)."""
        if self.space.proposes(module):
            return ModuleOutcome(command=probe.command)
        work: list[Work] = []
        thought = None
        if module.reasoner is not None:
            thought, thinking = self._think(module.reasoner, state, module.thought_tokens)
            work.append(thinking)
        scores, choosing = self._choose(module.chooser, state, thought or "")
        work += choosing
        return ModuleOutcome(
            command=max(scores, key=scores.__getitem__), thought=thought, work=work
        )

    def _prompt(self, state: AlfworldState, prefill: str) -> ChatPrompt:
        demo = self.demos.for_task(state.game.task_type).render("act")
        lines = [f"Task: {state.task}"]
        for command, observation in state.history[-HISTORY_STEPS:]:
            lines += [f"Action: act[{command}]", f"Observation: {observation}"]
        return ChatPrompt(
            messages=(
                Message(role="system", content=INSTRUCTIONS.format(demo=demo)),
                Message(role="user", content="\n".join(lines)),
            ),
            prefill=prefill,
        )

    def _think(self, model: str, state: AlfworldState, max_tokens: int) -> tuple[str, Work]:
        llm = self.llm(model)
        params = GenerationParams(max_tokens=max_tokens, temperature=0.0, stop=("\n",))
        completion = llm.complete(self._prompt(state, "Thought:"), params)
        usage = completion.usage
        work = Work(
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=completion.latency_s,
        )
        return completion.text.strip(), work

    def _choose(
        self, model: str, state: AlfworldState, thought: str
    ) -> tuple[dict[str, float], list[Work]]:
        """Each valid command's score as the action after ``thought``: its log-probability
        after the state minus its log-probability after an empty task (its prior)."""
        prefill = f"Thought: {thought}\nAction: act[" if thought else "Action: act["
        scores, work = self._log_probs(model, self._prompt(state, prefill), state.admissible)
        prior, prior_work = self._prior(model, state)
        return {c: scores[c] - prior[c] for c in state.admissible}, [work, *prior_work]

    def _prior(self, model: str, state: AlfworldState) -> tuple[dict[str, float], list[Work]]:
        """The commands' log-probabilities with no task and no steps, cached per model and
        task type (the demonstration is the only context): computed once, charged once."""
        cached = self._priors.setdefault((model, state.game.task_type), {})
        missing = tuple(c for c in state.admissible if c not in cached)
        work: list[Work] = []
        if missing:
            empty = AlfworldState(state.game, "", (), missing)
            found, computing = self._log_probs(model, self._prompt(empty, "Action: act["), missing)
            cached.update(found)
            work.append(computing)
        return {c: cached[c] for c in state.admissible}, work

    def _log_probs(
        self, model: str, prompt: ChatPrompt, commands: tuple[str, ...]
    ) -> tuple[dict[str, float], Work]:
        llm = self.llm(model)
        began = time.perf_counter()
        scores: dict[str, float] = {}
        read = 0
        for command in commands:
            score = llm.score(prompt, f"{command}]")
            scores[command] = score.total_logprob
            read += len(score.tokens) + (0 if read else score.prompt_tokens)
        seconds = time.perf_counter() - began
        work = Work(
            model=model,
            calls=len(scores),
            prompt_tokens=read,
            completion_tokens=0,
            seconds=seconds,
        )
        return scores, work


def _probe(scores: dict[str, float], work: list[Work]) -> Probe:
    top = max(scores.values())
    weights = {c: math.exp(s - top) for c, s in scores.items()}
    total = sum(weights.values())
    probs = sorted((w / total for w in weights.values()), reverse=True)
    runner_up = probs[1] if len(probs) > 1 else 0.0
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    spread = math.log(len(probs)) if len(probs) > 1 else 1.0
    return Probe(
        command=max(scores, key=scores.__getitem__),
        confidence=probs[0],
        margin=probs[0] - runner_up,
        entropy=min(1.0, entropy / spread),
        candidates=len(probs),
        work=work,
    )


class Recorder:
    """Plays episodes' states in the real engine and keeps them in a `StateBook`.

    Args:
        modules: What runs at each state.
        book: Where states are kept (and found again: recorded states are never redone).
        games: Game name → game, for the episodes the book already holds.
    """

    def __init__(
        self,
        modules: AlfworldModules,
        book: StateBook,
        games: Sequence[AlfworldGame] = (),
    ) -> None:
        self.modules = modules
        self.book = book
        self._games = {g.name: g for g in games}

    def episode(self, game: AlfworldGame, *, remaining: int, max_steps: int) -> EpisodeSpec:
        """The episode of ``game`` that starts ``remaining`` expert commands from the goal.

        Raises:
            ConfigError: ``remaining`` is not in 1..len(walkthrough), or ``max_steps`` < 1.
        """
        game.expert_prefix(remaining)  # checks remaining
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
        self._games[game.name] = game
        episode = EpisodeSpec(
            id=f"{game.name}@{remaining}/{max_steps}",
            game=game.name,
            split=game.split,
            task_type=game.task_type,
            remaining=remaining,
            max_steps=max_steps,
        )
        self.book.add_episode(episode)
        return episode

    def record(
        self, episode: EpisodeSpec, on_state: Callable[[StateRecord], None] | None = None
    ) -> int:
        """Record every state reachable in ``episode``; returns how many were new.

        Raises:
            AlfworldEnvError: The engine failed (the states recorded so far are kept).
        """
        new = 0
        while missing := self.book.missing(episode):
            for key in missing:
                state = self.state(episode, key_commands(episode.id, key))
                new += 1
                if on_state is not None:
                    on_state(state)
        return new

    def state(self, episode: EpisodeSpec, commands: tuple[str, ...]) -> StateRecord:
        """The state reached by ``commands``: from the book, or played and recorded."""
        key = state_key(episode.id, commands)
        if (known := self.book.state(key)) is not None:
            return known
        game = self._games[episode.game]
        with AlfworldEnv(game, max_steps=_engine_steps(game, episode)) as env:
            task, history, last = _enter(env, game, episode, commands)
            seen = AlfworldState(game, task, tuple(history), last.admissible_commands)
            probe = self.modules.probe(seen)
            outcomes = {
                m.name: self.modules.decide(seen, m, probe) for m in self.modules.space.modules
            }
            sends = list(dict.fromkeys(o.command for o in outcomes.values()))
            # The open engine follows the first command; each other one replays the state.
            transitions = {sends[0]: _transition(episode, commands, sends[0], env.step(sends[0]))}
        for command in sends[1:]:
            transitions[command] = self._follow(episode, commands, command)
        sent = commands[-1] if commands else None
        record = StateRecord(
            key=key,
            episode=episode.id,
            step=len(commands),
            goal=game.goal,
            observation=history[-1][1] if history else task,
            last_valid=last.valid,
            repeated=sent is not None and sent in commands[:-1],
            probe=probe,
            outcomes=outcomes,
            transitions=transitions,
        )
        self.book.add_state(record)
        return record

    def _follow(self, episode: EpisodeSpec, commands: tuple[str, ...], command: str) -> Transition:
        game = self._games[episode.game]
        with AlfworldEnv(game, max_steps=_engine_steps(game, episode)) as env:
            *_, last = _enter(env, game, episode, (*commands, command))
        return _transition(episode, commands, command, last)


def _transition(
    episode: EpisodeSpec, commands: tuple[str, ...], command: str, seen: Observation
) -> Transition:
    return Transition(
        next_key=state_key(episode.id, (*commands, command)), won=seen.won, valid=seen.valid
    )


def _enter(
    env: AlfworldEnv, game: AlfworldGame, episode: EpisodeSpec, commands: tuple[str, ...]
) -> tuple[str, list[tuple[str, str]], Observation]:
    """Reset, play the expert's prefix, then ``commands``: the task, the steps, the last
    observation."""
    first = env.reset()
    last = first
    history: list[tuple[str, str]] = []
    for command in (*game.expert_prefix(episode.remaining), *commands):
        last = env.step(command)
        history.append((command, last.text))
    return first.text, history, last


def _engine_steps(game: AlfworldGame, episode: EpisodeSpec) -> int:
    return len(game.walkthrough) - episode.remaining + episode.max_steps


def spread(games: list[AlfworldGame], count: int) -> list[AlfworldGame]:
    """``count`` games taking the task types in turn (splits list them type by type)."""
    by_type = [[g for g in games if g.task_type == t] for t in TASK_TYPES.values()]
    mixed = [g for g in chain.from_iterable(zip_longest(*by_type)) if g is not None]
    return mixed[:count]
