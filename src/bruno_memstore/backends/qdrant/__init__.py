"""The qdrant backend."""

from .backend import QdrantMemory

__all__ = ["QdrantMemory"]
