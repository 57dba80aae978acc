"""The memory backend."""

from .backend import InMemoryStorage

__all__ = ["InMemoryStorage"]
