"""Search in ``MongoMemory``: ``$text`` where the server has text indexes, else the kit's
keyword index; vectors exactly in process (``kit.vectors``).

The in-process indexes are per user, loaded from the user's documents only, and tagged with
the user's version (``v:{user}`` in ``meta``), bumped after every write of the user's
messages or entries: a search reads the version first, so it sees every write acknowledged
before it started. MongoDB's ``$vectorSearch`` needs Atlas or a ``mongot`` process, neither
of which runs here, so it is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from ...embeddings.adapter import VectorSpace
from ...models import MemoryRecord, MessageRecord, SearchHit, SearchRequest, hit_order
from ...search import query_words
from ..kit.codec import MEMORIES, MESSAGES
from ..kit.hits import Found, fetched_hits
from ..kit.keyword_index import KeywordIndex, KeywordIndexes
from ..kit.vectors import MemoryKey, UserVectorCache, nearest, vector_from_bytes, vector_to_bytes
from .layout import NO_VECTOR, decode, memory_where

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["MongoSearch"]

_SCORE = {"score": {"$meta": "textScore"}}
# Every field by name beside the score: nx-27017 reads an exclusion beside ``$meta`` as an
# inclusion; MongoDB reads both alike.
_SCORED = {c: {**dict.fromkeys(c.names.values(), 1), **_SCORE} for c in (MESSAGES, MEMORIES)}


class MongoSearch:
    """Text and vector search, and the vector primitives; mixed into ``MongoMemory``."""

    _text: KeywordIndexes
    _vectors: UserVectorCache
    server_text: bool
    _messages: AsyncCollection[Any]
    _memories: AsyncCollection[Any]
    _meta: AsyncCollection[Any]
    _get_messages: Any
    _touch: Any

    async def _version(self, user_id: str) -> int:
        found = await self._meta.find_one({"_id": f"v:{user_id}"})
        return int(found["n"]) if found else 0

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        if not request.query.strip():
            return []
        if not self.server_text:
            version = await self._version(request.user_id)
            load = lambda: self._load_text(request.user_id)  # noqa: E731
            return await self._text.search(request, version, load, self._fetch)
        # $text on each kind, the user (and conversation, and memory filter) in the query.
        search = {"$search": " ".join(query_words(request.query))}
        asked = []
        if "message" in request.kinds:
            where = {"user_id": request.user_id, "$text": search}
            if request.conversation_id is not None:
                where["conversation_id"] = request.conversation_id
            asked.append(self._scored(self._messages, MESSAGES, where, request.limit))
        if "memory" in request.kinds:
            where = memory_where(request.memories(), request.conversation_id)
            where.update({"user_id": request.user_id, "$text": search})
            asked.append(self._scored(self._memories, MEMORIES, where, request.limit))
        hits = [hit for found in await asyncio.gather(*asked) for hit in found]
        return sorted(hits, key=hit_order)[: request.limit]

    @staticmethod
    async def _scored(
        collection: AsyncCollection[Any], codec: Any, where: dict[str, Any], limit: int
    ) -> list[SearchHit]:
        cursor = collection.find(where, _SCORED[codec]).sort([("score", _SCORE["score"])])
        hits = []
        for doc in await cursor.limit(limit).to_list():
            score, rec = float(doc.pop("score")), decode(codec, doc)
            kind = "message" if codec is MESSAGES else "memory"
            hits.append(SearchHit(kind, score, **{kind: rec}))
        return hits

    async def _load_text(self, user_id: str) -> KeywordIndex:
        index = KeywordIndex()
        async for doc in self._messages.find({"user_id": user_id}, NO_VECTOR):
            index.add_message(decode(MESSAGES, doc))
        async for doc in self._memories.find({"user_id": user_id}, {**NO_VECTOR, "payload": 0}):
            index.add_memory(decode(MEMORIES, doc, payload=""))
        return index

    async def _fetch(
        self, found: Sequence[Found]
    ) -> tuple[dict[str, MessageRecord], dict[str, MemoryRecord]]:
        messages = await self._get_messages([rid for kind, rid, _ in found if kind == "message"])
        ids = {"_id": {"$in": [rid for kind, rid, _ in found if kind == "memory"]}}
        memories = [decode(MEMORIES, d) async for d in self._memories.find(ids, NO_VECTOR)]
        return {r.id: r for r in messages}, {r.id: r for r in memories}

    # ---------------------------------------------------------------- vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is not None:
            doc = {"_id": "space", "model": space.model, "dimension": space.dimension}
            if replace:
                # Vectors first, then the record: an interrupted switch leaves the old space
                # recorded and vectors missing, which reindexing again completes.
                for collection in (self._messages, self._memories):
                    has = {"vector": {"$exists": True}}
                    await collection.update_many(has, {"$unset": {"vector": ""}})
                await self._meta.update_many({"_id": {"$regex": "^v:"}}, {"$inc": {"n": 1}})
                self._vectors.clear()
                await self._meta.replace_one({"_id": "space"}, doc, upsert=True)
            else:
                with contextlib.suppress(DuplicateKeyError):  # the space recorded first wins
                    await self._meta.insert_one(doc)
        found = await self._meta.find_one({"_id": "space"})
        return None if found is None else VectorSpace(found["model"], int(found["dimension"]))

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        collection = self._messages if kind == "message" else self._memories
        pairs = dict(items)
        owners = await collection.distinct("user_id", {"_id": {"$in": list(pairs)}})
        if owners:
            bytes_of = {rid: vector_to_bytes(vec) for rid, vec in pairs.items()}
            sets = [UpdateOne({"_id": r}, {"$set": {"vector": v}}) for r, v in bytes_of.items()]
            await collection.bulk_write(sets, ordered=False)
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
                (
                    MemoryKey(decode(MEMORIES, d, content="", payload="")),
                    vector_from_bytes(d["vector"]),
                )
                async for d in docs
            ]

        loads = {"message": messages, "memory": memories}
        names = {kind: f"{user_id}\0{kind}" for kind in loads if kind in request.kinds}

        async def rank() -> list[Found]:
            indexes = {k: await self._vectors.get(n, version, loads[k]) for k, n in names.items()}
            return nearest(
                request, vector, messages=indexes.get("message"), memories=indexes.get("memory")
            )

        def drop() -> None:
            for name in names.values():
                self._vectors.drop(name)

        return await fetched_hits(rank, self._fetch, drop, user_id=user_id)
