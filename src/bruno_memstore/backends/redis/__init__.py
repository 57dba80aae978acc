"""The redis backend."""

from .backend import RedisMemory

__all__ = ["RedisMemory"]
