"""The per-request `Trace`: every step's agent, role, context, model decision, tokens,
latency, cost, action and observation, plus the routing decisions between agents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from rich.markup import escape
from rich.table import Table

from relaygraph.agents.record import StepFailure, StepRecord
from relaygraph.fileio import read_model, write_atomic
from relaygraph.graph.budget import RunUsage

if TYPE_CHECKING:
    from pathlib import Path


class RunFailure(StepFailure):
    """The structured error that ended a run, and the agent it happened in."""

    agent: str | None = None


class Route(BaseModel):
    """Where the graph went when an agent's turn ended, and why."""

    after_step: int
    source: str
    targets: list[str]
    reason: str


class Trace(BaseModel):
    """One run, step by step; returned with every result and serialisable to JSON.

    Example:
        >>> trace = result.trace                          # doctest: +SKIP
        >>> trace.save("run.json"); Trace.load("run.json").by_role()  # doctest: +SKIP
    """

    run_id: str
    thread_id: str
    graph: str
    task: str
    answer: str | None = None
    error: RunFailure | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)

    def by_role(self) -> dict[str, RunUsage]:
        """Steps, tokens, latency and cost summed per role."""
        totals: dict[str, RunUsage] = {}
        for s in self.steps:
            totals[s.role] = totals.get(s.role, RunUsage()) + RunUsage(
                steps=1,
                prompt_tokens=s.prompt_tokens,
                completion_tokens=s.completion_tokens,
                latency_s=s.latency_s,
                cost=s.cost,
            )
        return totals

    def save(self, path: str | Path) -> Path:
        """Write as JSON atomically (a crash never leaves half a file)."""
        return write_atomic(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        """Read a saved trace.

        Raises:
            ConfigError: The file is missing, not JSON, or not a trace.
        """
        return read_model(cls, path, what="trace")


def _clip(text: str | None, width: int = 60) -> str:
    """One line of at most ``width`` characters."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def step_table(trace: Trace) -> Table:
    """One row per step: who acted, what it saw and did, what it cost.

    Sized for an 80-column terminal: the model goes in the caption when one model ran
    every step (a column otherwise), tokens are ``prompt/completion``, and the action and
    observation columns take the remaining width.
    """
    models = {s.model.name for s in trace.steps}
    one_model = len(models) <= 1
    table = Table(
        title=escape(f"{trace.graph} · run {trace.run_id[:8]} · {_clip(trace.task, 50)}"),
        caption=escape(f"model: {next(iter(models))}") if one_model and models else None,
    )
    columns = ["#", "agent", *([] if one_model else ["model"]), "ctx", "tokens", "s"]
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column != "model")
    table.add_column("action", overflow="fold", ratio=3)
    table.add_column("observation", overflow="fold", ratio=4)
    for s in trace.steps:
        action: dict[str, Any] = s.action or {}
        if action.get("type") == "finish":
            what = escape(f"finish[{_clip(action.get('answer'), 40)}]")
        elif action:
            what = escape(f"{action.get('tool')}[{_clip(action.get('arguments'), 30)}]")
        else:
            what = f"[red]{s.error.kind}[/red]" if s.error else ""
        table.add_row(
            str(s.step),
            escape(s.agent),
            *([] if one_model else [escape(s.model.name)]),
            str(s.context.tokens),
            f"{s.prompt_tokens}/{s.completion_tokens}",
            f"{s.latency_s:.1f}",
            what,
            escape(_clip(s.observation or (s.error.message if s.error else ""), 60)),
        )
    return table


def role_table(trace: Trace) -> Table:
    """Tokens, latency and cost per role."""
    table = Table(title="per role")
    for column in ("role", "steps", "prompt tok", "completion tok", "latency s", "cost"):
        table.add_column(column)
    for role, t in trace.by_role().items():
        table.add_row(
            role,
            str(t.steps),
            str(t.prompt_tokens),
            str(t.completion_tokens),
            f"{t.latency_s:.2f}",
            f"{t.cost:.6f}",
        )
    return table
