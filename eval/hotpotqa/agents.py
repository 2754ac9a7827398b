"""Agent graphs for HotPotQA that the harness runs per question.

A HotPotQA graph factory takes ``(model, example)`` and returns an `AgentGraph` for that
question (the question's paragraphs are the tools' world); the harness calls it once per
question with the model it loaded. `react` is ReAct's setup: one agent with
search/lookup/finish (the few-shot example is written for this project). `team` is a
decomposer -> retriever -> answerer team over the paragraphs in shared memory, whose
context routing policy is the variable (RCR-Router's setting).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.agents import Agent, StandardRole
from relaygraph.errors import ConfigError
from relaygraph.eval.hotpotqa.tools import ParagraphTools
from relaygraph.graph import AgentGraph
from relaygraph.memory import SharedMemory
from relaygraph.routing import (
    ContextPolicy,
    FullContext,
    RCRContext,
    RecencyWindow,
    TopKSimilarity,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from relaygraph.agents.agent import AnswerFormat, ReactDecoding
    from relaygraph.eval.hotpotqa.data import HotpotExample
    from relaygraph.llm.protocol import LLM

REACT_INSTRUCTIONS = """\
Answer the question using the pages of a small encyclopedia. search[title] shows a page;
lookup[keyword] shows the next sentence of the current page with that keyword. When you
know the answer, finish[answer] with a short answer: a name, a date, a number, yes or no.

Example:
Question: Which country is the river that flows through Toulouse in?
Thought: I should find the river of Toulouse.
Action: search[Toulouse]
Observation: Toulouse is a city in France on the banks of the Garonne.
Thought: The Garonne flows through Toulouse. The Garonne is in France.
Action: finish[France]"""

REACT_MAX_STEPS = 7
"""ReAct's HotPotQA runs allow 7 steps (more rarely helps, per the paper)."""
REACT_MAX_TOKENS = 96
"""Completion tokens per ReAct step: a thought and an action."""


def react(model: str | LLM, example: HotpotExample) -> AgentGraph:
    """ReAct on one question: search/lookup over its paragraphs, then finish (steps decoded
    under the step grammar on in-process models)."""
    return _react(model, example, "auto")


def react_search_first(model: str | LLM, example: HotpotExample) -> AgentGraph:
    """`react` with a tool policy: the reader must search before it may finish."""
    return _react(model, example, "auto", tool_choice="search")


def react_guided(model: str | LLM, example: HotpotExample) -> AgentGraph:
    """`react` with guided decoding (free reply; action scoring when it does not parse)."""
    return _react(model, example, "guided")


def single_call(model: str | LLM) -> AgentGraph:
    """No agent: one call to the model with the question and its ten paragraphs (the
    simplest peer a user would try first)."""
    graph = AgentGraph("hotpotqa-single-call", model=model, max_steps=1)
    graph.add_agent(
        Agent(
            name="reader",
            role=StandardRole.SOLVER,
            instructions="Answer the question from the paragraphs with a short answer: "
            "a name, a date, a number, yes or no.",
            answer_format="plain",
            max_steps=1,
            max_tokens=32,
        )
    )
    return graph.set_entry("reader").set_finish("reader")


def _react(
    model: str | LLM, example: HotpotExample, decoding: ReactDecoding, tool_choice: str = "auto"
) -> AgentGraph:
    tools = ParagraphTools(example)
    graph = AgentGraph("hotpotqa-react", model=model, max_steps=REACT_MAX_STEPS)
    graph.add_agent(
        Agent(
            name="reader",
            role=StandardRole.RESEARCHER,
            instructions=REACT_INSTRUCTIONS,
            tools=tools.tools(),
            max_steps=REACT_MAX_STEPS,
            max_tokens=REACT_MAX_TOKENS,
            react_decoding=decoding,
            tool_choice=tool_choice,
        )
    )
    return graph.set_entry("reader").set_finish("reader")


POLICIES: dict[str, Callable[[], ContextPolicy]] = {
    "rcr": RCRContext,
    "full": FullContext,
    "topk": TopKSimilarity,
    "recency": RecencyWindow,
}
"""The context policies a team can route with, by name."""

TEAM_BUDGET = 384
"""Tokens of routed context per agent step: about a third of a question's ten paragraphs."""


def reader(model: str | LLM, example: HotpotExample) -> AgentGraph:
    """One agent that reads the question's gold paragraphs and writes a short answer.

    The reading-comprehension setting (the paragraphs that hold the answer, no search),
    where the packaged models answer some questions; `reader_extract` is the same agent
    extracting its answer instead of writing it.
    """
    return _reader(model, example, "plain")


def reader_extract(model: str | LLM, example: HotpotExample) -> AgentGraph:
    """`reader` whose answer is the name or number of the paragraphs that the question
    makes likeliest (``answer_format="extract"``)."""
    return _reader(model, example, "extract")


def _reader(model: str | LLM, example: HotpotExample, answer_format: AnswerFormat) -> AgentGraph:
    memory = SharedMemory()
    seed_memory(memory, example, titles=set(example.gold_titles))
    graph = AgentGraph(f"hotpotqa-reader-{answer_format}", model=model, max_steps=1, memory=memory)
    graph.add_agent(
        Agent(
            name="reader",
            role=StandardRole.SOLVER,
            instructions="Answer the question from the context with a short answer: a name, "
            "a date, a number, yes or no.",
            answer_format=answer_format,
            max_steps=1,
            max_tokens=32,
            context_policy=FullContext(),
        )
    )
    return graph.set_entry("reader").set_finish("reader")


def seed_memory(
    memory: SharedMemory, example: HotpotExample, *, titles: set[str] | None = None
) -> None:
    """Put a question's paragraphs (those of ``titles``; None: all) into its namespace,
    one `fact` entry per sentence.

    Entry ids are ``<question id>/p<paragraph>s<sentence>``; metadata holds the title and
    sentence index, so routed context can be scored against supporting facts.
    """
    memory.scope(example.id).add_many(
        [
            {
                "id": sentence_entry_id(example.id, p, s),
                "text": f"{paragraph.title}: {sentence.strip()}",
                "kind": "fact",
                "metadata": {"title": paragraph.title, "sent_id": s},
            }
            for p, paragraph in enumerate(example.context)
            if titles is None or paragraph.title in titles
            for s, sentence in enumerate(paragraph.sentences)
            if sentence.strip()
        ]
    )


def sentence_entry_id(question_id: str, paragraph: int, sentence: int) -> str:
    return f"{question_id}/p{paragraph}s{sentence}"


def team_graph(
    model: str | LLM,
    example: HotpotExample,
    *,
    policy: str = "rcr",
    budget: int | None = TEAM_BUDGET,
    memory: SharedMemory | None = None,
) -> AgentGraph:
    """Decomposer -> retriever -> answerer over the question's paragraphs in shared memory.

    Every agent's context is routed by ``policy`` (rcr, full, topk, recency) under
    ``budget`` tokens; each agent's output is written back to memory before the next
    routes (iterative routing).
    """
    if policy not in POLICIES:
        raise ConfigError(
            f"unknown context policy {policy!r}; use one of {', '.join(POLICIES)}",
            parameter="policy",
        )
    shared = memory if memory is not None else SharedMemory()
    seed_memory(shared, example)
    graph = AgentGraph("hotpotqa-team", model=model, max_steps=3, memory=shared)
    routing = POLICIES[policy]()
    graph.add_agent(
        Agent(
            name="decomposer",
            role=StandardRole.PLANNER,
            stage="plan",
            instructions="Split the question into one or two short sub-questions.",
            answer_format="plain",
            max_tokens=48,
            context_policy=routing,
            context_budget=budget,
        )
    )
    graph.add_agent(
        Agent(
            name="retriever",
            role=StandardRole.RESEARCHER,
            stage="retrieve",
            instructions="Copy the facts from the context that answer the sub-questions.",
            answer_format="plain",
            max_tokens=96,
            context_policy=routing,
            context_budget=budget,
        )
    )
    graph.add_agent(
        Agent(
            name="answerer",
            role=StandardRole.SOLVER,
            stage="answer",
            instructions=(
                "Answer the question from the context with a short answer: a name, a date, "
                "a number, yes or no."
            ),
            answer_format="plain",
            max_tokens=24,
            context_policy=routing,
            context_budget=budget,
        )
    )
    graph.add_edge("decomposer", "retriever").add_edge("retriever", "answerer")
    return graph.set_entry("decomposer").set_finish("answerer")


def team(model: str | LLM, example: HotpotExample) -> AgentGraph:
    """The team with RCR routing at the default budget (the CLI's ``--graph`` form)."""
    return team_graph(model, example)


def team_full(model: str | LLM, example: HotpotExample) -> AgentGraph:
    """The team with every agent seeing all of memory (cut to the budget)."""
    return team_graph(model, example, policy="full")
