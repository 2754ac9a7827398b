"""`Agent`: a role-aware ReAct agent's definition, and its form bound to models and policies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from relaygraph.agents.roles import check_role
from relaygraph.agents.tools import Tool
from relaygraph.decoding.base import Decoder, DirectDecoder
from relaygraph.errors import ConfigError
from relaygraph.llm.constraints import JsonSchemaFormat
from relaygraph.routing.context import ContextPolicy, FullContext
from relaygraph.routing.models import FixedModel, ModelPolicy
from relaygraph.routing.reasoning import ReActPolicy, ReasoningPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pydantic import BaseModel

    from relaygraph.llm.protocol import LLM

AnswerFormat = Literal["react", "plain", "extract"]
ReactDecoding = Literal["auto", "grammar", "guided"]
ToolCalling = Literal["react", "native"]
ChoiceScoring = Literal["decode", "calibrated"]


@dataclass(frozen=True, kw_only=True)
class Agent:
    """A role-aware agent: what it is told, which tools and model it uses, its limits.

    Example:
        >>> def search(query: str) -> str:
        ...     '''Search the notes.'''
        ...     return "Paris is the capital of France."
        >>> researcher = Agent(name="researcher", role="researcher", tools=[search],
        ...                    instructions="Find facts that answer the task.")
        >>> researcher.max_steps
        4

    Attributes:
        name: Node name in the graph (an identifier).
        role: planner, researcher, solver, critic, executor… or any lowercase identifier.
        instructions: Role instructions placed in the system prompt.
        tools: Tools, or type-hinted functions that become tools at compile().
        model: A model name, an `LLM`, or None for the graph's default model.
        model_policy: Which model answers a step (default: the agent's model).
        context_policy: What the agent sees (default: everything, cut to the budget).
        reasoning_policy: Reason-then-act, act, or stop (default: always ReAct).
        decoder: How tokens are produced (default: the model itself).
        max_steps: Steps per turn before the agent must have finished.
        max_tokens: Completion tokens per step.
        temperature: Sampling temperature (0: greedy).
        context_budget: Token cap on the routed context; None: no cap.
        stage: The task stage the agent works in (plan, retrieve, answer, verify…), which
            stage-aware context policies route by; None: no stage.
        answer_format: ``react`` (Thought/Action), ``plain`` (the reply is the answer) or
            ``extract`` (the answer is the name or number of the context that the model
            scores likeliest; see `relaygraph.agents.extraction`). A run that gives the
            graph's answer a JSON format makes a finishing agent write it, as ``plain``.
        output_schema: A pydantic model the final answer must parse into (JSON).
        parse_retries: Retries with a format reminder when a reply cannot be parsed.
        tool_choice: The tool policy: ``auto`` (the agent decides), ``required`` (it must
            call tools ``min_tool_calls`` times in a turn before it may finish), or a
            tool's name (its first ``min_tool_calls`` actions of a turn call that tool).
        min_tool_calls: Calls the policy requires per turn (at least 1 unless ``auto``).
        max_tool_calls: Most tool calls per turn; after them the agent must finish
            (None: no cap but ``max_steps``).
        react_decoding: How a ReAct reply is produced: ``grammar`` decodes it under a
            grammar of the step (a thought line, then one valid action with schema-valid
            arguments: every reply parses); ``guided`` lets the model write freely and,
            if that does not parse, scores the action names and generates the argument;
            ``auto`` is grammar where the model decodes relaygraph's grammars (in
            process, or a relaygraph worker) and guided elsewhere.
        tool_calling: ``react`` (text Thought/Action) or ``native`` (the model's own tool
            calling: OpenAI ``tools`` to a worker, or the engine's tool grammar); the
            trace records the same step fields either way.
        choice_scoring: How the argument of a tool limited to `Tool.choices` (a game's
            valid commands) is picked: ``decode`` (generated, under the step grammar
            where there is one) or ``calibrated`` (after the thought, each choice is
            scored, minus its score after a prompt with no task: the likeliest by that
            margin; see `relaygraph.agents.step_reply`). Needs exactly one tool, with
            choices.
    """

    name: str
    role: str = "solver"
    instructions: str = ""
    tools: Sequence[Tool | Callable[..., Any]] = ()
    model: str | LLM | None = None
    model_policy: ModelPolicy = field(default_factory=FixedModel)
    context_policy: ContextPolicy = field(default_factory=FullContext)
    reasoning_policy: ReasoningPolicy = field(default_factory=ReActPolicy)
    decoder: Decoder = field(default_factory=DirectDecoder)
    max_steps: int = 4
    max_tokens: int = 192
    temperature: float = 0.0
    context_budget: int | None = None
    stage: str | None = None
    answer_format: AnswerFormat = "react"
    output_schema: type[BaseModel] | None = None
    parse_retries: int = 1
    tool_choice: str = "auto"
    min_tool_calls: int = 0
    max_tool_calls: int | None = None
    react_decoding: ReactDecoding = "auto"
    tool_calling: ToolCalling = "react"
    choice_scoring: ChoiceScoring = "decode"

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ConfigError(
                f"agent name {self.name!r} must be an identifier", parameter="name", value=self.name
            )
        check_role(self.role)
        for attr, low, high in (
            ("max_steps", 1, 100),
            ("max_tokens", 1, 8192),
            ("parse_retries", 0, 5),
            ("min_tool_calls", 0, 99),
        ):
            value = getattr(self, attr)
            if not low <= value <= high:
                raise ConfigError(
                    f"agent {self.name!r}: {attr} must be in {low}..{high}, got {value}",
                    parameter=attr,
                    value=value,
                )
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(
                f"agent {self.name!r}: temperature must be in 0..2", parameter="temperature"
            )
        if self.context_budget is not None and self.context_budget < 1:
            raise ConfigError(
                f"agent {self.name!r}: context_budget must be >= 1", parameter="context_budget"
            )
        if self.answer_format not in ("react", "plain", "extract"):
            raise ConfigError(
                f"agent {self.name!r}: answer_format must be react, plain or extract",
                parameter="answer_format",
            )
        if self.answer_format == "extract":
            self._check_extract()
        for attr, allowed in (
            ("react_decoding", ("auto", "grammar", "guided")),
            ("tool_calling", ("react", "native")),
            ("choice_scoring", ("decode", "calibrated")),
        ):
            if getattr(self, attr) not in allowed:
                raise ConfigError(
                    f"agent {self.name!r}: {attr} must be one of {', '.join(allowed)}",
                    parameter=attr,
                    value=getattr(self, attr),
                )
        if self.choice_scoring == "calibrated":
            self._check_scored_choices()
        if self.max_tool_calls is not None and not self.required_calls <= self.max_tool_calls:
            raise ConfigError(
                f"agent {self.name!r}: max_tool_calls={self.max_tool_calls} is below the "
                f"{self.required_calls} calls its tool_choice requires",
                parameter="max_tool_calls",
            )
        # A tool that returns directly ends the turn with its output, so the last
        # required call may be the turn's last step; otherwise one more step finishes.
        finishing_step = 0 if self._required_call_ends_turn() else 1
        if self.tool_choice != "auto" and self.required_calls + finishing_step > self.max_steps:
            raise ConfigError(
                f"agent {self.name!r}: tool_choice requires {self.required_calls} tool calls "
                f"per turn, but max_steps={self.max_steps} leaves no step to finish",
                parameter="min_tool_calls",
            )

    def _check_scored_choices(self) -> None:
        """Scored choices replace the argument of the agent's one tool with choices."""
        tools = list(self.tools)
        if len(tools) != 1 or not isinstance(tools[0], Tool) or tools[0].choices is None:
            raise ConfigError(
                f"agent {self.name!r}: choice_scoring='calibrated' needs exactly one tool, "
                "a Tool with choices",
                parameter="choice_scoring",
            )
        if self.tool_calling != "react" or self.answer_format != "react":
            raise ConfigError(
                f"agent {self.name!r}: choice_scoring='calibrated' scores ReAct actions; "
                "it needs tool_calling='react' and answer_format='react'",
                parameter="choice_scoring",
            )

    def _check_extract(self) -> None:
        """An extracted answer is scored by the agent's own model: a policy that would
        pick another model or decoder, or a schema the span cannot satisfy, is refused."""
        for attr, default in (("model_policy", FixedModel), ("decoder", DirectDecoder)):
            if not isinstance(getattr(self, attr), default):
                raise ConfigError(
                    f"agent {self.name!r}: answer_format='extract' scores candidates with the "
                    f"agent's own model; {attr} does not apply to it",
                    parameter=attr,
                )
        if self.output_schema is not None:
            raise ConfigError(
                f"agent {self.name!r}: an extracted answer is a span of text, not JSON; "
                "drop output_schema or use answer_format='react'",
                parameter="output_schema",
            )

    def _required_call_ends_turn(self) -> bool:
        direct = {t.name for t in self.tools if isinstance(t, Tool) and t.return_direct}
        if self.tool_choice == "required":
            return bool(self.tools) and len(direct) == len(self.tools)
        return self.tool_choice in direct

    @property
    def required_calls(self) -> int:
        """Tool calls the tool policy requires per turn before the agent may finish."""
        return 0 if self.tool_choice == "auto" else max(1, self.min_tool_calls)

    def bind(self, llm: LLM) -> BoundAgent:
        """The agent with its model resolved and its tools turned into `Tool` objects.

        Raises:
            ConfigError: A tool cannot be described by a schema, or two tools share a name.
        """
        tools: dict[str, Tool] = {}
        for item in self.tools:
            try:
                t = Tool.from_any(item)
            except ConfigError as exc:
                raise ConfigError(f"agent {self.name!r}: {exc}", parameter="tools") from None
            if t.name in tools or t.name == "finish":
                raise ConfigError(
                    f"agent {self.name!r}: two tools are named {t.name!r} ('finish' is reserved)",
                    parameter="tools",
                )
            tools[t.name] = t
        if self.answer_format != "react" and tools:
            raise ConfigError(
                f"agent {self.name!r}: a {self.answer_format}-answer agent cannot call tools; "
                "use answer_format='react'",
                parameter="answer_format",
            )
        if self.tool_choice not in ("auto", "required", *tools):
            known = ", ".join(tools) or "none"
            raise ConfigError(
                f"agent {self.name!r}: tool_choice {self.tool_choice!r} is not auto, required "
                f"or one of its tools ({known})",
                parameter="tool_choice",
            )
        if self.tool_choice == "required" and not tools:
            raise ConfigError(
                f"agent {self.name!r}: tool_choice 'required' needs tools", parameter="tool_choice"
            )
        return BoundAgent(spec=self, llm=llm, tools=tools)


@dataclass(frozen=True, slots=True)
class BoundAgent:
    """An agent ready to run: its definition, its model and its tools by name."""

    spec: Agent
    llm: LLM
    tools: dict[str, Tool]
    answer_format: JsonSchemaFormat | None = None
    """The run's own format for this agent's answer (a served request's
    ``response_format``), in place of the spec's ``output_schema``."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def answer_schema(self) -> JsonSchemaFormat | None:
        """The JSON schema the agent's answer is decoded under and checked against
        (None: free text)."""
        if self.answer_format is not None:
            return self.answer_format
        schema = self.spec.output_schema
        if schema is None:
            return None
        return JsonSchemaFormat(json_schema=schema.model_json_schema(), name=schema.__name__)

    @property
    def role(self) -> str:
        return self.spec.role
