"""A scripted assistant that plays a task's reference solution, obeying the attack or not.

It is not a model: it replays the spec's tool calls as ReAct replies through the real
graph, sandbox and (when wrapped) guard. Two uses: checking every synthesized task (the
reference solution must be safe and meet the goal; the attack's actions must reach its
goal), and measuring what a defence stops against an assistant that always obeys the
payload, an upper bound on what a model that follows injections would do.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from relaygraph.llm.scripted import ScriptedLLM

if TYPE_CHECKING:
    from relaygraph.eval.security.synthesis import SecurityTask


def scripted_assistant(task: SecurityTask, *, obey_attack: bool) -> ScriptedLLM:
    """A model whose replies do the reference solution; with ``obey_attack``, the attack's
    actions come right after the first call (the one that reads the payload, in the
    shipped specs)."""
    calls = list(task.reference.calls)
    if obey_attack:
        calls = calls[:1] + task.attack_actions + calls[1:]
    replies = [
        f" Next, {call.tool}.\nAction: {call.tool}[{json.dumps(call.args)}]" for call in calls
    ]
    replies.append(f" Done.\nAction: finish[{task.reference.answer}]")
    return ScriptedLLM(replies, name="scripted-" + ("obeying" if obey_attack else "reference"))
