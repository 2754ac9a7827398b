"""Models: the `LLM` contract, the embedded engine, the OpenAI-compatible client, the registry."""

from relaygraph.llm.catalog import DEFAULT_MODEL, PACKAGED_MODELS, PackagedModel
from relaygraph.llm.local import LocalLLM, ModelInfo
from relaygraph.llm.openai_compat import OpenAICompatLLM
from relaygraph.llm.protocol import LLM, BaseLLM
from relaygraph.llm.registry import load_llm, parse_remote
from relaygraph.llm.types import (
    ChatPrompt,
    Choice,
    Completion,
    CompletionChunk,
    GenerationParams,
    Message,
    Prompt,
    PromptInput,
    Score,
    TextPrompt,
    TokenLogprob,
    TokenPrompt,
    TopLogprob,
    Usage,
    to_prompt,
)

__all__ = [
    "DEFAULT_MODEL",
    "LLM",
    "PACKAGED_MODELS",
    "BaseLLM",
    "ChatPrompt",
    "Choice",
    "Completion",
    "CompletionChunk",
    "GenerationParams",
    "LocalLLM",
    "Message",
    "ModelInfo",
    "OpenAICompatLLM",
    "PackagedModel",
    "Prompt",
    "PromptInput",
    "Score",
    "TextPrompt",
    "TokenLogprob",
    "TokenPrompt",
    "TopLogprob",
    "Usage",
    "load_llm",
    "parse_remote",
    "to_prompt",
]
