"""Model names to `LLM` instances.

Accepted names:

- a packaged model: ``smollm2-135m``, ``gemma3-270m`` (embedded, in process);
- a GGUF file path ending in ``.gguf`` (embedded, in process);
- ``openai:<base_url>/<model>``: a model on an OpenAI-compatible worker, e.g.
  ``openai:http://127.0.0.1:8000/v1/smollm2-135m``. The model part starts after
  ``/v1/`` when the URL has one (so Hugging Face ids with a slash work:
  ``openai:http://gpu:8000/v1/HuggingFaceTB/SmolLM2-135M``), else after the last ``/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError, ModelNotFoundError
from relaygraph.llm.catalog import PACKAGED_MODELS
from relaygraph.llm.local import LocalLLM
from relaygraph.llm.openai_compat import OpenAICompatLLM

if TYPE_CHECKING:
    from relaygraph.llm.protocol import LLM

OPENAI_PREFIX = "openai:"


@dataclass(frozen=True, slots=True)
class RemoteModel:
    """A parsed ``openai:`` model name."""

    base_url: str
    model: str


def parse_remote(name: str) -> RemoteModel:
    """Split ``openai:<base_url>/<model>`` into its URL and model.

    Example:
        >>> parse_remote("openai:http://127.0.0.1:8000/v1/org/model-7b")
        RemoteModel(base_url='http://127.0.0.1:8000/v1', model='org/model-7b')
    """
    spec = name.removeprefix(OPENAI_PREFIX)
    if "/v1/" in spec:
        base, model = spec.split("/v1/", 1)
        base += "/v1"
    else:
        base, _, model = spec.rstrip("/").rpartition("/")
    if not base.startswith(("http://", "https://")) or not model:
        raise ModelNotFoundError(
            f"{name!r} is not a valid remote model; write openai:<base_url>/<model>, "
            "e.g. openai:http://127.0.0.1:8000/v1/smollm2-135m",
            parameter="model",
            value=name,
        )
    return RemoteModel(base_url=base, model=model)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How an embedded model serves concurrent requests."""

    slots: int = 8
    """Sequences decoded together (each with its own KV cache and cached prefix)."""
    max_waiting: int = 128
    """Requests that may wait for a slot before more are refused."""
    chunk_tokens: int = 512
    """Most tokens one forward pass evaluates: smaller prefill chunks stall running
    streams less while a long prompt comes in; larger ones prefill faster."""
    threads: int | None = None
    """CPU threads of the model's forward passes; None: every core. Set it where several
    models share a machine's cores (one per Ray task, say), which would otherwise each
    take them all and slow one another down."""

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(
                f"threads must be at least 1 (or None for every core), not {self.threads}",
                parameter="threads",
                value=self.threads,
            )


def load_llm(
    name: str,
    *,
    context_window: int = 2048,
    api_key: str | None = None,
    engine: EngineOptions | None = None,
) -> LLM:
    """The `LLM` a model name stands for (embedded models are loaded once per process).

    ``api_key`` for remote workers defaults to ``$RELAYGRAPH_API_KEY``; ``engine`` sets an
    embedded model's slots, queue and pass size (a worker's are its own: refused for one).

    Raises:
        ModelNotFoundError: The name matches no packaged model, file or remote form.
        ConfigError: Engine options for a remote worker.
    """
    options = engine or EngineOptions()
    if name.startswith(OPENAI_PREFIX):
        if engine is not None:
            raise ConfigError(
                f"{name} is a remote worker; its slots and queue are set where it runs",
                parameter="engine",
            )
        remote = parse_remote(name)
        key = api_key if api_key is not None else os.environ.get("RELAYGRAPH_API_KEY")
        return OpenAICompatLLM(remote.base_url, remote.model, api_key=key)
    if name.endswith(".gguf") and not Path(name).is_file():
        raise ModelNotFoundError(f"GGUF file {name} does not exist", parameter="model", value=name)
    if name.endswith(".gguf") or name in PACKAGED_MODELS:
        return LocalLLM.load(
            Path(name) if name.endswith(".gguf") else name,
            context_window=context_window,
            max_batch=options.slots,
            max_waiting=options.max_waiting,
            chunk_tokens=options.chunk_tokens,
            n_threads=options.threads,
        )
    known = ", ".join(sorted(PACKAGED_MODELS))
    raise ModelNotFoundError(
        f"unknown model {name!r}; use a packaged model ({known}), a path to a .gguf file, "
        "or openai:<base_url>/<model> for a worker",
        parameter="model",
        value=name,
    )
