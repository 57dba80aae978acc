"""The raw pymongo baseline for ``MongoMemory`` in :mod:`benchmarks.throughput`.

:class:`PymongoDriver` runs each benchmarked operation with ``AsyncMongoClient`` alone, on
the library's own layout (``bruno_memstore.backends.mongo.layout``: collections, indexes,
documents) and with the same statements, in a transaction where the server has them and
with the same journaled write concern:

* ``store_one`` / ``store_batch``: the owner read, the id lookup, the claim (first time),
  ``insert_many``, then the user's version bump;
* ``read_rows``: the user's newest 20 messages (the ``(user_id, ts_us, seq)`` index);
* ``search_rows``: ``$text`` where the server builds text indexes, else the library's
  keyword index (``kit.keyword_index``) kept per user and tagged with the version, with the
  hits fetched by id, as the library does.

What the library adds on top: validation, the ownership and idempotency rules, conflict
checks, retries, metrics and bruno-core models. Importing this module registers the driver
for ``mongodb://`` URLs::

    python -m benchmarks.raw_mongodb "mongodb://127.0.0.1:27118/?directConnection=true&prefix=b1"

The raw driver works under a collection prefix of its own (``bench_raw_<random>``), whose
collections are dropped on close.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from bruno_core.models.message import Message
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from bruno_memstore.backends.kit.codec import MESSAGES
from bruno_memstore.backends.kit.keyword_index import KeywordIndex, KeywordIndexes
from bruno_memstore.backends.mongo.layout import (
    INDEXES,
    NO_VECTOR,
    TEXT_INDEXES,
    Layout,
    decode,
    document,
)
from bruno_memstore.models import MessageRecord, SearchRequest, message_to_record
from bruno_memstore.models import record_to_message as _to_message
from bruno_memstore.search import query_words
from bruno_memstore.url import MemoryURL

from .throughput import CONTEXT_LIMIT, SEARCH_LIMIT, RawDriver, app, register_raw_driver

__all__ = ["PymongoDriver"]


class PymongoDriver(RawDriver):
    """The library's MongoDB statements run by hand."""

    name: ClassVar[str] = "pymongo"

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        base, _, query = url.raw.partition("?")
        kept = "&".join(p for p in query.split("&") if not p.startswith("prefix="))
        self.client: Any = AsyncMongoClient(f"{base}?{kept}", journal=True)
        hello = await self.client.admin.command("hello")
        self.transactions = "setName" in hello or hello.get("msg") == "isdbgrid"
        self.db = self.client[url.path.strip("/") or "bruno_memory"]
        self.layout = Layout(f"bench_raw_{uuid.uuid4().hex[:10]}")
        for kind, indexes in INDEXES.items():
            await self.db[getattr(self.layout, kind)].create_indexes(indexes)
        self.messages = self.db[self.layout.messages]
        self.conversations = self.db[self.layout.conversations]
        self.meta = self.db[self.layout.meta]
        try:
            await self.messages.create_indexes([TEXT_INDEXES["messages"]])
            self.server_text = True
        except OperationFailure:
            self.server_text = False
        self.text = KeywordIndexes()
        self.seq = 0

    async def close(self) -> None:
        for name in await self.db.list_collection_names():
            if name.startswith(self.layout.prefix):
                await self.db.drop_collection(name)
        await self.client.close()

    async def _append(self, user: str, conv: str, recs: list[MessageRecord], s: Any) -> None:
        owner = await self.conversations.find_one({"_id": conv}, session=s)
        ids = {"_id": {"$in": [r.id for r in recs]}}
        await self.messages.find(ids, {"_id": 1}, session=s).to_list()
        if owner is None:
            await self.conversations.insert_one({"_id": conv, "user_id": user}, session=s)
        for rec in recs:
            self.seq += 1
            rec.seq, rec.user_id = self.seq, user
        await self.messages.insert_many([document(r) for r in recs], ordered=False, session=s)

    async def _store(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        recs = [message_to_record(m, conv) for m in messages]
        if self.transactions:
            async with self.client.start_session() as s, await s.start_transaction():
                await self._append(user, conv, recs, s)
        else:
            await self._append(user, conv, recs, None)
        await self.meta.update_one({"_id": f"v:{user}"}, {"$inc": {"n": 1}}, upsert=True)

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        await self._store(user, conv, [message])

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        await self._store(user, conv, messages)

    async def read_rows(self, user: str) -> list[Any]:
        cursor = self.messages.find({"user_id": user}, NO_VECTOR)
        return await cursor.sort([("ts_us", -1), ("seq", -1)]).limit(CONTEXT_LIMIT).to_list()

    async def search_rows(self, user: str, query: str) -> list[Any]:
        if self.server_text:
            where = {"user_id": user, "$text": {"$search": " ".join(query_words(query))}}
            score = {"score": {"$meta": "textScore"}}
            fields = {**dict.fromkeys(MESSAGES.names.values(), 1), **score}  # as the library
            cursor = self.messages.find(where, fields).sort([("score", score["score"])])
            return await cursor.limit(SEARCH_LIMIT).to_list()
        found = await self.meta.find_one({"_id": f"v:{user}"})
        version = found["n"] if found else 0

        async def load() -> KeywordIndex:
            index = KeywordIndex()
            async for doc in self.messages.find({"user_id": user}, NO_VECTOR):
                index.add_message(decode(MESSAGES, doc))
            return index

        async def fetch(hits: Any) -> Any:
            ids = {"_id": {"$in": [rid for _, rid, _ in hits]}}
            docs = await self.messages.find(ids, NO_VECTOR).to_list()
            return {d["_id"]: decode(MESSAGES, d) for d in docs}, {}

        request = SearchRequest(user, query, frozenset({"message"}), limit=SEARCH_LIMIT)
        return [h.message for h in await self.text.search(request, version, load, fetch)]

    def to_messages(self, rows: list[Any]) -> list[Message]:
        return [
            _to_message(r if isinstance(r, MessageRecord) else decode(MESSAGES, r)) for r in rows
        ]


register_raw_driver("mongodb", PymongoDriver)


if __name__ == "__main__":
    app()
