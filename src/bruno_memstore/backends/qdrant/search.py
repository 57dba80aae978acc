"""Search for ``QdrantMemory``: BM25 over cached per-user indexes, and Qdrant's vector query.

Both restrict to the user (and conversation, and memory filter) before ranking: the text
index is per user and filtered before the best are taken; the vector query carries the
filter inside Qdrant's query. Also the vector-space record and its switches.

Qdrant's own text match is a filter, not a ranking, so full-text search is the kit's
keyword index over one user's messages and memory entries, loaded from Qdrant on the user's
first search and then patched by this process's writes. A store on a server may also be
written by other processes: there every search first reads a summary of the user's data
from Qdrant (how many messages and memory entries, and their highest write numbers). Every
write raises a highest number or changes a count, so a cached index whose own summary
differs is reloaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from qdrant_client import models as qm

from ...embeddings.adapter import VectorSpace
from ...models import MemoryRecord, MessageRecord, SearchHit, SearchRequest
from ..kit.batches import chunks
from ..kit.codec import MEMORIES, MESSAGES
from ..kit.hits import Found
from ..kit.keyword_index import KeywordIndex
from .layout import (
    VECTOR,
    Layout,
    memory_where,
    message_where,
    point_id,
    vector_of,
)

if TYPE_CHECKING:
    from .store import Store

__all__ = ["QdrantSearch"]

WRITE_BATCH = 256


class QdrantSearch:
    """Text and vector search, and the vector primitives; mixed into ``QdrantMemory``."""

    _s: Store
    _get_messages: Any  # QdrantMemory's

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        if not request.query.strip():
            return []
        s, user_id = self._s, request.user_id
        # A local directory has one process; a server may have other writers.
        version = None if s.local else await self._remote_version(user_id)
        return await s.text.search(request, version, lambda: self._load_text(user_id), self._fetch)

    async def _fetch(
        self, found: Sequence[Found]
    ) -> tuple[dict[str, MessageRecord], dict[str, MemoryRecord]]:
        messages, memories = await asyncio.gather(
            self._get_messages([rid for kind, rid, _ in found if kind == "message"]),
            self._get_memories([rid for kind, rid, _ in found if kind == "memory"]),
        )
        return {r.id: r for r in messages}, {r.id: r for r in memories}

    async def _get_memories(self, ids: Sequence[str]) -> list[MemoryRecord]:
        if not ids:
            return []
        s = self._s
        found = await s.client.retrieve(
            s.layout.memories, [point_id("memory", i) for i in ids], with_payload=True
        )
        return [MEMORIES.from_document(p.payload) for p in found]

    async def _remote_version(self, user_id: str) -> tuple[int, int, int, int]:
        """What :meth:`KeywordIndex.stamps` of the user's stored data would be."""
        s = self._s
        mine = message_where(user_id)
        counted = await asyncio.gather(
            s.count(s.layout.messages, mine),
            s.highest(s.layout.messages, "seq", mine),
            s.count(s.layout.memories, mine),
            s.highest(s.layout.memories, "seq", mine),
        )
        return (int(counted[0]), counted[1] or 0, int(counted[2]), counted[3] or 0)

    async def _load_text(self, user_id: str) -> KeywordIndex:
        s = self._s
        index = KeywordIndex()
        mine = message_where(user_id)
        async for page in s.pages(s.layout.messages, mine):
            index.add_messages(MESSAGES.from_document(p.payload) for p in page)
        skip = qm.PayloadSelectorExclude(exclude=["payload"])
        async for page in s.pages(s.layout.memories, mine, payload=skip):
            for p in page:
                index.add_memory(
                    MEMORIES.from_document(p.payload, payload=""), int(p.payload["seq"])
                )
        return index

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is None:
            found = await self._s.read_space()
            return None if found is None else VectorSpace(*found)
        s = self._s
        async with s.write_lock:
            recorded = await s.read_space()
            if replace or recorded is None:
                # Collections first, then the record: an interrupted switch leaves the old
                # space recorded and its vectors (some of them) dropped; reindex again.
                await s.set_dimension(space.dimension, drop_vectors=replace)
                await s.write_space(space.model, space.dimension)
                recorded = await s.read_space()
            elif (current := await s.alias_target(s.layout.messages)) is not None and (
                Layout.dimension_of(current) != recorded[1]
            ):
                # A switch interrupted before its record: no vectors of either size are left.
                await s.set_dimension(recorded[1], drop_vectors=False)
        assert recorded is not None
        return VectorSpace(*recorded)

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        s = self._s
        collection = s.layout.messages if kind == "message" else s.layout.memories
        async with s.write_lock:
            for part in chunks(list(items), WRITE_BATCH):
                pairs = {point_id(kind, rid): vec for rid, vec in part}
                found = await s.client.retrieve(collection, list(pairs), with_payload=False)
                points = [
                    qm.PointVectors(id=str(p.id), vector=vector_of(pairs[str(p.id)])) for p in found
                ]
                if points:
                    await s.client.update_vectors(collection, points=points)

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        user_id, kinds, limit = request.user_id, request.kinds, request.limit
        conversation_id = request.conversation_id
        s = self._s
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()

        async def nearest(collection: str, where: qm.Filter) -> list[Any]:
            # The filter is part of the query: Qdrant ranks only the points that pass it.
            res = await s.client.query_points(
                collection,
                query=query,
                using=VECTOR,
                query_filter=where,
                limit=limit,
                with_payload=True,
                with_vectors=False,
            )
            return list(res.points)

        asked: list[Any] = []
        if "message" in kinds:
            asked.append(nearest(s.layout.messages, message_where(user_id, conversation_id)))
        if "memory" in kinds:
            asked.append(
                nearest(s.layout.memories, memory_where(request.memories(), conversation_id))
            )
        hits: list[SearchHit] = []
        for i, points in enumerate(await asyncio.gather(*asked)):
            is_message = "message" in kinds and i == 0
            for p in points:
                if is_message:
                    rec = MESSAGES.from_document(p.payload)
                    hits.append(SearchHit("message", float(p.score), message=rec))
                else:
                    mem = MEMORIES.from_document(p.payload)
                    hits.append(SearchHit("memory", float(p.score), memory=mem))
        hits.sort(key=lambda h: -h.score)
        return hits[:limit]
