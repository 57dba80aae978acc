"""``QdrantMemory``: Qdrant as a complete memory store, with its own vector search.

Two modes, one code path: a Qdrant server (``url=``) through ``AsyncQdrantClient``, or
qdrant-client's in-process implementation on a local directory (``path=``), which keeps
every point in a SQLite file and searches by brute force in Python.

Every record is one point (``layout``); vectors come from the shared layer and ride
on their record's point. Qdrant has no multi-point transactions, so read-modify-write steps
(conversation claims, the existence check of idempotent writes, replacements) run under one
asyncio lock per store and process, and multi-step changes write in an order that a crash
can only leave incomplete, never wrong (see ``docs/backends/qdrant.md``). Full-text search is
BM25 over each user's texts, computed in process (``text``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from ...base import MemoryBackend
from ...capabilities import DATABASE, Capability
from ...errors import InvalidArgumentError
from ...models import MemoryFilter, MemoryRecord, MessageRecord, SessionRecord, memory_sort_key
from ...primitives import (
    AppendResult,
    ExportKind,
    MessagePruning,
    VectorPrimitives,
    conversation_taken,
    memory_taken,
    session_taken,
)
from ...url import MemoryURL, hide_secrets
from ..kit.batches import batches, chunks
from ..kit.codec import MEMORIES, MESSAGES, SESSIONS
from ..kit.settings import positive_seconds
from .config import (
    is_throttled,
    is_timeout,
    is_unavailable,
    make_client,
    parse_memory_url,
    split_server_url,
)
from .layout import (
    Layout,
    any_of,
    between,
    eq,
    memory_where,
    message_where,
    point_id,
    vector_of,
)
from .search import WRITE_BATCH, QdrantSearch
from .store import Store, acquire_store, release_store

__all__ = ["QdrantMemory"]


class QdrantMemory(QdrantSearch, MemoryBackend, VectorPrimitives, MessagePruning):
    """Memory in Qdrant: a server, or qdrant-client's local mode on a directory.

    Args:
        path: local mode: the directory holding the data (``":memory:"``: nothing is kept).
            One process at a time may open a directory (qdrant-client locks it).
        url: server mode: ``http://host:6333`` or ``https://...`` (an API key may be given
            as the URL's password: ``https://:KEY@host:6333``).
        api_key: the server's API key (never shown in reprs, logs or errors).
        prefix: first part of every collection name; several stores can share a server.
        timeout: seconds a server request may take.
        prefer_grpc: talk gRPC (port ``grpc_port``) instead of HTTP.
        grpc_port: the server's gRPC port.
        text_cache_users: users whose full-text index is kept in memory.
        **options: see :class:`~bruno_memstore.base.MemoryBackend`.
    """

    backend_name: ClassVar[str] = "qdrant"
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {
        Capability.VECTORS,
        Capability.PRUNING,
    }

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        api_key: str | None = None,
        prefix: str = "bruno",
        timeout: float = 10.0,
        prefer_grpc: bool = False,
        grpc_port: int = 6334,
        text_cache_users: int = 64,
        **options: Any,
    ) -> None:
        if (path is None) == (url is None):
            raise InvalidArgumentError(
                "path", "give exactly one of path (local mode) or url (a Qdrant server)"
            )
        positive_seconds("timeout", timeout)
        if isinstance(text_cache_users, bool) or not isinstance(text_cache_users, int):
            raise InvalidArgumentError("text_cache_users", "must be an int")
        if text_cache_users < 1:
            raise InvalidArgumentError("text_cache_users", "must be at least 1")
        super().__init__(**options)
        self.layout = Layout(prefix)
        self.timeout = float(timeout)
        self.prefer_grpc = bool(prefer_grpc)
        self.grpc_port = int(grpc_port)
        self.text_cache_users = text_cache_users
        self.path: str | None = None
        self.url: str | None = None
        self._api_key: str | None = None
        self._url_prefix: str | None = None
        if path is not None:
            self.path = os.fspath(path)
            if not self.path:
                raise InvalidArgumentError("path", "must not be empty")
            if self.path == ":memory:":
                self._location: Any = ("memory", id(self))
                self.capabilities = type(self).capabilities - {Capability.DURABLE}  # type: ignore[misc]
            else:
                self._location = ("path", os.path.realpath(self.path))
        else:
            assert url is not None
            self.url, self._url_prefix, self._api_key = split_server_url(url, api_key)
            secret = hashlib.sha256((self._api_key or "").encode()).hexdigest()
            self._location = ("server", self.url, self._url_prefix, secret)
            self.loop_bound = True  # AsyncQdrantClient's HTTP connections
        self._store: Store | None = None

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> QdrantMemory:
        """Build from ``qdrant:///relative/dir``, ``qdrant:////absolute/dir``,
        ``qdrant:///:memory:`` (local mode) or ``qdrant+http://host:6333`` /
        ``qdrant+https://:API_KEY@host:6333`` (a server). Query options: ``prefix``,
        ``text_cache_users``, ``context_window``, ``operation_timeout``, and for a server
        ``timeout``, ``prefer_grpc``, ``grpc_port``. Keyword options win over query options."""
        path, server = parse_memory_url(url, options)
        return cls(path, **options) if path is not None else cls(url=server, **options)

    def describe(self) -> str:
        query = "" if self.layout.prefix == "bruno" else f"?prefix={self.layout.prefix}"
        if self.path is not None:
            return f"qdrant:///{quote(self.path, safe='/:')}{query}"
        assert self.url is not None
        scheme, rest = self.url.split("://", 1)
        secret = ":***@" if self._api_key else ""
        return f"qdrant+{scheme}://{secret}{rest}{self._url_prefix or ''}{query}"

    def _redact(self, text: str) -> str:
        return hide_secrets(text, self._api_key)

    # ================================================================ errors

    def _is_timeout(self, exc: BaseException) -> bool:
        return is_timeout(exc)

    def _is_unavailable(self, exc: BaseException) -> bool:
        return is_unavailable(exc)

    def _is_transient(self, exc: BaseException) -> bool:
        # Local mode fails only for reasons a retry does not change.
        return self.path is None and (is_throttled(exc) or is_unavailable(exc) or is_timeout(exc))

    # ================================================================ lifecycle

    def _make_client(self) -> AsyncQdrantClient:
        return make_client(
            path=self.path,
            url=self.url,
            api_key=self._api_key,
            url_prefix=self._url_prefix,
            timeout=self.timeout,
            prefer_grpc=self.prefer_grpc,
            grpc_port=self.grpc_port,
        )

    async def _connect(self) -> None:
        store = acquire_store(
            self._location, self.layout.prefix, self._make_client, local=self.path is not None
        )
        try:
            store.text.max_users = self.text_cache_users
            await store.prepare(self._new_dimension)
        except BaseException:
            await release_store(self._location, store)
            raise
        self._store = store

    async def _new_dimension(self) -> int:
        if self.embedder is None:
            return 0
        return (await self.embedder.space()).dimension

    async def _close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await release_store(self._location, store)

    @property
    def _s(self) -> Store:
        store = self._store
        assert store is not None, "not connected"
        return store

    # ================================================================ conversations

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        s = self._s
        found = await s.client.retrieve(
            s.layout.conversations,
            [point_id("conversation", conversation_id)],
            with_payload=["user_id"],
        )
        return str(found[0].payload["user_id"]) if found else None

    async def _claim(
        self, conversation_id: str, user_id: str, enforce: bool, *, create: bool = True
    ) -> str | None:
        """The conversation's owner, making it ``user_id``'s if new (under the write lock);
        ``None`` if new and not ``create``."""
        owner = await self._conversation_owner(conversation_id)
        if owner is None:
            if not create:
                return None
            s = self._s
            await s.client.upsert(
                s.layout.conversations,
                points=[
                    qm.PointStruct(
                        id=point_id("conversation", conversation_id),
                        vector={},
                        payload={"conversation_id": conversation_id, "user_id": user_id},
                    )
                ],
            )
            return user_id
        if enforce and owner != user_id:
            raise conversation_taken(conversation_id)
        return owner

    # ================================================================ messages

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        s = self._s
        async with s.write_lock:
            owner = await self._claim(conversation_id, user_id, enforce_owner, create=False)
            existing: frozenset[str] = frozenset()
            if records:
                by_point = {point_id("message", r.id): r.id for r in records}
                found = await s.client.retrieve(
                    s.layout.messages, list(by_point), with_payload=False
                )
                existing = frozenset(by_point[str(p.id)] for p in found)
                if len(existing) == len(records):
                    # Nothing goes in: a new conversation is not claimed either.
                    return AppendResult(owner or user_id, existing)
            if owner is None:
                # The claim is written first: a crash after it leaves an empty
                # conversation, never messages without an owner.
                owner = await self._claim(conversation_id, user_id, enforce_owner)
                assert owner is not None
            if not records:
                return AppendResult(owner, frozenset())
            new = [r for r in records if r.id not in existing]
            points = []
            for rec in new:
                rec.seq = s.clock.next()
                rec.user_id = owner
                points.append(
                    qm.PointStruct(
                        id=point_id("message", rec.id),
                        vector=vector_of(rec.vector),
                        payload=MESSAGES.document(rec),
                    )
                )
            for part in chunks(points, WRITE_BATCH):
                await s.client.upsert(s.layout.messages, points=list(part))
            s.text.changed(owner, lambda index: index.add_messages(new))
        return AppendResult(owner, existing)

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        if not ids:
            return []
        s = self._s
        found = await s.client.retrieve(
            s.layout.messages, [point_id("message", i) for i in ids], with_payload=True
        )
        return [MESSAGES.from_document(p.payload) for p in found]

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        s = self._s
        flt = message_where(user_id, conversation_id)
        if limit is None:
            recs = [MESSAGES.from_document(p.payload) for p in await s.all(s.layout.messages, flt)]
        else:
            # The newest `limit` by timestamp; the oldest timestamp among them may be shared
            # by messages left out, so that whole group is read and ordered by arrival.
            page = await s.edge(s.layout.messages, flt, "ts_us", newest=True, limit=limit)
            recs = [MESSAGES.from_document(p.payload) for p in page]
            if len(recs) == limit:
                low = min(r.ts_us for r in recs)
                tie = qm.Filter(must=[*(flt.must or []), between("ts_us", low, low)])
                recs = [r for r in recs if r.ts_us > low] + [
                    MESSAGES.from_document(p.payload) for p in await s.all(s.layout.messages, tie)
                ]
        recs.sort(key=lambda r: (r.ts_us, r.seq))
        return recs if limit is None else recs[-limit:]

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        s = self._s
        async with s.write_lock:
            s.secure_deletes()
            flt = qm.Filter(
                must=[eq("conversation_id", conversation_id)],
                must_not=[any_of("role", keep_roles)] if keep_roles else None,
            )
            gone = await s.all(s.layout.messages, flt, payload=["id", "user_id"])
            # Messages first, then sessions, the conversation last: an interrupted deletion
            # leaves a conversation with fewer messages, which deleting again completes.
            await s.delete_ids(s.layout.messages, [str(p.id) for p in gone])
            if not keep_roles:
                await s.client.delete(
                    s.layout.sessions,
                    points_selector=qm.FilterSelector(
                        filter=qm.Filter(must=[eq("conversation_id", conversation_id)])
                    ),
                )
                await s.client.delete(
                    s.layout.conversations,
                    points_selector=qm.PointIdsList(
                        points=[point_id("conversation", conversation_id)]
                    ),
                )
            for owner in {str(p.payload["user_id"]) for p in gone}:
                ids = [str(p.payload["id"]) for p in gone if p.payload["user_id"] == owner]
                s.text.changed(owner, lambda index, ids=ids: index.remove_many("message", ids))
        return len(gone)

    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        s = self._s
        async with s.write_lock:
            s.secure_deletes()
            flt = qm.Filter(must=[eq("conversation_id", conversation_id), any_of("id", ids)])
            gone = await s.all(s.layout.messages, flt, payload=["id", "user_id"])
            await s.delete_ids(s.layout.messages, [str(p.id) for p in gone])
            for owner in {str(p.payload["user_id"]) for p in gone}:
                mine = [str(p.payload["id"]) for p in gone if p.payload["user_id"] == owner]
                s.text.changed(owner, lambda index, ids=mine: index.remove_many("message", ids))
        return len(gone)

    # ================================================================ memories

    async def _put_memory(self, record: MemoryRecord) -> None:
        s = self._s
        pid = point_id("memory", record.id)
        async with s.write_lock:
            # Under the lock: no writer of this process comes between the check and the write.
            old = await s.client.retrieve(s.layout.memories, [pid], with_payload=["user_id"])
            if old and old[0].payload["user_id"] != record.user_id:
                raise memory_taken(record.id)
            seq = s.clock.next()
            # One point: the entry, its vector (or none, dropping an old one) and its
            # write number are replaced together.
            await s.client.upsert(
                s.layout.memories,
                points=[
                    qm.PointStruct(
                        id=pid,
                        vector=vector_of(record.vector),
                        payload={**MEMORIES.document(record), "seq": seq},
                    )
                ],
            )
            s.text.changed(record.user_id, lambda index: index.add_memory(record, seq))

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        s = self._s
        found = await s.client.retrieve(
            s.layout.memories, [point_id("memory", memory_id)], with_payload=True
        )
        return MEMORIES.from_document(found[0].payload) if found else None

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        s = self._s
        found = [
            MEMORIES.from_document(p.payload)
            for p in await s.all(s.layout.memories, memory_where(flt))
        ]
        found.sort(key=memory_sort_key)
        return found[: flt.limit]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        s = self._s
        pid = point_id("memory", memory_id)
        async with s.write_lock:
            s.secure_deletes()
            old = await s.client.retrieve(s.layout.memories, [pid], with_payload=["user_id"])
            if not old:
                return False
            if user_id is not None and old[0].payload["user_id"] != user_id:
                raise memory_taken(memory_id)
            await s.delete_ids(s.layout.memories, [pid])
            s.text.changed(
                str(old[0].payload["user_id"]), lambda index: index.remove("memory", memory_id)
            )
        return True

    async def _purge_expired(self, now_us: int) -> int:
        s = self._s
        flt = qm.Filter(must=[qm.FieldCondition(key="expires_us", range=qm.Range(lte=now_us))])
        async with s.write_lock:
            s.secure_deletes()
            doomed = await s.all(s.layout.memories, flt, payload=["id", "user_id"])
            await s.delete_ids(s.layout.memories, [str(p.id) for p in doomed])
            for p in doomed:
                rid = str(p.payload["id"])
                s.text.changed(
                    str(p.payload["user_id"]), lambda index, rid=rid: index.remove("memory", rid)
                )
        return len(doomed)

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        s = self._s
        pid = point_id("session", record.session_id)
        async with s.write_lock:
            held = await s.client.retrieve(s.layout.sessions, [pid], with_payload=["user_id"])
            if held and held[0].payload["user_id"] != record.user_id:
                raise session_taken(record.session_id)
            await self._claim(record.conversation_id, record.user_id, True)
            await s.client.upsert(
                s.layout.sessions,
                points=[
                    qm.PointStruct(
                        id=pid,
                        vector={},
                        payload=SESSIONS.document(record),
                    )
                ],
            )

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        s = self._s
        found = await s.client.retrieve(
            s.layout.sessions, [point_id("session", session_id)], with_payload=True
        )
        return SESSIONS.from_document(found[0].payload) if found else None

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        s = self._s
        must: list[Any] = [eq("user_id", user_id)]
        if conversation_id is not None:
            must.append(eq("conversation_id", conversation_id))
        if active_only:
            must.append(eq("is_active", True))
        top = await s.edge(s.layout.sessions, qm.Filter(must=must), "started_us", newest=True)
        if not top:
            return None
        started = int(top[0].payload["started_us"])
        tied = await s.all(
            s.layout.sessions, qm.Filter(must=[*must, between("started_us", started, started)])
        )
        recs = [SESSIONS.from_document(p.payload) for p in tied] or [
            SESSIONS.from_document(top[0].payload)
        ]
        return max(recs, key=lambda r: (r.started_us, r.session_id))

    # ================================================================ search and statistics

    async def _statistics(self, user_id: str) -> dict[str, object]:
        s = self._s
        mine = message_where(user_id)
        active = qm.Filter(must=[eq("user_id", user_id), eq("is_active", True)])
        (
            messages,
            conversations,
            sessions,
            active_sessions,
            memories,
            roles,
            first,
            last,
        ) = await asyncio.gather(
            s.count(s.layout.messages, mine),
            s.count(s.layout.conversations, mine),
            s.count(s.layout.sessions, mine),
            s.count(s.layout.sessions, active),
            s.count(s.layout.memories, mine),
            s.client.facet(s.layout.messages, key="role", facet_filter=mine, limit=64, exact=True),
            s.edge(s.layout.messages, mine, "ts_us", newest=False),
            s.edge(s.layout.messages, mine, "ts_us", newest=True),
        )
        return {
            "messages": messages,
            "conversations": conversations,
            "sessions": sessions,
            "active_sessions": active_sessions,
            "memories": memories,
            "messages_by_role": {str(h.value): int(h.count) for h in roles.hits if h.count},
            "first_message_us": int(first[0].payload["ts_us"]) if first else None,
            "last_message_us": int(last[0].payload["ts_us"]) if last else None,
        }

    # ================================================================ whole-store operations

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        s = self._s
        mine = message_where(user_id)
        async with s.write_lock:
            s.secure_deletes()
            messages, conversations, sessions, memories = await asyncio.gather(
                s.count(s.layout.messages, mine),
                s.count(s.layout.conversations, mine),
                s.count(s.layout.sessions, mine),
                s.count(s.layout.memories, mine),
            )
            # Conversations last: until they go, an interrupted run is visible and resumable.
            for collection in (
                s.layout.messages,
                s.layout.memories,
                s.layout.sessions,
                s.layout.conversations,
            ):
                await s.client.delete(collection, points_selector=qm.FilterSelector(filter=mine))
            s.text.changed(user_id)
        return {
            "messages": messages,
            "conversations": conversations,
            "sessions": sessions,
            "memories": memories,
        }

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        s = self._s
        owned = None if user_id is None else message_where(user_id)
        if kind == "conversations":
            async for page in s.pages(s.layout.conversations, owned):
                yield [(p.payload["conversation_id"], p.payload["user_id"]) for p in page]
        elif kind == "messages":
            records = (rec async for recs in self._conversation_messages(owned) for rec in recs)
            async for batch in batches(records):
                yield batch
        else:
            collection = s.layout.memories if kind == "memories" else s.layout.sessions
            codec = MEMORIES if kind == "memories" else SESSIONS
            async for page in s.pages(collection, owned):
                yield [codec.from_document(p.payload) for p in page]

    async def _conversation_messages(
        self, owned: qm.Filter | None
    ) -> AsyncIterator[list[MessageRecord]]:
        """Each conversation's messages in ``(ts_us, seq)`` order."""
        s = self._s
        if s.local:
            # In process every scan reads every point: one scan, grouped here.
            groups: dict[str, list[MessageRecord]] = {}
            async for page in s.pages(s.layout.messages, owned):
                for p in page:
                    rec = MESSAGES.from_document(p.payload)
                    groups.setdefault(rec.conversation_id, []).append(rec)
            for recs in groups.values():
                recs.sort(key=lambda r: (r.ts_us, r.seq))
                yield recs
            return
        async for page in s.pages(s.layout.conversations, owned, payload=["conversation_id"]):
            for conv in page:
                where = message_where(None, str(conv.payload["conversation_id"]))
                recs = [
                    MESSAGES.from_document(p.payload) for p in await s.all(s.layout.messages, where)
                ]
                recs.sort(key=lambda r: (r.ts_us, r.seq))
                yield recs
