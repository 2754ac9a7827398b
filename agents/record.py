"""What one step did, for the trace: `StepRecord`, in sections that follow the runtime's
decisions (context, model, reasoning, decoding, budget), and `StepFailure`.

Traces written before the sections existed (one flat record) still load: the flat keys
are read into their sections.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from relaygraph.decoding.rounds import SpeculativeReport
from relaygraph.llm.types import Message
from relaygraph.routing.models import CascadeStep
from relaygraph.routing.reasoning import ReasoningAction

FailureKind = Literal["budget", "parse", "model", "step_limit", "routing"]


class StepFailure(BaseModel):
    """Why a step ended its agent's turn, or the run, without an answer."""

    kind: FailureKind
    message: str


class ContextRecord(BaseModel):
    """What the agent saw: the context policy's selection under its token budget."""

    policy: str = ""
    items: list[str] = Field(default_factory=list)
    """Ids of the items shown, in prompt order."""
    tokens: int = 0
    """Their tokens, counted with the answering model's tokenizer."""
    dropped: list[str] = Field(default_factory=list)
    """Ids of candidates left out."""
    reason: str = ""
    costs: dict[str, int] = Field(default_factory=dict)
    """Tokens of each item the policy counted (every shown item among them), by id."""
    scores: dict[str, float] = Field(default_factory=dict)
    """The policy's score of each candidate it ranked, by id (similarity, RCR utility)."""


class ModelRecord(BaseModel):
    """Which model answered and why, and how the step's reply was decoded."""

    name: str = ""
    """The model that produced the reply."""
    policy: str = ""
    """The model policy that chose it (``fixed``, ``cascade``, ...)."""
    reason: str = ""
    react_decoding: Literal["grammar", "guided"] | None = None
    """How a ReAct step was decoded: under the step's grammar, or guided (free text, the
    action's name scored when it did not parse)."""
    native_tools: bool = False
    """The step went through the model's own tool calling instead of ReAct text."""
    grammar_fallback: bool = False
    """The token cap cut a grammar step's thought, and a second call decoded the action."""
    action_scores: dict[str, float] | None = None
    """Guided decoding: each candidate action's log-probability."""
    answer_scores: dict[str, float] | None = None
    """An extracted answer: each candidate span's score (see `relaygraph.agents.extraction`);
    empty when the context held no candidate and the answer was generated."""
    choice_scores: dict[str, float] | None = None
    """Scored choices (``choice_scoring="calibrated"``): each of the tool's choices'
    calibrated score; the best one is the action's argument."""
    cascade: list[CascadeStep] | None = None
    """A cascade's rungs, in the order they answered."""
    policy_details: dict[str, Any] = Field(default_factory=dict)
    """What another model policy reports of its decision."""


class ReasoningRecord(BaseModel):
    """The reasoning policy's decision for the step."""

    policy: str = ""
    action: ReasoningAction | None = None
    reason: str = ""


class DecodingRecord(BaseModel):
    """How the reply's tokens were produced."""

    # A step assigns its completion's report dict; validating it makes it typed.
    model_config = ConfigDict(validate_assignment=True)

    decoder: str = ""
    report: SpeculativeReport | dict[str, Any] = Field(
        default_factory=dict, union_mode="left_to_right"
    )
    """The model's own report where it did not decode alone: speculative decoding's,
    typed (rounds, windows, drafted and accepted tokens, seconds; see `SpeculativeLLM`),
    or another model's ``Completion.decoding`` as it gave it; empty where the model
    decoded alone."""


class BudgetRecord(BaseModel):
    """The budget's verdict on the step's last model call."""

    verdict: Literal["ok", "cut", "refused"] = "ok"
    note: str = "ok"
    """The budget's words: ``ok``, ``cut to N tokens by ...``, ``refused: ...``."""
    tokens_before: int | None = None
    """Tokens the role had left when the step began (None: unlimited)."""
    tokens_after: int | None = None
    """Tokens the role had left when the step ended."""
    seconds_before: float | None = None
    """Seconds the role had left when the step began (None: unlimited)."""
    seconds_after: float | None = None
    """Seconds the role had left when the step ended."""

    @classmethod
    def of(cls, note: str) -> BudgetRecord:
        verdict: Literal["ok", "cut", "refused"] = (
            "refused" if note.startswith("refused") else "cut" if note.startswith("cut") else "ok"
        )
        return cls(verdict=verdict, note=note)


_SECTIONS: dict[str, dict[str, str]] = {
    "context": {
        "context_policy": "policy",
        "context_items": "items",
        "context_tokens": "tokens",
        "context_dropped": "dropped",
        "context_reason": "reason",
    },
    "reasoning": {
        "reasoning_policy": "policy",
        "reasoning_action": "action",
        "reasoning_reason": "reason",
    },
    "decoding": {"decoder": "decoder", "decoding": "report"},
}
"""Flat keys of traces written before the sections, and where each now lives."""


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
    context: ContextRecord = Field(default_factory=ContextRecord)
    model: ModelRecord = Field(default_factory=ModelRecord)
    reasoning: ReasoningRecord = Field(default_factory=ReasoningRecord)
    decoding: DecodingRecord = Field(default_factory=DecodingRecord)
    budget: BudgetRecord = Field(default_factory=BudgetRecord)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    started_at: float | None = None
    """When the step began (Unix time): a timeline's place for steps that ran in parallel."""
    cost: float = 0.0
    parse_retries: int = 0
    error: StepFailure | None = None

    @model_validator(mode="before")
    @classmethod
    def _sections_from_flat_keys(cls, data: Any) -> Any:
        """Read a record of the flat layout (traces from before the sections)."""
        if not isinstance(data, dict) or not isinstance(data.get("model", {}), str):
            return data
        data = dict(data)
        for section, keys in _SECTIONS.items():
            data[section] = {new: data.pop(old) for old, new in keys.items() if old in data}
        if data["reasoning"].get("action") == "":
            data["reasoning"]["action"] = None
        details = dict(data.pop("model_details", {}))
        model = {
            "name": data.pop("model"),
            "policy": data.pop("model_policy", ""),
            "reason": data.pop("model_reason", ""),
            "react_decoding": details.pop("react_decoding", None),
            "native_tools": details.pop("tool_calling", None) == "native",
            "grammar_fallback": details.pop("grammar_fallback", False),
            "action_scores": details.pop("action_scores", None),
            "cascade": details.pop("cascade", None),
            "policy_details": details,
        }
        data["model"] = model
        data["budget"] = BudgetRecord.of(data.get("budget", "ok")).model_dump()
        return data
