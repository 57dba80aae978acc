"""``WeaviateMemory``: Weaviate as a complete memory store, a tenant per user.

Each user's messages, memory entries and sessions live in the user's tenant of three
multi-tenant collections, so every query runs inside one user's shard and forgetting a user
deletes the tenants. A registry collection maps every id to its owner (``layout``). Search
is Weaviate's own: BM25 over the analyzer's terms, and near-vector queries with the filters
inside; the shared layer fuses the two (``docs/backends/weaviate.md`` says why Weaviate's
hybrid fusion is not used).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from weaviate.classes.query import Filter, Sort

from ...base import MemoryBackend
from ...capabilities import DATABASE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import OwnershipError
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
    hit_order,
    memory_sort_key,
)
from ...primitives import AppendResult, ExportKind, VectorPrimitives, memory_taken, session_taken
from ...search import index_text
from ...semantic import DEFAULT_MODEL
from ...url import MemoryURL, hide_secrets
from ..kit.batches import batches, chunks
from ..kit.settings import positive_int, positive_seconds
from .config import (
    DEFAULT_GRPC_PORT,
    DEFAULT_URL,
    is_timeout,
    is_transient,
    is_unavailable,
    make_client,
    parse_memory_url,
    split_url,
)
from .layout import (
    Layout,
    all_of,
    decode,
    equal,
    exact,
    memory_object,
    memory_where,
    message_object,
    registry_id,
    session_object,
    tenant_of,
    unexact,
    vector_list,
)
from .store import Store, acquire_store, release_store

__all__ = ["WeaviateMemory"]

_SPACE = "vector_space"


class WeaviateMemory(MemoryBackend, VectorPrimitives):
    """Memory in Weaviate (1.27 or later), through the official async client.

    Args:
        embedding_model: see :class:`~bruno_memstore.base.MemoryBackend` (the light local
            model by default; ``None`` for keyword search only). Weaviate never embeds:
            vectors are given with each object.
        url: the server's REST address, ``http://host:8080`` or ``https://host`` (an API
            key may be given as the URL's password: ``https://:KEY@host``).
        api_key: the server's API key (never shown in reprs, logs or errors).
        grpc_port: the server's gRPC port (the client searches and writes over gRPC).
        grpc_host: the gRPC host, when it is not the REST host.
        prefix: first part of every collection name (a capital letter first), so several
            stores can share a server.
        timeout: seconds one request may take.
        query_maximum_results: the server's ``QUERY_MAXIMUM_RESULTS`` (Weaviate's default
            10,000): reads ask for at most 1,000 objects, or this many if it is lower, and a
            deletion that deleted this many runs again.
        **options: see :class:`~bruno_memstore.base.MemoryBackend`.

    Example:
        >>> memory = WeaviateMemory("default", "http://localhost:8080")
        >>> # or: open_memory("weaviate://localhost:8080?grpc_port=50051")
    """

    backend_name: ClassVar[str] = "weaviate"
    loop_bound = True  # WeaviateAsyncClient (grpc.aio, httpx)
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {Capability.VECTORS}

    def __init__(
        self,
        embedding_model: Any = DEFAULT_MODEL,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        grpc_port: int = DEFAULT_GRPC_PORT,
        grpc_host: str | None = None,
        prefix: str = "Bruno",
        timeout: float = 30.0,
        query_maximum_results: int = 10_000,
        **options: Any,
    ) -> None:
        self.layout = Layout(prefix)
        positive_seconds("timeout", timeout)
        positive_int("grpc_port", grpc_port)
        self.query_maximum_results = positive_int("query_maximum_results", query_maximum_results)
        self.secure, self.host, self.port, self._api_key = split_url(url, api_key)
        self.grpc_port = grpc_port
        self.grpc_host = grpc_host or self.host
        self.timeout = float(timeout)
        super().__init__(embedding_model=embedding_model, **options)
        secret = hashlib.sha256((self._api_key or "").encode()).hexdigest()
        self._location = (self.secure, self.host, self.port, self.grpc_host, grpc_port, secret)
        self._store: Store | None = None

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> WeaviateMemory:
        """Build from ``weaviate://host:port`` (HTTP) or ``weaviate+https://[:KEY@]host:port``.
        Query options: ``grpc_port``, ``grpc_host``, ``prefix``, ``timeout``,
        ``query_maximum_results``, ``context_window``, ``operation_timeout``. Keyword
        options win over query options."""
        server = parse_memory_url(url, options)
        return cls(url=server, **options)

    def describe(self) -> str:
        scheme = "weaviate+https" if self.secure else "weaviate"
        secret = ":***@" if self._api_key else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = [f"grpc_port={self.grpc_port}"]
        if self.grpc_host != self.host:
            query.append(f"grpc_host={self.grpc_host}")
        if self.layout.prefix != "Bruno":
            query.append(f"prefix={self.layout.prefix}")
        return f"{scheme}://{secret}{host}:{self.port}?{'&'.join(query)}"

    def _redact(self, text: str) -> str:
        return hide_secrets(text, self._api_key)

    # ================================================================ errors

    def _is_timeout(self, exc: BaseException) -> bool:
        return is_timeout(exc)

    def _is_unavailable(self, exc: BaseException) -> bool:
        return is_unavailable(exc)

    def _is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    # ================================================================ lifecycle

    def _make_client(self) -> Any:
        return make_client(
            secure=self.secure,
            host=self.host,
            port=self.port,
            grpc_host=self.grpc_host,
            grpc_port=self.grpc_port,
            api_key=self._api_key,
            timeout=self.timeout,
        )

    async def _connect(self) -> None:
        store = acquire_store(
            self._location, self.layout, self._make_client, self.query_maximum_results
        )
        try:
            await store.prepare()
        except BaseException:
            await release_store(self._location, store)
            raise
        self._store = store

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
        return (await self._s.owners("conversation", [conversation_id])).get(conversation_id)

    async def _claim(self, conversation_id: str, user_id: str, enforce: bool) -> tuple[str, bool]:
        """The conversation's owner, making it ``user_id``'s if new (under the write lock),
        and whether this call claimed it."""
        owner = await self._conversation_owner(conversation_id)
        if owner is None:
            await self._s.register("conversation", [(conversation_id, user_id)])
            return user_id, True
        if enforce and owner != user_id:
            raise OwnershipError(f"conversation {conversation_id!r} belongs to another user")
        return owner, False

    # ================================================================ messages

    async def _stored_message_ids(self, ids: Sequence[str]) -> frozenset[str]:
        """The ids among ``ids`` whose message is stored. A registry row whose message is
        missing (a write interrupted between the two) does not count: it is overwritten."""
        owners = await self._s.owners("message", ids)
        return frozenset(r.id for r in await self._messages_of(owners))

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
            owner = await self._conversation_owner(conversation_id)
            if owner is not None and enforce_owner and owner != user_id:
                raise OwnershipError(f"conversation {conversation_id!r} belongs to another user")
            existing = await self._stored_message_ids([r.id for r in records])
            if records and len(existing) == len(records):
                # Nothing goes in: a new conversation is not claimed either.
                return AppendResult(owner or user_id, existing)
            claimed = False
            if owner is None:
                # The claim first: a crash after it leaves an empty conversation, never
                # messages without an owner.
                owner, claimed = await self._claim(conversation_id, user_id, enforce_owner)
            new = [r for r in records if r.id not in existing]
            if not new:
                return AppendResult(owner, existing)
            for rec in new:
                rec.seq = s.clock.next()
                rec.user_id = owner
            try:
                # Owners, then the messages: a message is never stored unregistered.
                await s.register("message", [(r.id, owner) for r in new])
                await s.insert(
                    s.layout.messages,
                    tenant_of(owner),
                    [
                        (registry_id("message", r.id), message_object(r), vector_list(r.vector))
                        for r in new
                    ],
                    new=True,
                )
            except BaseException:
                # All or nothing: what went in of this append is taken back.
                await s.unregister("message", [r.id for r in new])
                if claimed:
                    await s.unregister("conversation", [conversation_id])
                raise
        return AppendResult(owner, existing)

    async def _messages_of(self, owners: dict[str, str]) -> list[MessageRecord]:
        """The stored messages among ``{id: owner}``, read from each owner's tenant."""
        by_user: dict[str, list[str]] = {}
        for rid, owner in owners.items():
            by_user.setdefault(owner, []).append(registry_id("message", rid))
        found = await asyncio.gather(
            *(
                self._s.by_ids(self._s.layout.messages, tenant_of(u), uuids)
                for u, uuids in by_user.items()
            )
        )
        return [decode("message", o.properties) for objs in found for o in objs]

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        if not ids:
            return []
        return await self._messages_of(await self._s.owners("message", ids))

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        s = self._s
        owner = user_id
        if owner is None:
            assert conversation_id is not None
            owner = await self._conversation_owner(conversation_id)
            if owner is None:
                return []
        where = None if conversation_id is None else equal("conversation_id", conversation_id)
        if limit is None or limit > s.max_results:
            # Everything (or more than one query may return): paged, cut here.
            recs = [
                decode("message", o.properties)
                async for page in s.pages(s.layout.messages, tenant_of(owner), where, "message_id")
                for o in page
            ]
        else:
            newest = Sort.by_property("ts_us", ascending=False).by_property("seq", ascending=False)
            objs = await s.fetch(
                s.layout.messages, tenant_of(owner), where, sort=newest, limit=limit
            )
            recs = [decode("message", o.properties) for o in objs]
        recs.sort(key=lambda r: (r.ts_us, r.seq))
        return recs if limit is None else recs[-limit:]

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        s = self._s
        async with s.write_lock:
            owner = await self._conversation_owner(conversation_id)
            if owner is None:
                return 0
            tenant = tenant_of(owner)
            where = all_of(
                [
                    equal("conversation_id", conversation_id),
                    # NotEqual per role: ContainsNone needs a newer Weaviate than 1.27.
                    *(Filter.by_property("role").not_equal(exact(r)) for r in sorted(keep_roles)),
                ]
            )
            gone = [
                unexact(o.properties["message_id"])
                async for page in s.pages(s.layout.messages, tenant, where, "message_id", props=())
                for o in page
            ]
            # Messages, then their registry rows, then sessions, the conversation last: an
            # interrupted deletion leaves a conversation with fewer messages, and deleting
            # again completes it.
            await s.delete_ids(s.layout.messages, tenant, [registry_id("message", m) for m in gone])
            await s.unregister("message", gone)
            if not keep_roles:
                sessions = [
                    unexact(o.properties["session_id"])
                    async for page in s.pages(
                        s.layout.sessions,
                        tenant,
                        equal("conversation_id", conversation_id),
                        "session_id",
                        props=(),
                    )
                    for o in page
                ]
                await s.delete_ids(
                    s.layout.sessions, tenant, [registry_id("session", i) for i in sessions]
                )
                await s.unregister("session", sessions)
                await s.unregister("conversation", [conversation_id])
        return len(gone)

    # ================================================================ memories

    async def _put_memory(self, record: MemoryRecord) -> None:
        s = self._s
        async with s.write_lock:
            owner = (await s.owners("memory", [record.id])).get(record.id)
            if owner is not None and owner != record.user_id:
                raise memory_taken(record.id)
            if owner is None:
                await s.register("memory", [(record.id, record.user_id)])
            try:
                # One object: the entry and its vector (or none) are replaced together.
                await s.insert(
                    s.layout.memories,
                    tenant_of(record.user_id),
                    [
                        (
                            registry_id("memory", record.id),
                            {**memory_object(record)},
                            vector_list(record.vector),
                        )
                    ],
                    new=False,
                )
            except BaseException:
                if owner is None:
                    await s.unregister("memory", [record.id])
                raise

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        s = self._s
        owner = (await s.owners("memory", [memory_id])).get(memory_id)
        if owner is None:
            return None
        found = await s.by_ids(
            s.layout.memories, tenant_of(owner), [registry_id("memory", memory_id)]
        )
        return decode("memory", found[0].properties) if found else None

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        s = self._s
        if flt.user_id is not None:
            users = [flt.user_id]
        else:
            users = sorted(set((await s.owners("memory", list(flt.ids))).values()))
        order = (
            Sort.by_property("importance", ascending=False)
            .by_property("created_us", ascending=False)
            .by_property("memory_id", ascending=True)
        )

        async def matching(user: str) -> list[Any]:
            tenant, where = tenant_of(user), memory_where(flt)
            if flt.limit <= s.max_results:
                return await s.fetch(s.layout.memories, tenant, where, sort=order, limit=flt.limit)
            pages = s.pages(s.layout.memories, tenant, where, "memory_id")
            return [o async for page in pages for o in page]

        found = await asyncio.gather(*(matching(u) for u in users))
        recs = [decode("memory", o.properties) for objs in found for o in objs]
        recs = [r for r in recs if flt.user_id is None or r.user_id == flt.user_id]
        recs.sort(key=memory_sort_key)
        return recs[: flt.limit]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        s = self._s
        async with s.write_lock:
            owner = (await s.owners("memory", [memory_id])).get(memory_id)
            if owner is None:
                return False
            if user_id is not None and owner != user_id:
                raise memory_taken(memory_id)
            gone = await s.delete_ids(
                s.layout.memories, tenant_of(owner), [registry_id("memory", memory_id)]
            )
            await s.unregister("memory", [memory_id])
        return gone > 0

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        s = self._s
        async with s.write_lock:
            held = (await s.owners("session", [record.session_id])).get(record.session_id)
            if held is not None and held != record.user_id:
                raise session_taken(record.session_id)
            _owner, claimed = await self._claim(record.conversation_id, record.user_id, True)
            try:
                if held is None:
                    await s.register("session", [(record.session_id, record.user_id)])
                await s.insert(
                    s.layout.sessions,
                    tenant_of(record.user_id),
                    [(registry_id("session", record.session_id), session_object(record), None)],
                    new=False,
                )
            except BaseException:
                if held is None:
                    await s.unregister("session", [record.session_id])
                if claimed:
                    await s.unregister("conversation", [record.conversation_id])
                raise

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        s = self._s
        owner = (await s.owners("session", [session_id])).get(session_id)
        if owner is None:
            return None
        found = await s.by_ids(
            s.layout.sessions, tenant_of(owner), [registry_id("session", session_id)]
        )
        return decode("session", found[0].properties) if found else None

    # ================================================================ whole-store operations

    async def _users_tenants(self, name: str, user_id: str | None) -> list[str]:
        if user_id is not None:
            return [tenant_of(user_id)]
        return await self._s.tenants(name)

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        s = self._s
        if kind == "conversations":
            where = all_of(
                [
                    equal("kind", "conversation"),
                    None if user_id is None else equal("user_id", user_id),
                ]
            )
            async for page in s.pages(s.layout.registry, None, where, "key", props=("user_id",)):
                yield [
                    (unexact(o.properties["key"]), unexact(o.properties["user_id"])) for o in page
                ]
        elif kind == "messages":
            for tenant in await self._users_tenants(s.layout.messages, user_id):
                groups: dict[str, list[MessageRecord]] = {}
                async for page in s.pages(s.layout.messages, tenant, None, "message_id"):
                    for o in page:
                        rec = decode("message", o.properties)
                        groups.setdefault(rec.conversation_id, []).append(rec)
                ordered = (
                    rec
                    for conv in sorted(groups)
                    for rec in sorted(groups[conv], key=lambda r: (r.ts_us, r.seq))
                )
                async for batch in batches(ordered):
                    yield batch
        else:
            name, key, one = (
                (s.layout.memories, "memory_id", "memory")
                if kind == "memories"
                else (s.layout.sessions, "session_id", "session")
            )
            for tenant in await self._users_tenants(name, user_id):
                async for page in s.pages(name, tenant, None, key):
                    yield [decode(one, o.properties) for o in page]  # type: ignore[arg-type]

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        s = self._s
        tenant = tenant_of(user_id)
        async with s.write_lock:
            counts = {
                "messages": await self._count(s.layout.messages, tenant, "message_id"),
                "conversations": len(await self._collect("conversations", user_id)),
                "sessions": await self._count(s.layout.sessions, tenant, "session_id"),
                "memories": await self._count(s.layout.memories, tenant, "memory_id"),
            }
            # The tenants first (the data, its vectors and its BM25 index go with them),
            # then the registry rows: an interrupted run leaves ids still registered to the
            # user, which forgetting again removes.
            for name in s.layout.tenanted():
                tenants = s.collection(name).tenants
                if await tenants.get_by_name(tenant) is not None:
                    await tenants.remove([tenant])
            await s.delete_where(s.layout.registry, None, equal("user_id", user_id))
        return counts

    async def _count(self, name: str, tenant: str, key: str) -> int:
        return sum([len(page) async for page in self._s.pages(name, tenant, None, key, props=())])

    # ================================================================ search

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        # The query as the shared analyzer's terms, matched against the stored terms.
        query = index_text(request.query)
        if not query:
            return []
        s, tenant = self._s, tenant_of(request.user_id)
        conversation = (
            None
            if request.conversation_id is None
            else equal("conversation_id", request.conversation_id)
        )
        limit = min(request.limit, s.max_results)  # one query returns at most that many
        asked: list[Any] = []
        if "message" in request.kinds:
            asked.append(s.bm25(s.layout.messages, tenant, query, conversation, limit))
        if "memory" in request.kinds:
            where = memory_where(request.memories(), request.conversation_id)
            asked.append(s.bm25(s.layout.memories, tenant, query, where, limit))
        return self._hits(request, await asyncio.gather(*asked), lambda o: float(o.metadata.score))

    def _hits(
        self, request: SearchRequest, answers: Sequence[list[Any]], score: Any
    ) -> list[SearchHit]:
        hits: list[SearchHit] = []
        for i, objs in enumerate(answers):
            is_message = "message" in request.kinds and i == 0
            for o in objs:
                if is_message:
                    hits.append(
                        SearchHit("message", score(o), message=decode("message", o.properties))
                    )
                else:
                    hits.append(
                        SearchHit("memory", score(o), memory=decode("memory", o.properties))
                    )
        hits.sort(key=hit_order)
        return hits[: request.limit]

    # ================================================================ vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        s = self._s
        if space is None:
            return await self._read_space()
        async with s.write_lock:
            recorded = await self._read_space()
            if replace or recorded is None:
                if replace:
                    # Vectors first, then the record: an interrupted switch leaves the old
                    # space recorded and some vectors dropped; reindex again.
                    await self._drop_vectors()
                await s.insert(
                    s.layout.registry,
                    None,
                    [
                        (
                            registry_id("meta", _SPACE),
                            {
                                "kind": exact("meta"),
                                "key": exact(_SPACE),
                                "user_id": exact(""),
                                "model": exact(space.model),
                                "dimension": space.dimension,
                            },
                            None,
                        )
                    ],
                    new=False,
                )
                recorded = await self._read_space()
        assert recorded is not None
        return recorded

    async def _read_space(self) -> VectorSpace | None:
        s = self._s
        found = await s.by_ids(
            s.layout.registry, None, [registry_id("meta", _SPACE)], props=("model", "dimension")
        )
        if not found:
            return None
        return VectorSpace(
            unexact(found[0].properties["model"]), int(found[0].properties["dimension"])
        )

    async def _drop_vectors(self) -> None:
        """Write every message and memory object again without its vector."""
        s = self._s
        for name, key in ((s.layout.messages, "message_id"), (s.layout.memories, "memory_id")):
            for tenant in await s.tenants(name):
                async for page in s.pages(name, tenant, None, key, props=_all_props(s, name)):
                    await s.insert(
                        name,
                        tenant,
                        [(str(o.uuid), dict(o.properties), None) for o in page],
                        new=False,
                    )

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        s = self._s
        name = s.layout.messages if kind == "message" else s.layout.memories
        async with s.write_lock:
            for part in chunks(list(items), s.page):
                vectors = {rid: vec for rid, vec in part}
                owners = await s.owners(kind, list(vectors))
                by_user: dict[str, list[str]] = {}
                for rid, owner in owners.items():
                    by_user.setdefault(owner, []).append(rid)
                for owner, rids in by_user.items():
                    tenant = tenant_of(owner)
                    objs = await s.by_ids(
                        name,
                        tenant,
                        [registry_id(kind, r) for r in rids],
                        props=_all_props(s, name),
                    )
                    key = "message_id" if kind == "message" else "memory_id"
                    await s.insert(
                        name,
                        tenant,
                        [
                            (
                                str(o.uuid),
                                dict(o.properties),
                                vector_list(vectors[unexact(o.properties[key])]),
                            )
                            for o in objs
                        ],
                        new=False,
                    )

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        s, tenant = self._s, tenant_of(request.user_id)
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        conversation = (
            None
            if request.conversation_id is None
            else equal("conversation_id", request.conversation_id)
        )
        # The filters are part of each query: Weaviate ranks only the objects that pass them,
        # inside the user's tenant.
        limit = min(request.limit, s.max_results)
        asked: list[Any] = []
        if "message" in request.kinds:
            asked.append(s.near(s.layout.messages, tenant, query, conversation, limit))
        if "memory" in request.kinds:
            where = memory_where(request.memories(), request.conversation_id)
            asked.append(s.near(s.layout.memories, tenant, query, where, limit))
        # Weaviate's cosine distance is 1 - cosine similarity.
        return self._hits(
            request, await asyncio.gather(*asked), lambda o: 1.0 - float(o.metadata.distance)
        )


def _all_props(s: Store, name: str) -> tuple[str, ...]:
    """Every property of the collection's objects (an object is rewritten whole)."""
    props = s.layout.definitions()[name]["properties"]
    return tuple(p.name for p in props)
