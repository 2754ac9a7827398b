"""An evaluation item as an OpenTelemetry span (``evaluate {suite}``): the graph run it
makes is its child, and its score is a ``gen_ai.evaluation.result`` event.

No-ops while export is off (see `relaygraph.telemetry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph import telemetry

if TYPE_CHECKING:
    import contextlib

    from relaygraph.graph.runs import ItemRecord


def item_span(
    suite: str, item_id: str, groups: dict[str, str]
) -> contextlib.AbstractContextManager[telemetry.Span]:
    """One item's span, current while the suite runs it."""
    if not telemetry.enabled():
        return telemetry.span("")  # the shared no-op: no attributes to build
    attributes: dict[str, str] = {
        "relaygraph.eval.suite": suite,
        "relaygraph.eval.item_id": item_id,
    }
    attributes |= {f"relaygraph.eval.group.{k}": v for k, v in groups.items()}
    return telemetry.span(f"evaluate {suite}", attributes=attributes)


def record_item(span: telemetry.Span, headline: str, record: ItemRecord) -> None:
    """The item's score, tokens and error on its span."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "relaygraph.eval.success": record.success,
            "relaygraph.steps": record.steps,
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "relaygraph.cost": record.cost,
        }
    )
    span.set_attributes({f"relaygraph.eval.metric.{k}": v for k, v in record.metrics.items()})
    span.add_event(
        "gen_ai.evaluation.result",
        {"gen_ai.evaluation.name": headline, "gen_ai.evaluation.score.value": record.success},
    )
    if record.error is not None:
        telemetry.fail(span, "item_error", record.error)
