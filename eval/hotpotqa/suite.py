"""The HotPotQA suite: run a graph per question, score it with the official metrics.

A graph factory takes ``(model, example)`` and returns the question's `AgentGraph`
(see `relaygraph.eval.hotpotqa.agents`). A factory that takes only ``model`` (any graph
written for `relaygraph run`) gets the question with its ten paragraphs in the task.

A graph predicts supporting facts by giving, as any agent's structured answer, an object
with ``supporting_facts`` ([title, sentence id] pairs) and ``answer``; supporting-fact and
joint EM/F1 are then scored too.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from relaygraph.eval.answers import answer_score
from relaygraph.eval.hotpotqa.metrics import joint_score, support_score
from relaygraph.graph import AgentGraph
from relaygraph.graph.runs import ItemRecord

if TYPE_CHECKING:
    from relaygraph.eval.hotpotqa.data import HotpotExample
    from relaygraph.eval.hotpotqa.judge import AnswerJudge
    from relaygraph.graph.results import RunResult
    from relaygraph.graph.trace import Trace
    from relaygraph.llm.protocol import LLM

HotpotFactory = Callable[..., AgentGraph]


def question_with_paragraphs(example: HotpotExample) -> str:
    """The task for a graph that does not take the example: question, then paragraphs."""
    pages = "\n".join(f"{p.title}: {' '.join(p.sentences)}" for p in example.context)
    return f"{example.question}\n\nParagraphs:\n{pages}"


def takes_example(factory: HotpotFactory) -> bool:
    """Whether a factory builds a graph per question (it has an ``example`` parameter)."""
    return "example" in inspect.signature(factory).parameters


@dataclass(frozen=True, slots=True)
class HotpotSuite:
    """Runs ``factory``'s graph with ``model`` on each question; grades with ``judge`` too."""

    factory: HotpotFactory
    model: LLM
    judge: AnswerJudge | None = None
    name: ClassVar[str] = "hotpotqa"
    headline: ClassVar[str] = "EM"

    # Static: a process that only fans items out (`relaygraph.eval.fanout`) names and
    # groups them without holding a model.
    @staticmethod
    def item_id(item: HotpotExample) -> str:
        return item.id

    @staticmethod
    def groups(item: HotpotExample) -> dict[str, str]:
        return {"type": item.type, "level": item.level or "unknown"}

    def run(self, item: HotpotExample) -> tuple[ItemRecord, Trace | None]:
        began = time.perf_counter()
        if takes_example(self.factory):
            graph, task = self.factory(model=self.model, example=item), item.question
        else:
            graph, task = self.factory(model=self.model), question_with_paragraphs(item)
        if not isinstance(graph, AgentGraph):
            raise TypeError(f"the graph factory returned {type(graph).__name__}, not AgentGraph")
        with graph.compile() as compiled:
            result = compiled.invoke(task, thread_id=item.id)
        answer, support = _prediction(result)
        metrics = self._metrics(item, result, answer, support)
        trace = result.trace
        return (
            ItemRecord.from_trace(
                trace,
                id=item.id,
                groups=self.groups(item),
                success=metrics["em"],
                metrics=metrics,
                prediction=answer,
                gold=item.answer,
                error=result.error.message if result.error else None,
                steps=len(trace.steps),
                latency_s=time.perf_counter() - began,
            ),
            trace,
        )

    def _metrics(
        self,
        item: HotpotExample,
        result: RunResult,
        answer: str | None,
        support: list[tuple[str, int]] | None,
    ) -> dict[str, float]:
        score = answer_score(answer or "", item.answer)
        metrics = {"em": score.em, "f1": score.f1}
        if support is not None and item.supporting_facts is not None:
            sp = support_score(support, item.supporting_facts)
            joint = joint_score(score, sp)
            metrics |= {"sp_em": sp.em, "sp_f1": sp.f1, "joint_em": joint.em, "joint_f1": joint.f1}
        if self.judge is not None:
            thoughts = " ".join(s.reason for s in result.trace.steps if s.reason)
            metrics["aq"] = self.judge.grade(item.question, item.answer, answer, thoughts).score
        return metrics


def _prediction(result: RunResult) -> tuple[str | None, list[tuple[str, int]] | None]:
    """The answer, and supporting facts when an agent's structured answer names them."""
    for structured in result.structured.values():
        facts = structured.get("supporting_facts")
        if isinstance(facts, list):
            pairs = [
                (str(f[0]), f[1])
                for f in facts
                if isinstance(f, list | tuple) and len(f) == 2 and isinstance(f[1], int)
            ]
            return _answer_field(structured, result.answer), pairs
    return result.answer, None


def _answer_field(structured: dict[str, Any], fallback: str | None) -> str | None:
    answer = structured.get("answer")
    return str(answer) if answer is not None else fallback
