"""The tool policy of one step: which tools it may call and whether it may finish.

An agent's ``tool_choice``, ``min_tool_calls`` and ``max_tool_calls`` say what its turn
must contain; `ToolPolicy.for_step` turns them, and the calls made so far in the turn,
into what the next step may do. The step grammar leaves out what is not allowed; a free
reply that breaks the policy is retried with the rule (`ToolPolicy.check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaygraph.agents.react import FinalAnswer, ReActParseError, ToolCall

if TYPE_CHECKING:
    from relaygraph.agents.agent import BoundAgent
    from relaygraph.agents.react import ReActStep
    from relaygraph.agents.tools import Tool


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """What one step may do under the agent's tool policy.

    Attributes:
        tools: The tools the step may call.
        finish: Whether it may finish (False while the policy still requires calls).
    """

    tools: dict[str, Tool]
    finish: bool
    withheld: frozenset[str] = frozenset()
    """The agent's tools the policy does not allow in this step."""

    @classmethod
    def for_step(cls, agent: BoundAgent, calls_made: int) -> ToolPolicy:
        """The policy's state after ``calls_made`` calls this turn. A required tool that
        the run withheld (a request's ``tools``) falls back to any remaining tool; with
        none left, nothing can be required."""
        spec, tools = agent.spec, agent.tools
        if spec.max_tool_calls is not None and calls_made >= spec.max_tool_calls:
            return cls({}, finish=True, withheld=frozenset(tools))
        if calls_made >= spec.required_calls or not tools:
            return cls(tools, finish=True)
        named = tools.get(spec.tool_choice)
        if named is None:
            return cls(tools, finish=False)
        return cls({named.name: named}, finish=False, withheld=frozenset(tools) - {named.name})

    def check(self, step: ReActStep) -> None:
        """Raises `ReActParseError` when a reply's action breaks the policy (an unknown
        tool is not the policy's business: it becomes an observation)."""
        if isinstance(step.action, FinalAnswer) and not self.finish:
            raise ReActParseError(
                f"you must call a tool ({', '.join(self.tools)}) before you finish"
            )
        if isinstance(step.action, ToolCall) and step.action.tool in self.withheld:
            allowed = [*self.tools, *(["finish"] if self.finish else [])]
            raise ReActParseError(
                f"{step.action.tool} is not allowed now; use one of: {', '.join(allowed)}"
            )
