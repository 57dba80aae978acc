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

__all__ = [
    "AppendLogIndexes",
    "StaleLog",
    "UserVectorCache",
    "vector_from_bytes",
    "vector_to_bytes",
]

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


Delta = Callable[[int], Awaitable[tuple[Iterable[tuple[Any, ...]], int] | None]]


class StaleLog(RuntimeError):
    """The user's vectors kept changing while an index was loaded (retries ran out)."""


class AppendLogIndexes:
    """Indexes that follow an engine's append log instead of reloading after each append.

    Engines that log which vectors each append added (MariaDB, Redis) key an index by the
    user's *epoch* (changed only by removals and replacements) and remember how far into
    the log the index reaches; a query then fetches just the vectors logged since.

    Args:
        cache: where the indexes live (entries dropped there are forgotten here too).
    """

    def __init__(self, cache: UserVectorCache) -> None:
        self.cache = cache
        self._places: OrderedDict[str, tuple[VectorIndex, int]] = OrderedDict()

    async def index(
        self,
        name: str,
        epoch: Any,
        logged: int,
        load: Loader,
        delta: Delta,
    ) -> VectorIndex:
        """The index ``name`` up to log position ``logged``.

        ``load()`` reads every vector (it sees at least the log up to ``logged``);
        ``delta(after)`` returns the vectors logged after ``after`` and the position they
        reach, or ``None`` when the log no longer covers them (the index is then reloaded).
        """
        fresh: list[int] = []

        async def loader() -> Iterable[tuple[Hashable, Any]]:
            fresh.append(logged)
            return await load()

        for _attempt in range(3):
            index = await self.cache.get(name, epoch, loader)
            known = self._places.get(name)
            if known is not None and known[0] is index:
                position = known[1]
            elif fresh:
                position = fresh[-1]
                self._keep(name, index, position)
            else:  # loaded by another task; its place in the log is not known: reload
                self.cache.drop(name)
                continue
            if logged > position:
                got = await delta(position)
                if got is None:
                    self.cache.drop(name)
                    fresh.clear()
                    continue
                items, upto = got
                index.put_many(items)
                known = self._places.get(name)
                if known is not None and known[0] is index and known[1] < upto:
                    self._keep(name, index, upto)
            return index
        raise StaleLog("the user's vectors kept changing while they were loaded")

    def forget(self, name: str) -> None:
        """Drop the index ``name`` and its place."""
        self._places.pop(name, None)
        self.cache.drop(name)

    def _keep(self, name: str, index: VectorIndex, position: int) -> None:
        self._places[name] = (index, position)
        self._places.move_to_end(name)
        while len(self._places) > self.cache.max_users:
            self._places.popitem(last=False)
