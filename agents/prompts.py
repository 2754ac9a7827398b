"""The prompt of an agent's step: role and tools in the system prompt; task and context after."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.llm.types import ChatPrompt, Message

if TYPE_CHECKING:
    from relaygraph.agents.agent import BoundAgent


def system_prompt(agent: BoundAgent, *, act_only: bool) -> str:
    """Who the agent is, what it may call, and the reply format it must use.

    With native tool calling the tools are not listed here: they travel as the request's
    ``tools`` and the model's backend shows them its own way.
    """
    spec = agent.spec
    lines = [f"You are {spec.name}, the {spec.role} in a team of agents."]
    if spec.instructions:
        lines.append(spec.instructions.strip())
    if spec.answer_format != "react":
        lines.append("Reply with your answer only.")
        return "\n".join(lines)
    if spec.tool_calling == "native":
        lines.append("Call a tool when you need one; when you know the answer, reply with it.")
        if agent.answer_schema is not None:
            lines.append("Your answer must be a JSON object.")
        return "\n".join(lines)
    lines.append("\nYou can use these actions:")
    lines.extend(f"- {t.signature()}: {t.description}" for t in agent.tools.values())
    lines.append("- finish[<your answer>]: finish with your final answer.")
    if agent.answer_schema is not None:
        schema = agent.answer_schema.json_schema
        lines.append(f"The answer given to finish must be a JSON object matching: {schema}")
    if act_only:
        lines.append("\nReply with one line:\nAction: <action>[<argument>]")
    else:
        lines.append(
            "\nReply in exactly this format:\n"
            "Thought: <your reasoning>\nAction: <action>[<argument>]"
        )
    return "\n".join(lines)


def step_prompt(
    agent: BoundAgent,
    task: str,
    context: str,
    *,
    act_only: bool,
    retry_note: str | None = None,
    prefill: str = "",
) -> ChatPrompt:
    """The full prompt of one step; ``prefill`` starts the agent's reply."""
    user = f"Task: {task}"
    if context:
        user += f"\n\nContext:\n{context}"
    if retry_note:
        user += f"\n\nYour previous reply could not be used: {retry_note}"
    messages = (
        Message(role="system", content=system_prompt(agent, act_only=act_only)),
        Message(role="user", content=user),
    )
    return ChatPrompt(messages=messages, prefill=prefill)
