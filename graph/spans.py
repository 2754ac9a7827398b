"""A graph run as OpenTelemetry spans: ``invoke_workflow {graph}`` for the run and
``invoke_agent {agent}`` for each step, the step's decisions on it (`agents.spans`) and the
route taken after the agent's turn as a ``relaygraph.route`` event.

No-ops while export is off (see `relaygraph.telemetry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaygraph import telemetry
from relaygraph.agents.record import StepRecord
from relaygraph.agents.spans import PROVIDER, record_step

if TYPE_CHECKING:
    import contextlib

    from langchain_core.runnables import RunnableConfig

    from relaygraph.graph.results import RunResult


def run_span(graph: str, thread_id: str) -> telemetry.Span:
    """The run's span (the caller ends it): a child of whatever span is current."""
    return telemetry.start_span(
        f"invoke_workflow {graph}",
        attributes={
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.workflow.name": graph,
            "gen_ai.conversation.id": thread_id,
        },
    )


def finish_run(span: telemetry.Span, result: RunResult) -> None:
    """The run's outcome on its span: run id, steps, tokens, cost, error."""
    if not span.is_recording():
        return
    steps = result.trace.steps
    span.set_attributes(
        {
            "relaygraph.run_id": result.trace.run_id,
            "relaygraph.steps": len(steps),
            "gen_ai.usage.input_tokens": sum(s.prompt_tokens for s in steps),
            "gen_ai.usage.output_tokens": sum(s.completion_tokens for s in steps),
            "relaygraph.cost": sum(s.cost for s in steps),
        }
    )
    if result.error is not None:
        telemetry.fail(span, result.error.kind, result.error.message)


def step_span(
    agent: str, role: str, config: RunnableConfig
) -> contextlib.AbstractContextManager[telemetry.Span]:
    """One agent step's span, current while the step runs (model and tool calls nest)."""
    if not telemetry.enabled():
        return telemetry.span("")  # the shared no-op: no attributes to build
    return telemetry.span(
        f"invoke_agent {agent}",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": config.get("configurable", {}).get("thread_id", ""),
            "relaygraph.role": role,
        },
    )


def record_update(span: telemetry.Span, update: dict[str, Any]) -> None:
    """The step's record and the route it took, from the node's state update."""
    if not span.is_recording():
        return
    for record in update.get("records", []):
        record_step(span, StepRecord.model_validate(record))
    for route in update.get("routes", []):
        span.add_event(
            "relaygraph.route",
            {
                "relaygraph.route.source": route["source"],
                "relaygraph.route.targets": route["targets"],
                "relaygraph.route.reason": route["reason"],
            },
        )
