"""Uncertainty estimators, calibration and the small-to-large cascade.

Estimators run on the real SmolLM2 (and the cascade escalates to the real Gemma-3-270M);
the calibration maths is checked against hand-computed cases and synthetic data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from relaygraph.agents import Agent
from relaygraph.decoding.base import DirectDecoder
from relaygraph.errors import ConfigError
from relaygraph.graph import AgentGraph
from relaygraph.llm.local import LocalLLM
from relaygraph.llm.protocol import LLM
from relaygraph.llm.types import (
    ChatPrompt,
    Choice,
    Completion,
    GenerationParams,
    Message,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from relaygraph.routing.calibration import (
    Calibration,
    CalibrationItem,
    expected_calibration_error,
    fit_calibration,
)
from relaygraph.routing.models import Cascade, ModelCall, Rung
from relaygraph.routing.uncertainty import (
    ESTIMATORS,
    LogprobsUnavailableError,
    MeanEntropy,
    MeanLogprob,
    Perplexity,
    SampleDisagreement,
    top_entropy,
)

QUESTION = ChatPrompt(messages=(Message(role="user", content="What is the capital of France?"),))


@pytest.fixture(scope="module")
def small(smollm2: LocalLLM) -> LLM:
    return smollm2


@pytest.fixture(scope="module")
def answer(small: LLM) -> Completion:
    params = GenerationParams(max_tokens=12, logprobs=True, top_logprobs=5)
    return small.complete(QUESTION, params)


def completion(logprobs: list[float] | None, top: list[list[float]] | None = None) -> Completion:
    """A hand-made answer with these token log-probabilities (and top alternatives)."""
    tops = top or [[] for _ in logprobs or []]
    tokens = (
        None
        if logprobs is None
        else [
            TokenLogprob(token_id=i, token=f"t{i}", logprob=lp, top=alternatives(tops[i]))
            for i, lp in enumerate(logprobs)
        ]
    )
    choice = Choice(text="Paris", token_ids=[0, 1], logprobs=tokens, finish_reason="stop")
    return Completion(model="m", choices=[choice], usage=Usage(), latency_s=0.0)


def alternatives(logprobs: list[float]) -> list[TopLogprob]:
    return [TopLogprob(token_id=j, token=f"a{j}", logprob=x) for j, x in enumerate(logprobs)]


def test_logprob_estimators_by_hand(small: LLM) -> None:
    c = completion([math.log(0.5), math.log(0.125)])  # mean log p = log(0.25)
    estimate = MeanLogprob().estimate(small, QUESTION, c)
    assert estimate.score == pytest.approx(-math.log(0.25))
    assert estimate.confidence == pytest.approx(0.25) and estimate.extra_calls == 0
    assert Perplexity().estimate(small, QUESTION, c).score == pytest.approx(4.0)
    # two equally likely alternatives: ln 2; the left-over mass counts as one more outcome
    assert top_entropy(alternatives([math.log(0.5)] * 2)) == pytest.approx(math.log(2))
    assert top_entropy(alternatives([math.log(0.5)])) == pytest.approx(math.log(2))


def test_an_answer_without_logprobs_is_a_clear_error(small: LLM) -> None:
    with pytest.raises(LogprobsUnavailableError, match="SampleDisagreement"):
        MeanLogprob().estimate(small, QUESTION, completion(None))
    with pytest.raises(LogprobsUnavailableError, match="top_logprobs"):
        MeanEntropy().estimate(small, QUESTION, completion([-0.1, -0.2]))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_reads_a_real_answer(name: str, small: LLM, answer: Completion) -> None:
    estimator = ESTIMATORS[name]()
    estimate = estimator.estimate(small, QUESTION, answer)
    assert estimate.method == name and math.isfinite(estimate.score)
    assert 0.0 <= estimate.confidence <= 1.0
    assert estimate.extra_calls == estimator.extra_calls


def test_greedy_samples_agree_with_the_greedy_answer(small: LLM, answer: Completion) -> None:
    estimate = SampleDisagreement(k=3, temperature=0.0).estimate(small, QUESTION, answer)
    assert estimate.score == 0.0 and estimate.details["distinct"] == 1


# -- calibration ---------------------------------------------------------------------


def items(
    scores: list[float], correct: list[bool], confidence: float = 0.9
) -> list[CalibrationItem]:
    return [
        CalibrationItem(id=str(i), score=s, confidence=confidence, correct=c)
        for i, (s, c) in enumerate(zip(scores, correct, strict=True))
    ]


def synthetic(n: int = 400, seed: int = 0) -> list[CalibrationItem]:
    """P(right) = 1 - score; the estimator claims 0.9 for everything (overconfident)."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, n)
    return items(scores.tolist(), (rng.uniform(0, 1, n) > scores).tolist())


def test_isotonic_pools_adjacent_violators_by_hand() -> None:
    fit = fit_calibration(
        items([1, 2, 3, 4] * 5, [True, False, True, False] * 5), model="m", estimator="e"
    )
    assert fit.knots == [1.0, 2.5, 4.0]
    assert fit.values == [1.0, 0.5, 0.0]
    assert fit.probability(1.75).item() == pytest.approx(0.75)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_lowers_ece_and_is_monotone(method: str) -> None:
    fit = fit_calibration(synthetic(), model="m", estimator="e", method=method)  # type: ignore[arg-type]
    assert fit.ece_after < fit.ece_before / 2
    grid = fit.probability(np.linspace(0, 1, 11))
    assert np.all(np.diff(grid) <= 1e-12) and grid[0] > 0.8 and grid[-1] < 0.2
    held_out = synthetic(seed=1)
    probs = fit.probability(np.array([i.score for i in held_out]))
    assert expected_calibration_error(probs, [i.correct for i in held_out]) < 0.1


def test_thresholds_for_a_rate_and_for_an_accuracy() -> None:
    fit = fit_calibration(synthetic(), model="m", estimator="e")
    scores = np.array(fit.scores)
    assert (scores > fit.threshold_for_escalation(0.3)).mean() == pytest.approx(0.3)
    assert fit.threshold_for_escalation(0.0) == math.inf
    assert fit.threshold_for_escalation(1.0) == -math.inf
    threshold = fit.threshold_for_accuracy(0.8)
    kept = scores <= threshold
    assert np.array(fit.correct)[kept].mean() >= 0.8
    assert 0 < kept.mean() < 1
    assert fit.threshold_for_accuracy(0.95) <= threshold


def test_bad_calibration_sets_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 20"):
        fit_calibration(synthetic(10), model="m", estimator="e")
    with pytest.raises(ConfigError, match="every calibration answer is right"):
        fit_calibration(items([0.1] * 30, [True] * 30), model="m", estimator="e")


def test_calibration_files_round_trip_and_name_their_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fit = fit_calibration(synthetic(), model="smollm2-135m", estimator="mean_logprob")
    path = fit.save(tmp_path / "cal.json")
    assert Calibration.load(path, model="smollm2-135m") == fit
    with pytest.raises(ConfigError, match="fitted for 'smollm2-135m', not 'gemma3-270m'"):
        Calibration.load(path, model="gemma3-270m")
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"calibration .*: not valid JSON"):
        Calibration.load(path)
    path.write_text('{"version": 1, "estimator": "e"}')
    with pytest.raises(ConfigError, match=r"cal\.json: model: Field required"):
        Calibration.load(path)


# -- the cascade -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def large(gemma3: LocalLLM) -> LLM:
    return gemma3


def call(model: LLM) -> ModelCall:
    return ModelCall("a", "solver", QUESTION, GenerationParams(max_tokens=8), model)


def test_the_cascade_accepts_or_escalates_by_threshold(small: LLM, large: LLM) -> None:
    trusting = Cascade([Rung(small, MeanLogprob(), threshold=math.inf), Rung(large)])
    result = trusting.generate(call(small), DirectDecoder())
    assert result.model == "smollm2-135m" and result.policy == "cascade"
    [step] = result.cascade or []
    assert step.decision == "accept" and step.estimator == "mean_logprob"

    doubting = Cascade([Rung(small, MeanLogprob(), threshold=-math.inf), Rung(large)])
    result = doubting.generate(call(small), DirectDecoder())
    assert result.model == "gemma3-270m"
    first, last = result.cascade or []
    assert first.decision == "escalate"
    assert last.model_dump(exclude_unset=True) == {"model": "gemma3-270m", "decision": "final"}
    # usage counts both answers: the small model's escalated one and the large one's
    assert result.completion.usage.completion_tokens > (first.completion_tokens or 0)


class WithoutLogprobs:
    """Stands in for a remote server that returns no logprobs: the real SmolLM2, with
    the log-probabilities of its answers dropped."""

    def __init__(self, llm: LLM) -> None:
        self._llm = llm

    def __getattr__(self, name: str) -> object:
        return getattr(self._llm, name)

    def complete(self, prompt: object, params: GenerationParams | None = None) -> Completion:
        out = self._llm.complete(prompt, params)  # type: ignore[arg-type]
        return out.model_copy(
            update={"choices": [c.model_copy(update={"logprobs": None}) for c in out.choices]}
        )


def test_missing_logprobs_fall_back_to_sampling_and_say_so(small: LLM, large: LLM) -> None:
    remote = WithoutLogprobs(small)
    fallback = (SampleDisagreement(k=2, temperature=0.0), 0.5)
    cascade = Cascade([Rung(remote, MeanLogprob(), 1.0, fallback=fallback), Rung(large)])  # type: ignore[arg-type]
    [step] = cascade.generate(call(small), DirectDecoder()).cascade or []
    assert step.estimator == "sample_disagreement"
    assert "mean_logprob unavailable" in (step.fallback or "")
    strict = Cascade([Rung(remote, MeanLogprob(), 1.0), Rung(large)])  # type: ignore[arg-type]
    with pytest.raises(LogprobsUnavailableError):
        strict.generate(call(small), DirectDecoder())


def test_a_calibration_for_another_model_is_refused(small: LLM) -> None:
    fit = fit_calibration(synthetic(), model="gemma3-270m", estimator="mean_logprob")
    with pytest.raises(ConfigError, match="calibration fitted for"):
        Rung.calibrated(small, MeanLogprob(), fit, escalation_rate=0.3)
    with pytest.raises(ConfigError, match="exactly one"):
        Rung.calibrated(small, MeanLogprob(), fit)


def test_a_graph_step_records_the_cascade_in_its_trace(small: LLM, large: LLM) -> None:
    fit = fit_calibration(synthetic(), model="smollm2-135m", estimator="mean_logprob")
    rung = Rung(small, MeanLogprob(), threshold=math.inf, calibration=fit)
    graph = AgentGraph()
    graph.add_agent(
        Agent(name="answerer", model="smollm2-135m", answer_format="plain", max_tokens=12,
              model_policy=Cascade([rung, Rung(large)]))
    )  # fmt: skip
    graph.set_entry("answerer").set_finish("answerer")
    with graph.compile() as compiled:
        result = compiled.invoke("What is the capital of France?")
    [step] = result.trace.steps
    assert step.model.policy == "cascade"
    [decision] = step.model.cascade or []
    assert decision.decision == "accept" and 0.0 <= (decision.p_correct or -1.0) <= 1.0
