"""relaygraph: multi-agent LLM orchestration on LangGraph.

The public API, importable from the top::

    from relaygraph import Agent, AgentGraph, load_llm

Names load on first use (PEP 562), so ``import relaygraph`` stays as cheap as the layer a
program touches: a client of the model layer never imports LangGraph or FAISS.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relaygraph.agents import Agent, StandardRole, Tool, tool
    from relaygraph.decoding import AdaptiveWindow, FixedWindow, SpeculativeLLM
    from relaygraph.errors import (
        ConfigError,
        LLMError,
        ModelNotFoundError,
        RelayGraphError,
        ToolError,
    )
    from relaygraph.graph import (
        END,
        AgentGraph,
        Budget,
        CompiledAgentGraph,
        Limits,
        Price,
        ResultEvent,
        RunResult,
        RunView,
        StepEvent,
        TokenEvent,
        Trace,
    )
    from relaygraph.llm import (
        LLM,
        ChatPrompt,
        Completion,
        GenerationParams,
        LocalLLM,
        Message,
        OpenAICompatLLM,
        Score,
        load_llm,
    )
    from relaygraph.llm.constraints import (
        ChoiceFormat,
        GrammarFormat,
        JsonObjectFormat,
        JsonSchemaFormat,
        RegexFormat,
        ToolSpec,
    )
    from relaygraph.llm.pool import WorkerPool
    from relaygraph.memory import SharedMemory
    from relaygraph.routing import Cascade, FixedModel, FullContext, RCRContext, Rung

_EXPORTS: dict[str, str] = {
    # graphs
    "AgentGraph": "relaygraph.graph",
    "CompiledAgentGraph": "relaygraph.graph",
    "END": "relaygraph.graph",
    "Budget": "relaygraph.graph",
    "Limits": "relaygraph.graph",
    "Price": "relaygraph.graph",
    "RunResult": "relaygraph.graph",
    "RunView": "relaygraph.graph",
    "Trace": "relaygraph.graph",
    "StepEvent": "relaygraph.graph",
    "TokenEvent": "relaygraph.graph",
    "ResultEvent": "relaygraph.graph",
    # agents and tools
    "Agent": "relaygraph.agents",
    "StandardRole": "relaygraph.agents",
    "Tool": "relaygraph.agents",
    "tool": "relaygraph.agents",
    # models
    "LLM": "relaygraph.llm",
    "LocalLLM": "relaygraph.llm",
    "OpenAICompatLLM": "relaygraph.llm",
    "WorkerPool": "relaygraph.llm.pool",
    "load_llm": "relaygraph.llm",
    "ChatPrompt": "relaygraph.llm",
    "Message": "relaygraph.llm",
    "GenerationParams": "relaygraph.llm",
    "Completion": "relaygraph.llm",
    "Score": "relaygraph.llm",
    # structured generation
    "JsonSchemaFormat": "relaygraph.llm.constraints",
    "JsonObjectFormat": "relaygraph.llm.constraints",
    "RegexFormat": "relaygraph.llm.constraints",
    "ChoiceFormat": "relaygraph.llm.constraints",
    "GrammarFormat": "relaygraph.llm.constraints",
    "ToolSpec": "relaygraph.llm.constraints",
    # memory and routing
    "SharedMemory": "relaygraph.memory",
    "RCRContext": "relaygraph.routing",
    "FullContext": "relaygraph.routing",
    "Cascade": "relaygraph.routing",
    "Rung": "relaygraph.routing",
    "FixedModel": "relaygraph.routing",
    # decoding
    "SpeculativeLLM": "relaygraph.decoding",
    "AdaptiveWindow": "relaygraph.decoding",
    "FixedWindow": "relaygraph.decoding",
    # errors
    "RelayGraphError": "relaygraph.errors",
    "ConfigError": "relaygraph.errors",
    "LLMError": "relaygraph.errors",
    "ModelNotFoundError": "relaygraph.errors",
    "ToolError": "relaygraph.errors",
}

try:
    __version__ = version("relaygraph")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "END",
    "LLM",
    "AdaptiveWindow",
    "Agent",
    "AgentGraph",
    "Budget",
    "Cascade",
    "ChatPrompt",
    "ChoiceFormat",
    "CompiledAgentGraph",
    "Completion",
    "ConfigError",
    "FixedModel",
    "FixedWindow",
    "FullContext",
    "GenerationParams",
    "GrammarFormat",
    "JsonObjectFormat",
    "JsonSchemaFormat",
    "LLMError",
    "Limits",
    "LocalLLM",
    "Message",
    "ModelNotFoundError",
    "OpenAICompatLLM",
    "Price",
    "RCRContext",
    "RegexFormat",
    "RelayGraphError",
    "ResultEvent",
    "RunResult",
    "RunView",
    "Rung",
    "Score",
    "SharedMemory",
    "SpeculativeLLM",
    "StandardRole",
    "StepEvent",
    "TokenEvent",
    "Tool",
    "ToolError",
    "ToolSpec",
    "Trace",
    "WorkerPool",
    "__version__",
    "load_llm",
    "tool",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'relaygraph' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return __all__
