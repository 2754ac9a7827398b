"""Agent graphs served as chat models.

A chat request to a graph's name runs the graph on the conversation and answers with the
run's final answer. The request's ``tools`` name which of the graph's own tools the run
may use (``tool_choice: "none"`` allows none, a named function allows that one); the
graph executes them itself, so no ``tool_calls`` come back to the client. A
``response_format`` (``json_object`` or ``json_schema``) binds the answers of the graph's
finishing agents for this run, so the reply's content is JSON that follows it. The response
carries the tokens of every agent as usage and the run's trace id in a ``relaygraph``
field; ``GET /v1/traces/{id}`` returns the trace. Streaming sends one chunk per agent
step and per generated token as ``relaygraph`` events (the assistant's ``content`` stays
clean) and the answer as content at the end.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from relaygraph.errors import ConfigError
from relaygraph.graph.results import ResultEvent, RunResult, StepEvent, TokenEvent
from relaygraph.llm.bridge import iterate_in_thread
from relaygraph.llm.constraints import JsonObjectFormat, JsonSchemaFormat
from relaygraph.llm.types import Usage
from relaygraph.serving.errors import APIError, to_api_error
from relaygraph.serving.protocol import ToolChoiceIn
from relaygraph.serving.responses import new_id, now, usage_json

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from relaygraph.graph.runtime import AnswerFormat, CompiledAgentGraph
    from relaygraph.llm.types import Message
    from relaygraph.serving.metrics import ServerMetrics
    from relaygraph.serving.protocol import ChatCompletionRequest
    from relaygraph.serving.traces import TraceStore


def task_from_messages(messages: tuple[Message, ...]) -> str:
    """The task a graph runs on: the last user message, after a transcript of earlier turns.

    Raises:
        ConfigError: The conversation has no user message.
    """
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    if last_user < 0:
        raise ConfigError("a graph needs at least one user message", parameter="messages")
    task = messages[last_user].content
    earlier = [f"{m.role}: {m.content}" for m in messages[:last_user]]
    return f"Conversation so far:\n{chr(10).join(earlier)}\n\n{task}" if earlier else task


def allowed_tools(request: ChatCompletionRequest) -> list[str] | None:
    """The graph tools a request allows (None: all of the graph's tools)."""
    choice = request.tool_choice
    if choice == "none":
        return []
    if isinstance(choice, ToolChoiceIn):
        return [choice.function.name]
    if request.tools is None:
        return None
    return [tool.function.name for tool in request.tools]


def graph_answer_format(request: ChatCompletionRequest) -> AnswerFormat | None:
    """The request's format for a graph's answer; formats other than JSON are a 400."""
    fmt = request.response_constraint()
    if fmt is None or isinstance(fmt, JsonSchemaFormat | JsonObjectFormat):
        return fmt
    raise APIError(
        400,
        f"{request.model!r} is an agent graph; its answer takes a json_schema or json_object "
        f"format, not {fmt.type}",
        param="response_format",
    )


@dataclass(frozen=True, slots=True)
class GraphRun:
    """One request to a graph: what runs, on which conversation, with which tools
    (None: all) and answer format (already checked against the graph)."""

    graph: CompiledAgentGraph
    request: ChatCompletionRequest
    tools: list[str] | None
    answer_format: JsonSchemaFormat | None


def _usage(result: RunResult) -> Usage:
    steps = result.trace.steps
    return Usage(
        prompt_tokens=sum(s.prompt_tokens for s in steps),
        completion_tokens=sum(s.completion_tokens for s in steps),
    )


def _check(result: RunResult, name: str) -> None:
    if result.error is not None:
        raise APIError(
            500,
            f"graph {name!r} ended with an error ({result.error.kind}): {result.error.message}; "
            f"trace {result.trace.run_id}",
            type="graph_error",
            code=result.error.kind,
        )


async def _record(result: RunResult, name: str, traces: TraceStore, metrics: ServerMetrics) -> None:
    # Off the event loop: with a shared database, storing the trace is a round trip.
    await asyncio.to_thread(traces.add, result.trace)
    metrics.count_tokens(name, _usage(result))


async def graph_completion(
    run: GraphRun, traces: TraceStore, metrics: ServerMetrics
) -> dict[str, Any]:
    """Run the graph to its end and answer like a chat completion."""
    request = run.request
    task = task_from_messages(request.chat_prompt().messages)
    result = await run.graph.ainvoke(task, tools=run.tools, answer_format=run.answer_format)
    await _record(result, request.model, traces, metrics)
    _check(result, request.model)
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": now(),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer or ""},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage_json(_usage(result)),
        "relaygraph": {"trace_id": result.trace.run_id, "answers": result.answers},
    }


async def graph_events(
    run: GraphRun, traces: TraceStore, metrics: ServerMetrics
) -> AsyncIterator[str]:
    """SSE lines of a streamed graph run; a client that leaves stops the run after its step."""
    request = run.request
    task = task_from_messages(request.chat_prompt().messages)
    ident, created = new_id("chatcmpl"), now()

    def chunk(delta: dict[str, Any], event: dict[str, Any], finish: str | None = None) -> str:
        payload = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "relaygraph": event,
        }
        return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"

    yield chunk({"role": "assistant", "content": ""}, {"event": "start"})
    try:
        events = partial(
            run.graph.stream, task, tokens=True, tools=run.tools, answer_format=run.answer_format
        )
        async for event in iterate_in_thread(events):
            if isinstance(event, TokenEvent):
                yield chunk({}, {"event": "token", "agent": event.agent, "text": event.text})
            elif isinstance(event, StepEvent):
                r = event.record
                yield chunk(
                    {},
                    {
                        "event": "step",
                        "step": r.step,
                        "agent": r.agent,
                        "role": r.role,
                        "action": r.action,
                        "observation": r.observation,
                    },
                )
            elif isinstance(event, ResultEvent):
                result = event.result
                await _record(result, request.model, traces, metrics)
                _check(result, request.model)
                done = {"event": "result", "trace_id": result.trace.run_id}
                yield chunk({"content": result.answer or ""}, done, finish="stop")
                if request.stream_options and request.stream_options.include_usage:
                    usage = {
                        "id": ident,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": request.model,
                        "choices": [],
                        "usage": usage_json(_usage(result)),
                    }
                    yield f"data: {json.dumps(usage, separators=(',', ':'))}\n\n"
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        yield f"data: {json.dumps(to_api_error(exc).body())}\n\n"
    yield "data: [DONE]\n\n"
