"""Search in ``MongoMemory``: ``$text`` where the server has text indexes, else the kit's
keyword index; vectors through the kit's exact index.

Both in-process indexes are per user, loaded from the user's documents only, and tagged
with the user's version (``meta`` document ``v:{user}``), which every write of the user's
messages or entries bumps after writing them. A search reads the version first, then loads
if its index is older, so it sees every write acknowledged before it started.

MongoDB's own vector search (``$vectorSearch``) needs Atlas or a ``mongot`` search process;
neither runs here, so no query of it could be tested, and vectors are searched exactly in
process over the user's vectors (``kit.vectors``): the user, conversation and memory filter
restrict the index before ranking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pymongo import UpdateOne

from ...embeddings.adapter import VectorSpace
from ...models import MemoryRecord, MessageRecord, SearchHit, SearchRequest
from ...search import query_words
from ..kit.codec import MEMORIES, MESSAGES
from ..kit.hits import Found, ranked_hits
from ..kit.keyword_index import KeywordIndex, KeywordIndexes
from ..kit.vectors import MemoryKey, UserVectorCache, nearest, vector_from_bytes, vector_to_bytes
from .layout import NO_VECTOR, memory_from, memory_where, message_from

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["MongoSearch"]

_SCORE = {"score": {"$meta": "textScore"}}
# Every field named, beside the score: an exclusion beside ``$meta`` reads as an inclusion
# on nx-27017, and MongoDB reads both alike.
_SCORED = {
    kind: {**dict.fromkeys(codec.names.values(), 1), **_SCORE}
    for kind, codec in (("message", MESSAGES), ("memory", MEMORIES))
}


class MongoSearch:
    """Text and vector search, and the vector primitives; mixed into ``MongoMemory``."""

    _text: KeywordIndexes
    _vectors: UserVectorCache
    server_text: bool
    _messages: AsyncCollection[Any]
    _memories: AsyncCollection[Any]
    _meta: AsyncCollection[Any]
    _get_messages: Any  # MongoMemory's
    _touch: Any

    async def _version(self, user_id: str) -> int:
        found = await self._meta.find_one({"_id": f"v:{user_id}"})
        return int(found["n"]) if found else 0

    # ---------------------------------------------------------------- keyword search

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        if not request.query.strip():
            return []
        if self.server_text:
            return await self._server_text(request)
        version = await self._version(request.user_id)
        return await self._text.search(
            request, version, lambda: self._load_text(request.user_id), self._fetch
        )

    async def _server_text(self, request: SearchRequest) -> list[SearchHit]:
        """``$text`` on each kind, the user (and conversation, and memory filter) inside."""
        search = {"$search": " ".join(query_words(request.query))}
        asked = []
        if "message" in request.kinds:
            where = {"user_id": request.user_id, "$text": search}
            if request.conversation_id is not None:
                where["conversation_id"] = request.conversation_id
            asked.append(self._scored(self._messages, where, "message", request.limit))
        if "memory" in request.kinds:
            where = memory_where(request.memories(), request.conversation_id)
            where.update({"user_id": request.user_id, "$text": search})
            asked.append(self._scored(self._memories, where, "memory", request.limit))
        hits: list[tuple[float, int, str, SearchHit]] = []
        for docs in await asyncio.gather(*asked):
            for doc in docs:
                score = float(doc.pop("score"))
                if "role" in doc:
                    msg = message_from(doc)
                    hits.append(
                        (-score, -msg.ts_us, msg.id, SearchHit("message", score, message=msg))
                    )
                else:
                    mem = memory_from(doc)
                    hits.append(
                        (-score, -mem.created_us, mem.id, SearchHit("memory", score, memory=mem))
                    )
        hits.sort(key=lambda h: h[:3])
        return [h[3] for h in hits[: request.limit]]

    @staticmethod
    async def _scored(
        collection: AsyncCollection[Any], where: dict[str, Any], kind: str, limit: int
    ) -> list[dict[str, Any]]:
        cursor = collection.find(where, _SCORED[kind])
        return await cursor.sort([("score", {"$meta": "textScore"})]).limit(limit).to_list()

    async def _load_text(self, user_id: str) -> KeywordIndex:
        index = KeywordIndex()
        async for doc in self._messages.find({"user_id": user_id}, NO_VECTOR):
            index.add_message(message_from(doc))
        async for doc in self._memories.find({"user_id": user_id}, {**NO_VECTOR, "payload": 0}):
            index.add_memory(memory_from(doc, payload=""))
        return index

    async def _fetch(
        self, found: Sequence[Found]
    ) -> tuple[dict[str, MessageRecord], dict[str, MemoryRecord]]:
        messages = await self._get_messages([rid for kind, rid, _ in found if kind == "message"])
        ids = [rid for kind, rid, _ in found if kind == "memory"]
        memories = [memory_from(d) async for d in self._memories.find({"_id": {"$in": ids}})]
        return {r.id: r for r in messages}, {r.id: r for r in memories}

    # ---------------------------------------------------------------- vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is not None:
            doc = {"model": space.model, "dimension": space.dimension}
            if replace:
                # Vectors first, then the record: an interrupted switch leaves the old space
                # recorded with vectors missing, which reindexing again completes.
                for collection in (self._messages, self._memories):
                    await collection.update_many(
                        {"vector": {"$exists": True}}, {"$unset": {"vector": ""}}
                    )
                await self._meta.update_many({"_id": {"$regex": "^v:"}}, {"$inc": {"n": 1}})
                self._vectors.clear()
                await self._meta.replace_one({"_id": "space"}, doc, upsert=True)
            else:
                await self._meta.update_one({"_id": "space"}, {"$min": {"claimed": 1}}, upsert=True)
                await self._meta.update_one(
                    {"_id": "space", "model": {"$exists": False}}, {"$set": doc}
                )
        found = await self._meta.find_one({"_id": "space"})
        if found is None or "model" not in found:
            return None
        return VectorSpace(found["model"], int(found["dimension"]))

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        collection = self._messages if kind == "message" else self._memories
        pairs = {rid: vec for rid, vec in items}
        owners = await collection.distinct("user_id", {"_id": {"$in": list(pairs)}})
        if not owners:
            return
        await collection.bulk_write(
            [
                UpdateOne({"_id": rid}, {"$set": {"vector": vector_to_bytes(vec)}})
                for rid, vec in pairs.items()
            ],
            ordered=False,
        )
        await self._touch(*owners)

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        user_id = request.user_id
        version = await self._version(user_id)
        has_vector = {"user_id": user_id, "vector": {"$exists": True}}

        async def messages() -> list[tuple[Any, ...]]:
            docs = self._messages.find(has_vector, {"vector": 1, "conversation_id": 1})
            return [
                (d["_id"], vector_from_bytes(d["vector"]), None, d["conversation_id"])
                async for d in docs
            ]

        async def memories() -> list[tuple[Any, ...]]:
            docs = self._memories.find(has_vector, {"content": 0, "payload": 0})
            return [
                (MemoryKey(memory_from(d, content="", payload="")), vector_from_bytes(d["vector"]))
                async for d in docs
            ]

        found = nearest(
            request,
            vector,
            messages=await self._vectors.get(f"{user_id}\0message", version, messages)
            if "message" in request.kinds
            else None,
            memories=await self._vectors.get(f"{user_id}\0memory", version, memories)
            if "memory" in request.kinds
            else None,
        )
        if not found:
            return []
        messages_by_id, memories_by_id = await self._fetch(found)
        return ranked_hits(found, messages_by_id, memories_by_id, user_id=user_id)
