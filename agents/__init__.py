"""Agents: roles, typed tools, the ReAct step."""

from relaygraph.agents.agent import Agent, BoundAgent
from relaygraph.agents.react import FinalAnswer, ReActParseError, ReActStep, ToolCall, parse_react
from relaygraph.agents.record import StepFailure, StepRecord
from relaygraph.agents.roles import StandardRole, check_role
from relaygraph.agents.step import StepInput, StepOutput, run_step
from relaygraph.agents.tools import Tool, ToolCallError, tool

__all__ = [
    "Agent",
    "BoundAgent",
    "FinalAnswer",
    "ReActParseError",
    "ReActStep",
    "StandardRole",
    "StepFailure",
    "StepInput",
    "StepOutput",
    "StepRecord",
    "Tool",
    "ToolCall",
    "ToolCallError",
    "check_role",
    "parse_react",
    "run_step",
    "tool",
]
