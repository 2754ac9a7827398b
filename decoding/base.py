"""The `Decoder` hook: how a completion is produced from a model.

The default asks the model itself. Speculative decoding plugs in here (a draft model
proposes, the target verifies) without the agents or the graph knowing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from relaygraph.llm.streaming import collect

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from relaygraph.llm.protocol import LLM
    from relaygraph.llm.types import (
        Completion,
        CompletionChunk,
        GenerationParams,
        Prompt,
        PromptInput,
    )


@runtime_checkable
class Decoder(Protocol):
    """Produces a completion from a model."""

    name: str

    def generate(
        self,
        llm: LLM,
        prompt: PromptInput | Prompt,
        params: GenerationParams,
        on_token: Callable[[str], None] | None = None,
    ) -> Completion: ...


class DirectDecoder:
    """The model decodes on its own; streams when the caller wants tokens."""

    name = "direct"

    def generate(
        self,
        llm: LLM,
        prompt: PromptInput | Prompt,
        params: GenerationParams,
        on_token: Callable[[str], None] | None = None,
    ) -> Completion:
        if on_token is None:
            return llm.complete(prompt, params)
        began = time.perf_counter()

        def forward() -> Iterator[CompletionChunk]:
            for chunk in llm.stream(prompt, params):
                if chunk.text:
                    on_token(chunk.text)
                yield chunk

        return collect(forward(), model=llm.name, began=began)
