"""The chroma backend."""

from .backend import ChromaMemory

__all__ = ["ChromaMemory"]
