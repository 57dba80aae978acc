"""The sqlite backend."""

from .backend import SQLiteMemory

__all__ = ["SQLiteMemory"]
