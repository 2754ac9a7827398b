"""The security suite: run a graph on each task in a fresh sandbox and score the trajectory.

A task's record carries its verdict as metrics (utility, unsafe, attack success, the
first violating step, end-state verdicts for contrast, refusal, guard blocks); the
trajectory and the full verdict are saved under ``trajectories/`` in the run directory.
An agent or tool that crashes mid-task ends that task only: what it did up to the crash
is scored, and the crash is the record's error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel

from relaygraph.eval.security.sandbox import Sandbox
from relaygraph.eval.security.scoring import Verdict, score_trajectory
from relaygraph.eval.security.synthesis import SecurityTask
from relaygraph.eval.security.trajectory import Trajectory
from relaygraph.fileio import write_atomic
from relaygraph.graph.runs import ItemRecord, item_file_stem

if TYPE_CHECKING:
    from pathlib import Path

    from relaygraph.eval.security.agents import SecurityFactory
    from relaygraph.eval.security.scoring import TrajectoryJudge
    from relaygraph.graph import RunResult
    from relaygraph.graph.trace import Trace
    from relaygraph.llm.protocol import LLM

TRAJECTORIES = "trajectories"


class TaskOutcome(BaseModel):
    """What is saved per task: the task, what the agent did, and the verdict."""

    task: SecurityTask
    trajectory: Trajectory
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class SecuritySuite:
    """Runs ``factory``'s graph on ``model`` for each task; scores with ``judge`` if given."""

    factory: SecurityFactory
    model: LLM
    directory: Path | None = None
    """Where trajectories are saved (the run directory); None: not saved."""
    judge: TrajectoryJudge | None = None
    name: str = "security"
    headline: str = "secure utility"

    def item_id(self, item: SecurityTask) -> str:
        return item.id

    def groups(self, item: SecurityTask) -> dict[str, str]:
        return {"category": item.category, "kind": item.kind, "vector": item.vector}

    def run(self, item: SecurityTask) -> tuple[ItemRecord, Trace | None]:
        began = time.perf_counter()
        result: RunResult | None = None
        crash: str | None = None
        with Sandbox(
            item.environment, goal=item.goal, tools=item.tools, capabilities=item.capabilities
        ) as box:
            try:
                with self.factory(model=self.model, sandbox=box).compile() as compiled:
                    result = compiled.invoke(item.goal, thread_id=item.id)
            except Exception as exc:  # a crashing agent ends this task, never the run
                crash = f"{type(exc).__name__}: {exc}"
            run_error = result.error.message if result is not None and result.error else None
            trajectory = box.trajectory(
                answer=result.answer if result is not None else None, error=crash or run_error
            )
        verdict = score_trajectory(item, trajectory, self.judge)
        self._save(TaskOutcome(task=item, trajectory=trajectory, verdict=verdict))
        trace = result.trace if result is not None else None
        return (
            ItemRecord.from_trace(
                trace,
                id=item.id,
                groups=self.groups(item),
                success=verdict.score,
                metrics=_metrics(item, verdict, trajectory),
                prediction=trajectory.answer,
                gold=item.goal,
                error=crash,
                steps=verdict.steps,
                latency_s=time.perf_counter() - began,
            ),
            trace,
        )

    def _save(self, outcome: TaskOutcome) -> None:
        """Keep the task's trajectory and verdict next to its trace (same file name)."""
        if self.directory is None:
            return
        path = self.directory / TRAJECTORIES / f"{item_file_stem(outcome.task.id)}.json"
        write_atomic(path, outcome.model_dump_json(indent=1))


def _metrics(task: SecurityTask, verdict: Verdict, trajectory: Trajectory) -> dict[str, float]:
    """Per-task figures; a key only where it applies, so report means are over the right set."""
    metrics = {
        "utility": float(verdict.utility),
        "unsafe": float(verdict.unsafe),
        "end_state_unsafe": float(verdict.end_state_unsafe),
        "refused": float(verdict.refused),
        "guard_blocked": float(trajectory.guard_blocked),
        "tool_calls": float(verdict.steps),
        f"utility_{task.kind}": float(verdict.utility),
        f"refused_{task.kind}": float(verdict.refused),
    }
    if verdict.attack_success is not None:
        metrics["attack_success"] = float(verdict.attack_success)
        metrics["end_state_attack_success"] = float(bool(verdict.end_state_attack_success))
    if verdict.first_violation_step is not None:
        metrics["first_violation_step"] = float(verdict.first_violation_step)
    return metrics
