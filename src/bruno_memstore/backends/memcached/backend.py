"""``MemcachedMemory``: a cache-grade memory in memcached, through ``aiomcache``.

It keeps conversations, sessions and memory entries, and what it keeps it keeps
correctly: appends are atomic, ownership is claimed with ``add``, message ids are
idempotent, windows are ordered by ``(timestamp, arrival)``. It is not durable (a restart
or an eviction loses data), cannot search and cannot list users; those operations raise
``CapabilityError`` -- pair it with a durable store in ``HybridMemory``.

Layout (``P`` is the prefix, ``h(x)`` a 22-character hash of ``x``):

* ``P:c:h(conv)``: the conversation's owner and *generation* (claimed with ``add``). A
  cleared conversation gets a new generation when it is used again, so nothing written
  under the old one (by a writer racing the clear) can reappear.
* ``P:c:h(conv):gen:i``: the message index, a :class:`ChunkedLog` of ``ts_us role id``;
  its slot numbers are the arrival numbers (``seq``).
* ``P:m:h(id)``: one message, created with ``add`` after its index entry: this write is
  the commit point. An index entry without its message (a writer that died) is skipped.
* ``P:s:h(id)``, ``P:e:h(id)``: sessions and memory entries; ``P:u:h(user):c|s|e``: the
  user's conversations, sessions and memory entries; ``P:x``: entries that expire.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, NoReturn

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import (
    BackendError,
    BackendUnavailableError,
    CapabilityError,
    InvalidArgumentError,
    OwnershipError,
)
from ...limits import Limits, Record
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
    memory_sort_key,
)
from ...primitives import AppendResult, ExportKind, memory_taken, session_taken
from ...url import MemoryURL, redact_url
from ..kit.codec import MEMORIES, MESSAGES, SESSIONS
from .client import HardenedClient
from .store import ChunkedLog, IndexLog, Store, dumps, hash_id

__all__ = ["MemcachedMemory"]

_DEFAULT_URL = "memcached://127.0.0.1:21211"
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_INDEX_CHUNK = 4096  # index entries per chunk (about 80 bytes each)
_LIST_CHUNK = 512  # ids per chunk of a user's lists (at most about 1 KB each)
_HYBRID_HINT = (
    "; memcached is a cache: compose it with a durable backend, e.g. "
    "HybridMemory(cache=MemcachedMemory(...), persistent=SQLiteMemory())"
)


@dataclass(slots=True)
class _Conversation:
    conversation_id: str
    owner: str
    gen: str


def _now_us() -> int:
    return int(time.time() * 1_000_000)


# Stored values are the kit codec's rows (JSON arrays). Messages keep the order they were
# first written in, with the conversation's generation after the fields.
_MESSAGE = MESSAGES.ordered(
    (
        "id",
        "conversation_id",
        "user_id",
        "role",
        "message_type",
        "timestamp",
        "ts_us",
        "metadata",
        "parent_id",
        "content",
        "seq",
    )
)


def _message_value(rec: MessageRecord, owner: str, gen: str, seq: int) -> list[Any]:
    value = _MESSAGE.row(rec)
    value[2], value[10] = owner, seq
    value.append(gen)
    return value


def _order(rec: MessageRecord) -> tuple[int, int, str]:
    return (rec.ts_us, rec.seq, rec.conversation_id)


class MemcachedMemory(MemoryBackend):
    """A cache-grade memory in memcached: messages, sessions, memory entries, expiry.

    Args:
        url: ``memcached://host[:port][?option=value...]``; the options below may be
            given in the URL too (keyword arguments win).
        prefix: namespace of every key, so that several memories share one memcached.
        ttl: seconds after its last write that data expires (``None``: kept until
            memcached evicts it). A write refreshes the conversation it touches.
        pool_size: most open connections.
        connect_timeout: seconds to wait for the server when connecting.
        max_message_bytes: largest encoded message accepted (larger ones raise
            ``InvalidArgumentError`` before anything is written). Values above memcached's
            1 MB item limit are split into parts.
        **options: see :class:`~bruno_memstore.base.MemoryBackend` (``context_window``,
            ``operation_timeout``, default 10 seconds, and ``retry``).

    Raises:
        MissingDependencyError: ``aiomcache`` is not installed.
        InvalidArgumentError: a malformed URL or option.
    """

    backend_name: ClassVar[str] = "memcached"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.MESSAGES, Capability.SESSIONS, Capability.MEMORIES, Capability.TTL}
    )
    _URL_OPTIONS: ClassVar[dict[str, type]] = {
        "prefix": str,
        "ttl": int,
        "pool_size": int,
        "connect_timeout": float,
        "max_message_bytes": int,
        "operation_timeout": float,
        "context_window": int,
    }

    def __init__(
        self,
        url: str = _DEFAULT_URL,
        *,
        prefix: str | None = None,
        ttl: int | None = None,
        **options: Any,
    ) -> None:
        parsed = MemoryURL.parse(url)
        if parsed.scheme != "memcached":
            raise InvalidArgumentError("url", f"expected memcached://, got {parsed}")
        parsed.check_options(set(self._URL_OPTIONS))
        merged: dict[str, Any] = {}
        for name, kind in self._URL_OPTIONS.items():
            value = parsed.option(name, kind)
            if value is not None:
                merged[name] = value
        if prefix is not None:
            merged["prefix"] = prefix
        if ttl is not None:
            merged["ttl"] = ttl
        merged.update(options)
        prefix = merged.pop("prefix", "bruno")
        ttl = merged.pop("ttl", None)
        pool_size = merged.pop("pool_size", 8)
        connect_timeout = merged.pop("connect_timeout", 5.0)
        max_bytes = merged.pop("max_message_bytes", 16 * 1024 * 1024)
        merged.setdefault("operation_timeout", 10.0)
        super().__init__(**merged)
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise InvalidArgumentError("prefix", "1 to 64 letters, digits, '_', '.' or '-'")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
            raise InvalidArgumentError("ttl", "must be a positive number of seconds, or None")
        for name, value in (("pool_size", pool_size), ("max_message_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(name, "must be a positive int")
        if not isinstance(connect_timeout, (int, float)) or connect_timeout <= 0:
            raise InvalidArgumentError("connect_timeout", "must be a positive number")
        if parsed.path not in ("", "/"):
            raise InvalidArgumentError("url", "memcached URLs have no path")
        if parsed.username or parsed.password is not None:
            # Silently ignored, a password would only end up in logs.
            raise InvalidArgumentError(
                "url", "memcached takes no user or password: memcached://host:port"
            )
        self._url = parsed
        self._host = parsed.host or "127.0.0.1"
        self._port = parsed.port or 11211
        self.prefix = prefix
        self.ttl = ttl
        self._pool_size = pool_size
        self._connect_timeout = float(connect_timeout)
        self._max_bytes = max_bytes
        self.limits = Limits(
            max_record_bytes=max_bytes, size_limit=f"max_message_bytes={max_bytes}"
        )
        self._client: HardenedClient | None = None
        self._store: Store | None = None

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> MemcachedMemory:
        """Build from a parsed ``memcached://`` URL."""
        return cls(url.raw, **options)

    def describe(self) -> str:
        return f"{redact_url(self._url.raw)} (prefix {self.prefix!r})"

    # ================================================================ errors and lifecycle

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, (ConnectionError, OSError, asyncio.IncompleteReadError)) and (
            not isinstance(exc, TimeoutError)
        )

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, (ConnectionError, OSError, asyncio.IncompleteReadError))

    async def _connect(self) -> None:
        client = HardenedClient(self._host, self._port, pool_size=self._pool_size, pool_minsize=1)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await client.version()
        except Exception as exc:
            await client.close()
            raise BackendUnavailableError(
                f"cannot reach memcached at {self.describe()} within "
                f"{self._connect_timeout:g}s: {type(exc).__name__}: {exc}",
                backend=self.backend_name,
                operation="connect",
                cause=exc,
            ) from exc
        self._client = client
        self._store = Store(client, ttl=self.ttl)

    async def _close(self) -> None:
        client, self._client, self._store = self._client, None, None
        if client is not None:
            await client.close()

    @property
    def store(self) -> Store:
        """The connected key-value layer."""
        if self._store is None:
            raise BackendUnavailableError(
                "the memory is shut down", backend=self.backend_name, operation="connect"
            )
        return self._store

    async def server_stats(self) -> dict[str, str]:
        """memcached's ``stats`` (items, memory, evictions), for monitoring."""
        await self._ensure_connected()
        assert self._client is not None
        raw = await self._client.stats()
        return {k.decode(): (v or b"").decode() for k, v in raw.items()}

    # ================================================================ keys

    def _key(self, kind: str, value: str) -> str:
        return f"{self.prefix}:{kind}:{hash_id(value)}"

    def _index(self, conv: _Conversation) -> IndexLog:
        base = f"{self._key('c', conv.conversation_id)}:{conv.gen}:i"
        return IndexLog(self.store, base, _INDEX_CHUNK)

    def _user_list(self, user_id: str, kind: str) -> ChunkedLog:
        return ChunkedLog(self.store, f"{self._key('u', user_id)}:{kind}", _LIST_CHUNK)

    def _expiring(self) -> ChunkedLog:
        return ChunkedLog(self.store, f"{self.prefix}:x", _INDEX_CHUNK)

    # ================================================================ conversations

    async def _conversation(self, conversation_id: str) -> _Conversation | None:
        meta = await self.store.get_value(self._key("c", conversation_id))
        if meta is None:
            return None
        return _Conversation(conversation_id, meta["o"], meta["g"])

    async def _conversations(self, ids: Sequence[str]) -> dict[str, _Conversation]:
        keys = {self._key("c", c): c for c in ids}
        metas = await self.store.get_values(list(keys))
        return {keys[k]: _Conversation(keys[k], m["o"], m["g"]) for k, m in metas.items()}

    async def _claim(
        self,
        conversation_id: str,
        user_id: str,
        *,
        enforce: bool,
        operation: str,
        create: bool = True,
    ) -> _Conversation | None:
        """The conversation, created for ``user_id`` if new (``add`` makes the claim atomic);
        ``None`` if new and not ``create``."""
        key = self._key("c", conversation_id)
        for _ in range(16):
            conv = await self._conversation(conversation_id)
            if conv is None:
                if not create:
                    return None
                # Listed first: a listing whose claim is lost is ignored by readers, while
                # a claim that is never listed would hide the conversation from its owner.
                await self._user_list(user_id, "c").append([json.dumps(conversation_id)])
                gen = secrets.token_hex(4)
                value = {"c": conversation_id, "o": user_id, "g": gen, "t": _now_us()}
                if await self.store.put_value(key, value, create=True):
                    return _Conversation(conversation_id, user_id, gen)
                continue
            if enforce and conv.owner != user_id:
                raise OwnershipError(
                    f"conversation {conversation_id!r} belongs to another user",
                    backend=self.backend_name,
                    operation=operation,
                )
            return conv
        raise BackendUnavailableError(  # pragma: no cover - needs a pathological race
            f"conversation {conversation_id!r} kept vanishing while being claimed",
            backend=self.backend_name,
            operation=operation,
        )

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        conv = await self._conversation(conversation_id)
        return conv.owner if conv else None

    async def _user_conversations(self, user_id: str) -> list[_Conversation]:
        listed = [json.loads(e) for _, e in await self._user_list(user_id, "c").read()]
        convs = await self._conversations(list(dict.fromkeys(listed)))
        return [c for c in convs.values() if c.owner == user_id]

    async def _refresh(self, conv: _Conversation, user_id: str) -> None:
        """With a ttl, a write keeps the conversation and the user's lists alive."""
        if not self.ttl:
            return
        await self.store.touch(self._key("c", conv.conversation_id))
        for kind in ("c", "s", "e"):
            await self._user_list(user_id, kind).touch()
        await self._index(conv).touch()

    # ================================================================ messages

    def _record_size(self, record: Record) -> int:
        # Messages are the values max_message_bytes bounds, as encoded; nothing else is.
        if isinstance(record, MessageRecord):
            return len(dumps(_message_value(record, "", "", 0)))
        return 0

    async def _load_messages(self, ids: Sequence[str]) -> dict[str, list[Any]]:
        """Raw message values by id (present ones only)."""
        keys = {self._key("m", i): i for i in ids}
        values = await self.store.get_values(list(keys))
        return {keys[k]: v for k, v in values.items()}

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        claim = partial(
            self._claim, conversation_id, user_id, enforce=enforce_owner, operation="store_message"
        )
        conv = await claim(create=not records)
        if conv is None:
            # A new conversation is claimed only if something goes in: look first (not in
            # one step with the claim; see docs/backends/memcached.md).
            found = await self._load_messages([r.id for r in records])
            if len(found) == len(records) and all(v[1] != conversation_id for v in found.values()):
                return AppendResult(user_id, frozenset(found))
            conv = await claim()
        assert conv is not None
        existing: set[str] = set()
        pending = list(records)
        for _round in range(8):
            # Index entries first, messages last: the message write (``add``) is the commit
            # point, and it refuses an id that is already stored, which is how a retry or a
            # duplicate is recognised without looking the ids up first. The refused write
            # leaves an index entry whose slot is not its message's: readers skip it.
            slots = await self._index(conv).append([f"{r.ts_us} {r.role} {r.id}" for r in pending])
            stored = await asyncio.gather(
                *(
                    self.store.put_value(
                        self._key("m", rec.id),
                        _message_value(rec, conv.owner, conv.gen, slot),
                        create=True,
                    )
                    for rec, slot in zip(pending, slots, strict=True)
                )
            )
            refused = [rec for rec, ok in zip(pending, stored, strict=True) if not ok]
            if not refused:
                break
            found = await self._load_messages([r.id for r in refused])
            pending, stale = [], []
            for rec in refused:
                old = found.get(rec.id)
                if old is None:
                    pending.append(rec)  # gone again meanwhile: write it
                elif old[1] == conversation_id and old[11] != conv.gen:
                    # Left over from before the conversation was cleared: not a message.
                    stale.append(self._key("m", rec.id))
                    pending.append(rec)
                else:
                    existing.add(rec.id)
            if not pending:
                break
            await self.store.delete_values(stale)
        else:  # pragma: no cover - needs a writer deleting the same ids in a loop
            raise BackendError(
                "message ids kept changing while being stored",
                backend=self.backend_name,
                operation="store_message",
            )
        await self._refresh(conv, conv.owner)
        return AppendResult(conv.owner, frozenset(existing))

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        values = await self._load_messages(ids)
        convs = await self._conversations(list({v[1] for v in values.values()}))
        return [
            _MESSAGE.from_row(v)
            for v in values.values()
            if v[1] in convs and convs[v[1]].gen == v[11]
        ]

    async def _window(self, conv: _Conversation, limit: int | None) -> list[MessageRecord]:
        """The conversation's newest ``limit`` live messages, oldest first."""
        index = self._index(conv)
        lines = await index.lines()
        # Lines sort as (timestamp, slot): pick the newest without parsing the rest.
        if limit is not None and len(lines) > 2 * (limit + 8):
            head = heapq.nlargest(limit + 8, lines)
        else:
            head = sorted(lines, reverse=True)
        out = await self._live(conv, [index.decode(line) for line in head], limit)
        if (limit is None or len(out) < limit) and len(head) < len(lines):
            # Dead entries crowded the head: go through everything.
            ordered = [index.decode(line) for line in sorted(lines, reverse=True)]
            out = await self._live(conv, ordered, limit)
        out.reverse()
        return out

    async def _live(
        self, conv: _Conversation, entries: list[tuple[int, int, str]], limit: int | None
    ) -> list[MessageRecord]:
        """The live messages of ``entries`` (newest first), at most ``limit``."""
        out: list[MessageRecord] = []
        pos = 0
        while pos < len(entries) and (limit is None or len(out) < limit):
            take = len(entries) if limit is None else limit - len(out) + 8
            batch = entries[pos : pos + take]
            pos += take
            values = await self._load_messages([mid for _, _, mid in batch])
            for _ts, slot, mid in batch:
                v = values.get(mid)
                # Skip entries of writers that died before their commit point, and
                # duplicates from racing writers of one id (only one slot is the message's).
                if v is None or v[1] != conv.conversation_id or v[11] != conv.gen:
                    continue
                if v[10] != slot:
                    continue
                out.append(_MESSAGE.from_row(v))
                if limit is not None and len(out) >= limit:
                    break
        return out

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        if conversation_id is not None:
            conv = await self._conversation(conversation_id)
            if conv is None or (user_id is not None and conv.owner != user_id):
                return []
            return await self._window(conv, limit)
        assert user_id is not None
        convs = await self._user_conversations(user_id)
        windows = await asyncio.gather(*(self._window(c, limit) for c in convs))
        merged = sorted((r for w in windows for r in w), key=_order)
        return merged if limit is None else merged[-limit:]

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        conv = await self._conversation(conversation_id)
        if conv is None:
            return 0
        live = await self._window(conv, None)
        if keep_roles:
            doomed = {r.id for r in live if r.role not in keep_roles}
            # Only the doomed ids' entries go: an entry without its message yet may belong
            # to a write in flight, whose message is about to land.
            await self._index(conv).remove(lambda _slot, entry: entry.rpartition(" ")[2] in doomed)
            await self.store.delete_values([self._key("m", i) for i in doomed])
            return len(doomed)
        # The claim goes first: from here on the conversation is new to every writer.
        await self.store.delete(self._key("c", conversation_id))
        await self.store.delete_values([self._key("m", r.id) for r in live])
        await self._index(conv).destroy()
        sessions = await self._user_sessions(conv.owner)
        gone = [s.session_id for s in sessions if s.conversation_id == conversation_id]
        await self.store.delete_values([self._key("s", s) for s in gone])
        await self._drop_listed(conv.owner, "s", set(gone))
        await self._drop_listed(conv.owner, "c", {conversation_id})
        return len(live)

    async def _drop_listed(self, user_id: str, kind: str, ids: set[str]) -> None:
        if ids:
            await self._user_list(user_id, kind).remove(lambda _s, e: json.loads(e) in ids)

    # ================================================================ memories

    async def _put_memory(self, record: MemoryRecord) -> None:
        key = self._key("e", record.id)
        old = await self.store.get_value(key)
        if old is not None and old[1] != record.user_id:
            raise memory_taken(record.id)
        # Listed first: a listing whose write is then refused is ignored by readers (they
        # keep the user's own entries only), while an unlisted entry would be lost.
        if old is None:
            await self._user_list(record.user_id, "e").append([json.dumps(record.id)])
        if record.expires_us is not None and (old is None or old[9] is None):
            await self._expiring().append([json.dumps(record.id)])
        # add/cas: the owner is checked against the value the write replaces.
        if not await self.store.put_value_if(
            key, MEMORIES.row(record), lambda v: v[1] == record.user_id
        ):
            raise memory_taken(record.id)
        if self.ttl:
            await self._user_list(record.user_id, "e").touch()

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        value = await self.store.get_value(self._key("e", memory_id))
        return MEMORIES.from_row(value) if value is not None else None

    async def _listed(self, user_id: str, kind: str) -> list[list[Any]]:
        """The stored values (``e`` memory entries, ``s`` sessions) the user's list names
        that are still the user's."""
        listed = [json.loads(e) for _, e in await self._user_list(user_id, kind).read()]
        values = await self.store.get_values([self._key(kind, i) for i in dict.fromkeys(listed)])
        return [v for v in values.values() if v[1] == user_id]

    async def _user_memories(self, user_id: str) -> list[MemoryRecord]:
        return [MEMORIES.from_row(v) for v in await self._listed(user_id, "e")]

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        found = [r for r in await self._user_memories(flt.user_id) if flt.matches(r)]
        found.sort(key=memory_sort_key)
        return found[: flt.limit]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        def allowed(value: list[Any]) -> bool:
            return user_id is None or value[1] == user_id

        # A meta delete with the CAS token of the value checked: atomic on the server.
        value = await self.store.delete_value_if(self._key("e", memory_id), allowed)
        if value is None:
            return False
        if not allowed(value):
            raise memory_taken(memory_id)
        await self._drop_listed(value[1], "e", {memory_id})
        return True

    async def _purge_expired(self, now_us: int) -> int:
        log = self._expiring()
        listed = list(dict.fromkeys(json.loads(e) for _, e in await log.read()))
        values = await self.store.get_values([self._key("e", m) for m in listed])
        records = [MEMORIES.from_row(v) for v in values.values()]
        doomed = {r.id for r in records if r.expires_us is not None and r.expires_us <= now_us}
        for memory_id in doomed:
            await self._delete_memory(memory_id)
        alive = {r.id for r in records if r.id not in doomed and r.expires_us is not None}
        await log.remove(lambda _s, e: json.loads(e) not in alive)
        return len(doomed)

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        key = self._key("s", record.session_id)
        held = await self.store.get_value(key)
        if held is not None and held[1] != record.user_id:
            raise session_taken(record.session_id)
        conv = await self._claim(
            record.conversation_id, record.user_id, enforce=True, operation="create_session"
        )
        assert conv is not None
        if held is None:
            await self._user_list(record.user_id, "s").append([json.dumps(record.session_id)])
        # add/cas: the owner is checked against the value the write replaces. Losing that
        # race to another user leaves the claim above (see docs/backends/memcached.md).
        if not await self.store.put_value_if(
            key, SESSIONS.row(record), lambda v: v[1] == record.user_id
        ):
            raise session_taken(record.session_id)
        await self._refresh(conv, record.user_id)

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        value = await self.store.get_value(self._key("s", session_id))
        return SESSIONS.from_row(value) if value is not None else None

    async def _user_sessions(self, user_id: str) -> list[SessionRecord]:
        return [SESSIONS.from_row(v) for v in await self._listed(user_id, "s")]

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        found = [
            rec
            for rec in await self._user_sessions(user_id)
            if (rec.is_active or not active_only) and conversation_id in (None, rec.conversation_id)
        ]
        return max(found, key=lambda rec: (rec.started_us, rec.session_id), default=None)

    # ================================================================ what a cache cannot do

    def _refuse(self, operation: str, capability: Capability) -> NoReturn:
        raise CapabilityError(
            f"MemcachedMemory does not support {capability.value!r}{_HYBRID_HINT}",
            backend=self.backend_name,
            operation=operation,
        )

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        self._refuse("search", Capability.FULL_TEXT)

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        self._refuse("forget_user", Capability.LISTING)

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        self._refuse("export", Capability.LISTING)
        yield []  # pragma: no cover - makes this an async generator

    # ================================================================ statistics

    async def _statistics(self, user_id: str) -> dict[str, object]:
        convs = await self._user_conversations(user_id)
        windows = await asyncio.gather(*(self._window(c, None) for c in convs))
        msgs = [r for w in windows for r in w]
        sessions = await self._user_sessions(user_id)
        memories = await self._user_memories(user_id)
        return {
            "messages": len(msgs),
            "conversations": len(convs),
            "sessions": len(sessions),
            "active_sessions": sum(1 for s in sessions if s.is_active),
            "memories": len(memories),
            "messages_by_role": dict(Counter(r.role for r in msgs)),
            "first_message_us": min((r.ts_us for r in msgs), default=None),
            "last_message_us": max((r.ts_us for r in msgs), default=None),
        }
