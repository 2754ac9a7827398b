"""Shared memory for agent teams: entries, embeddings, a FAISS index, atomic save/load."""

from relaygraph.memory.embedding import Embedder, SentenceEmbedder
from relaygraph.memory.entry import Hit, MemoryEntry, MetadataValue
from relaygraph.memory.index import IndexConfig, IndexKind
from relaygraph.memory.scope import MemoryScope
from relaygraph.memory.store import SharedMemory, Where

__all__ = [
    "Embedder",
    "Hit",
    "IndexConfig",
    "IndexKind",
    "MemoryEntry",
    "MemoryScope",
    "MetadataValue",
    "SentenceEmbedder",
    "SharedMemory",
    "Where",
]
