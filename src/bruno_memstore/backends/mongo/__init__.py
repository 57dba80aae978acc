"""MongoDB as a memory store: ``MongoMemory``."""

from .backend import MongoMemory

__all__ = ["MongoMemory"]
