"""The memcached backend."""

from .backend import MemcachedMemory

__all__ = ["MemcachedMemory"]
