"""The graph runtime: build agent graphs, compile them onto LangGraph, run and trace them."""

from relaygraph.graph.budget import Budget, Limits, Price, RunUsage
from relaygraph.graph.builder import END, AgentGraph
from relaygraph.graph.results import (
    ResultEvent,
    RunEvent,
    RunResult,
    RunView,
    StepEvent,
    TokenEvent,
)
from relaygraph.graph.runtime import CompiledAgentGraph
from relaygraph.graph.trace import Route, RunFailure, Trace

__all__ = [
    "END",
    "AgentGraph",
    "Budget",
    "CompiledAgentGraph",
    "Limits",
    "Price",
    "ResultEvent",
    "Route",
    "RunEvent",
    "RunFailure",
    "RunResult",
    "RunUsage",
    "RunView",
    "StepEvent",
    "TokenEvent",
    "Trace",
]
