"""The default ALFWorld agent and the per-game run the evaluation harness calls.

`alfworld_react` follows ReAct's ALFWorld setup: one agent whose only tool,
``act[command]``, runs a command in the real environment and returns the observation,
with a demonstration of the game's task type in its instructions. Unlike ReAct's
prompts it may also ``finish`` (every relaygraph agent can); finishing before the
episode is over simply loses the game. `run_game` plays one game with any factory of
that shape and reports a `GameOutcome`: won is the engine's own goal check, never the
agent's claim. With ``remaining=k`` a game is entered k expert commands before its
goal (the expert's earlier commands are played first and shown in the task as the
agent's own steps): the short-horizon setting where the packaged models win sometimes.

Example:
    >>> game = load_games("valid_unseen", limit=1)[0]                  # doctest: +SKIP
    >>> outcome = run_game(alfworld_react, "smollm2-135m", game)       # doctest: +SKIP
    >>> outcome.won, outcome.steps, round(outcome.seconds)             # doctest: +SKIP
    (False, 50, 114)
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from relaygraph.agents import Agent, StandardRole, Tool
from relaygraph.eval.alfworld.demos import DemoSet, load_demos, think
from relaygraph.eval.alfworld.env import AlfworldEnv, AlfworldEnvError
from relaygraph.eval.alfworld.games import Split, TaskType
from relaygraph.graph import AgentGraph, RunResult
from relaygraph.routing.reasoning import ReActPolicy, ReasoningDecision, ReasoningPolicy

if TYPE_CHECKING:
    from relaygraph.agents.agent import ChoiceScoring, ReactDecoding
    from relaygraph.eval.alfworld.games import AlfworldGame
    from relaygraph.llm.protocol import LLM
    from relaygraph.routing.reasoning import ReasoningState

INSTRUCTIONS = """\
You are in a house. Do the task one command at a time with act[command]. Commands: \
go to X, open X, take X from Y, move X to Y, clean X with Y, heat X with Y, cool X with Y, \
use X, look, inventory. Write places and objects exactly as you see them, with their \
numbers. Finish only when an observation says the episode is over: finish[done].

Example:
{demo}"""

MAX_TOKENS = 64
"""Completion tokens per step: a one-line thought and the action."""
CONTEXT_BUDGET = 480
"""Tokens of earlier steps shown to the agent, oldest dropped first: the last six or so.
With the instructions and their demonstration (at most ~710 tokens) and a large
kitchen's task, a step's prompt stays near 1,500 tokens, inside the embedded engine's
default 2,048-token context with room for the reply."""


class EpisodeGuard:
    """Stops the agent when the environment cannot go on; otherwise ``inner`` decides.

    The agent is told when the episode ends and should finish; if it acts again
    instead, or the engine failed, there is nothing left to do, so the next step stops.
    With ``stop_when_over`` the run stops as soon as the episode ends, for an agent
    that may not finish before (a tool policy requiring a call per command).
    """

    name = "alfworld-episode"

    def __init__(
        self,
        env: AlfworldEnv,
        inner: ReasoningPolicy | None = None,
        *,
        stop_when_over: bool = False,
    ) -> None:
        self.env = env
        self.inner = inner or ReActPolicy()
        self.stop_when_over = stop_when_over

    def decide(self, state: ReasoningState) -> ReasoningDecision:
        if self.env.error is not None:
            return ReasoningDecision("stop", f"the environment failed: {self.env.error}")
        if self.env.done and self.stop_when_over:
            return ReasoningDecision("stop", "the episode is over")
        if self.env.done and self.env.late_commands:
            return ReasoningDecision("stop", "the episode is over and the agent did not finish")
        return self.inner.decide(state)


def alfworld_react(
    model: str | LLM,
    env: AlfworldEnv,
    *,
    demos: DemoSet | None = None,
    reasoning_policy: ReasoningPolicy | None = None,
    react_decoding: ReactDecoding = "auto",
    admissible_only: bool = False,
    choice_scoring: ChoiceScoring = "decode",
    temperature: float = 0.0,
) -> AgentGraph:
    """One ReAct agent playing ``env``'s game with ``act[command]``.

    Args:
        model: The model name or `LLM` the agent uses.
        env: The environment, reset or not; the agent gets the commands left in its
            episode and one more step to finish.
        demos: Demonstrations; the one of the game's task type goes into the
            instructions (default: the set that ships with relaygraph).
        reasoning_policy: Decides, each step the episode can go on, whether and with
            which model to reason (default: `ReActPolicy`, always reason), e.g. a learned
            `PolicyReasoner`.
        react_decoding: How its steps are decoded (`Agent.react_decoding`).
        admissible_only: Under the step grammar, ``act`` writes one of the game's
            admissible commands (`Tool.choices`) instead of free text.
        choice_scoring: With ``admissible_only``, how the command is picked among them
            (`Agent.choice_scoring`). ``calibrated`` also keeps the agent acting until
            the episode is over (a small model scores ``finish`` too high after its own
            thoughts): a tool policy of one ``act`` per command, the run stopped when the
            game ends.
        temperature: The agent's sampling temperature (0: greedy; scored choices stay
            the best-scoring command, after a sampled thought).

    Raises:
        ConfigError: ``demos`` has none for the game's task type.
    """
    demo = (demos or load_demos()).for_task(env.game.task_type)

    def act(command: str) -> str:
        """Run one command in the house, e.g. go to desk 1; returns what happens."""
        return env.step(command).text

    commands = env.max_steps - env.steps
    steps = commands + 1  # every command left, then finish
    scored = choice_scoring == "calibrated"
    graph = AgentGraph("alfworld-react", model=model, max_steps=steps)
    graph.add_agent(
        Agent(
            name="player",
            role=StandardRole.EXECUTOR,
            instructions=INSTRUCTIONS.format(demo=demo.render("act")),
            tools=[
                Tool.from_function(
                    act, choices=(lambda: env.admissible_commands) if admissible_only else None
                )
            ],
            reasoning_policy=EpisodeGuard(env, reasoning_policy, stop_when_over=scored),
            max_steps=steps,
            max_tokens=MAX_TOKENS,
            context_budget=CONTEXT_BUDGET,
            react_decoding=react_decoding,
            choice_scoring=choice_scoring,
            temperature=temperature,
            tool_choice="act" if scored else "auto",
            min_tool_calls=commands if scored else 0,
        )
    )
    return graph.set_entry("player").set_finish("player")


def alfworld_react_admissible(model: str | LLM, env: AlfworldEnv) -> AgentGraph:
    """`alfworld_react` whose ``act`` is decoded as one of the game's admissible commands
    (the step grammar lists them), the setting where an agent picks among valid moves."""
    return alfworld_react(model, env, admissible_only=True)


def alfworld_react_scored(model: str | LLM, env: AlfworldEnv) -> AgentGraph:
    """`alfworld_react` whose ``act`` is the admissible command that the thought makes
    likeliest, calibrated against the command's prior (``choice_scoring="calibrated"``):
    the constrained tool policy under which the packaged models win short episodes."""
    return alfworld_react(model, env, admissible_only=True, choice_scoring="calibrated")


def alfworld_react_guided(model: str | LLM, env: AlfworldEnv) -> AgentGraph:
    """`alfworld_react` with guided decoding (free reply; action scoring when it does not
    parse), the baseline of the step grammar."""
    return alfworld_react(model, env, react_decoding="guided")


class AlfworldFactory(Protocol):
    """Builds the graph that plays one game (`alfworld_react` is one)."""

    def __call__(self, model: str | LLM, env: AlfworldEnv) -> AgentGraph: ...


class GameOutcome(BaseModel):
    """How one game went.

    Attributes:
        game: The game's name, ``<task folder>/<trial>``.
        split: Its split.
        task_type: Its task type.
        won: The engine's goal check at the end.
        steps: Commands the agent sent to the environment (invalid ones included; the
            expert's, in a game entered before its goal, are not counted).
        finished: The agent ended with ``finish`` (rather than a limit or an error).
        seconds: Wall time, reset and model calls included.
        error: The engine's failure, when it failed; the game then counts as lost.
        result: The run's answer, structured error and trace (None if the game never
            loaded).
    """

    game: str
    split: Split
    task_type: TaskType
    won: bool
    steps: int
    finished: bool
    seconds: float
    error: str | None = None
    result: RunResult | None = None


def run_game(
    factory: AlfworldFactory,
    model: str | LLM,
    game: AlfworldGame,
    max_steps: int = 50,
    *,
    remaining: int | None = None,
) -> GameOutcome:
    """Play ``game`` with the graph ``factory`` builds; the environment is always closed.

    With ``remaining`` the game starts that many expert commands before its goal
    (`AlfworldGame.expert_prefix`, then `enter`); the agent then has ``max_steps``
    commands of its own. An engine failure (loading, a command, closing) is reported in
    the outcome's ``error`` and the game counts as lost; it never raises.

    Raises:
        ConfigError: Bad ``max_steps`` or ``remaining``, a factory or model that cannot
            build a graph, or the engine packages are missing.
    """
    began = time.perf_counter()
    prefix = () if remaining is None else game.expert_prefix(remaining)
    env = AlfworldEnv(game, max_steps=len(prefix) + max_steps)
    result: RunResult | None = None
    # An engine failure is kept in env.error (the first one, if several) and reported.
    with contextlib.suppress(AlfworldEnvError), env:
        task = enter(env, game, prefix)
        with factory(model=model, env=env).compile() as compiled:
            result = compiled.invoke(task, thread_id=game.name)
    return GameOutcome(
        game=game.name,
        split=game.split,
        task_type=game.task_type,
        won=env.won and env.error is None,
        steps=max(0, env.steps - len(prefix)),
        finished=result is not None and result.answer is not None,
        seconds=time.perf_counter() - began,
        error=str(env.error) if env.error is not None else None,
        result=result,
    )


def enter(env: AlfworldEnv, game: AlfworldGame, prefix: tuple[str, ...]) -> str:
    """Reset ``env``, play ``prefix``, and return the agent's task: the reset
    observation, then the steps so far in the demonstrations' format, as if the agent
    had taken them: each command with its templated thought (`think`, over the whole
    walkthrough, so the last thought says what the next command is for) and what it
    returned."""
    lines = [env.reset().text]
    if prefix:
        lines.append("\nDone so far:")
    thoughts = think(game.goal, game.walkthrough)
    for thought, command in zip(thoughts, prefix, strict=False):
        observation = env.step(command).text
        lines += [f"Thought: {thought}", f"Action: act[{command}]", f"Observation: {observation}"]
    return "\n".join(lines)
