"""Scripted HotPotQA graphs for the viewer's tests: two agents, a ranked context under a
token budget, and an answer that tries to run a script in the viewer.

``team`` has a reader look the first gold title up and a writer answer the gold answer;
``hostile`` is the same team whose writer answers with a ``<script>`` tag (a model's
output is untrusted: the viewer must show it as text).
"""

from __future__ import annotations

from relaygraph.agents import Agent
from relaygraph.eval.hotpotqa import HotpotExample, ParagraphTools
from relaygraph.graph import AgentGraph
from relaygraph.graph.budget import Budget, Limits, Price
from relaygraph.llm.protocol import LLM
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.routing.context import TopKSimilarity

INJECTED = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def _team(example: HotpotExample, answer: str) -> AgentGraph:
    tools = ParagraphTools(example)

    def search(title: str) -> str:
        """Search a page by title."""
        return tools.search(title)

    reader = ScriptedLLM(
        [
            f"Thought: look it up\nAction: search[{example.gold_titles[0]}]",
            "Thought: enough for the writer\nAction: finish[notes taken]",
        ]
    )
    writer = ScriptedLLM([f"Thought: the notes say it\nAction: finish[{answer}]"])
    budget = Budget(
        run=Limits(completion_tokens=2000, time_s=600),
        prices={"scripted": Price(prompt_per_mtok=1.0, completion_per_mtok=4.0)},
    )
    graph = AgentGraph("ui-team", model=reader, max_steps=6, budget=budget)
    graph.add_agent(Agent(name="reader", role="researcher", tools=[search]))
    graph.add_agent(
        Agent(
            name="writer",
            role="solver",
            model=writer,
            context_policy=TopKSimilarity(k=3),
            context_budget=400,
        )
    )
    return graph.set_entry("reader").add_edge("reader", "writer").set_finish("writer")


def team(model: LLM, example: HotpotExample) -> AgentGraph:
    return _team(example, example.answer)


def hostile(model: LLM, example: HotpotExample) -> AgentGraph:
    return _team(example, INJECTED)
