"""How unsure a small model is of its answer: the estimators a cascade routes by.

Every estimator reads the query (the prompt), the model that answered and its completion,
and returns an `UncertaintyEstimate` whose ``score`` is higher when the model is less
confident. Their costs differ, and each states its own in ``extra_calls``:

- free, from the answer's own token log-probabilities: `MeanLogprob`, `Perplexity`,
  `MeanEntropy` (which needs the top alternatives at each position);
- one more call that samples ``k`` answers: `SampleDisagreement` (lexical) and
  `SemanticDispersion` (sentence embeddings);
- one scoring pass that asks the model about its own answer: `VerbalizedConfidence` and
  `PTrue`.

``confidence`` is the method's own reading as a probability of being right, before any
calibration (routing/calibration.py maps scores to calibrated probabilities).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from relaygraph.errors import ConfigError
from relaygraph.llm.types import ChatPrompt, GenerationParams, Message, TextPrompt

if TYPE_CHECKING:
    from collections.abc import Callable

    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import Choice, Completion, Prompt, TopLogprob
    from relaygraph.memory.embedding import Embedder


T = TypeVar("T")


class LogprobsUnavailableError(ConfigError):
    """The completion carries no token log-probabilities (a server that returns none)."""


@dataclass(frozen=True, slots=True)
class UncertaintyEstimate:
    """One estimator's reading of one answer.

    Attributes:
        method: The estimator's name.
        score: Higher means less confident; comparable only within one method.
        confidence: The method's own probability that the answer is right, uncalibrated.
        extra_calls: Model calls the estimate cost beyond the answer itself.
        details: What the score was computed from (samples, parsed digits, ...).
    """

    method: str
    score: float
    confidence: float
    extra_calls: int
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class UncertaintyEstimator(Protocol):
    """Scores a model's answer to a prompt; higher scores mean less confident."""

    @property
    def name(self) -> str: ...

    @property
    def extra_calls(self) -> int:
        """Model calls one estimate costs beyond the answer (0: read from the answer)."""
        ...

    @property
    def needs_logprobs(self) -> bool:
        """Whether the answer must carry token log-probabilities."""
        ...

    def estimate(
        self,
        model: LLM,
        prompt: Prompt,
        completion: Completion,
        params: GenerationParams | None = None,
    ) -> UncertaintyEstimate:
        """The estimate for ``completion``, the answer ``model`` gave to ``prompt`` with
        ``params`` (sampling estimators reuse its stop sequences)."""
        ...


def token_logprobs(choice: Choice) -> list[float]:
    """The answer's token log-probabilities (end-of-turn token included).

    Raises:
        LogprobsUnavailableError: The completion was generated without log-probabilities.
    """
    if not choice.logprobs:
        raise LogprobsUnavailableError(
            "the answer has no token log-probabilities; request logprobs=True, or use a "
            "sampling estimator (SampleDisagreement, SemanticDispersion) for this model",
            parameter="logprobs",
        )
    return [t.logprob for t in choice.logprobs]


class MeanLogprob:
    """Minus the mean token log-probability of the answer (free).

    Confidence: the geometric-mean token probability, exp(mean log p).
    """

    name = "mean_logprob"
    extra_calls = 0
    needs_logprobs = True

    def estimate(
        self,
        model: LLM,
        prompt: Prompt,
        completion: Completion,
        params: GenerationParams | None = None,
    ) -> UncertaintyEstimate:
        mean = float(np.mean(token_logprobs(completion.choices[0])))
        return UncertaintyEstimate(self.name, -mean, math.exp(mean), 0)


class Perplexity:
    """The answer's perplexity, exp(-mean log p) (free); confidence is its inverse."""

    name = "perplexity"
    extra_calls = 0
    needs_logprobs = True

    def estimate(
        self,
        model: LLM,
        prompt: Prompt,
        completion: Completion,
        params: GenerationParams | None = None,
    ) -> UncertaintyEstimate:
        perplexity = math.exp(-float(np.mean(token_logprobs(completion.choices[0]))))
        return UncertaintyEstimate(self.name, perplexity, 1 / perplexity, 0)


class MeanEntropy:
    """Mean over positions of the entropy of the model's next-token distribution (free).

    Only the top-k alternatives are known, so the probability they leave over counts as
    one more outcome: a lower bound on the true entropy, tight when k covers the mass.
    Confidence: exp(-mean entropy), 1 for a model that never hesitated.
    """

    name = "mean_entropy"
    extra_calls = 0
    needs_logprobs = True

    def estimate(
        self,
        model: LLM,
        prompt: Prompt,
        completion: Completion,
        params: GenerationParams | None = None,
    ) -> UncertaintyEstimate:
        token_logprobs(completion.choices[0])
        positions = completion.choices[0].logprobs or []
        if not any(t.top for t in positions):
            raise LogprobsUnavailableError(
                "mean_entropy needs the top alternatives at each position; request "
                "top_logprobs >= 2",
                parameter="top_logprobs",
            )
        entropy = float(np.mean([top_entropy(t.top) for t in positions if t.top]))
        return UncertaintyEstimate(self.name, entropy, math.exp(-entropy), 0)


def top_entropy(top: list[TopLogprob]) -> float:
    """Entropy (nats) of a top-k distribution plus one bucket for the mass it leaves out."""
    p = np.exp(np.array([t.logprob for t in top], dtype=np.float64))
    rest = max(0.0, 1.0 - float(p.sum()))
    terms = [-x * math.log(x) for x in [*p.tolist(), rest] if x > 0]
    return float(sum(terms))


@dataclass(frozen=True, slots=True)
class _Sampling:
    """Estimators that sample ``k`` more answers at ``temperature``, in one call."""

    k: int = 5
    temperature: float = 0.7
    needs_logprobs = False
    extra_calls = 1


@dataclass(frozen=True, slots=True)
class SampleDisagreement(_Sampling):
    """The share of ``k`` sampled answers that differ from the answer (one extra call).

    Answers are compared after normalisation (case, punctuation, articles, spaces), the
    self-consistency reading of agreement. Confidence: the share that agree.
    """

    name = "sample_disagreement"

    def estimate(
        self,
        model: LLM,
        prompt: Prompt,
        completion: Completion,
        params: GenerationParams | None = None,
    ) -> UncertaintyEstimate:
        samples = sample_answers(model, prompt, completion, self.k, self.temperature, params=params)
        answer = normalize_answer(completion.text)
        agree = sum(normalize_answer(s) == answer for s in samples) / len(samples)
        counts = Counter(normalize_answer(s) for s in samples)
        return UncertaintyEstimate(
            self.name,
            1.0 - agree,
            agree,
            1,
            {"samples": samples, "distinct": len(counts)},
        )


@dataclass(frozen=True, slots=True)
class SemanticDispersion(_Sampling):
    """Mean pairwise cosine distance among the answer and ``k`` samples (one extra call).

    Embedded with the sentence model (the packaged all-MiniLM-L6-v2 by default), so
    paraphrases of one answer count as agreement. Confidence: 1 - dispersion.
    """

    embedder: Embedder | None = None
    name = "semantic_dispersion"

    def estimate(
        self,
        model: LLM,
        prompt: Prompt,
        completion: Completion,
        params: GenerationParams | None = None,
    ) -> UncertaintyEstimate:
        samples = sample_answers(model, prompt, completion, self.k, self.temperature, params=params)
        texts = [completion.text, *samples]
        vectors = self._embedder().embed([t if t.strip() else "(empty)" for t in texts])
        similarity = vectors @ vectors.T
        n = len(texts)
        mean_similarity = float((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))
        dispersion = min(1.0, max(0.0, 1.0 - mean_similarity))
        return UncertaintyEstimate(self.name, dispersion, 1.0 - dispersion, 1, {"samples": samples})

    def _embedder(self) -> Embedder:
        if self.embedder is not None:
            return self.embedder
        from relaygraph.memory.embedding import SentenceEmbedder

        return SentenceEmbedder()


VERBALIZED_QUESTION = (
    "How sure are you that your answer is correct? Reply with one digit from 0 "
    "(surely wrong) to 9 (surely right)."
)


class VerbalizedConfidence:
    """Ask the model how sure it is, on a 0-9 scale, and read the digit's distribution.

    One scoring pass (no generation): the expected digit under the model's next-token
    probabilities over ``0``..``9`` after the question, so an unsure model gives a
    middling value instead of a coin flip between digits. Confidence: that expectation
    over 9. Single digits, because SmolLM2's tokenizer splits numbers into digits.
    """

    name = "verbalized"
    extra_calls = 1
    needs_logprobs = False

    def estimate(
        self,
        model: LLM,
        prompt: Prompt,
        completion: Completion,
        params: GenerationParams | None = None,
    ) -> UncertaintyEstimate:
        followup = ask_about_answer(prompt, completion.text, VERBALIZED_QUESTION, "Confidence: ")
        top = model.score(followup, "5", top_logprobs=20).tokens[0].top
        digits = _mass(top, {str(d): d for d in range(10)})
        if not digits:
            raise ConfigError(
                f"{model.name} put no probability on a digit after the confidence question; "
                "use another estimator for this model",
                parameter="estimator",
            )
        total = sum(digits.values())
        expected = sum(d * p for d, p in digits.items()) / total
        return UncertaintyEstimate(
            self.name,
            1.0 - expected / 9,
            expected / 9,
            1,
            {"expected_digit": expected, "digit_mass": total},
        )


PTRUE_QUESTION = (
    "Question: {question}\nProposed answer: {answer}\n"
    "Is the proposed answer correct? Answer Yes or No."
)
PTRUE_FOLLOWUP = "Is the answer above correct? Answer Yes or No."


class PTrue:
    """P(True): ask whether the answer is correct and read the probability of "Yes".

    One scoring pass: P(yes) / (P(yes) + P(no)) over the first reply token, variants of
    case and leading space pooled. Confidence: that probability. A chat question is put
    to the model afresh with the proposed answer (Kadavath et al.'s form); a text prompt
    is continued with the question after the answer.
    """

    name = "p_true"
    extra_calls = 1
    needs_logprobs = False

    def estimate(
        self,
        model: LLM,
        prompt: Prompt,
        completion: Completion,
        params: GenerationParams | None = None,
    ) -> UncertaintyEstimate:
        judge: Prompt
        if isinstance(prompt, ChatPrompt):
            question = next((m.content for m in reversed(prompt.messages) if m.role == "user"), "")
            content = PTRUE_QUESTION.format(question=question, answer=completion.text)
            judge = ChatPrompt(messages=(Message(role="user", content=content),))
        else:  # a document (few-shot text): ask right after the answer, in its own words
            judge = ask_about_answer(prompt, completion.text, PTRUE_FOLLOWUP, "Answer:")
        top = model.score(judge, "Yes", top_logprobs=20).tokens[0].top
        mass = _mass(top, {"yes": True, "no": False})
        yes, no = mass.get(True, 0.0), mass.get(False, 0.0)
        if yes + no == 0:
            raise ConfigError(
                f"{model.name} put no probability on Yes or No; use another estimator",
                parameter="estimator",
            )
        p_true = yes / (yes + no)
        return UncertaintyEstimate(self.name, 1.0 - p_true, p_true, 1, {"p_yes": yes, "p_no": no})


def ask_about_answer(prompt: Prompt, answer: str, question: str, reply_start: str) -> Prompt:
    """``prompt`` and its ``answer``, followed by a question about that answer.

    A chat goes on with the answer as the assistant's turn, the question as the user's
    and ``reply_start`` prefilled; a text prompt (a few-shot document) goes on with the
    answer, a blank line, the question and ``reply_start``.

    Raises:
        ConfigError: A token-id prompt, which has no text to continue.
    """
    if isinstance(prompt, ChatPrompt):
        return ChatPrompt(
            messages=(
                *prompt.messages,
                Message(role="assistant", content=prompt.prefill + answer),
                Message(role="user", content=question),
            ),
            prefill=reply_start,
        )
    if isinstance(prompt, TextPrompt):
        return TextPrompt(text=f"{prompt.text}{answer}\n\n{question}\n{reply_start}")
    raise ConfigError(
        "estimators that question the model need a text or chat prompt, not token ids",
        parameter="prompt",
    )


def _mass(top: list[TopLogprob], outcomes: dict[str, T]) -> dict[T, float]:
    """Probability of each outcome among the top tokens (case and spaces ignored)."""
    mass: dict[T, float] = {}
    for t in top:
        key = t.token.strip().lower()
        if key in outcomes:
            outcome = outcomes[key]
            mass[outcome] = mass.get(outcome, 0.0) + math.exp(t.logprob)
    return mass


def sample_answers(
    model: LLM,
    prompt: Prompt,
    completion: Completion,
    k: int,
    temperature: float,
    *,
    params: GenerationParams | None = None,
) -> list[str]:
    """``k`` answers sampled at ``temperature``, no longer than the original (at least 8
    tokens) and cut by the stop sequences it was generated with (from ``params``)."""
    if k < 2:
        raise ConfigError("sampling estimators need k >= 2 samples", parameter="k", value=k)
    budget = max(8, len(completion.choices[0].token_ids))
    stop = params.stop if params is not None else ()
    sampling = GenerationParams(max_tokens=budget, temperature=temperature, n=k, seed=0, stop=stop)
    return [c.text for c in model.complete(prompt, sampling).choices]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, squeeze spaces (SQuAD's normalisation)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


ESTIMATORS: dict[str, Callable[[], UncertaintyEstimator]] = {
    "mean_logprob": MeanLogprob,
    "perplexity": Perplexity,
    "mean_entropy": MeanEntropy,
    "sample_disagreement": SampleDisagreement,
    "semantic_dispersion": SemanticDispersion,
    "verbalized": VerbalizedConfidence,
    "p_true": PTrue,
}
"""Every estimator by name, with its default settings, for configuration and the CLI."""
