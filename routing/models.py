"""Model routing: which model answers an agent's step.

A `ModelPolicy` owns the model call, because deciding may need the answer itself. The
default, `FixedModel`, asks the agent's own model; `Cascade` answers with the smallest
model first, estimates its uncertainty, and escalates to the next model while the score
is above that rung's threshold ("Confident or Seek Stronger", PAPERS.md section 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from relaygraph.decoding.base import DirectDecoder
from relaygraph.errors import ConfigError
from relaygraph.llm.types import Completion, Usage
from relaygraph.routing.uncertainty import LogprobsUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.decoding.base import Decoder
    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import ChatPrompt, GenerationParams, TextPrompt
    from relaygraph.routing.calibration import Calibration
    from relaygraph.routing.uncertainty import UncertaintyEstimate, UncertaintyEstimator


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


class CascadeStep(BaseModel):
    """One rung of a cascade's decision: the answer it gave, how unsure it was, and
    whether that answer stood (``accept``), went up a rung (``escalate``), or was the last
    rung's (``final``, which is never estimated)."""

    model: str
    decision: Literal["accept", "escalate", "final"]
    estimator: str | None = None
    score: float | None = None
    p_correct: float | None = None
    """The calibrated chance the answer is right (None without a calibration)."""
    threshold: float | str | None = None
    """The score above which it escalates; ``"inf"``/``"-inf"`` as text, since JSON has
    no infinity."""
    extra_calls: int | None = None
    completion_tokens: int | None = None
    fallback: str | None = None
    """Why a fallback estimator was used, when one was."""


@dataclass(frozen=True, slots=True)
class ModelResult:
    """The completion and the routing decision behind it, for the trace."""

    completion: Completion
    model: str
    policy: str
    reason: str
    cascade: list[CascadeStep] | None = None
    """A cascade's rungs, in the order they answered."""
    details: dict[str, Any] = field(default_factory=dict)
    """What another model policy reports of its decision."""


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


@dataclass(frozen=True, slots=True)
class Rung:
    """One model of a cascade and when its answer stands.

    Attributes:
        model: The model answering at this rung.
        estimator: Scores its answers; None only on the last rung, whose answer stands.
        threshold: Escalate when the score is above it. Always explicit: from
            `Rung.calibrated`, or chosen by the caller.
        calibration: Maps scores to P(right) for the trace; must match model and estimator.
        fallback: Estimator and threshold used when ``estimator`` needs log-probabilities
            the model does not return (a remote server without them); without one, that
            answer fails with `LogprobsUnavailableError`.
    """

    model: LLM
    estimator: UncertaintyEstimator | None = None
    threshold: float = math.inf
    calibration: Calibration | None = None
    fallback: tuple[UncertaintyEstimator, float] | None = None

    def __post_init__(self) -> None:
        cal, estimator = self.calibration, self.estimator
        if cal is None or estimator is None:
            return
        if (cal.model, cal.estimator) != (self.model.name, estimator.name):
            raise ConfigError(
                f"calibration fitted for ({cal.model}, {cal.estimator}) used on "
                f"({self.model.name}, {estimator.name})",
                parameter="calibration",
            )

    @classmethod
    def calibrated(
        cls,
        model: LLM,
        estimator: UncertaintyEstimator,
        calibration: Calibration,
        *,
        escalation_rate: float | None = None,
        target_accuracy: float | None = None,
        fallback: tuple[UncertaintyEstimator, float] | None = None,
    ) -> Rung:
        """A rung whose threshold comes from ``calibration``: escalate ``escalation_rate``
        of queries, or keep the most answers that still reach ``target_accuracy``."""
        if (escalation_rate is None) == (target_accuracy is None):
            raise ConfigError(
                "give exactly one of escalation_rate or target_accuracy",
                parameter="escalation_rate",
            )
        threshold = (
            calibration.threshold_for_escalation(escalation_rate)
            if escalation_rate is not None
            else calibration.threshold_for_accuracy(target_accuracy or 0.0)
        )
        return cls(model, estimator, threshold, calibration, fallback)


class Cascade:
    """Small-to-large routing over N models by the answering model's own uncertainty.

    Each rung answers in turn; its answer stands unless its uncertainty score is above
    the rung's threshold. The rungs name every model used; the agent's own model is not
    asked. The returned completion is the standing answer, with usage and
    latency summed over every answer generated (estimators' own calls are counted in
    the trace's ``extra_calls``);
    the result's ``cascade`` lists each rung's model, estimator, score, calibrated P(right),
    threshold, decision and cost. Tokens stream only from the last rung; an earlier
    rung's accepted answer is sent to ``on_token`` whole.

    Example:
        >>> cascade = Cascade([                                        # doctest: +SKIP
        ...     Rung.calibrated(small, MeanLogprob(), calibration, escalation_rate=0.3),
        ...     Rung(large)])
        >>> Agent("answerer", model_policy=cascade)                    # doctest: +SKIP
    """

    name = "cascade"

    def __init__(self, rungs: Sequence[Rung]) -> None:
        if len(rungs) < 2:
            raise ConfigError("a cascade needs at least two rungs", parameter="rungs")
        for rung in rungs[:-1]:
            if rung.estimator is None:
                raise ConfigError(
                    f"rung {rung.model.name} needs an estimator (only the last may omit it)",
                    parameter="rungs",
                )
        self.rungs = list(rungs)

    def generate(self, call: ModelCall, decoder: Decoder) -> ModelResult:
        return self.route(call.prompt, call.params, decoder, call.on_token)

    def route(
        self,
        prompt: TextPrompt | ChatPrompt,
        params: GenerationParams,
        decoder: Decoder | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> ModelResult:
        """Answer ``prompt`` down the rungs (an agent's step, or a plain completion)."""
        decoder = decoder or DirectDecoder()
        steps: list[CascadeStep] = []
        spent: list[Completion] = []
        for rung in self.rungs[:-1]:
            assert rung.estimator is not None  # checked in __init__
            wants = rung.estimator.needs_logprobs
            answer_params = params.model_copy(
                update={"logprobs": True, "top_logprobs": 5} if wants else {}
            )
            completion = decoder.generate(rung.model, prompt, answer_params)
            spent.append(completion)
            estimate, threshold, note = self._estimate(rung, prompt, completion, params)
            escalate = estimate.score > threshold
            steps.append(
                CascadeStep(
                    model=rung.model.name,
                    estimator=estimate.method,
                    score=round(estimate.score, 6),
                    p_correct=None
                    if rung.calibration is None or note
                    else round(float(rung.calibration.probability(estimate.score)), 4),
                    # inf (never escalate) and -inf (always) as text: JSON has no infinity
                    threshold=threshold if math.isfinite(threshold) else str(threshold),
                    decision="escalate" if escalate else "accept",
                    extra_calls=estimate.extra_calls,
                    completion_tokens=completion.usage.completion_tokens,
                    **({"fallback": note} if note else {}),
                )
            )
            if not escalate:
                if on_token is not None and completion.text:
                    on_token(completion.text)
                return self._result(rung.model, completion, spent, steps)
        last = self.rungs[-1]
        completion = decoder.generate(last.model, prompt, params, on_token)
        spent.append(completion)
        steps.append(CascadeStep(model=last.model.name, decision="final"))
        return self._result(last.model, completion, spent, steps)

    @staticmethod
    def _estimate(
        rung: Rung,
        prompt: TextPrompt | ChatPrompt,
        completion: Completion,
        params: GenerationParams,
    ) -> tuple[UncertaintyEstimate, float, str]:
        assert rung.estimator is not None
        try:
            estimate = rung.estimator.estimate(rung.model, prompt, completion, params)
            return estimate, rung.threshold, ""
        except LogprobsUnavailableError as exc:
            if rung.fallback is None:
                raise
            estimator, threshold = rung.fallback
            note = f"{rung.estimator.name} unavailable ({exc}); used {estimator.name}"
            return estimator.estimate(rung.model, prompt, completion, params), threshold, note

    def _result(
        self,
        model: LLM,
        completion: Completion,
        spent: list[Completion],
        steps: list[CascadeStep],
    ) -> ModelResult:
        usage = sum((c.usage for c in spent), Usage())
        total = completion.model_copy(
            update={"usage": usage, "latency_s": sum(c.latency_s for c in spent)}
        )
        escalations = sum(s.decision == "escalate" for s in steps)
        return ModelResult(
            completion=total,
            model=model.name,
            policy=self.name,
            reason=f"{model.name} after {escalations} escalation(s)",
            cascade=steps,
        )
