"""Scripted HotPotQA graph factories for the harness tests (control flow, no model).

``right`` searches the first gold title then answers the gold answer; ``wrong`` answers
"nobody"; ``broken`` raises for every third question; ``slow`` is ``right`` with a
0.5 s tool (so a test can kill a run mid-way); ``closed_book`` takes no example.
"""

from __future__ import annotations

import time
import zlib

from relaygraph.agents import Agent
from relaygraph.eval.hotpotqa import HotpotExample, ParagraphTools
from relaygraph.graph import AgentGraph
from relaygraph.llm.protocol import LLM
from relaygraph.llm.scripted import ScriptedLLM


def _graph(example: HotpotExample, answer: str, delay: float = 0.0) -> AgentGraph:
    tools = ParagraphTools(example)

    def search(title: str) -> str:
        """Search a page by title."""
        time.sleep(delay)
        return tools.search(title)

    llm = ScriptedLLM(
        [
            f"Thought: look it up\nAction: search[{example.gold_titles[0]}]",
            f"Thought: found it\nAction: finish[{answer}]",
        ]
    )
    graph = AgentGraph("scripted-hotpot", model=llm, max_steps=4)
    graph.add_agent(Agent(name="reader", role="researcher", tools=[search]))
    return graph.set_entry("reader").set_finish("reader")


def right(model: LLM, example: HotpotExample) -> AgentGraph:
    return _graph(example, example.answer)


def wrong(model: LLM, example: HotpotExample) -> AgentGraph:
    return _graph(example, "nobody")


def broken(model: LLM, example: HotpotExample) -> AgentGraph:
    if zlib.crc32(example.id.encode()) % 3 == 0:
        raise RuntimeError("factory failed")
    return _graph(example, example.answer)


def slow(model: LLM, example: HotpotExample) -> AgentGraph:
    return _graph(example, example.answer, delay=0.5)


def mute(model: LLM, example: HotpotExample) -> AgentGraph:
    graph = AgentGraph("mute", model=ScriptedLLM(lambda prompt: "no format at all"))
    graph.add_agent(Agent(name="reader", role="researcher", parse_retries=0))
    return graph.set_entry("reader").set_finish("reader")


def closed_book(model: LLM) -> AgentGraph:
    graph = AgentGraph("closed", model=ScriptedLLM(lambda prompt: "Action: finish[yes]"))
    graph.add_agent(Agent(name="reader", role="solver"))
    return graph.set_entry("reader").set_finish("reader")
