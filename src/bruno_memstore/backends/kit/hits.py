"""Search answers as record ids, and the hits they become once the records are fetched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...models import MemoryRecord, MessageRecord, SearchHit

__all__ = ["Found", "ranked_hits"]

Found = tuple[str, str, float]
"""``(kind, record id, score)`` of one record in a search answer (``"message"`` or
``"memory"``; higher scores are better)."""


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
