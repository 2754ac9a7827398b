"""A step's work as OpenTelemetry spans: the model calls (``chat``, also used by the
server for the requests it answers with a model), tool calls (``execute_tool``) and the
step's decisions, with GenAI semantic-convention attributes and
relaygraph's own under ``relaygraph.``.

Each function is a no-op on a span that is not recording (export off), so nothing here
costs a run that does not export. See ``docs/guides/telemetry.md`` for the span tree.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from relaygraph import telemetry

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Sequence

    from opentelemetry.util.types import AttributeValue

    from relaygraph.agents.record import StepRecord
    from relaygraph.llm.types import Completion, GenerationParams, Message
    from relaygraph.routing.context import ContextRequest, ContextSelection
    from relaygraph.routing.models import ModelResult

PROVIDER = "relaygraph"
"""``gen_ai.provider.name`` of relaygraph's spans: the model runs behind relaygraph's own
`LLM` contract (the embedded engine, a worker, a cascade), whichever backend serves it."""


def _messages(messages: Sequence[Message]) -> str:
    """Chat messages in the conventions' input-messages JSON shape."""
    return json.dumps(
        [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in messages]
    )


def chat_span(
    model: str,
    params: GenerationParams,
    *,
    agent: str | None = None,
    operation: Literal["chat", "text_completion"] = "chat",
) -> contextlib.AbstractContextManager[telemetry.Span]:
    """The span of one model call (``chat {model}``), current while it runs: an agent
    step's, or a served request's (``text_completion`` for ``/v1/completions``)."""
    if not telemetry.enabled():
        return telemetry.span("")  # the shared no-op: no attributes to build
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": params.max_tokens,
        "gen_ai.request.temperature": params.temperature,
    }
    if agent is not None:
        attributes["gen_ai.agent.name"] = agent
    if params.stop:
        attributes["gen_ai.request.stop_sequences"] = list(params.stop)
    if params.n != 1:
        attributes["gen_ai.request.choice.count"] = params.n
    return telemetry.span(
        f"{operation} {model}", kind=telemetry.SpanKind.CLIENT, attributes=attributes
    )


def record_completion(
    span: telemetry.Span, completion: Completion, messages: Sequence[Message] = ()
) -> None:
    """What a model call returned: response model, usage, finish reasons, the decoder's
    report (speculative rounds, windows, acceptance); with content recording on, the
    ``messages`` sent and the replies."""
    if not span.is_recording():
        return
    usage = completion.usage
    span.set_attributes(
        {
            "gen_ai.response.model": completion.model,
            "gen_ai.response.finish_reasons": [c.finish_reason for c in completion.choices],
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
            "relaygraph.latency_s": completion.latency_s,
        }
    )
    if completion.decoding:
        span.set_attributes(_scalars("relaygraph.decoding", completion.decoding))
    if telemetry.record_content():
        span.set_attribute("gen_ai.input.messages", _messages(messages))
        output = [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": c.text}],
                "finish_reason": c.finish_reason,
            }
            for c in completion.choices
        ]
        span.set_attribute("gen_ai.output.messages", json.dumps(output))


def record_reply(
    span: telemetry.Span, result: ModelResult, messages: Sequence[Message] = ()
) -> None:
    """`record_completion`, and the model policy's decision: the model that answered,
    why, and a cascade's rungs as ``relaygraph.cascade.rung`` events."""
    if not span.is_recording():
        return
    record_completion(span, result.completion, messages)
    span.set_attributes(
        {
            "gen_ai.response.model": result.model,
            "relaygraph.model.policy": result.policy,
            "relaygraph.model.reason": result.reason,
        }
    )
    for rung in result.cascade or []:
        fields = rung.model_dump(exclude_none=True)
        span.add_event("relaygraph.cascade.rung", _scalars("relaygraph.cascade", fields))
    if result.cascade:
        span.set_attribute("relaygraph.cascade.rungs", len(result.cascade))


def tool_span(
    name: str, call_id: str, description: str | None
) -> contextlib.AbstractContextManager[telemetry.Span]:
    """The span of one tool call (``execute_tool {tool}``), current while it runs."""
    if not telemetry.enabled():
        return telemetry.span("")
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "function",
    }
    if description:
        attributes["gen_ai.tool.description"] = description
    return telemetry.span(f"execute_tool {name}", attributes=attributes)


def record_tool(span: telemetry.Span, arguments: str, result: str, error: str | None) -> None:
    """A tool call's outcome (its arguments and result only when content is recorded)."""
    if not span.is_recording():
        return
    if error is not None:
        telemetry.fail(span, "tool_error", error)
    if telemetry.record_content():
        span.set_attribute("gen_ai.tool.call.arguments", arguments)
        span.set_attribute("gen_ai.tool.call.result", result)


def record_context(
    span: telemetry.Span, request: ContextRequest, selection: ContextSelection
) -> None:
    """The context routing decision as a ``relaygraph.context`` event: the items shown,
    each with its token cost (and its score, when the policy ranked them), and those
    left out."""
    if not span.is_recording():
        return
    shown = selection.items
    costs = selection.costs
    event: dict[str, AttributeValue] = {
        "relaygraph.context.policy": selection.policy,
        "relaygraph.context.items": [i.id for i in shown],
        # a policy that did not count an item leaves its cost to the request's counter
        "relaygraph.context.item_tokens": [costs.get(i.id) or request.cost(i) for i in shown],
        "relaygraph.context.tokens": selection.tokens,
        "relaygraph.context.dropped": selection.dropped,
        "relaygraph.context.reason": selection.reason,
    }
    if shown and all(i.id in selection.scores for i in shown):
        event["relaygraph.context.item_scores"] = [selection.scores[i.id] for i in shown]
    span.add_event("relaygraph.context", event)


def record_step(span: telemetry.Span, record: StepRecord) -> None:
    """A finished step on its ``invoke_agent`` span: tokens and cost, and its reasoning
    and budget decisions as attributes (searchable) and ``relaygraph.*`` events."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "gen_ai.request.model": record.model.name,
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "relaygraph.step": record.step,
            "relaygraph.turn_step": record.turn_step,
            "relaygraph.role": record.role,
            "relaygraph.cost": record.cost,
            "relaygraph.latency_s": record.latency_s,
            "relaygraph.parse_retries": record.parse_retries,
            "relaygraph.context.tokens": record.context.tokens,
            "relaygraph.budget.verdict": record.budget.verdict,
        }
    )
    if record.action is not None:
        span.set_attribute("relaygraph.action", record.action.get("type", ""))
    reasoning = record.reasoning
    if reasoning.action is not None:
        span.set_attribute("relaygraph.reasoning.action", reasoning.action)
        span.add_event(
            "relaygraph.reasoning",
            {
                "relaygraph.reasoning.policy": reasoning.policy,
                "relaygraph.reasoning.action": reasoning.action,
                "relaygraph.reasoning.reason": reasoning.reason,
            },
        )
    span.add_event(
        "relaygraph.budget",
        {
            "relaygraph.budget.verdict": record.budget.verdict,
            "relaygraph.budget.note": record.budget.note,
        },
    )
    if record.error is not None:
        telemetry.fail(span, record.error.kind, record.error.message)


def _scalars(prefix: str, fields: dict[str, Any]) -> dict[str, AttributeValue]:
    """``fields`` as span attributes: scalars and lists of integers (a speculative
    request's windows) under ``prefix.``;
    nested records (per-round details) are left to the trace."""
    out: dict[str, AttributeValue] = {}
    for key, value in fields.items():
        scalar = isinstance(value, bool | int | float | str)
        if scalar or (isinstance(value, list) and value and all(type(v) is int for v in value)):
            out[f"{prefix}.{key}"] = value
    return out
