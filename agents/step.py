"""One agent step: decide, route context, check the budget, call the model, parse, act.

`run_step` is the unit the graph checkpoints: it never raises for a model's or a tool's
misbehaviour. A tool error becomes an observation; an unparseable reply is retried with
the parse error; what still fails (no parseable reply, the step limit, a refused budget,
a failed model call) ends the run with a structured error. Everything that happened is
in the returned `StepRecord`.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import jsonschema
from pydantic import ValidationError

from relaygraph import telemetry
from relaygraph.agents import spans
from relaygraph.agents.react import FinalAnswer, ReActParseError, ReActStep, ToolCall, parse_react
from relaygraph.agents.record import ContextRecord, ReasoningRecord, StepRecord
from relaygraph.agents.step_io import StepBudget, StepInput, StepOutput, fail_step
from relaygraph.agents.step_reply import StepCaller
from relaygraph.agents.tool_policy import ToolPolicy
from relaygraph.agents.tools import ToolCallError
from relaygraph.routing.context import ContextItem, ContextRequest
from relaygraph.routing.reasoning import ReasoningState

if TYPE_CHECKING:
    from relaygraph.agents.agent import BoundAgent

__all__ = ["StepBudget", "StepInput", "StepOutput", "run_step"]


def run_step(agent: BoundAgent, inp: StepInput) -> StepOutput:
    """Execute one step of ``agent``; see the module docstring for the failure rules.

    The record notes when the step began and the role's budget before and after it.
    """
    started_at = time.time()
    tokens_left, seconds_left = inp.budget.remaining(agent.role)
    output = _run_step(agent, inp, tokens_left, seconds_left)
    output.record.started_at = started_at
    tokens_after, seconds_after = inp.budget.remaining(agent.role)
    output.record.budget = output.record.budget.model_copy(
        update={
            "tokens_before": tokens_left,
            "tokens_after": tokens_after,
            "seconds_before": seconds_left,
            "seconds_after": seconds_after,
        }
    )
    return output


def _run_step(
    agent: BoundAgent, inp: StepInput, tokens_left: int | None, seconds_left: float | None
) -> StepOutput:
    spec = agent.spec
    record = StepRecord(
        step=inp.run_step, agent=agent.name, role=agent.role, turn_step=inp.turn_step
    )
    decision = spec.reasoning_policy.decide(
        ReasoningState(
            agent=agent.name,
            role=agent.role,
            step_in_turn=inp.turn_step,
            max_steps=spec.max_steps,
            run_steps=inp.run_step,
            remaining_tokens=tokens_left,
            remaining_s=seconds_left,
            last_observation=inp.last_observation,
            last_error=inp.last_error,
        )
    )
    record.reasoning = ReasoningRecord(
        policy=spec.reasoning_policy.name, action=decision.action, reason=decision.reason
    )
    if decision.action == "stop":
        return fail_step(
            record, "step_limit", f"{agent.name} stopped without an answer: {decision.reason}"
        )
    if decision.model is not None:
        agent = replace(agent, llm=decision.model)

    context_request = ContextRequest(
        agent=agent.name,
        role=agent.role,
        query=inp.task,
        items=inp.items,
        budget_tokens=spec.context_budget,
        count_tokens=inp.count_tokens,
        stage=spec.stage,
        step=inp.run_step,
        memory=inp.memory,
    )
    selection = spec.context_policy.select(context_request)
    spans.record_context(telemetry.current_span(), context_request, selection)
    if spec.context_budget is not None and selection.tokens > spec.context_budget:
        return fail_step(
            record,
            "routing",
            f"context policy {spec.context_policy.name!r} returned {selection.tokens} tokens, "
            f"over the budget of {spec.context_budget}",
        )
    record.context = ContextRecord(
        policy=spec.context_policy.name,
        items=[i.id for i in selection.items],
        tokens=selection.tokens,
        dropped=selection.dropped,
        reason=selection.reason,
        costs=selection.costs,
        scores=selection.scores,
    )
    record.decoding.decoder = spec.decoder.name
    act_only = decision.action == "act"
    max_tokens = min(spec.max_tokens, decision.max_tokens or spec.max_tokens)
    record.max_tokens = max_tokens
    policy = ToolPolicy.for_step(agent, inp.tool_calls_in_turn)
    retry_note: str | None = None
    for attempt in range(spec.parse_retries + 1):
        record.parse_retries = attempt
        call = StepCaller(agent, inp, record, selection.render(), act_only, retry_note, policy)
        reply = call.native(max_tokens) if spec.tool_calling == "native" else call.reply(max_tokens)
        if isinstance(reply, StepOutput):
            return reply
        record.output = reply.raw if isinstance(reply, ReActStep) else reply
        try:
            parsed = _parse(agent, reply, policy)
        except ReActParseError as exc:
            retry_note = str(exc)
            continue
        return _act(agent, inp, record, parsed)
    return fail_step(record, "parse", f"{agent.name}'s reply could not be parsed: {retry_note}")


def _parse(
    agent: BoundAgent, reply: str | ReActStep, policy: ToolPolicy
) -> tuple[ReActStep, dict[str, Any] | None]:
    """The REASON/ACT step, and the structured answer when the agent has an output schema.

    Raises:
        ReActParseError: The reply has no readable action, breaks the tool policy, or
            its answer does not match the output schema.
    """
    spec = agent.spec
    if isinstance(reply, ReActStep):
        step = reply
        if isinstance(step.action, FinalAnswer) and not step.action.text:
            raise ReActParseError("the reply was empty; call a tool or give the answer")
    elif spec.answer_format != "react":
        step = ReActStep("", FinalAnswer(reply.strip()), reply)
    else:
        step = parse_react(reply)
    if spec.answer_format == "react":
        policy.check(step)
    schema = agent.answer_schema
    if not isinstance(step.action, FinalAnswer) or schema is None:
        return step, None
    try:
        data = json.loads(step.action.text)
        if agent.answer_format is None and spec.output_schema is not None:
            return step, spec.output_schema.model_validate(data).model_dump()
        jsonschema.validate(data, schema.json_schema)
    except (json.JSONDecodeError, ValidationError, jsonschema.ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise ReActParseError(
            f"the answer must be JSON matching the output schema ({first})"
        ) from None
    if not isinstance(data, dict):
        raise ReActParseError("the answer must be a JSON object")
    return step, data


def _act(
    agent: BoundAgent,
    inp: StepInput,
    record: StepRecord,
    parsed: tuple[ReActStep, dict[str, Any] | None],
) -> StepOutput:
    step, structured = parsed
    record.reason = step.reason
    made: list[ContextItem] = []

    def note(kind: str, text: str) -> None:
        made.append(
            ContextItem(
                f"{inp.run_step}.{len(made)}",
                text,
                kind,
                agent.name,
                agent.role,
                inp.run_step,
                agent.spec.stage,
            )
        )

    if step.reason:
        note("thought", step.reason)
    if isinstance(step.action, FinalAnswer):
        record.action = {"type": "finish", "answer": step.action.text}
        # A planner's answer is the team's plan: stage-aware routing treats it as such.
        note("plan" if agent.role == "planner" else "answer", step.action.text)
        return StepOutput(
            record, made, finished=True, answer=step.action.text, structured=structured
        )
    call: ToolCall = step.action
    record.action = {"type": "tool", "tool": call.tool, "arguments": call.arguments}
    note("action", f"{call.tool}[{call.arguments}]")
    tool = agent.tools.get(call.tool)
    began = time.perf_counter()
    # A ReAct action has no id of its own: the run step names it (one call per step).
    description = tool.description if tool else None
    with spans.tool_span(call.tool, f"step-{inp.run_step}", description) as span:
        if tool is None:
            known = ", ".join([*agent.tools, "finish"])
            observation = f"Error: there is no action {call.tool!r}; use one of: {known}"
            record.tool_error = observation
        else:
            try:
                observation = tool.call(call.arguments)
            except ToolCallError as exc:
                observation = f"Error: {exc}"
                record.tool_error = str(exc)
        spans.record_tool(span, call.arguments, observation, record.tool_error)
    record.latency_s += time.perf_counter() - began
    record.observation = observation
    note("observation", observation)
    if tool is not None and tool.return_direct and record.tool_error is None:
        # The result is the answer (the tool's own promise): the turn ends with it.
        note("plan" if agent.role == "planner" else "answer", observation)
        return StepOutput(record, made, finished=True, answer=observation)
    return StepOutput(record, made)
