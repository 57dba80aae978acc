"""``PineconeMemory``: memory in one Pinecone index, through the official ``pinecone`` SDK's
asyncio client (``AsyncPinecone`` / ``AsyncIndex``).

Each user's records live in a namespace of their own, so isolation holds by construction
and forgetting a user deletes a namespace. Where everything goes is in :mod:`.layout`; how
this process reads its own writes in :mod:`.store`. Keyword search is BM25 computed in the
process over the user's records (the shared default), vector search is Pinecone's query with
the filters inside it.

Pinecone has no conditional write. Every write to an index from one event loop runs under one
lock (shared by the memories of the loop on that index), so ownership of ids and
conversations is decided exactly there; two processes racing for one new id can both win
(docs/backends/pinecone.md says what to do about it).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Literal

import httpx
from pinecone import AsyncIndex, AsyncPinecone
from pinecone.errors.exceptions import (
    PineconeConnectionError,
    PineconeTimeoutError,
    RateLimitError,
    ServiceError,
)

from ...base import MemoryBackend
from ...capabilities import DATABASE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import BackendError, InvalidArgumentError, OwnershipError
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
    memory_sort_key,
)
from ...primitives import (
    AppendResult,
    ExportKind,
    VectorPrimitives,
    memory_taken,
    session_taken,
)
from ...semantic import DEFAULT_MODEL
from ...url import MemoryURL, check_header_secret, hide_secrets
from ..kit.batches import EXPORT_BATCH, chunks
from ..kit.codec import MEMORIES, MESSAGES, SESSIONS
from ..kit.hits import ranked_hits
from ..kit.kv import hash_id
from ..kit.settings import positive_seconds
from .layout import (
    conversation_prefix,
    encode,
    join_value,
    message_id,
    message_order,
    meta_namespace,
    part_ids,
    user_namespace,
)
from .store import PineconeStore, Record, shared_state

__all__ = ["PineconeMemory"]

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_NEVER = 1 << 53  # "expires" of an entry that never expires (exact as a float)
_URL_OPTIONS: dict[str, type] = {
    "namespace": str,
    "host": str,
    "timeout": float,
    "visibility_timeout": float,
    "context_window": int,
    "operation_timeout": float,
}
Kind = Literal["message", "memory"]


class PineconeMemory(MemoryBackend, VectorPrimitives):
    """Memory in a Pinecone index (serverless, dense, metric ``cosine``).

    Args:
        embedding_model: ``"default"`` (the local all-MiniLM-L6-v2), ``None`` (keyword search
            only) or any embedding model (``docs/embeddings.md``). Its dimension may be at
            most the index's: shorter vectors are padded with zeros, which keeps cosine
            similarity unchanged.
        index: the index's name (it must exist: create it with metric ``cosine``).
        api_key: the API key (default: ``PINECONE_API_KEY``). Never shown in ``repr()``,
            ``describe()`` or errors.
        host: the index's data-plane host; without it, the host is looked up by name.
        namespace: start of the store's namespace names, so that stores share an index.
        timeout: seconds for one HTTP request.
        visibility_timeout: longest wait for Pinecone to show this process's writes before a
            vector query, or a namespace deletion.
        **options: see :class:`~bruno_memstore.base.MemoryBackend`.
    """

    backend_name: ClassVar[str] = "pinecone"
    loop_bound = True  # the asyncio client's sessions
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {Capability.VECTORS}

    def __init__(
        self,
        embedding_model: Any = DEFAULT_MODEL,
        index: str = "bruno-memory",
        *,
        api_key: str | None = None,
        host: str | None = None,
        namespace: str = "bruno",
        timeout: float = 30.0,
        visibility_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(embedding_model=embedding_model, **options)
        if not isinstance(index, str) or not re.fullmatch(r"[a-z0-9-]{1,45}", index):
            raise InvalidArgumentError("index", "1 to 45 lowercase letters, digits or '-'")
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise InvalidArgumentError("namespace", "1 to 64 letters, digits, '_' or '-'")
        if host is not None and (not isinstance(host, str) or not host.strip()):
            raise InvalidArgumentError("host", "expected the index's host, e.g. https://...")
        self.api_key = check_header_secret("api_key", api_key)
        self.index_name = index
        self.host = host
        self.prefix = namespace
        self.timeout = positive_seconds("timeout", timeout)
        self.visibility_timeout = positive_seconds("visibility_timeout", visibility_timeout)
        self._meta = meta_namespace(namespace)
        self._s: PineconeStore | None = None
        self._client: AsyncPinecone | None = None

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> PineconeMemory:
        """``pinecone://[:API_KEY@]index[?namespace=...&host=...]``."""
        if url.driver is not None or url.port is not None or url.path not in ("", "/"):
            raise InvalidArgumentError("url", "expected pinecone://index?namespace=...")
        merged = url.key_options(options, _URL_OPTIONS, example="pinecone://:KEY@index")
        if url.host:
            merged.setdefault("index", url.host)
        return cls(**merged)

    def describe(self) -> str:
        where = f"pinecone://{self.index_name}?namespace={self.prefix}"
        return f"{where}&host={self.host}" if self.host else where

    def _redact(self, text: str) -> str:
        return hide_secrets(text, self.api_key)

    # ================================================================ errors and lifecycle

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, (RateLimitError, ServiceError, PineconeConnectionError))

    def _is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, (TimeoutError, PineconeTimeoutError, httpx.TimeoutException))

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, (OSError, PineconeConnectionError, httpx.TransportError))

    async def _connect(self) -> None:
        kwargs: dict[str, Any] = {"timeout": self.timeout}
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key
        index: AsyncIndex | None = None
        try:
            if self.host is not None:
                index = AsyncIndex(host=self.host, **kwargs)
            else:  # one describe request to Pinecone's control plane
                self._client = AsyncPinecone(**kwargs)
                index = await self._client.index(name=self.index_name)
            stats = await index.describe_index_stats()
            if not stats.dimension or stats.metric not in (None, "cosine"):
                raise BackendError(
                    f"index {self.index_name!r} must be dense with metric cosine "
                    f"(it has dimension {stats.dimension}, metric {stats.metric})",
                    backend=self.backend_name,
                    operation="connect",
                )
        except BaseException:
            if index is not None:
                await index.close()
            if self._client is not None:
                await self._client.close()
                self._client = None
            raise
        host = self.host or index.host
        self._s = PineconeStore(
            index, shared_state(host), int(stats.dimension), self.visibility_timeout
        )

    async def _close(self) -> None:
        store, self._s = self._s, None
        client, self._client = self._client, None
        if store is not None:
            await store.index.close()
        if client is not None:
            await client.close()

    @property
    def _store(self) -> PineconeStore:
        assert self._s is not None
        return self._s

    # ================================================================ values

    def _values(self, vector: Any) -> list[float]:
        """A record's vector as the index holds it: padded with zeros, or the placeholder."""
        if vector is None:
            return self._store.placeholder
        values = [float(x) for x in vector]
        return values + [0.0] * (self._store.dimension - len(values))

    def _records(
        self, rid: str, row: list[Any], fields: dict[str, Any], vector: Any = None
    ) -> list[tuple[str, list[float], dict[str, Any]]]:
        try:
            encoded = encode(rid, row, fields)
        except ValueError as exc:
            raise InvalidArgumentError("record", f"too large for Pinecone: {exc}") from None
        values = self._values(vector)
        placeholder = self._store.placeholder
        return [(i, values if i == rid else placeholder, meta) for i, meta in encoded]

    async def _load(self, namespace: str, ids: Sequence[str]) -> dict[str, tuple[Any, Record]]:
        """The rows stored under these ids (with their head records); missing left out."""
        heads = await self._store.fetch(namespace, ids)
        wanted = [p for rid, rec in heads.items() for p in part_ids(rid, rec["metadata"])]
        parts = await self._store.fetch(namespace, wanted) if wanted else {}
        out: dict[str, tuple[Any, Record]] = {}
        for rid, rec in heads.items():
            mine = {p: parts[p]["metadata"] for p in part_ids(rid, rec["metadata"]) if p in parts}
            row = join_value(rec["metadata"], mine)
            if row is not None:
                out[rid] = (row, rec)
        return out

    async def _pointers(self, kind: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``id -> pointer metadata`` of the global ids that have one."""
        keyed = {f"{kind}#{hash_id(i)}": i for i in ids}
        found = await self._store.fetch(self._meta, list(keyed))
        return {keyed[k]: rec["metadata"] for k, rec in found.items()}

    async def _register(self, user_id: str) -> None:
        ns = user_namespace(self.prefix, user_id)
        if ns in self._store.shared.users:
            return
        await self._store.upsert(
            self._meta, [(f"u#{hash_id(user_id)}", self._store.placeholder, {"user": user_id})]
        )
        self._store.shared.users.add(ns)

    async def _users(self, user_id: str | None) -> list[str]:
        if user_id is not None:
            return [user_id]
        ids = await self._store.list_ids(self._meta, "u#")
        found = await self._store.fetch(self._meta, ids)
        return sorted(rec["metadata"]["user"] for rec in found.values())

    async def _write(
        self, namespace: str, rows: list[tuple[str, list[float], dict[str, Any]]]
    ) -> None:
        await self._store.upsert(namespace, rows)

    @staticmethod
    def _with_parts(heads: dict[str, Record]) -> list[str]:
        """The ids of records and of their parts."""
        return [p for rid, rec in heads.items() for p in (rid, *part_ids(rid, rec["metadata"]))]

    # ================================================================ conversations and messages

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        found = await self._pointers("c", [conversation_id])
        return found[conversation_id]["user"] if found else None

    async def _claim(
        self, conversation_id: str, user_id: str, enforce_owner: bool, *, create: bool = True
    ) -> str:
        owner = await self._conversation_owner(conversation_id)
        if owner is not None:
            if owner != user_id and enforce_owner:
                raise OwnershipError(
                    f"conversation {conversation_id!r} belongs to another user; "
                    "it cannot be written to by this user"
                )
            return owner
        if create:
            await self._register(user_id)
            key = f"c#{hash_id(conversation_id)}"
            fields = {"user": user_id, "conv": conversation_id}
            await self._write(self._meta, [(key, self._store.placeholder, fields)])
            await self._write(
                user_namespace(self.prefix, user_id),
                [(key, self._store.placeholder, {"k": "c", "conv": conversation_id})],
            )
        return user_id

    async def _stored(self, kind: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Pointers of the ids whose record exists (a pointer to nothing, left by a write cut
        short, reads as absent)."""
        pointers = await self._pointers(kind, ids)
        by_ns: dict[str, list[str]] = defaultdict(list)
        for rid, meta in pointers.items():
            by_ns[user_namespace(self.prefix, meta["user"])].append(
                meta.get("rid", f"{kind}#{hash_id(rid)}")
            )
        present: set[str] = set()
        for ns, rids in by_ns.items():
            present.update(await self._store.fetch(ns, rids))
        return {
            rid: meta
            for rid, meta in pointers.items()
            if meta.get("rid", f"{kind}#{hash_id(rid)}") in present
        }

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        async with self._store.shared.lock():
            pointers = await self._pointers("m", [r.id for r in records])
            stored = await self._stored("m", list(pointers)) if pointers else {}
            existing = frozenset(stored)
            if records and len(existing) == len(records):
                owner = await self._claim(conversation_id, user_id, enforce_owner, create=False)
                return AppendResult(owner, existing)
            owner = await self._claim(conversation_id, user_id, enforce_owner)
            ns = user_namespace(self.prefix, owner)
            marks: list[tuple[str, list[float], dict[str, Any]]] = []
            rows: list[tuple[str, list[float], dict[str, Any]]] = []
            for rec in records:
                if rec.id in existing:
                    continue
                # A write of this message cut short left its pointer: keep its record id
                # when it names this conversation and owner (a retry), else take a new one.
                old = pointers.get(rec.id)
                rid = old["rid"] if old and old["user"] == owner else None
                if rid is None or not rid.startswith(conversation_prefix(conversation_id)):
                    rec.seq = self._store.shared.next_seq()
                    rid = message_id(conversation_id, rec.ts_us, rec.seq)
                else:
                    rec.seq = message_order(rid)[1]
                rec.user_id = owner
                fields = {"k": "m", "conv": conversation_id, "vec": rec.vector is not None}
                rows += self._records(rid, MESSAGES.row(rec), fields, rec.vector)
                marks.append(
                    (f"m#{hash_id(rec.id)}", self._store.placeholder, {"user": owner, "rid": rid})
                )
            await self._write(self._meta, marks)  # the ids are taken first
            await self._write(ns, rows)
            return AppendResult(owner, existing)

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        pointers = await self._pointers("m", ids)
        by_ns: dict[str, list[str]] = defaultdict(list)
        for meta in pointers.values():
            by_ns[user_namespace(self.prefix, meta["user"])].append(meta["rid"])
        out: list[MessageRecord] = []
        for ns, rids in by_ns.items():
            for row, _rec in (await self._load(ns, rids)).values():
                out.append(MESSAGES.from_row(row))
        wanted = set(ids)
        return [m for m in out if m.id in wanted]

    async def _message_ids(self, namespace: str, conversation_id: str | None) -> list[str]:
        prefix = conversation_prefix(conversation_id) if conversation_id is not None else "m#"
        ids = await self._store.list_ids(namespace, prefix)
        return sorted(ids, key=message_order)

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        if conversation_id is not None:
            owner = await self._conversation_owner(conversation_id)
            if owner is None or user_id not in (None, owner):
                return []
            user_id = owner
        assert user_id is not None
        ns = user_namespace(self.prefix, user_id)
        ids = await self._message_ids(ns, conversation_id)
        if limit is not None:
            ids = ids[-limit:]
        loaded = await self._load(ns, ids)
        return [MESSAGES.from_row(loaded[i][0]) for i in ids if i in loaded]

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        async with self._store.shared.lock():
            owner = await self._conversation_owner(conversation_id)
            if owner is None:
                return 0
            ns = user_namespace(self.prefix, owner)
            loaded = await self._load(ns, await self._message_ids(ns, conversation_id))
            messages = {rid: (MESSAGES.from_row(row), rec) for rid, (row, rec) in loaded.items()}
            gone = {rid: rec for rid, (m, rec) in messages.items() if m.role not in keep_roles}
            pointers = [f"m#{hash_id(messages[rid][0].id)}" for rid in gone]
            records = self._with_parts(gone)
            if not keep_roles:  # the conversation goes, with its sessions
                sessions = [
                    f"s#{hash_id(s.session_id)}"
                    for s in await self._collect_sessions(owner)
                    if s.conversation_id == conversation_id
                ]
                key = f"c#{hash_id(conversation_id)}"
                records += [*self._with_parts(await self._store.fetch(ns, sessions)), key]
                pointers += [*sessions, key]
            await self._store.delete(ns, records)  # records first: pointers left read as absent
            await self._store.delete(self._meta, pointers)
            return len(gone)

    # ================================================================ memory entries

    def _memory_fields(self, rec: MemoryRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "k": "e",
            "vec": rec.vector is not None,
            "mtype": rec.memory_type,
            "conf": rec.confidence,
            "imp": rec.importance,
            "exp": _NEVER if rec.expires_us is None else rec.expires_us,
        }
        if rec.category is not None:
            fields["cat"] = rec.category
        if rec.tags:
            fields["tags"] = list(rec.tags)
        if rec.conversation_id is not None:
            fields["conv"] = rec.conversation_id
        return fields

    async def _put_memory(self, record: MemoryRecord) -> None:
        async with self._store.shared.lock():
            old = await self._pointers("e", [record.id])
            if old and old[record.id]["user"] != record.user_id:
                raise memory_taken(record.id)
            ns = user_namespace(self.prefix, record.user_id)
            rid = f"e#{hash_id(record.id)}"
            fields = self._memory_fields(record)
            rows = self._records(rid, MEMORIES.row(record), fields, record.vector)
            if not old:
                await self._register(record.user_id)
                pointer = (rid, self._store.placeholder, {"user": record.user_id})
                await self._write(self._meta, [pointer])
            await self._replace(ns, rid, rows)

    async def _replace(
        self, namespace: str, rid: str, rows: list[tuple[str, list[float], dict[str, Any]]]
    ) -> None:
        """Write a value (parts, then head), then delete the parts of the value it replaced."""
        before = await self._store.fetch(namespace, [rid])
        await self._write(namespace, rows)
        if rid in before:
            await self._store.delete(namespace, part_ids(rid, before[rid]["metadata"]))

    async def _memories_of(self, user_id: str, ids: Sequence[str] | None) -> list[MemoryRecord]:
        ns = user_namespace(self.prefix, user_id)
        rids = (
            [f"e#{hash_id(i)}" for i in ids]
            if ids is not None
            else await self._store.list_ids(ns, "e#")
        )
        out: list[MemoryRecord] = []
        for batch in chunks(rids, 1000):
            out += [MEMORIES.from_row(row) for row, _rec in (await self._load(ns, batch)).values()]
        return out

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        found: list[MemoryRecord] = []
        if flt.ids:
            pointers = await self._pointers("e", flt.ids)
            owners: dict[str, list[str]] = defaultdict(list)
            for mid, meta in pointers.items():
                owners[meta["user"]].append(mid)
            for owner, mids in owners.items():
                if flt.user_id in (None, owner):
                    found += await self._memories_of(owner, mids)
        else:
            for user in await self._users(flt.user_id):
                found += await self._memories_of(user, None)
        found = [r for r in found if flt.matches(r)]
        found.sort(key=memory_sort_key)
        return found[: flt.limit]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        async with self._store.shared.lock():
            old = await self._pointers("e", [memory_id])
            if not old:
                return False
            owner = old[memory_id]["user"]
            if user_id is not None and owner != user_id:
                raise memory_taken(memory_id)
            ns = user_namespace(self.prefix, owner)
            rid = f"e#{hash_id(memory_id)}"
            heads = await self._store.fetch(ns, [rid])
            await self._store.delete(ns, self._with_parts(heads))
            await self._store.delete(self._meta, [rid])
            return bool(heads)

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        async with self._store.shared.lock():
            old = await self._pointers("s", [record.session_id])
            if old and old[record.session_id]["user"] != record.user_id:
                raise session_taken(record.session_id)
            await self._claim(record.conversation_id, record.user_id, True)
            ns = user_namespace(self.prefix, record.user_id)
            rid = f"s#{hash_id(record.session_id)}"
            if not old:
                await self._write(
                    self._meta, [(rid, self._store.placeholder, {"user": record.user_id})]
                )
            fields = {"k": "s", "conv": record.conversation_id}
            await self._replace(ns, rid, self._records(rid, SESSIONS.row(record), fields))

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        old = await self._pointers("s", [session_id])
        if not old:
            return None
        ns = user_namespace(self.prefix, old[session_id]["user"])
        loaded = await self._load(ns, [f"s#{hash_id(session_id)}"])
        return next((SESSIONS.from_row(row) for row, _rec in loaded.values()), None)

    async def _collect_sessions(self, user_id: str) -> list[SessionRecord]:
        ns = user_namespace(self.prefix, user_id)
        loaded = await self._load(ns, await self._store.list_ids(ns, "s#"))
        return [SESSIONS.from_row(row) for row, _rec in loaded.values()]

    # ================================================================ listing and forgetting

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        for user in await self._users(user_id):
            ns = user_namespace(self.prefix, user)
            if kind == "conversations":
                found = await self._store.fetch(ns, await self._store.list_ids(ns, "c#"))
                convs = sorted(rec["metadata"]["conv"] for rec in found.values())
                for batch in chunks(convs, EXPORT_BATCH):
                    yield [(c, user) for c in batch]
            elif kind == "messages":
                ids = await self._message_ids(ns, None)
                ids.sort(key=lambda rid: (rid.split("#")[1], message_order(rid)))
                for batch in chunks(ids, EXPORT_BATCH):
                    loaded = await self._load(ns, batch)
                    yield [MESSAGES.from_row(loaded[i][0]) for i in batch if i in loaded]
            elif kind == "memories":
                for batch in chunks(await self._memories_of(user, None), EXPORT_BATCH):
                    yield list(batch)
            else:
                for batch in chunks(await self._collect_sessions(user), EXPORT_BATCH):
                    yield list(batch)

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        async with self._store.shared.lock():
            ns = user_namespace(self.prefix, user_id)
            messages = await self._collect("messages", user_id)
            convs = [c for c, _owner in await self._collect("conversations", user_id)]
            sessions = await self._collect_sessions(user_id)
            memories = await self._memories_of(user_id, None)
            pointers = [
                *(f"m#{hash_id(m.id)}" for m in messages),
                *(f"c#{hash_id(c)}" for c in convs),
                *(f"s#{hash_id(s.session_id)}" for s in sessions),
                *(f"e#{hash_id(e.id)}" for e in memories),
            ]
            await self._store.delete(self._meta, pointers)
            await self._store.drop(ns)
            await self._store.delete(self._meta, [f"u#{hash_id(user_id)}"])
            self._store.shared.users.discard(ns)
            return {
                "messages": len(messages),
                "conversations": len(convs),
                "sessions": len(sessions),
                "memories": len(memories),
            }

    # ================================================================ vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is not None and space.dimension > self._store.dimension:
            raise BackendError(
                f"the model {space.model!r} makes {space.dimension}-dimensional vectors but "
                f"index {self.index_name!r} holds {self._store.dimension}: use an index of at "
                "least that dimension",
                backend=self.backend_name,
                operation="claim vector space",
            )
        async with self._store.shared.lock():
            found = await self._store.fetch(self._meta, ["space"])
            stored = (
                VectorSpace(found["space"]["metadata"]["model"], found["space"]["metadata"]["dim"])
                if found
                else None
            )
            if space is None or (stored is not None and not replace):
                return stored
            if replace:
                await self._drop_vectors()
            fields = {"model": space.model, "dim": space.dimension}
            await self._write(self._meta, [("space", self._store.placeholder, fields)])
            return space

    async def _drop_vectors(self) -> None:
        """Every record of the store back to the placeholder vector."""
        for user in await self._users(None):
            ns = user_namespace(self.prefix, user)
            for prefix in ("m#", "e#"):
                for batch in chunks(await self._store.list_ids(ns, prefix), 100):
                    found = await self._store.fetch(ns, batch)
                    rows = [
                        (rid, self._store.placeholder, {**rec["metadata"], "vec": False})
                        for rid, rec in found.items()
                        if rec["metadata"].get("vec")
                    ]
                    await self._write(ns, rows)

    async def _put_vectors(self, kind: Kind, items: Sequence[Any]) -> None:
        async with self._store.shared.lock():
            kind_key = "m" if kind == "message" else "e"
            pointers = await self._pointers(kind_key, [i for i, _ in items])
            by_ns: dict[str, list[tuple[str, Any]]] = defaultdict(list)
            for rid, vector in items:
                meta = pointers.get(rid)
                if meta is not None:
                    head = meta.get("rid", f"e#{hash_id(rid)}")
                    by_ns[user_namespace(self.prefix, meta["user"])].append((head, vector))
            for ns, pairs in by_ns.items():
                found = await self._store.fetch(ns, [h for h, _v in pairs])
                rows = [
                    (head, self._values(vector), {**found[head]["metadata"], "vec": True})
                    for head, vector in pairs
                    if head in found
                ]
                await self._write(ns, rows)

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        ns = user_namespace(self.prefix, request.user_id)
        either: list[dict[str, Any]] = []
        if "message" in request.kinds:
            either.append(_all({"k": "m"}, _conversation(request)))
        if "memory" in request.kinds:
            either.append(_all({"k": "e"}, _conversation(request), *_memory_filter(request)))
        if not either:
            return []
        flt = _all({"vec": True}, either[0] if len(either) == 1 else {"$or": either})
        found = await self._store.query(ns, self._values(vector), request.limit, flt)
        loaded = await self._load(ns, [rid for rid, _score in found])
        messages: dict[str, MessageRecord] = {}
        memories: dict[str, MemoryRecord] = {}
        scored: list[tuple[str, str, float]] = []
        for rid, score in found:
            if rid not in loaded:
                continue  # deleted since Pinecone indexed it
            row = loaded[rid][0]
            if rid.startswith("m#"):
                msg = MESSAGES.from_row(row)
                messages[msg.id] = msg
                scored.append(("message", msg.id, score))
            else:
                mem = MEMORIES.from_row(row)
                memories[mem.id] = mem
                scored.append(("memory", mem.id, score))
        return ranked_hits(scored, messages, memories)


def _all(*conditions: dict[str, Any] | None) -> dict[str, Any]:
    kept = [c for c in conditions if c]
    return kept[0] if len(kept) == 1 else {"$and": kept}


def _conversation(request: SearchRequest) -> dict[str, Any] | None:
    return {"conv": request.conversation_id} if request.conversation_id is not None else None


def _memory_filter(request: SearchRequest) -> list[dict[str, Any]]:
    flt = request.memories()
    out: list[dict[str, Any]] = []
    if flt.memory_types:
        out.append({"mtype": {"$in": list(flt.memory_types)}})
    if flt.categories:
        out.append({"cat": {"$in": list(flt.categories)}})
    if flt.tags:
        out.append({"tags": {"$in": list(flt.tags)}})
    if flt.min_confidence:
        out.append({"conf": {"$gte": flt.min_confidence}})
    if flt.min_importance:
        out.append({"imp": {"$gte": flt.min_importance}})
    if not flt.include_expired:
        out.append({"exp": {"$gt": flt.now_us}})
    return out
