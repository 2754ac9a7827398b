"""A graph with a slow tool and a checkpointer, run in a subprocess by test_durability.

Usage: durable_graph.py DB THREAD TOOL_LOG start|resume (DB: a sqlite path or postgresql:// URL)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from relaygraph.agents import Agent
from relaygraph.graph import AgentGraph
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.llm.types import ChatPrompt, Prompt

db, thread, tool_log, mode = sys.argv[1:5]


def slow_lookup(n: int) -> str:
    """Look up fact number n (slowly)."""
    with Path(tool_log).open("a") as log:
        log.write(f"{n}\n")
    time.sleep(0.4)
    return f"fact {n}"


def reply(prompt: Prompt) -> str:
    # Stateless, so a resumed process answers exactly as the killed one would have.
    assert isinstance(prompt, ChatPrompt)
    seen = prompt.messages[-1].content.count("/observation]")
    if seen < 4:
        return f"Thought: I need fact {seen}\nAction: slow_lookup[{seen}]"
    return "Thought: I have them all\nAction: finish[facts 0-3]"


graph = AgentGraph("durable", model=ScriptedLLM(reply), max_steps=20)
graph.add_agent(Agent(name="worker", role="executor", tools=[slow_lookup], max_steps=10))
graph.set_entry("worker").set_finish("worker")
with graph.compile(checkpointer=db) as compiled:
    result = (
        compiled.invoke("collect facts", thread_id=thread)
        if mode == "start"
        else compiled.resume(thread)
    )
    print(result.model_dump_json())
