"""A cheap, deterministic `Embedder` for memory tests that need no semantics.

Imported by the memory tests and by the child process of the kill-mid-save test (which
gets this folder on PYTHONPATH).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


class HashEmbedder:
    """Deterministic random unit vectors keyed by the text's sha256: cheap and tie-free."""

    def __init__(self, dim: int = 16, name: str = "hash-test") -> None:
        self.dim = dim
        self.name = name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [
            np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big"))
            .standard_normal(self.dim)
            .astype(np.float32)
            for t in texts
        ]
        out = np.array(rows, dtype=np.float32).reshape(len(texts), self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
