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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from relaygraph.agents.prompts import step_prompt
from relaygraph.agents.react import (
    FinalAnswer,
    ReActParseError,
    ReActStep,
    ToolCall,
    guided_reply,
    parse_react,
)
from relaygraph.agents.tools import ToolCallError
from relaygraph.errors import LLMError
from relaygraph.llm.types import GenerationParams, Message
from relaygraph.routing.context import ContextItem, ContextRequest
from relaygraph.routing.models import ModelCall
from relaygraph.routing.reasoning import ReasoningState

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.agents.agent import BoundAgent
    from relaygraph.llm.types import ChatPrompt
    from relaygraph.memory import MemoryScope

ErrorKind = Literal["budget", "parse", "model", "step_limit", "routing"]


class StepError(BaseModel):
    """Why a step ended its agent's turn, or the run, without an answer."""

    kind: ErrorKind
    message: str


class StepRecord(BaseModel):
    """Everything one step did, for the trace."""

    step: int
    agent: str
    role: str
    turn_step: int
    prompt: list[Message] = Field(default_factory=list)
    """The exact messages of the step's last model call."""
    prefill: str = ""
    """The start of the reply the model was given to continue."""
    max_tokens: int | None = None
    """The completion-token cap of the reply (its first, free call)."""
    output: str = ""
    """The agent's whole reply (prefill included): the REASON and ACT text."""
    reason: str = ""
    action: dict[str, str] | None = None
    observation: str | None = None
    tool_error: str | None = None
    model: str = ""
    model_policy: str = ""
    model_reason: str = ""
    model_details: dict[str, Any] = Field(default_factory=dict)
    context_policy: str = ""
    context_items: list[str] = Field(default_factory=list)
    context_tokens: int = 0
    context_dropped: list[str] = Field(default_factory=list)
    context_reason: str = ""
    reasoning_policy: str = ""
    reasoning_action: str = ""
    reasoning_reason: str = ""
    decoder: str = ""
    decoding: dict[str, Any] = Field(default_factory=dict)
    """How the step's tokens were produced when a model did not decode them alone
    (speculative rounds, windows, drafted and accepted tokens, seconds)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost: float = 0.0
    budget: str = "ok"
    parse_retries: int = 0
    error: StepError | None = None


class StepBudget(Protocol):
    """The graph's budget, as a step sees it."""

    def admit(self, role: str, model: str, prompt_tokens: int, max_tokens: int) -> tuple[int, str]:
        """Completion tokens this call may use (0: refused) and why."""
        ...

    def remaining(self, role: str) -> tuple[int | None, float | None]:
        """Tokens and seconds left for this role (None: unlimited)."""
        ...

    def charge(
        self, role: str, model: str, prompt_tokens: int, completion_tokens: int, seconds: float
    ) -> None:
        """Count one model call of the step in progress."""
        ...


@dataclass(slots=True)
class StepInput:
    """What a step needs from the run."""

    task: str
    items: Sequence[ContextItem]
    run_step: int
    turn_step: int
    budget: StepBudget
    count_tokens: Callable[[str], int]
    """Tokens of a piece of text under the agent's model (memoised by the graph)."""
    on_token: Callable[[str], None] | None = None
    last_observation: str | None = None
    last_error: str | None = None
    memory: MemoryScope | None = None
    """The run's shared-memory scope, when the graph has a memory."""


@dataclass(slots=True)
class StepOutput:
    """The step's effect on the run: new log items, the answer when it finished, its record."""

    record: StepRecord
    items: list[ContextItem] = field(default_factory=list)
    finished: bool = False
    answer: str | None = None
    structured: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        """The step ended the run with a structured error (``record.error``)."""
        return self.record.error is not None


def run_step(agent: BoundAgent, inp: StepInput) -> StepOutput:
    """Execute one step of ``agent``; see the module docstring for the failure rules."""
    spec = agent.spec
    record = StepRecord(
        step=inp.run_step, agent=agent.name, role=agent.role, turn_step=inp.turn_step
    )
    tokens_left, seconds_left = inp.budget.remaining(agent.role)
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
    record.reasoning_policy = spec.reasoning_policy.name
    record.reasoning_action = decision.action
    record.reasoning_reason = decision.reason
    if decision.action == "stop":
        return _fail(
            record, "step_limit", f"{agent.name} stopped without an answer: {decision.reason}"
        )
    if decision.model is not None:
        agent = replace(agent, llm=decision.model)

    selection = spec.context_policy.select(
        ContextRequest(
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
    )
    if spec.context_budget is not None and selection.tokens > spec.context_budget:
        return _fail(
            record,
            "routing",
            f"context policy {spec.context_policy.name!r} returned {selection.tokens} tokens, "
            f"over the budget of {spec.context_budget}",
        )
    record.context_policy = spec.context_policy.name
    record.context_items = [i.id for i in selection.items]
    record.context_tokens = selection.tokens
    record.context_dropped = selection.dropped
    record.context_reason = selection.reason
    record.decoder = spec.decoder.name
    act_only = decision.action == "act"
    max_tokens = min(spec.max_tokens, decision.max_tokens or spec.max_tokens)
    record.max_tokens = max_tokens
    retry_note: str | None = None
    for attempt in range(spec.parse_retries + 1):
        record.parse_retries = attempt
        call = _Caller(agent, inp, record, selection.render(), act_only, retry_note)
        reply = call.reply(max_tokens)
        if isinstance(reply, StepOutput):
            return reply
        record.output = reply
        try:
            parsed = _parse(agent, reply)
        except ReActParseError as exc:
            retry_note = str(exc)
            continue
        return _act(agent, inp, record, parsed)
    return _fail(record, "parse", f"{agent.name}'s reply could not be parsed: {retry_note}")


@dataclass(slots=True)
class _Caller:
    """Produces one step's reply by `guided_reply`, so that small models still yield
    REASON and ACT: the model calls go through the budget, the model policy and the
    step's trace record. Each valid action name (the tools and ``finish``) is scored in
    one forward pass; the prompt is cached from the first call, so this costs a few
    tokens per candidate."""

    agent: BoundAgent
    inp: StepInput
    record: StepRecord
    context: str
    act_only: bool
    retry_note: str | None

    def reply(self, max_tokens: int) -> str | StepOutput:
        if self.agent.spec.answer_format == "plain":
            return self._call("", max_tokens, ())
        return guided_reply(
            self._call, self._choose_action, max_tokens=max_tokens, act_only=self.act_only
        )

    def _choose_action(self, base: str) -> str | StepOutput | None:
        """The likeliest valid action name after ``base``; None if the model cannot score."""
        agent = self.agent
        prompt = self._prompt(base)
        candidates = [*agent.tools, "finish"]
        prompt_tokens = agent.llm.count_tokens(prompt)
        allowed, note = self.inp.budget.admit(
            agent.role, agent.llm.name, prompt_tokens * len(candidates), 1
        )
        if allowed <= 0:
            self.record.budget = note
            return _fail(self.record, "budget", note)
        scores: dict[str, float] = {}
        for name in candidates:
            try:
                score = agent.llm.score(prompt, f" {name}[")
            except LLMError:
                return None
            scores[name] = score.total_logprob
            scored_tokens = score.prompt_tokens + len(score.tokens)
            self.inp.budget.charge(agent.role, agent.llm.name, scored_tokens, 0, score.latency_s)
            self.record.prompt_tokens += scored_tokens
            self.record.latency_s += score.latency_s
        self.record.model_details["action_scores"] = scores
        return max(scores, key=lambda name: scores[name])

    def _prompt(self, prefill: str) -> ChatPrompt:
        """This step's prompt, the reply starting with ``prefill``."""
        return step_prompt(
            self.agent,
            self.inp.task,
            self.context,
            act_only=self.act_only,
            retry_note=self.retry_note,
            prefill=prefill,
        )

    def _call(self, prefill: str, max_tokens: int, stop: tuple[str, ...]) -> str | StepOutput:
        agent, record = self.agent, self.record
        prompt = self._prompt(prefill)
        prompt_tokens = agent.llm.count_tokens(prompt)
        allowed, note = self.inp.budget.admit(agent.role, agent.llm.name, prompt_tokens, max_tokens)
        record.budget = note
        if allowed <= 0:
            return _fail(record, "budget", note)
        params = GenerationParams(max_tokens=allowed, temperature=agent.spec.temperature, stop=stop)
        try:
            result = agent.spec.model_policy.generate(
                ModelCall(agent.name, agent.role, prompt, params, agent.llm, self.inp.on_token),
                agent.spec.decoder,
            )
        except LLMError as exc:
            return _fail(record, "model", f"model call failed: {exc}")
        completion = result.completion
        usage = completion.usage
        self.inp.budget.charge(
            agent.role,
            result.model,
            usage.prompt_tokens,
            usage.completion_tokens,
            completion.latency_s,
        )
        record.prompt = list(prompt.messages)
        record.prefill = prefill
        record.output = prefill + completion.text
        record.model, record.model_policy = result.model, result.policy
        record.model_reason = result.reason
        record.model_details |= result.details
        record.decoding = completion.decoding or {}
        record.prompt_tokens += completion.usage.prompt_tokens
        record.completion_tokens += completion.usage.completion_tokens
        record.latency_s += completion.latency_s
        return completion.text


def _parse(agent: BoundAgent, text: str) -> tuple[ReActStep, dict[str, Any] | None]:
    """The REASON/ACT step, and the structured answer when the agent has an output schema."""
    spec = agent.spec
    step = (
        ReActStep("", FinalAnswer(text.strip()), text)
        if spec.answer_format == "plain"
        else parse_react(text)
    )
    if not isinstance(step.action, FinalAnswer) or spec.output_schema is None:
        return step, None
    try:
        data = spec.output_schema.model_validate(json.loads(step.action.text))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise ReActParseError(
            f"the answer must be JSON matching the output schema ({first})"
        ) from None
    return step, data.model_dump()


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
    record.latency_s += time.perf_counter() - began
    record.observation = observation
    note("observation", observation)
    return StepOutput(record, made)


def _fail(record: StepRecord, kind: ErrorKind, message: str) -> StepOutput:
    record.error = StepError(kind=kind, message=message)
    item = ContextItem(
        f"{record.step}.err", message, "error", record.agent, record.role, record.step
    )
    return StepOutput(record, [item], finished=True)
