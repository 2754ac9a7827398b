"""Loading an embedded model: finding its GGUF file from a packaged name or a path, and
opening it in llama.cpp after checking the engine settings.

The settings are checked before the model loads where they can be, so a wrong one fails
in microseconds instead of after the file is mapped.
"""

from __future__ import annotations

import os
from pathlib import Path

from relaygraph.errors import ConfigError
from relaygraph.llm.catalog import ChatFormat, packaged_model
from relaygraph.llm.llamacpp import LlamaRuntime


def locate_model(model: str | Path) -> tuple[Path, str, ChatFormat]:
    """The file, name and chat format of a packaged model name or a GGUF path.

    A path (or a name ending in ``.gguf``) is named after its file and rendered with its
    own chat template.

    Raises:
        ConfigError: An unknown packaged model name.
    """
    if isinstance(model, Path) or str(model).endswith(".gguf"):
        path = Path(model)
        return path, path.stem, "gguf"
    spec = packaged_model(str(model))
    return spec.locate(), spec.name, spec.chat_format


def engine_threads(n_threads: int | None) -> int:
    """The CPU threads an engine decodes with: as asked, else every core."""
    return n_threads or os.cpu_count() or 1


def open_runtime(
    path: Path,
    *,
    context_window: int,
    max_batch: int,
    n_threads: int | None,
    max_waiting: int,
    chunk_tokens: int,
) -> LlamaRuntime:
    """The model at ``path`` loaded with ``max_batch`` slots of ``context_window`` tokens.

    Raises:
        ConfigError: A setting out of range (``chunk_tokens`` must exceed ``max_batch``,
            so decodes leave room for prefill, and fit llama.cpp's batch) or a missing file.
    """
    if context_window < 16:
        raise ConfigError("context_window must be >= 16", parameter="context_window")
    if not 1 <= max_batch <= 64:
        raise ConfigError("max_batch must be in 1..64", parameter="max_batch", value=max_batch)
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist", parameter="path", value=path)
    if max_waiting < 1:
        raise ConfigError("max_waiting must be >= 1", parameter="max_waiting", value=max_waiting)
    runtime = LlamaRuntime(
        path, seq_len=context_window, n_seq_max=max_batch, n_threads=engine_threads(n_threads)
    )
    if not max_batch < chunk_tokens <= runtime.n_batch:  # n_batch is known once loaded
        runtime.close()
        raise ConfigError(
            f"chunk_tokens must be above max_batch ({max_batch}) and at most {runtime.n_batch}",
            parameter="chunk_tokens",
            value=chunk_tokens,
        )
    return runtime
