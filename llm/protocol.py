"""The `LLM` contract every backend implements, and a base class that supplies the async face.

A backend writes the synchronous methods; `BaseLLM` derives ``acomplete``/``astream``/
``ascore`` by running them on a worker thread, which is right for in-process engines that
hold the GIL-free C code (llama.cpp releases the GIL while decoding). Network backends
override the async methods with native ones.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from relaygraph.llm.bridge import iterate_in_thread

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    from relaygraph.llm.types import (
        Completion,
        CompletionChunk,
        GenerationParams,
        Prompt,
        PromptInput,
        Score,
    )


@runtime_checkable
class LLM(Protocol):
    """A language model: complete, stream, count tokens, and score a continuation.

    Example:
        >>> from relaygraph.llm import load_llm
        >>> llm = load_llm("smollm2-135m")                     # doctest: +SKIP
        >>> llm.complete("The capital of France is").text      # doctest: +SKIP
    """

    @property
    def name(self) -> str:
        """The model name used in registries, traces and API responses."""
        ...

    @property
    def context_window(self) -> int:
        """Most tokens (prompt plus completion) one sequence may hold."""
        ...

    def complete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        """Generate ``params.n`` completions for one prompt."""
        ...

    def complete_batch(
        self, prompts: Sequence[PromptInput | Prompt], params: GenerationParams | None = None
    ) -> list[Completion]:
        """Generate completions for several prompts, batched where the backend can."""
        ...

    def stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Iterator[CompletionChunk]:
        """Generate one completion piece by piece; closing the iterator cancels it."""
        ...

    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        """Token ids the model sees for a prompt: chat template and BOS included."""
        ...

    def count_tokens(self, prompt: PromptInput | Prompt) -> int:
        """Tokens the prompt occupies, chat template included."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""
        ...

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of token ids."""
        ...

    def score(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """Log-probability of each continuation token after the prompt, in one forward pass."""
        ...

    async def acomplete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        """Async `complete`."""
        ...

    def astream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> AsyncIterator[CompletionChunk]:
        """Async `stream`."""
        ...

    async def ascore(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """Async `score`."""
        ...


class BaseLLM(ABC):
    """Shared plumbing for backends: default batch loop and a thread-backed async face."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def context_window(self) -> int: ...

    @abstractmethod
    def complete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion: ...

    @abstractmethod
    def stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Iterator[CompletionChunk]: ...

    @abstractmethod
    def encode(self, prompt: PromptInput | Prompt) -> list[int]: ...

    def count_tokens(self, prompt: PromptInput | Prompt) -> int:
        return len(self.encode(prompt))

    @abstractmethod
    def tokenize(self, text: str) -> list[int]: ...

    @abstractmethod
    def detokenize(self, token_ids: Sequence[int]) -> str: ...

    @abstractmethod
    def score(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score: ...

    def complete_batch(
        self, prompts: Sequence[PromptInput | Prompt], params: GenerationParams | None = None
    ) -> list[Completion]:
        return [self.complete(p, params) for p in prompts]

    async def acomplete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        return await asyncio.to_thread(self.complete, prompt, params)

    async def ascore(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        return await asyncio.to_thread(self.score, prompt, continuation, top_logprobs)

    async def astream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> AsyncIterator[CompletionChunk]:
        """Run `stream` on a worker thread; a consumer that stops early cancels it."""
        async for chunk in iterate_in_thread(lambda: self.stream(prompt, params)):
            yield chunk
