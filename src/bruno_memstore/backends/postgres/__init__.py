"""The postgres backend."""

from .backend import PostgresMemory

__all__ = ["PostgresMemory"]
