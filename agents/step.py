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

import jsonschema
from pydantic import ValidationError

from relaygraph.agents.prompts import step_prompt
from relaygraph.agents.react import (
    ACTION_TOKENS,
    FinalAnswer,
    ReActParseError,
    ReActStep,
    ToolCall,
    guided_reply,
    parse_react,
)
from relaygraph.agents.react_grammar import react_grammar
from relaygraph.agents.record import (
    BudgetRecord,
    ContextRecord,
    FailureKind,
    ReasoningRecord,
    StepFailure,
    StepRecord,
)
from relaygraph.agents.tool_policy import ToolPolicy
from relaygraph.agents.tools import ToolCallError
from relaygraph.errors import ConfigError, LLMError
from relaygraph.llm.capabilities import decodes_lark_grammars
from relaygraph.llm.constraints import (
    GrammarFormat,
    NamedToolChoice,
    ResponseFormat,
    ToolSpec,
)
from relaygraph.llm.types import Completion, GenerationParams
from relaygraph.routing.context import ContextItem, ContextRequest
from relaygraph.routing.models import ModelCall
from relaygraph.routing.reasoning import ReasoningState

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.agents.agent import BoundAgent
    from relaygraph.llm.types import ChatPrompt
    from relaygraph.memory import MemoryScope


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
    tool_calls_in_turn: int = 0
    """Tool calls this agent has made in its current turn (for its tool policy)."""


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
    record.reasoning = ReasoningRecord(
        policy=spec.reasoning_policy.name, action=decision.action, reason=decision.reason
    )
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
    record.context = ContextRecord(
        policy=spec.context_policy.name,
        items=[i.id for i in selection.items],
        tokens=selection.tokens,
        dropped=selection.dropped,
        reason=selection.reason,
    )
    record.decoding.decoder = spec.decoder.name
    act_only = decision.action == "act"
    max_tokens = min(spec.max_tokens, decision.max_tokens or spec.max_tokens)
    record.max_tokens = max_tokens
    policy = ToolPolicy.for_step(agent, inp.tool_calls_in_turn)
    retry_note: str | None = None
    for attempt in range(spec.parse_retries + 1):
        record.parse_retries = attempt
        call = _Caller(agent, inp, record, selection.render(), act_only, retry_note, policy)
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
    return _fail(record, "parse", f"{agent.name}'s reply could not be parsed: {retry_note}")


@dataclass(slots=True)
class _Caller:
    """Produces one step's reply: the model calls go through the budget, the model
    policy and the step's trace record.

    A ReAct reply is decoded under the step's grammar (`react_grammar`) when the agent's
    decoding is ``grammar``: it always parses. Otherwise `guided_reply` lets the model
    write freely and, if that does not parse, scores each valid action name in one
    forward pass (prompt cached: a few tokens per candidate) and generates only the
    argument. With ``tool_calling="native"`` the step is one call with the tools as
    the request's ``tools``."""

    agent: BoundAgent
    inp: StepInput
    record: StepRecord
    context: str
    act_only: bool
    retry_note: str | None
    policy: ToolPolicy

    def reply(self, max_tokens: int) -> str | StepOutput:
        spec = self.agent.spec
        if spec.answer_format == "plain":
            return self._call("", max_tokens, (), self.agent.answer_schema)
        if self._grammar_decoding():
            self.record.model.react_decoding = "grammar"
            return self._constrained(max_tokens)
        self.record.model.react_decoding = "guided"
        return guided_reply(
            self._call, self._choose_action, max_tokens=max_tokens, act_only=self.act_only
        )

    def _grammar_decoding(self) -> bool:
        mode = self.agent.spec.react_decoding
        return mode == "grammar" or (mode == "auto" and decodes_lark_grammars(self.agent.llm))

    def _grammar(self, *, thought: bool) -> GrammarFormat:
        schema = self.agent.answer_schema
        lark = react_grammar(
            list(self.policy.tools.values()),
            finish=self.policy.finish,
            thought=thought,
            output_schema=schema.json_schema if schema else None,
        )
        return GrammarFormat(grammar=lark)

    def _constrained(self, max_tokens: int) -> str | StepOutput:
        """A reply under the step's grammar. When the token cap cuts it inside the
        thought, the thought's line stands and a second call decodes the action.

        Two cases start differently, because they are where a small model goes astray:
        a first step whose action the policy fixes (one tool, no finish) has nothing to
        reason about but the argument, so it is decoded as the action alone (a thought
        there drifts, and the argument copies the drift); after an observation the thought
        starts from it ("The observation says"), where a small model would otherwise
        restate the task and ignore what it just learned.
        """
        observed = self.inp.last_observation is not None
        forced = not self.policy.finish and len(self.policy.tools) == 1
        act_only = self.act_only or (forced and not observed)
        if act_only:
            head = "Action: "
        elif observed:
            head = "Thought: The observation says"
        else:
            head = "Thought:"
        first = self._call(head, max_tokens, (), self._grammar(thought=not act_only))
        if not isinstance(first, str):
            return first
        try:
            parse_react(head + first)
            return head + first
        except ReActParseError:
            pass
        self.record.model.grammar_fallback = True  # the cap cut the thought
        thought = "" if act_only else (head + first).split("\n")[0].removeprefix("Thought:")
        base = "Action: " if act_only else f"Thought: {thought.strip()}\nAction: "
        rest = self._call(base, ACTION_TOKENS, (), self._grammar(thought=False))
        return base + rest if isinstance(rest, str) else rest

    def native(self, max_tokens: int) -> ReActStep | StepOutput:
        """One step through the model's own tool calling: a call, or the answer."""
        policy = self.policy
        specs = tuple(
            ToolSpec(
                name=t.name,
                description=t.description,
                parameters=t.args_model.model_json_schema(),
            )
            for t in policy.tools.values()
        )
        choice: Literal["auto", "required"] | NamedToolChoice = "auto"
        if not policy.finish:
            choice = NamedToolChoice(name=specs[0].name) if len(specs) == 1 else "required"
        answer_format = self.agent.answer_schema if policy.finish else None
        self.record.model.native_tools = True
        completion = self._complete(
            "",
            max_tokens,
            (),
            response_format=answer_format,
            tools=specs,
            tool_choice=choice if specs else "auto",
        )
        if isinstance(completion, StepOutput):
            return completion
        reply = completion.choice
        calls = reply.tool_calls or []
        raw = reply.text + "".join(f"\n{c.name}({c.arguments})" for c in calls)
        if calls:
            call = calls[0]  # one action per step, as in ReAct
            return ReActStep(reply.text.strip(), ToolCall(call.name, call.arguments), raw)
        return ReActStep("", FinalAnswer(reply.text.strip()), raw)

    def _choose_action(self, base: str) -> str | StepOutput | None:
        """The likeliest valid action name after ``base``; None if the model cannot score."""
        agent = self.agent
        prompt = self._prompt(base)
        candidates = [*self.policy.tools, *(["finish"] if self.policy.finish else [])]
        prompt_tokens = agent.llm.count_tokens(prompt)
        allowed, note = self.inp.budget.admit(
            agent.role, agent.llm.name, prompt_tokens * len(candidates), 1
        )
        if allowed <= 0:
            self.record.budget = BudgetRecord.of(note)
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
        self.record.model.action_scores = scores
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

    def _call(
        self,
        prefill: str,
        max_tokens: int,
        stop: tuple[str, ...],
        response_format: ResponseFormat | None = None,
    ) -> str | StepOutput:
        completion = self._complete(prefill, max_tokens, stop, response_format=response_format)
        return completion if isinstance(completion, StepOutput) else completion.text

    def _complete(
        self,
        prefill: str,
        max_tokens: int,
        stop: tuple[str, ...],
        **constraints: Any,
    ) -> Completion | StepOutput:
        agent, record = self.agent, self.record
        prompt = self._prompt(prefill)
        prompt_tokens = agent.llm.count_tokens(prompt)
        allowed, note = self.inp.budget.admit(agent.role, agent.llm.name, prompt_tokens, max_tokens)
        record.budget = BudgetRecord.of(note)
        if allowed <= 0:
            return _fail(record, "budget", note)
        params = GenerationParams(
            max_tokens=allowed,
            temperature=agent.spec.temperature,
            stop=stop,
            parallel_tool_calls=False,
            **constraints,
        )
        try:
            result = agent.spec.model_policy.generate(
                ModelCall(agent.name, agent.role, prompt, params, agent.llm, self.inp.on_token),
                agent.spec.decoder,
            )
        except (LLMError, ConfigError) as exc:
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
        record.model.name, record.model.policy = result.model, result.policy
        record.model.reason = result.reason
        record.model.cascade = result.cascade
        record.model.policy_details |= result.details
        record.decoding.report = completion.decoding or {}
        record.prompt_tokens += completion.usage.prompt_tokens
        record.completion_tokens += completion.usage.completion_tokens
        record.latency_s += completion.latency_s
        return completion


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
    elif spec.answer_format == "plain":
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
    if tool is not None and tool.return_direct and record.tool_error is None:
        # The result is the answer (the tool's own promise): the turn ends with it.
        note("plan" if agent.role == "planner" else "answer", observation)
        return StepOutput(record, made, finished=True, answer=observation)
    return StepOutput(record, made)


def _fail(record: StepRecord, kind: FailureKind, message: str) -> StepOutput:
    record.error = StepFailure(kind=kind, message=message)
    item = ContextItem(
        f"{record.step}.err", message, "error", record.agent, record.role, record.step
    )
    return StepOutput(record, [item], finished=True)
