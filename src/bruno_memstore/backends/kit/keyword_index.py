"""One in-process keyword index: BM25 over a user's records, every filter applied inside.

For engines that cannot rank text: one :class:`KeywordIndex` per user holds the user's
messages and memory entries, analysed as every backend analyses text
(:class:`~bruno_memstore.search.BM25Index`), with what the filters need about each record.
A search filters every scored record (kind, conversation, memory filter) *before* the best
are taken, so a filter never starves the answer, and returns record ids; the engine fetches
the records, and ``hits.ranked_hits`` puts them in the answer's order, leaving out any
deleted meanwhile.

:class:`KeywordIndexes` keeps one index per user in a ``user_cache.UserCache``, patched by
this process's writes, and searches it.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Awaitable, Callable, Hashable, Iterable

from ...models import MemoryRecord, MessageRecord, SearchHit, SearchRequest
from ...search import BM25Index
from .hits import Fetch, Found, fetched_hits
from .user_cache import UserCache

__all__ = ["KeywordIndex", "KeywordIndexes"]


class KeywordIndex:
    """One user's messages and memory entries, BM25-ranked.

    Each record may carry a *stamp*, a write number the engine keeps with it;
    :meth:`stamps` summarises them, so an engine that counts records and knows the highest
    stamp can tell whether this index still holds what it stores.
    """

    __slots__ = ("_bm25", "memories", "messages")

    def __init__(self) -> None:
        self._bm25 = BM25Index()
        self.messages: dict[str, tuple[str, int, int]] = {}  # id -> (conversation, ts_us, stamp)
        self.memories: dict[str, tuple[MemoryRecord, int]] = {}  # id -> (entry sans text, stamp)

    def __len__(self) -> int:
        return len(self.messages) + len(self.memories)

    def add_message(self, record: MessageRecord, stamp: int | None = None) -> None:
        """Index (or re-index) a message; its stamp defaults to its arrival number."""
        self._bm25.add(("message", record.id), record.content)
        self.messages[record.id] = (
            record.conversation_id,
            record.ts_us,
            record.seq if stamp is None else stamp,
        )

    def add_messages(self, records: Iterable[MessageRecord]) -> None:
        for record in records:
            self.add_message(record)

    def add_memory(self, record: MemoryRecord, stamp: int = 0) -> None:
        """Index (or re-index) a memory entry; what the filters need is kept, not its text."""
        self._bm25.add(("memory", record.id), record.content)
        lite = dataclasses.replace(record, content="", payload="", vector=None)
        self.memories[record.id] = (lite, stamp)

    def remove(self, kind: str, record_id: str) -> None:
        """Forget a record (no-op when absent)."""
        self._bm25.remove((kind, record_id))
        (self.messages if kind == "message" else self.memories).pop(record_id, None)  # type: ignore[attr-defined]

    def remove_many(self, kind: str, record_ids: Iterable[str]) -> None:
        for record_id in record_ids:
            self.remove(kind, record_id)

    def stamps(self) -> tuple[int, int, int, int]:
        """``(messages, highest message stamp, memory entries, highest memory stamp)``."""
        return (
            len(self.messages),
            max((m[2] for m in self.messages.values()), default=0),
            len(self.memories),
            max((m[1] for m in self.memories.values()), default=0),
        )

    def search(self, request: SearchRequest) -> list[Found]:
        """The best ``request.limit`` records of ``request.kinds`` that the request admits
        (its conversation; memory entries passing its memory filter), ranked for
        ``request.query``. Equal scores: newest first, then id."""
        flt = request.memories()
        conversation_id = request.conversation_id
        ranked: list[tuple[float, int, str, str]] = []
        for (kind, rid), score in self._bm25.search(request.query).items():  # type: ignore[misc]
            if kind not in request.kinds:
                continue
            if kind == "message":
                conversation, ts_us, _stamp = self.messages[rid]
                if conversation_id is None or conversation == conversation_id:
                    ranked.append((-score, -ts_us, rid, kind))
            else:
                entry = self.memories[rid][0]
                if request.admits_memory(entry, flt):
                    ranked.append((-score, -entry.created_us, rid, kind))
        return [(kind, rid, -neg) for neg, _ts, rid, kind in heapq.nsmallest(request.limit, ranked)]


class KeywordIndexes(UserCache[KeywordIndex]):
    """Each user's :class:`KeywordIndex`, kept while the user's data is unchanged (see
    :class:`~bruno_memstore.backends.kit.user_cache.UserCache`), and full-text search over
    them."""

    async def search(
        self,
        request: SearchRequest,
        version: Hashable,
        load: Callable[[], Awaitable[KeywordIndex]],
        fetch: Fetch,
    ) -> list[SearchHit]:
        """The hits of ``request``: the user's index as of ``version`` (built with
        ``load()`` unless current) ranks record ids, ``fetch(found)`` reads those records by
        id (``({id: message}, {id: entry})``), and records deleted meanwhile are left out."""

        async def rank() -> list[Found]:
            index = await self.get(request.user_id, version, load)
            with self.lock:  # another thread may be patching the index
                return index.search(request)

        return await fetched_hits(rank, fetch, lambda: self.drop(request.user_id))
