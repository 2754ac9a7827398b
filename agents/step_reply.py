"""One step's model calls: the reply decoded under the step grammar, guided, or through
the model's native tool calling, each call admitted by the budget and recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from relaygraph import telemetry
from relaygraph.agents import spans
from relaygraph.agents.extraction import (
    ANSWER_PREFILL,
    NEUTRAL_TASK,
    answer_candidates,
    calibrated,
)
from relaygraph.agents.priors import prior_scores
from relaygraph.agents.prompts import step_prompt
from relaygraph.agents.react import (
    ACTION_TOKENS,
    REPLY_STOPS,
    FinalAnswer,
    ReActParseError,
    ReActStep,
    ToolCall,
    guided_reply,
    parse_react,
)
from relaygraph.agents.react_grammar import react_grammar
from relaygraph.agents.record import BudgetRecord
from relaygraph.agents.step_io import StepOutput, fail_step
from relaygraph.errors import ConfigError, LLMError
from relaygraph.llm.capabilities import decodes_lark_grammars
from relaygraph.llm.constraints import GrammarFormat, NamedToolChoice, ResponseFormat, ToolSpec
from relaygraph.llm.types import Completion, GenerationParams
from relaygraph.routing.models import ModelCall

if TYPE_CHECKING:
    from relaygraph.agents.agent import BoundAgent
    from relaygraph.agents.record import StepRecord
    from relaygraph.agents.step_io import StepInput
    from relaygraph.agents.tool_policy import ToolPolicy
    from relaygraph.llm.types import ChatPrompt


@dataclass(slots=True)
class StepCaller:
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
        if spec.answer_format == "extract" and self.agent.answer_schema is None:
            return self._extract(max_tokens)
        if spec.answer_format != "react":  # plain, or extract under a run's JSON format
            return self._call("", max_tokens, (), self.agent.answer_schema)
        if spec.choice_scoring == "calibrated" and (choices := self._scored_choices()):
            return self._scored_act(choices, max_tokens)
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
        head = "Action: " if act_only else self._thought_head()
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

    def _thought_head(self) -> str:
        """How a thought starts: from the observation when there is one (see
        `_constrained`)."""
        observed = self.inp.last_observation is not None
        return "Thought: The observation says" if observed else "Thought:"

    def _scored_choices(self) -> list[str]:
        """The choices of the step's one tool, when it may be called and has some."""
        tools = list(self.policy.tools.values())
        if len(tools) != 1 or tools[0].choices is None:
            return []
        return list(dict.fromkeys(tools[0].choices()))

    def _scored_act(self, choices: list[str], max_tokens: int) -> str | StepOutput:
        """A ReAct reply whose argument is the best-scoring of the tool's ``choices``.

        The thought is written freely (one line; none when ``act_only``). Then each
        candidate is scored after the reply so far and after the same prompt with no
        task and no context (`calibrated`): by likelihood alone a small model picks the
        short, frequent commands of its instructions (or ``finish``) whatever the state,
        a prior the difference cancels (Holtzman et al., 2021). Where the policy lets
        the agent finish, the action's name is chosen that way first and a ``finish``
        writes its answer; otherwise the best choice is the tool's argument.
        """
        tool = next(iter(self.policy.tools.values()))
        base = started = "Action:"
        if not self.act_only:
            started = self._thought_head()
            first = self._call(started, max_tokens, ("\n", *REPLY_STOPS))
            if not isinstance(first, str):
                return first
            base = f"{(started + first).split(chr(10))[0].rstrip()}\nAction:"
        record = self.record
        if self.policy.finish:
            names = self._calibrated([f" {tool.name}[", " finish["], base, "Action:")
            if not isinstance(names, dict):
                return names
            record.model.action_scores = {n.strip(" ["): s for n, s in names.items()}
            if names[" finish["] > names[f" {tool.name}["]:
                answer = self._call(f"{base} finish[", ACTION_TOKENS, ("]", "\n"))
                return f"{base} finish[{answer}]" if isinstance(answer, str) else answer
        prefill = f"{base} {tool.name}["
        ranked = self._calibrated([f"{c}]" for c in choices], prefill, f"Action: {tool.name}[")
        if not isinstance(ranked, dict):
            return ranked
        scores = {c: round(ranked[f"{c}]"], 4) for c in choices}
        record.model.choice_scores = scores
        reply = f"{prefill}{max(choices, key=scores.__getitem__)}]"
        # the whole reply, as if written at once: what the trace and distillation read
        record.prompt, record.prefill, record.output = (
            list(self._prompt("").messages),
            started,
            reply,
        )
        return reply

    def _calibrated(
        self, candidates: list[str], prefill: str, neutral_prefill: str
    ) -> dict[str, float] | StepOutput:
        """Each candidate's log-probability after this step's prompt (the reply so far:
        ``prefill``) minus after the prompt with no task and no context (`_rank`, in
        total: a command's words are the choice, however many tokens they take)."""
        neutral = step_prompt(self.agent, "", "", act_only=True, prefill=neutral_prefill)
        return self._rank(
            candidates,
            self._prompt(prefill),
            neutral,
            per_token=False,
            feature="choice_scoring='calibrated'",
        )

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
            return fail_step(self.record, "budget", note)
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

    def _extract(self, max_tokens: int) -> str | StepOutput:
        """The context's name or number (or yes/no) that the question makes likeliest as
        the answer (see `answer_candidates`).

        Each candidate is scored after the answer prompt and after the same prompt
        without the question (`calibrated`); both passes reuse their prompt's cache, so
        the cost is the two prompts and the candidates' tokens, which is what is charged.
        A context with no candidate gets a generated answer, as ``plain`` would. A
        streaming caller receives the chosen answer as one piece.
        """
        agent, record = self.agent, self.record
        candidates = answer_candidates(self.inp.task, self.context)
        if not candidates:
            record.model.answer_scores = {}
            return self._call("", max_tokens, (), None)
        asked = self._prompt(ANSWER_PREFILL)
        neutral = step_prompt(
            agent, NEUTRAL_TASK, self.context, act_only=True, prefill=ANSWER_PREFILL
        )
        ranked = self._rank(candidates, asked, neutral, feature="answer_format='extract'")
        if isinstance(ranked, StepOutput):
            return ranked
        best = max(candidates, key=ranked.__getitem__)
        record.model.answer_scores = {c: round(s, 4) for c, s in ranked.items()}
        record.prompt = list(asked.messages)
        record.prefill = ANSWER_PREFILL
        record.model.name, record.model.policy = agent.llm.name, "fixed"
        record.model.reason = "extracted: the best-scoring span of the context"
        if self.inp.on_token is not None:  # a streaming caller gets the answer whole
            self.inp.on_token(best)
        return best

    def _rank(
        self,
        candidates: list[str],
        asked: ChatPrompt,
        neutral: ChatPrompt,
        *,
        per_token: bool = True,
        feature: str,
    ) -> dict[str, float] | StepOutput:
        """Each candidate's `calibrated` score (per token, or in total: the
        log-probability ratio itself), the scoring charged to the budget (or the
        budget's refusal as the step's end). Scores after ``neutral`` are kept per model
        (`prior_scores`): only those computed now are charged. A model that cannot score
        ends the step, naming the ``feature`` that needed it."""
        agent, record = self.agent, self.record
        try:  # counting, tokenizing and scoring: what a model that cannot score refuses
            prompt_tokens = agent.llm.count_tokens(asked) + agent.llm.count_tokens(neutral)
            candidate_tokens = sum(len(agent.llm.tokenize(c)) for c in candidates)
            allowed, note = self.inp.budget.admit(
                agent.role, agent.llm.name, prompt_tokens + 2 * candidate_tokens, 1
            )
            record.budget = BudgetRecord.of(note)
            if allowed <= 0:
                return fail_step(record, "budget", note)
            asked_scores = {c: agent.llm.score(asked, c) for c in candidates}
            neutral_scores = prior_scores(agent.llm, neutral, candidates)
        except (LLMError, ConfigError) as exc:
            return fail_step(record, "model", f"{feature} needs a model that scores text: {exc}")
        computed = [*asked_scores.values(), *(s for s, new in neutral_scores.values() if new)]
        for score in computed:
            evaluated = score.prompt_tokens - score.cached_tokens + len(score.tokens)
            self.inp.budget.charge(agent.role, agent.llm.name, evaluated, 0, score.latency_s)
            record.prompt_tokens += evaluated
            record.latency_s += score.latency_s
        return {
            c: calibrated(
                asked_scores[c].total_logprob,
                neutral_scores[c][0].total_logprob,
                len(asked_scores[c].tokens) if per_token else 1,
            )
            for c in candidates
        }

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
            return fail_step(record, "budget", note)
        params = GenerationParams(
            max_tokens=allowed,
            temperature=agent.spec.temperature,
            stop=stop,
            parallel_tool_calls=False,
            **constraints,
        )
        call = ModelCall(agent.name, agent.role, prompt, params, agent.llm, self.inp.on_token)
        with spans.chat_span(agent.llm.name, params, agent=agent.name) as span:
            try:
                result = agent.spec.model_policy.generate(call, agent.spec.decoder)
            except (LLMError, ConfigError) as exc:
                telemetry.fail(span, type(exc).__name__, str(exc))
                return fail_step(record, "model", f"model call failed: {exc}")
            spans.record_reply(span, result, prompt.messages)
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
