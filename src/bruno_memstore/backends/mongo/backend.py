"""``MongoMemory``: MongoDB through pymongo's native ``AsyncMongoClient``.

A document per record (``layout``). Steps that span documents run in one transaction where
the deployment has them, else as single-document writes in an order a failure leaves
incomplete but never wrong (a claim before its messages; a conversation's messages deleted
before it). Ownership is decided by the write: a claim is an insert keyed by the
conversation, an entry or session an upsert whose filter names its user. See
``docs/backends/mongo.md``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from pymongo import AsyncMongoClient
from pymongo import errors as mexc
from pymongo.asynchronous.client_session import AsyncClientSession

from ...capabilities import DATABASE, Capability
from ...errors import InvalidArgumentError, SchemaError
from ...lifecycle import archive_marker
from ...limits import Limits
from ...models import MemoryFilter, MemoryRecord, MessageRecord, SessionRecord
from ...primitives import (
    AppendResult,
    ExportKind,
    MessagePruning,
    VectorPrimitives,
    conversation_taken,
    memory_taken,
    session_taken,
)
from ...url import MemoryURL
from ..kit.batches import EXPORT_BATCH, batches
from ..kit.codec import MEMORIES, MESSAGES, SESSIONS
from ..kit.driver_url import DriverURLBackend
from ..kit.keyword_index import KeywordIndexes
from ..kit.settings import setting
from ..kit.vectors import UserVectorCache
from .layout import (
    INDEXES,
    NO_VECTOR,
    SCHEMA_VERSION,
    TEXT_INDEXES,
    Layout,
    decode,
    document,
    memory_where,
)
from .search import MongoSearch

__all__ = ["MongoMemory"]

T = TypeVar("T")
Session = AsyncClientSession | None

_OPTIONS = dict(database=str, prefix=str, transactions=bool, text_search=str)
_OPTIONS["connect_timeout"] = float
_TEXT_MODES = ("auto", "server", "kit")
_ATTEMPTS = 20  # of a transaction that meets a conflict


class MongoMemory(MongoSearch, DriverURLBackend, VectorPrimitives, MessagePruning):
    """Memory in MongoDB (a replica set, a sharded cluster, Atlas, or a standalone server).

    Args:
        url: ``mongodb://…`` or ``mongodb+srv://…``; its path names the database (default
            ``bruno_memory``). Query options other than this class's own go to pymongo.
        database: the database (wins over the URL's path).
        prefix: first part of every collection name; several stores can share a database.
        transactions: write multi-document steps in transactions (``True``), in an idempotent
            order without them (``False``), or as the deployment allows (``None``: in a
            transaction on a replica set or a sharded cluster).
        text_search: ``"server"`` (``$text``), ``"kit"`` (the in-process keyword index) or
            ``"auto"``: ``$text`` when the server can build a text index.
        connect_timeout: seconds to find the server at first use.
        **options: see :class:`~bruno_memstore.base.MemoryBackend`.
    """

    backend_name: ClassVar[str] = "mongodb"
    loop_bound = True  # AsyncMongoClient
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {
        Capability.VECTORS,
        Capability.TTL,
        Capability.PRUNING,
    }
    # 16 MiB a document, less 64 KiB for the other fields and the vector.
    limits = Limits(max_record_bytes=(16 << 20) - (64 << 10), size_limit="MongoDB's 16 MB limit")
    deletes_expired_itself = True  # the TTL index on ``expires_at``

    def __init__(
        self,
        url: str = "mongodb://127.0.0.1:27017",
        *,
        database: str | None = None,
        prefix: str | None = None,
        transactions: bool | None = None,
        text_search: str | None = None,
        connect_timeout: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        parsed = MemoryURL.parse(url)
        if parsed.scheme != "mongodb" or parsed.driver not in (None, "srv"):
            raise InvalidArgumentError(
                "url", f"expected mongodb:// or mongodb+srv://, got {parsed}"
            )
        given = {k: v for k, v in locals().items() if k in _OPTIONS and v is not None}
        opt = parsed.apply_options(given, _OPTIONS, also=set(parsed.query) - set(_OPTIONS))
        self._url = parsed
        self.database = setting(opt, "database", str, parsed.path.strip("/") or "bruno_memory")
        self.layout = Layout(setting(opt, "prefix", str, "bruno"))
        self.transactions: bool | None = setting(opt, "transactions", bool, None)
        self.text_mode = setting(opt, "text_search", str, "auto")
        if self.text_mode not in _TEXT_MODES:
            raise InvalidArgumentError("text_search", f"expected one of {', '.join(_TEXT_MODES)}")
        self.connect_timeout = setting(opt, "connect_timeout", float, 10.0, low=0.001)
        base, _, query = url.partition("?")  # pymongo's options, without this class's
        kept = "&".join(p for p in query.split("&") if p.partition("=")[0] not in _OPTIONS)
        self._driver_url = f"{base}?{kept}" if kept else base
        self.server_text = False
        self._client: AsyncMongoClient[Any] | None = None
        self._last_seq = 0
        self._text = KeywordIndexes()
        self._vectors = UserVectorCache()

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> MongoMemory:
        """Build from ``mongodb://[user:password@]host[:port][/database][?options]`` or
        ``mongodb+srv://…``. Query options: ``database``, ``prefix``, ``transactions``,
        ``text_search``, ``connect_timeout`` and pymongo's own. Keywords win."""
        return cls(url.raw, **options)

    # ================================================================ errors

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, (mexc.ConnectionFailure, OSError)) and not self._is_timeout(exc)

    def _is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, (TimeoutError, mexc.NetworkTimeout, mexc.ExecutionTimeout))

    def _is_transient(self, exc: BaseException) -> bool:
        labelled = isinstance(exc, mexc.PyMongoError) and (
            exc.has_error_label("TransientTransactionError")
            or exc.has_error_label("RetryableWriteError")
        )
        return labelled or isinstance(exc, mexc.AutoReconnect)

    # ================================================================ lifecycle

    async def _connect(self) -> None:
        options: dict[str, Any] = {"serverSelectionTimeoutMS": int(self.connect_timeout * 1000)}
        if not {"w", "journal"} & {k.lower() for k in self._url.query}:
            options["journal"] = True  # acknowledged once in the journal: survives a crash
        client: Any = AsyncMongoClient(self._driver_url, **options)
        try:
            hello = await client.admin.command("hello")
            db = client[self.database]
            for kind in ("conversations", "messages", "memories", "sessions", "meta"):
                setattr(self, f"_{kind}", db[getattr(self.layout, kind)])
            if self.transactions is None:
                self.transactions = "setName" in hello or hello.get("msg") == "isdbgrid"
            await self._prepare()
        except BaseException:
            await client.close()
            raise
        self._client = client

    async def _prepare(self) -> None:
        """Create what is missing (idempotent); refuse a layout newer than this code's."""
        version = await self._meta.find_one({"_id": "schema"})
        if version is not None and int(version["version"]) > SCHEMA_VERSION:
            raise SchemaError(f"layout version {version['version']} is newer than this code's")
        for kind, indexes in INDEXES.items():
            await getattr(self, f"_{kind}").create_indexes(indexes)
        self.server_text = False
        if self.text_mode != "kit":
            try:
                for kind, index in TEXT_INDEXES.items():
                    await getattr(self, f"_{kind}").create_indexes([index])
                self.server_text = True
            except mexc.OperationFailure:
                if self.text_mode == "server":
                    raise
        await self._meta.update_one(
            {"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True
        )
        self._schema_version = SCHEMA_VERSION

    async def _storage_bytes(self) -> int | None:
        # The server's own figures for each collection: data on disk plus its indexes.
        total = 0
        for kind in ("conversations", "messages", "memories", "sessions", "meta"):
            coll = getattr(self, f"_{kind}")
            try:
                found = await coll.database.command("collStats", coll.name)
            except mexc.OperationFailure:
                return None  # a server without collStats
            total += int(found.get("storageSize", found.get("size", 0)))
            total += int(found.get("totalIndexSize", 0))
        return total

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _atomic(self, step: Callable[[Session], Awaitable[T]]) -> T:
        """``step`` in one transaction (run again after a transient conflict), or without a
        session where the deployment has no transactions."""
        if not self.transactions:
            return await step(None)
        assert self._client is not None
        for attempt in itertools.count(1):
            try:
                async with (
                    self._client.start_session() as session,
                    await session.start_transaction(),
                ):
                    return await step(session)
            except mexc.OperationFailure as exc:  # duplicate ids are conflicts too
                again = isinstance(exc, (mexc.DuplicateKeyError, mexc.BulkWriteError))
                if attempt == _ATTEMPTS or not (again or self._is_transient(exc)):
                    raise
                await asyncio.sleep(0.002 * attempt)
        raise AssertionError("unreachable")

    async def _touch(self, *users: str) -> None:
        """Bump the users' versions after a write of their messages or entries, and drop
        this process's indexes of them."""
        for user_id in users:
            await self._meta.update_one({"_id": f"v:{user_id}"}, {"$inc": {"n": 1}}, upsert=True)
            self._text.changed(user_id)
            self._vectors.changed(user_id + "\0message")
            self._vectors.changed(user_id + "\0memory")

    # ================================================================ conversations, messages

    async def _conversation_owner(self, conversation_id: str, s: Session = None) -> str | None:
        found = await self._conversations.find_one({"_id": conversation_id}, session=s)
        return None if found is None else str(found["user_id"])

    async def _claim(
        self, conversation_id: str, user_id: str, enforce: bool, s: Session, owner: str | None
    ) -> str:
        """The conversation's owner (``owner``, as just read), inserting the claim of
        ``user_id`` if it has none."""
        if owner is None:
            try:
                await self._conversations.insert_one(
                    {"_id": conversation_id, "user_id": user_id}, session=s
                )
                return user_id
            except mexc.DuplicateKeyError:
                if s is not None:
                    raise  # the transaction is over: it runs again and reads the claim
                owner = await self._conversation_owner(conversation_id) or user_id
        if enforce and owner != user_id:
            raise conversation_taken(conversation_id)
        return owner

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        async def step(s: Session) -> AppendResult:
            owner = await self._conversation_owner(conversation_id, s)
            if enforce_owner and owner not in (None, user_id):
                raise conversation_taken(conversation_id)
            existing: set[str] = set()
            if records:
                ids = {"_id": {"$in": [r.id for r in records]}}
                existing = {d["_id"] async for d in self._messages.find(ids, {"_id": 1}, session=s)}
            if records and len(existing) == len(records):
                return AppendResult(owner or user_id, frozenset(existing))
            # The claim first: a failure after it leaves an empty conversation, never
            # messages without an owner.
            owner = await self._claim(conversation_id, user_id, enforce_owner, s, owner)
            new = [r for r in records if r.id not in existing]
            if new:
                # Arrival numbers: past the last one and the wall clock in microseconds, so
                # writers in several processes order equal timestamps by arrival.
                seq = max(self._last_seq + 1, time.time_ns() // 1000)
                self._last_seq = seq + len(new) - 1
                for i, rec in enumerate(new):
                    rec.seq, rec.user_id = seq + i, owner
                try:
                    docs = [document(r) for r in new]
                    await self._messages.insert_many(docs, ordered=False, session=s)
                except mexc.BulkWriteError as exc:
                    # Ids stored meanwhile by another writer: skipped, as if seen above.
                    failed = exc.details.get("writeErrors", [])
                    if s is not None or any(e["code"] != 11000 for e in failed):
                        raise
                    existing |= {new[e["index"]].id for e in failed}
            return AppendResult(owner, frozenset(existing))

        result = await self._atomic(step)
        if len(result.existing_ids) < len(records):
            await self._touch(result.owner)
        return result

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        if not ids:
            return []
        found = self._messages.find({"_id": {"$in": list(ids)}}, NO_VECTOR)
        return [decode(MESSAGES, d) async for d in found]

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        where: dict[str, Any] = {}
        if conversation_id is not None:
            where["conversation_id"] = conversation_id
        if user_id is not None:
            where["user_id"] = user_id
        cursor = self._messages.find(where, NO_VECTOR).sort([("ts_us", -1), ("seq", -1)])
        if limit is not None:
            cursor = cursor.limit(limit)
        recs = [decode(MESSAGES, d) async for d in cursor]
        recs.reverse()
        return recs

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        async def step(s: Session) -> tuple[str | None, int]:
            owner = await self._conversation_owner(conversation_id, s)
            where: dict[str, Any] = {"conversation_id": conversation_id}
            if keep_roles:
                where["role"] = {"$nin": sorted(keep_roles)}
            # Messages, then sessions, the conversation last: an interrupted deletion leaves
            # a conversation with fewer messages, which deleting again completes.
            gone = await self._messages.delete_many(where, session=s)
            if not keep_roles:
                where = {"conversation_id": conversation_id}
                await self._sessions.delete_many(where, session=s)
                await self._conversations.delete_one({"_id": conversation_id}, session=s)
            return owner, gone.deleted_count

        owner, count = await self._atomic(step)
        if count and owner is not None:
            await self._touch(owner)
        return count

    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        async def step(s: Session) -> tuple[str | None, int]:
            owner = await self._conversation_owner(conversation_id, s)
            where = {"conversation_id": conversation_id, "_id": {"$in": list(ids)}}
            gone = await self._messages.delete_many(where, session=s)
            return owner, gone.deleted_count

        owner, count = await self._atomic(step)
        if count and owner is not None:
            await self._touch(owner)
        return count

    # ================================================================ memories

    async def _put_memory(self, record: MemoryRecord) -> None:
        # One upsert whose filter names the user: another user's id makes its insert
        # collide with the stored _id, and nothing is written. $set and $unset replace the
        # whole entry as a replacement would (nx-27017 cannot replace binary data).
        doc = document(record)
        update: dict[str, Any] = {"$set": doc}
        if absent := {k: "" for k in ("vector", "expires_at") if k not in doc}:
            update["$unset"] = absent
        try:
            await self._memories.update_one(
                {"_id": doc.pop("_id"), "user_id": record.user_id}, update, upsert=True
            )
        except mexc.DuplicateKeyError:
            raise memory_taken(record.id) from None
        await self._touch(record.user_id)

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        found = await self._memories.find_one({"_id": memory_id}, NO_VECTOR)
        return None if found is None else decode(MEMORIES, found)

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        order = [("importance", -1), ("created_us", -1), ("_id", 1)]
        found = self._memories.find(memory_where(flt), NO_VECTOR).sort(order).limit(flt.limit)
        return [decode(MEMORIES, d) async for d in found]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        where = {"_id": memory_id} if user_id is None else {"_id": memory_id, "user_id": user_id}
        gone = await self._memories.find_one_and_delete(where, {"user_id": 1})
        if gone is None:
            if user_id is not None and await self._memories.find_one(
                {"_id": memory_id}, {"_id": 1}
            ):
                raise memory_taken(memory_id)
            return False
        await self._touch(str(gone["user_id"]))
        return True

    async def _purge_expired(self, now_us: int) -> int:
        expired = {"expires_us": {"$lte": now_us}}
        users = await self._memories.distinct("user_id", expired)
        gone = await self._memories.delete_many(expired)  # the condition is in the deletion
        await self._touch(*users)
        return gone.deleted_count

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        async def step(s: Session) -> None:
            held = await self._sessions.find_one(
                {"_id": record.session_id}, {"user_id": 1}, session=s
            )
            if held is not None and held["user_id"] != record.user_id:
                raise session_taken(record.session_id)
            owner = await self._conversation_owner(record.conversation_id, s)
            await self._claim(record.conversation_id, record.user_id, True, s, owner)
            try:
                await self._sessions.replace_one(
                    {"_id": record.session_id, "user_id": record.user_id},
                    document(record),
                    upsert=True,
                    session=s,
                )
            except mexc.DuplicateKeyError:
                if s is not None:
                    raise
                raise session_taken(record.session_id) from None

        await self._atomic(step)

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        found = await self._sessions.find_one({"_id": session_id})
        return None if found is None else decode(SESSIONS, found)

    async def _replace_session(self, record: SessionRecord, expected: SessionRecord) -> bool:
        stored = {
            "_id": expected.session_id,
            "user_id": expected.user_id,
            "conversation_id": expected.conversation_id,
            "payload": expected.payload,
        }
        return (await self._sessions.replace_one(stored, document(record))).matched_count == 1

    async def _get_markers(
        self, user_id: str | None, conversation_ids: Sequence[str]
    ) -> list[SessionRecord]:
        if not conversation_ids:
            return []
        where: dict[str, Any] = {"_id": {"$in": [archive_marker(c) for c in conversation_ids]}}
        if user_id is not None:
            where["user_id"] = user_id
        return [decode(SESSIONS, d) async for d in self._sessions.find(where)]

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        where: dict[str, Any] = {"user_id": user_id}
        if conversation_id is not None:
            where["conversation_id"] = conversation_id
        if active_only:
            where["is_active"] = True
        found = self._sessions.find(where).sort([("started_us", -1), ("_id", -1)]).limit(1)
        return next(iter([decode(SESSIONS, d) async for d in found]), None)

    # ================================================================ statistics, whole store

    async def _statistics(self, user_id: str) -> dict[str, object]:
        mine = {"user_id": user_id}
        by_role = [{"$match": mine}, {"$group": {"_id": "$role", "n": {"$sum": 1}}}]
        roles = {d["_id"]: int(d["n"]) async for d in await self._messages.aggregate(by_role)}
        edges = [
            await self._messages.find_one(mine, {"ts_us": 1}, sort=[("ts_us", way), ("seq", way)])
            for way in (1, -1)
        ]
        return {
            "messages": sum(roles.values()),
            "conversations": await self._conversations.count_documents(mine),
            "sessions": await self._sessions.count_documents(mine),
            "active_sessions": await self._sessions.count_documents({**mine, "is_active": True}),
            "memories": await self._memories.count_documents(mine),
            "messages_by_role": roles,
            "first_message_us": None if edges[0] is None else int(edges[0]["ts_us"]),
            "last_message_us": None if edges[1] is None else int(edges[1]["ts_us"]),
        }

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        mine = {"user_id": user_id}
        counts = {}
        # Conversations last: until they go, an interrupted run is visible and resumable.
        for kind in ("messages", "memories", "sessions", "conversations"):
            counts[kind] = (await getattr(self, f"_{kind}").delete_many(mine)).deleted_count
        await self._touch(user_id)
        return counts

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        mine = {} if user_id is None else {"user_id": user_id}
        if kind == "conversations":
            found = self._conversations.find(mine).sort("_id", 1)
            async for batch in batches(found):
                yield [(d["_id"], d["user_id"]) for d in batch]
        elif kind == "messages":
            async for batch in batches(self._messages_by_conversation(mine)):
                yield batch
        else:
            codec, found = (
                (MEMORIES, self._memories.find(mine, NO_VECTOR))
                if kind == "memories"
                else (SESSIONS, self._sessions.find(mine))
            )
            async for batch in batches(found.sort("_id", 1)):
                yield [decode(codec, d) for d in batch]

    async def _messages_by_conversation(self, mine: dict[str, Any]) -> AsyncIterator[MessageRecord]:
        """Each conversation's messages in ``(ts_us, seq)`` order, one indexed query each."""
        conversations = self._conversations.find(mine, {"_id": 1}).sort("_id", 1)
        async for conv in conversations:
            found = self._messages.find({"conversation_id": conv["_id"]}, NO_VECTOR)
            found = found.sort([("ts_us", 1), ("seq", 1)]).batch_size(EXPORT_BATCH)
            async for doc in found:
                yield decode(MESSAGES, doc)
