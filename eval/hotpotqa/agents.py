"""Agent graphs for HotPotQA that the harness runs per question.

A HotPotQA graph factory takes ``(model, example)`` and returns an `AgentGraph` for that
question (the question's paragraphs are the tools' world); the harness calls it once per
question with the model it loaded. `react` is ReAct's setup: one agent with
search/lookup/finish. The few-shot example is written for this project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.agents import Agent, StandardRole
from relaygraph.eval.hotpotqa.tools import ParagraphTools
from relaygraph.graph import AgentGraph

if TYPE_CHECKING:
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


def react(model: str | LLM, example: HotpotExample) -> AgentGraph:
    """ReAct on one question: search/lookup over its paragraphs, then finish."""
    tools = ParagraphTools(example)
    graph = AgentGraph("hotpotqa-react", model=model, max_steps=REACT_MAX_STEPS)
    graph.add_agent(
        Agent(
            name="reader",
            role=StandardRole.RESEARCHER,
            instructions=REACT_INSTRUCTIONS,
            tools=tools.tools(),
            max_steps=REACT_MAX_STEPS,
            max_tokens=96,
        )
    )
    return graph.set_entry("reader").set_finish("reader")
