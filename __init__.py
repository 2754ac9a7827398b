"""relaygraph: multi-agent LLM orchestration on LangGraph.

The public API is re-exported here; see README.md for a tour.
"""

from importlib.metadata import PackageNotFoundError, version

from relaygraph.errors import ConfigError, LLMError, ModelNotFoundError, RelayGraphError
from relaygraph.llm import (
    LLM,
    Completion,
    GenerationParams,
    LocalLLM,
    Message,
    OpenAICompatLLM,
    Score,
    load_llm,
)

try:
    __version__ = version("relaygraph")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "LLM",
    "Completion",
    "ConfigError",
    "GenerationParams",
    "LLMError",
    "LocalLLM",
    "Message",
    "ModelNotFoundError",
    "OpenAICompatLLM",
    "RelayGraphError",
    "Score",
    "__version__",
    "load_llm",
]
