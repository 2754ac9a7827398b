"""The ALFWorld suite: play each game with a graph, scored by the engine's own goal check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from relaygraph.eval.alfworld.agent import run_game
from relaygraph.graph.runs import ItemRecord

if TYPE_CHECKING:
    from relaygraph.eval.alfworld.agent import AlfworldFactory
    from relaygraph.eval.alfworld.games import AlfworldGame
    from relaygraph.graph.trace import Trace
    from relaygraph.llm.protocol import LLM


@dataclass(frozen=True, slots=True)
class AlfworldSuite:
    """Plays each game with ``factory``'s graph on ``model``, at most ``max_steps`` commands;
    with ``remaining``, each game entered that many expert commands before its goal
    (`run_game`)."""

    factory: AlfworldFactory
    model: LLM
    max_steps: int = 50
    remaining: int | None = None
    name: ClassVar[str] = "alfworld"
    headline: ClassVar[str] = "success rate"

    # Static: a process that only fans games out (`relaygraph.eval.fanout`) names and
    # groups them without holding a model.
    @staticmethod
    def item_id(item: AlfworldGame) -> str:
        return item.name

    @staticmethod
    def groups(item: AlfworldGame) -> dict[str, str]:
        return {"task_type": item.task_type}

    def run(self, item: AlfworldGame) -> tuple[ItemRecord, Trace | None]:
        outcome = run_game(self.factory, self.model, item, self.max_steps, remaining=self.remaining)
        trace = outcome.result.trace if outcome.result is not None else None
        run_error = outcome.result.error if outcome.result is not None else None
        # Using every command and then hitting the graph's step limit is how a lost game
        # ends, not an error of the run.
        out_of_commands = outcome.steps >= self.max_steps
        if run_error is not None and run_error.kind == "step_limit" and out_of_commands:
            run_error = None
        return (
            ItemRecord.from_trace(
                trace,
                id=item.name,
                groups=self.groups(item),
                success=float(outcome.won),
                metrics={"won": float(outcome.won), "env_steps": float(outcome.steps)},
                prediction="won"
                if outcome.won
                else ("lost: out of commands" if out_of_commands else "lost"),
                gold=item.goal,
                # An engine failure first; else the run's own error, if the agent neither
                # won nor finished.
                error=outcome.error
                or (run_error.message if run_error and not outcome.won else None),
                steps=outcome.steps,
                latency_s=outcome.seconds,
            ),
            trace,
        )
