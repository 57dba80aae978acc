"""Memory backends for bruno-core: one semantics on every engine.

>>> from bruno_memstore import open_memory
>>> memory = open_memory("sqlite:///memory.db")   # or SQLiteMemory("memory.db")

Importing the package imports no backend; the classes below load on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .capabilities import Capability
from .errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CapabilityError,
    ClosedError,
    ConflictError,
    InvalidArgumentError,
    MemstoreError,
    MissingDependencyError,
    NotFoundError,
    OwnershipError,
    SchemaError,
    UnknownSchemeError,
)
from .models import SearchResult
from .registry import known_schemes, open_memory, register
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .backends.hybrid import HybridMemory
    from .backends.memcached import MemcachedMemory
    from .backends.memory import InMemoryStorage
    from .backends.mysql import MySQLMemory
    from .backends.postgres import PostgresMemory
    from .backends.redis import RedisMemory
    from .backends.sqlite import SQLiteMemory
    from .base import MemoryBackend

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "Capability",
    "CapabilityError",
    "ClosedError",
    "ConflictError",
    "HybridMemory",
    "InMemoryStorage",
    "InvalidArgumentError",
    "MemcachedMemory",
    "MemoryBackend",
    "MemstoreError",
    "MissingDependencyError",
    "MySQLMemory",
    "NotFoundError",
    "OwnershipError",
    "PostgresMemory",
    "RedisMemory",
    "RetryPolicy",
    "SQLiteMemory",
    "SchemaError",
    "SearchResult",
    "UnknownSchemeError",
    "__version__",
    "known_schemes",
    "open_memory",
    "register",
]

_LAZY = {
    "MemoryBackend": "bruno_memstore.base",
    "InMemoryStorage": "bruno_memstore.backends.memory",
    "HybridMemory": "bruno_memstore.backends.hybrid",
    "PostgresMemory": "bruno_memstore.backends.postgres",
    "MySQLMemory": "bruno_memstore.backends.mysql",
    "RedisMemory": "bruno_memstore.backends.redis",
    "MemcachedMemory": "bruno_memstore.backends.memcached",
    "SQLiteMemory": "bruno_memstore.backends.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bruno_memstore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
