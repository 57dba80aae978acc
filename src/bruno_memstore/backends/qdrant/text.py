"""BM25 search for ``QdrantMemory``: per-user indexes built from the texts stored in Qdrant.

Qdrant's own text match is a filter, not a ranking, so the ranking is the shared
:class:`~bruno_memstore.search.BM25Index` over one user's messages and memory entries, loaded
from Qdrant on the user's first search and then kept up to date by this process's writes
(:meth:`TextCache.apply`, after each write, under the same lock as the loads, so no write can
slip between a load and its installation).

A store on a server may also be written by other processes. There, every search first reads
a *tag* of the user's data from Qdrant: the number of messages and memory entries and their
highest write number. Every write raises the highest number or changes a count, so a cached
index whose own tag differs is reloaded.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from ...models import MemoryFilter, MemoryRecord
from ...search import BM25Index

__all__ = ["Tag", "TextCache", "UserText"]

Tag = tuple[int, int, int, int]
"""(messages, highest message write number, memory entries, highest memory write number)."""


@dataclass(slots=True)
class UserText:
    """One user's BM25 index and what filters and orders its documents."""

    index: BM25Index = field(default_factory=BM25Index)
    # message id -> (conversation id, ts_us, write number)
    messages: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    # memory id -> (entry without content and payload, write number)
    memories: dict[str, tuple[MemoryRecord, int]] = field(default_factory=dict)

    def tag(self) -> Tag:
        return (
            len(self.messages),
            max((m[2] for m in self.messages.values()), default=0),
            len(self.memories),
            max((m[1] for m in self.memories.values()), default=0),
        )

    def add_message(self, rid: str, conversation_id: str, ts_us: int, seq: int, text: str) -> None:
        self.index.add(("message", rid), text)
        self.messages[rid] = (conversation_id, ts_us, seq)

    def remove_message(self, rid: str) -> None:
        self.index.remove(("message", rid))
        self.messages.pop(rid, None)

    def put_memory(self, rec: MemoryRecord, seq: int) -> None:
        self.index.add(("memory", rec.id), rec.content)
        lite = MemoryRecord(
            id=rec.id,
            user_id=rec.user_id,
            content="",
            memory_type=rec.memory_type,
            category=rec.category,
            tags=list(rec.tags),
            confidence=rec.confidence,
            importance=rec.importance,
            created_us=rec.created_us,
            expires_us=rec.expires_us,
            conversation_id=rec.conversation_id,
            payload="",
        )
        self.memories[rec.id] = (lite, seq)

    def remove_memory(self, rid: str) -> None:
        self.index.remove(("memory", rid))
        self.memories.pop(rid, None)

    def search(
        self,
        query: str,
        *,
        kinds: frozenset[str],
        conversation_id: str | None,
        memory_filter: MemoryFilter,
        limit: int,
    ) -> list[tuple[str, str, float]]:
        """``(kind, id, score)`` of the best ``limit`` documents passing the filters.

        Every scored document is filtered before the best are taken (never the reverse).
        Equal scores: newest first, then id (the order of the other BM25 backends).
        """
        ranked: list[tuple[float, int, str, str]] = []
        for (kind, rid), score in self.index.search(query).items():  # type: ignore[misc]
            if kind not in kinds:
                continue
            if kind == "message":
                conv, ts_us, _ = self.messages[rid]
                if conversation_id is None or conv == conversation_id:
                    ranked.append((-score, -ts_us, rid, kind))
            else:
                mem = self.memories[rid][0]
                if memory_filter.matches(mem) and conversation_id in (None, mem.conversation_id):
                    ranked.append((-score, -mem.created_us, rid, kind))
        ranked.sort()
        return [(kind, rid, -neg) for neg, _, rid, kind in ranked[:limit]]


class TextCache:
    """Loaded :class:`UserText` by user (least recently used dropped beyond ``max_users``)."""

    def __init__(self, max_users: int = 64) -> None:
        self.max_users = max_users
        self._entries: OrderedDict[str, UserText] = OrderedDict()
        self._lock: asyncio.Lock | None = None
        self.loads = 0  # how many indexes were built from the engine

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def get(
        self,
        user_id: str,
        load: Callable[[], Awaitable[UserText]],
        remote_tag: Tag | None = None,
    ) -> UserText:
        """The user's index, loaded when absent or when its tag differs from ``remote_tag``
        (read from the engine *before* this call, so a load never predates it)."""
        async with self._guard():
            entry = self._entries.get(user_id)
            if entry is not None and remote_tag is not None and entry.tag() != remote_tag:
                entry = None
            if entry is None:
                entry = await load()
                self.loads += 1
                self._entries[user_id] = entry
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)
            return entry

    async def apply(self, user_ids: Iterable[str], change: Callable[[UserText], None]) -> None:
        """Apply a write that reached the engine to the cached indexes of ``user_ids``."""
        async with self._guard():
            for user_id in dict.fromkeys(user_ids):
                entry = self._entries.get(user_id)
                if entry is not None:
                    change(entry)

    async def drop(self, user_id: str) -> None:
        async with self._guard():
            self._entries.pop(user_id, None)

    def clear(self) -> None:
        self._entries.clear()
