"""The weaviate backend."""

from .backend import WeaviateMemory

__all__ = ["WeaviateMemory"]
