"""Search for ``QdrantMemory``: BM25 over cached per-user indexes, and Qdrant's vector query.

Both restrict to the user (and conversation, and memory filter) before ranking: the text
index is per user and filtered before the best are taken; the vector query carries the
filter inside Qdrant's query. Also the vector-space record and its switches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from qdrant_client import models as qm

from ...embeddings.adapter import VectorSpace
from ...models import MemoryFilter, MemoryRecord, SearchHit, SearchRequest
from .layout import (
    VECTOR,
    Layout,
    chunks,
    memory_from_payload,
    memory_where,
    message_from_payload,
    message_where,
    point_id,
    vector_of,
)
from .text import Tag, UserText

if TYPE_CHECKING:
    from .store import Store

__all__ = ["QdrantSearch"]

WRITE_BATCH = 256


class QdrantSearch:
    """Text and vector search, and the vector primitives; mixed into ``QdrantMemory``."""

    _s: Store
    _get_messages: Any  # QdrantMemory's

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        user_id, query, kinds = request.user_id, request.query, request.kinds
        conversation_id, limit = request.conversation_id, request.limit
        memory_filter = request.memory_filter
        if not query.strip():
            return []
        s = self._s
        # A local directory has one process; a server may have other writers.
        tag = None if s.local else await self._remote_tag(user_id)
        entry = await s.text.get(user_id, lambda: self._load_text(user_id), tag)
        found = entry.search(
            query,
            kinds=kinds,
            conversation_id=conversation_id,
            memory_filter=memory_filter or MemoryFilter(user_id=user_id),
            limit=limit,
        )
        msg_ids = [rid for kind, rid, _ in found if kind == "message"]
        mem_ids = [rid for kind, rid, _ in found if kind == "memory"]
        messages, memories = await asyncio.gather(
            self._get_messages(msg_ids), self._get_memories(mem_ids)
        )
        by_id: dict[tuple[str, str], Any] = {("message", r.id): r for r in messages}
        by_id.update({("memory", r.id): r for r in memories})
        hits: list[SearchHit] = []
        for kind, rid, score in found:
            rec = by_id.get((kind, rid))
            if rec is None:
                continue  # deleted since the index was read
            if kind == "message":
                hits.append(SearchHit("message", score, message=rec))
            else:
                hits.append(SearchHit("memory", score, memory=rec))
        return hits

    async def _get_memories(self, ids: Sequence[str]) -> list[MemoryRecord]:
        if not ids:
            return []
        s = self._s
        found = await s.client.retrieve(
            s.layout.memories, [point_id("memory", i) for i in ids], with_payload=True
        )
        return [memory_from_payload(p.payload) for p in found]

    async def _remote_tag(self, user_id: str) -> Tag:
        s = self._s
        mine = message_where(user_id)
        counted = await asyncio.gather(
            s.count(s.layout.messages, mine),
            s.highest(s.layout.messages, "seq", mine),
            s.count(s.layout.memories, mine),
            s.highest(s.layout.memories, "seq", mine),
        )
        return (int(counted[0]), counted[1] or 0, int(counted[2]), counted[3] or 0)

    async def _load_text(self, user_id: str) -> UserText:
        s = self._s
        entry = UserText()
        mine = message_where(user_id)
        fields = ["id", "conversation_id", "ts_us", "seq", "content"]
        async for page in s.pages(s.layout.messages, mine, payload=fields):
            for p in page:
                d = p.payload
                entry.add_message(
                    d["id"], d["conversation_id"], int(d["ts_us"]), int(d["seq"]), d["content"]
                )
        skip = qm.PayloadSelectorExclude(exclude=["payload"])
        async for page in s.pages(s.layout.memories, mine, payload=skip):
            for p in page:
                d = dict(p.payload)
                d["payload"] = ""
                entry.put_memory(memory_from_payload(d), int(d["seq"]))
        return entry

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
        conversation_id, memory_filter = request.conversation_id, request.memory_filter
        s = self._s
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        flt = memory_filter or MemoryFilter(user_id=user_id)

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
            asked.append(nearest(s.layout.memories, memory_where(flt, conversation_id)))
        hits: list[SearchHit] = []
        for i, points in enumerate(await asyncio.gather(*asked)):
            is_message = "message" in kinds and i == 0
            for p in points:
                if is_message:
                    rec = message_from_payload(p.payload)
                    hits.append(SearchHit("message", float(p.score), message=rec))
                else:
                    mem = memory_from_payload(p.payload)
                    hits.append(SearchHit("memory", float(p.score), memory=mem))
        hits.sort(key=lambda h: -h.score)
        return hits[:limit]
