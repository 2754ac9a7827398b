"""Model routing: which model answers an agent's step.

A `ModelPolicy` owns the model call, because deciding may need the answer itself (a
small-to-large cascade answers with the small model, estimates its uncertainty, and
escalates). The default, `FixedModel`, asks the agent's own model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable

    from relaygraph.decoding.base import Decoder
    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import ChatPrompt, Completion, GenerationParams


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One step's request for a completion.

    Attributes:
        agent: The agent asking.
        role: Its role.
        prompt: The prompt (chat messages, and the start of the reply when prefilled).
        params: Generation parameters (max_tokens already cut to the budget).
        model: The agent's own model.
        on_token: Called with each text delta when the caller streams tokens.
    """

    agent: str
    role: str
    prompt: ChatPrompt
    params: GenerationParams
    model: LLM
    on_token: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class ModelResult:
    """The completion and the routing decision behind it, for the trace."""

    completion: Completion
    model: str
    policy: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ModelPolicy(Protocol):
    """Chooses, and calls, the model that answers a step."""

    name: str

    def generate(self, call: ModelCall, decoder: Decoder) -> ModelResult:
        """The completion for this step, produced through ``decoder``."""
        ...


class FixedModel:
    """Always the agent's own model."""

    name = "fixed"

    def generate(self, call: ModelCall, decoder: Decoder) -> ModelResult:
        completion = decoder.generate(call.model, call.prompt, call.params, call.on_token)
        return ModelResult(
            completion=completion, model=call.model.name, policy=self.name, reason="agent's model"
        )
