"""Shared memory for agent teams: entries, embeddings, a FAISS index, atomic save/load;
or PostgreSQL + pgvector where several processes share one memory."""

from relaygraph.memory.embedding import Embedder, SentenceEmbedder
from relaygraph.memory.entry import Hit, MemoryEntry, MetadataValue
from relaygraph.memory.factory import open_memory
from relaygraph.memory.index import IndexConfig, IndexKind
from relaygraph.memory.protocol import Memory
from relaygraph.memory.scope import MemoryScope
from relaygraph.memory.store import SharedMemory, Where

__all__ = [
    "Embedder",
    "Hit",
    "IndexConfig",
    "IndexKind",
    "Memory",
    "MemoryEntry",
    "MemoryScope",
    "MetadataValue",
    "SentenceEmbedder",
    "SharedMemory",
    "Where",
    "open_memory",
]
