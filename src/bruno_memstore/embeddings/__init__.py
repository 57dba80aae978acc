"""Embedding models: the adapter every backend uses, and the local models shipped with it."""

from .adapter import Embedder, VectorSpace, normalise_rows

__all__ = ["Embedder", "VectorSpace", "normalise_rows"]
