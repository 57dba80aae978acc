"""Per-user exact vector indexes for engines that keep vectors as plain values.

SQLite, MariaDB and Redis without RediSearch store each record's vector beside it (a BLOB,
a hash field) in the record's own write. Search loads one user's vectors into a
:class:`~bruno_memstore.vector_index.VectorIndex` and keeps it while the user's
*generation* is unchanged: a counter the engine bumps in every write that adds, changes or
removes one of the user's vectors (same transaction), so any process's write invalidates
every other process's copy on its next query.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

import numpy as np

from .vector_index import VectorIndex

__all__ = ["UserVectorCache", "vector_from_bytes", "vector_to_bytes"]

Loader = Callable[[], Awaitable[Iterable[tuple[Hashable, Any]]]]


def vector_to_bytes(vector: Any) -> bytes:
    """A vector as little-endian float32 bytes (what engines store)."""
    return np.asarray(vector, dtype="<f4").reshape(-1).tobytes()


def vector_from_bytes(data: bytes) -> np.ndarray:
    """The inverse of :func:`vector_to_bytes`."""
    return np.frombuffer(data, dtype="<f4")


class UserVectorCache:
    """Loaded indexes by user, each tagged with the generation it was loaded at.

    Args:
        max_users: indexes kept (least recently used are dropped).
    """

    def __init__(self, max_users: int = 64) -> None:
        self.max_users = max_users
        self._entries: OrderedDict[str, tuple[Any, VectorIndex]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.loads = 0  # how many times an index was (re)built from the engine

    async def get(self, user_id: str, generation: Any, load: Loader) -> VectorIndex:
        """The user's index as of ``generation``, loading it with ``load()`` when stale."""
        entry = self._entries.get(user_id)
        if entry is not None and entry[0] == generation:
            self._entries.move_to_end(user_id)
            return entry[1]
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            entry = self._entries.get(user_id)
            if entry is not None and entry[0] == generation:
                return entry[1]
            index = VectorIndex()
            index.put_many(await load())
            self.loads += 1
            self._entries[user_id] = (generation, index)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_users:
                old, _ = self._entries.popitem(last=False)
                self._locks.pop(old, None)
            return index

    def drop(self, user_id: str) -> None:
        """Forget the user's index (the next query reloads it)."""
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        """Forget every index."""
        self._entries.clear()
