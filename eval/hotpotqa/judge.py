"""An LLM-judged answer-quality score (AQ-Score style) for multi-hop QA.

RCR-Router reports an "AQ-Score" besides EM/F1 without publishing its definition; this is
a documented reconstruction. The judge sees the question, the gold answer, the predicted
answer and the agents' explanation (their thoughts), and grades on a 0-5 rubric:

- 5: correct (same meaning as the gold answer) and the explanation supports it;
- 4: correct, explanation thin or partly irrelevant;
- 3: partly correct (right entity, wrong detail; or the answer is inside a longer reply);
- 2: wrong, but the explanation finds relevant evidence;
- 1: wrong and unsupported;
- 0: no answer.

The grade is read from the judge's token distribution rather than its sampled text: the
log-probability of each grade digit after ``Grade:`` is scored (one cached prompt, six
one-token continuations), and the score is the expected grade / 5, in [0, 1]. A small
judge's uncertainty thus shows as a middling score instead of a coin flip. A model that
cannot score (no token distribution) is asked to write the grade instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaygraph.errors import LLMError
from relaygraph.llm.types import ChatPrompt, GenerationParams, Message

if TYPE_CHECKING:
    from relaygraph.llm.protocol import LLM

RUBRIC = """\
Grade the predicted answer to a question against the gold answer, from 0 to 5:
5 = correct (same meaning as the gold answer) and the explanation supports it
4 = correct, but the explanation is thin or partly irrelevant
3 = partly correct (right entity with a wrong detail, or the answer buried in a longer reply)
2 = wrong, but the explanation found relevant evidence
1 = wrong and unsupported
0 = no answer
Reply with the grade only."""

GRADES = range(6)


@dataclass(frozen=True, slots=True)
class Judgement:
    """A grade in [0, 1] and the judge's grade distribution (None when it was written)."""

    score: float
    distribution: dict[int, float] | None


@dataclass(frozen=True, slots=True)
class AnswerJudge:
    """Grades answers with ``model`` on the rubric above.

    Example:
        >>> judge = AnswerJudge(load_llm("gemma3-270m"))             # doctest: +SKIP
        >>> judge.grade("Capital of France?", "Paris", "Paris", "It is Paris.").score
        0.9                                                          # doctest: +SKIP
    """

    model: LLM

    def grade(
        self, question: str, gold: str, prediction: str | None, explanation: str
    ) -> Judgement:
        """The judge's grade of one answer."""
        if not prediction or not prediction.strip():
            return Judgement(0.0, {0: 1.0})
        user = (
            f"Question: {question}\nGold answer: {gold}\nPredicted answer: {prediction}\n"
            f"Explanation: {explanation.strip() or '(none)'}"
        )
        prompt = ChatPrompt(
            messages=(Message(role="system", content=RUBRIC), Message(role="user", content=user)),
            prefill="Grade:",
        )
        try:
            logprobs = [self.model.score(prompt, f" {g}").total_logprob for g in GRADES]
        except LLMError:
            return self._written(prompt)
        top = max(logprobs)
        weights = [math.exp(lp - top) for lp in logprobs]
        total = sum(weights)
        distribution = {g: w / total for g, w in zip(GRADES, weights, strict=True)}
        expected = sum(g * p for g, p in distribution.items())
        return Judgement(expected / max(GRADES), distribution)

    def _written(self, prompt: ChatPrompt) -> Judgement:
        reply = self.model.complete(prompt, GenerationParams(max_tokens=4)).choices[0].text
        found = re.search(r"[0-5]", reply)
        return Judgement(int(found.group()) / max(GRADES) if found else 0.0, None)
