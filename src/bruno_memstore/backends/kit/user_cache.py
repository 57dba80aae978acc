"""One per-user version-tagged cache: derived state a process keeps per user, reloaded only
when the user's data changed.

Engines without a native feature keep what they derive from a user's records (a keyword
index, loaded vectors) in process. Each entry is tagged twice:

* the **version** the engine reported when it was loaded: a change counter bumped in the
  same write as the data, a token every writer replaces, or a summary of the data itself
  (counts and highest write numbers). A lookup passes the version the engine reports now;
  ``None`` means only this process writes, so the entry is trusted as it is.
* this process's own **generation** of the user, bumped by :meth:`UserCache.changed` after
  each of its writes. A load that overlapped a write is used once but not kept (it may or
  may not have seen the write), and a write either patches a current entry in place or
  drops it.

Thread-safe: a writer thread may call :meth:`~UserCache.changed` while readers on event
loops look entries up. Hold :attr:`UserCache.lock` while reading an entry that other
threads may patch.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["UserCache"]

T = TypeVar("T")


class _Entry(Generic[T]):
    __slots__ = ("generation", "value", "version")

    def __init__(self, generation: int, version: Any, value: T) -> None:
        self.generation = generation
        self.version = version
        self.value = value


class UserCache(Generic[T]):
    """Derived state by user, least recently used dropped beyond ``max_users``.

    Args:
        max_users: entries kept.
        version_of: reads an entry's version from its value (for versions that summarise
            the data, so an entry patched by :meth:`changed` stays comparable); by default
            an entry keeps the version it was loaded at.
    """

    def __init__(
        self, max_users: int = 64, *, version_of: Callable[[T], Hashable] | None = None
    ) -> None:
        self.max_users = max_users
        self.version_of = version_of
        self.loads = 0  # entries built from the engine, for tests and tuning
        self.lock = threading.RLock()
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._loading: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def generation(self, user_id: str) -> int:
        """How many changes this process made to the user's data (what a load started now
        must still see when it finishes, to be kept)."""
        return self._generations.get(user_id, 0)

    def current(self, user_id: str, version: Hashable = None) -> T | None:
        """The user's entry if it is current for ``version`` (``None``: any version)."""
        with self.lock:
            entry = self._entries.get(user_id)
            if entry is None or entry.generation != self._generations.get(user_id, 0):
                return None
            if version is not None:
                held = entry.version if self.version_of is None else self.version_of(entry.value)
                if held != version:
                    return None
            self._entries.move_to_end(user_id)
            return entry.value

    def keep(self, user_id: str, version: Hashable, value: T, *, since: int) -> bool:
        """Keep a freshly loaded ``value`` unless this process changed the user's data after
        :meth:`generation` returned ``since``; whether it was kept."""
        with self.lock:
            self.loads += 1
            if self._generations.get(user_id, 0) != since:
                return False
            self._entries[user_id] = _Entry(since, version, value)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_users:
                old, _ = self._entries.popitem(last=False)
                self._loading.pop(old, None)
            return True

    async def get(self, user_id: str, version: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The user's entry as of ``version``, loaded with ``load()`` unless current. One
        load runs per user at a time on an event loop; others wait for it."""
        found = self.current(user_id, version)
        if found is not None:
            return found
        async with self._load_lock(user_id):
            found = self.current(user_id, version)
            if found is not None:
                return found
            since = self.generation(user_id)
            value = await load()
            self.keep(user_id, version, value, since=since)
            return value

    def _load_lock(self, user_id: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self.lock:
            held = self._loading.get(user_id)
            if held is None or held[0] is not loop:
                held = self._loading[user_id] = (loop, asyncio.Lock())
            return held[1]

    def changed(self, user_id: str, patch: Callable[[T], object] | None = None) -> None:
        """After a write of this process to the user's data: apply it to a current entry
        with ``patch`` (in place), or, without ``patch``, drop the entry."""
        with self.lock:
            generation = self._generations.get(user_id, 0)
            self._generations[user_id] = generation + 1
            entry = self._entries.get(user_id)
            if entry is None:
                return
            if patch is None or entry.generation != generation:
                del self._entries[user_id]
                return
            patch(entry.value)
            entry.generation = generation + 1

    def drop(self, user_id: str) -> None:
        """Forget the user's entry (the next lookup loads it)."""
        with self.lock:
            self._entries.pop(user_id, None)

    def clear(self) -> None:
        """Forget every entry."""
        with self.lock:
            self._entries.clear()
