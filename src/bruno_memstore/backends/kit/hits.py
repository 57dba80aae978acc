"""Search answers as record ids, and the hits they become once the records are fetched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from ...models import MemoryRecord, MessageRecord, SearchHit

__all__ = ["Fetch", "Found", "fetched_hits", "ranked_hits"]

Found = tuple[str, str, float]
"""``(kind, record id, score)`` of one record in a search answer (``"message"`` or
``"memory"``; higher scores are better)."""

Fetch = Callable[
    [Sequence[Found]], Awaitable[tuple[Mapping[str, MessageRecord], Mapping[str, MemoryRecord]]]
]
"""Reads the records of a search answer by id: ``({id: message}, {id: entry})``."""


def ranked_hits(
    found: Sequence[Found],
    messages: Mapping[str, MessageRecord],
    memories: Mapping[str, MemoryRecord],
    *,
    user_id: str | None = None,
) -> list[SearchHit]:
    """The hits of ``found`` in its order, from the records fetched by id. A record missing
    (deleted since the index was read) or, with ``user_id``, not that user's, is left out."""
    hits: list[SearchHit] = []
    for kind, rid, score in found:
        if kind == "message":
            msg = messages.get(rid)
            if msg is not None and user_id in (None, msg.user_id):
                hits.append(SearchHit("message", score, message=msg))
        else:
            mem = memories.get(rid)
            if mem is not None and user_id in (None, mem.user_id):
                hits.append(SearchHit("memory", score, memory=mem))
    return hits


async def fetched_hits(
    rank: Callable[[], Awaitable[Sequence[Found]]],
    fetch: Fetch,
    drop: Callable[[], None],
    *,
    user_id: str | None = None,
) -> list[SearchHit]:
    """The hits of ``rank()`` (an answer from a user's cached index) with their records.

    Should a ranked record be gone, the index held a record deleted without the user's
    version changing (MongoDB's TTL monitor deletes on its own): ``drop()`` forgets the
    index and the search runs once more, so the answer is not left short of its limit."""

    async def once() -> tuple[int, list[SearchHit]]:
        found = await rank()
        if not found:
            return 0, []
        return len(found), ranked_hits(found, *await fetch(found), user_id=user_id)

    ranked, hits = await once()
    if len(hits) < ranked:
        drop()
        ranked, hits = await once()
    return hits
