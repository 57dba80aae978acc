"""``KeyValueMemory``: the storage primitives over a :class:`~.kv.KeyValueStore`.

An engine subclass supplies the store (its client calls) and a :class:`KeyLayout` (its key
names); this class keeps conversations, sessions and memory entries in them, correctly:
appends are atomic, ownership is claimed with ``add``, message ids are idempotent, windows
are ordered by ``(timestamp, arrival)``.

* conversation: the owner and a *generation*, claimed with ``add``. A cleared conversation
  gets a new generation when it is used again, so nothing written under the old one (by a
  writer racing the clear) can reappear.
* index (per conversation and generation): a :class:`~.kv.SortedLog` of ``ts_us role id``;
  its slots are the arrival numbers (``seq``).
* message: created with ``add`` after its index entry: this write is the commit point. An
  index entry without its message (a writer that died) is skipped.
* session, memory entry: the codec's rows; the user's lists of conversations, sessions and
  entries; the list of entries that expire.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from ...base import MemoryBackend
from ...errors import BackendError, BackendUnavailableError
from ...limits import Record
from ...models import MemoryFilter, MemoryRecord, MessageRecord, SessionRecord, memory_sort_key
from ...primitives import (
    AppendResult,
    ExportKind,
    conversation_taken,
    memory_taken,
    same_session,
    session_taken,
)
from .codec import MEMORIES, MESSAGES, SESSIONS
from .kv import ChunkedLog, KeyValueStore, SortedLog, dumps

__all__ = ["Conversation", "KeyLayout", "KeyValueMemory", "message_value"]

_INDEX_CHUNK = 4096  # index entries per chunk (about 80 bytes each)
_LIST_CHUNK = 512  # ids per chunk of a user's lists (at most about 1 KB each)

# Values are the kit codec's rows (JSON arrays). Messages keep the order they were first
# written in, with the conversation's generation after the fields.
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


def message_value(rec: MessageRecord, owner: str, gen: str, seq: int) -> list[Any]:
    """A message's stored value."""
    value = _MESSAGE.row(rec)
    value[2], value[10] = owner, seq
    value.append(gen)
    return value


@dataclass(slots=True)
class Conversation:
    """A claimed conversation."""

    conversation_id: str
    owner: str
    gen: str


class KeyLayout(Protocol):
    """An engine's key names."""

    def record(self, kind: str, record_id: str) -> str:
        """A record's key: kind ``c`` conversation, ``m`` message, ``s`` session, ``e`` entry."""
        ...

    def index(self, conversation_id: str, gen: str) -> str:
        """The base key of a conversation generation's message index."""
        ...

    def user_list(self, user_id: str, kind: str) -> str:
        """The base key of the user's list of kind ``c``, ``s`` or ``e``."""
        ...

    def expiring(self) -> str:
        """The base key of the list of entries that expire."""
        ...


class KeyValueMemory(MemoryBackend):
    """The storage primitives over a key-value store; see the module docstring.

    A subclass sets :attr:`keys` and :attr:`ttl`, and ``_store`` when it connects (``None``
    once closed).
    """

    keys: KeyLayout
    ttl: int | None = None  # seconds data lives after its last write, or None
    _store: KeyValueStore | None = None

    @property
    def store(self) -> KeyValueStore:
        """The connected store."""
        if self._store is None:
            raise BackendUnavailableError(
                "the memory is shut down", backend=self.backend_name, operation="connect"
            )
        return self._store

    def _index(self, conv: Conversation) -> SortedLog:
        return SortedLog(self.store, self.keys.index(conv.conversation_id, conv.gen), _INDEX_CHUNK)

    def _user_list(self, user_id: str, kind: str) -> ChunkedLog:
        return ChunkedLog(self.store, self.keys.user_list(user_id, kind), _LIST_CHUNK)

    async def _listed(self, user_id: str, kind: str) -> list[list[Any]]:
        """The stored values (kind ``c``, ``s`` or ``e``) the user's list names that are
        still the user's."""
        listed = [json.loads(e) for _, e in await self._user_list(user_id, kind).read()]
        keys = [self.keys.record(kind, i) for i in dict.fromkeys(listed)]
        owner = "o" if kind == "c" else 1  # a conversation's value is a dict, others rows
        return [v for v in (await self.store.get_values(keys)).values() if v[owner] == user_id]

    async def _drop_listed(self, user_id: str, kind: str, ids: set[str]) -> None:
        if ids:
            await self._user_list(user_id, kind).remove(lambda _s, e: json.loads(e) in ids)

    async def _collect(self, kind: ExportKind, user_id: str | None) -> list[Any]:
        """The user's records of ``kind``, as the user's lists name them."""
        if user_id is None:
            return await super()._collect(kind, user_id)
        if kind == "conversations":
            return [(c.conversation_id, c.owner) for c in await self._user_conversations(user_id)]
        if kind == "messages":
            convs = await self._user_conversations(user_id)
            return [r for w in await asyncio.gather(*map(self._window, convs)) for r in w]
        codec, listed = (SESSIONS, "s") if kind == "sessions" else (MEMORIES, "e")
        return [codec.from_row(v) for v in await self._listed(user_id, listed)]

    # ================================================================ conversations

    async def _conversations(self, ids: Sequence[str]) -> dict[str, Conversation]:
        keys = {self.keys.record("c", c): c for c in ids}
        metas = await self.store.get_values(list(keys))
        return {keys[k]: Conversation(keys[k], m["o"], m["g"]) for k, m in metas.items()}

    async def _conversation(self, conversation_id: str) -> Conversation | None:
        return (await self._conversations([conversation_id])).get(conversation_id)

    async def _user_conversations(self, user_id: str) -> list[Conversation]:
        return [Conversation(m["c"], m["o"], m["g"]) for m in await self._listed(user_id, "c")]

    async def _claim(
        self,
        conversation_id: str,
        user_id: str,
        *,
        enforce: bool,
        operation: str,
        create: bool = True,
    ) -> Conversation | None:
        """The conversation, created for ``user_id`` if new (``add`` makes the claim atomic);
        ``None`` if new and not ``create``."""
        for _ in range(16):
            conv = await self._conversation(conversation_id)
            if conv is None:
                if not create:
                    return None
                # Listed first: a listing whose claim is lost is ignored by readers, while
                # a claim that is never listed would hide the conversation from its owner.
                await self._user_list(user_id, "c").append([json.dumps(conversation_id)])
                gen = secrets.token_hex(4)
                value = {"c": conversation_id, "o": user_id, "g": gen, "t": time.time_ns() // 1000}
                key = self.keys.record("c", conversation_id)
                if await self.store.put_value(key, value, create=True):
                    return Conversation(conversation_id, user_id, gen)
                continue
            if enforce and conv.owner != user_id:
                raise conversation_taken(
                    conversation_id, backend=self.backend_name, operation=operation
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

    async def _refresh(self, conv: Conversation, user_id: str) -> None:
        """With a ttl, a write keeps the conversation and the user's lists alive."""
        if not self.ttl:
            return
        await self.store.touch(self.keys.record("c", conv.conversation_id))
        for kind in ("c", "s", "e"):
            await self._user_list(user_id, kind).touch()
        await self._index(conv).touch()

    # ================================================================ messages

    def _record_size(self, record: Record) -> int:
        # Messages are the values max_message_bytes bounds, as encoded; nothing else is.
        if isinstance(record, MessageRecord):
            return len(dumps(message_value(record, "", "", 0)))
        return 0

    async def _load_messages(self, ids: Sequence[str]) -> dict[str, list[Any]]:
        """Raw message values by id (present ones only)."""
        keys = {self.keys.record("m", i): i for i in ids}
        return {keys[k]: v for k, v in (await self.store.get_values(list(keys))).items()}

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
                        self.keys.record("m", rec.id),
                        message_value(rec, conv.owner, conv.gen, slot),
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
                    stale.append(self.keys.record("m", rec.id))
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

    async def _window(self, conv: Conversation, limit: int | None = None) -> list[MessageRecord]:
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
        self, conv: Conversation, entries: list[tuple[int, int, str]], limit: int | None
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
                if v is None or v[1] != conv.conversation_id or v[11] != conv.gen or v[10] != slot:
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
        merged = sorted((r for w in windows for r in w), key=lambda r: (r.ts_us, r.seq))
        return merged if limit is None else merged[-limit:]

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        conv = await self._conversation(conversation_id)
        if conv is None:
            return 0
        live = await self._window(conv)
        if keep_roles:
            doomed = {r.id for r in live if r.role not in keep_roles}
            # Only the doomed ids' entries go: an entry without its message yet may belong
            # to a write in flight, whose message is about to land.
            await self._index(conv).remove(lambda _slot, entry: entry.rpartition(" ")[2] in doomed)
            await self.store.delete_values([self.keys.record("m", i) for i in doomed])
            return len(doomed)
        # The claim goes first: from here on the conversation is new to every writer.
        await self.store.delete(self.keys.record("c", conversation_id))
        await self.store.delete_values([self.keys.record("m", r.id) for r in live])
        await self._index(conv).destroy()
        sessions = await self._collect("sessions", conv.owner)
        gone = {s.session_id for s in sessions if s.conversation_id == conversation_id}
        await self.store.delete_values([self.keys.record("s", s) for s in gone])
        await self._drop_listed(conv.owner, "s", gone)
        await self._drop_listed(conv.owner, "c", {conversation_id})
        return len(live)

    # ================================================================ memories

    async def _put_memory(self, record: MemoryRecord) -> None:
        key = self.keys.record("e", record.id)
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

    def _expiring(self) -> ChunkedLog:
        return ChunkedLog(self.store, self.keys.expiring(), _INDEX_CHUNK)

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        value = await self.store.get_value(self.keys.record("e", memory_id))
        return MEMORIES.from_row(value) if value is not None else None

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        found = [r for r in await self._collect("memories", flt.user_id) if flt.matches(r)]
        found.sort(key=memory_sort_key)
        return found[: flt.limit]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        def allowed(value: list[Any]) -> bool:
            return user_id is None or value[1] == user_id

        # A delete with the CAS token of the value checked: atomic on the server.
        value = await self.store.delete_value_if(self.keys.record("e", memory_id), allowed)
        if value is None:
            return False
        if not allowed(value):
            raise memory_taken(memory_id)
        await self._drop_listed(value[1], "e", {memory_id})
        return True

    async def _purge_expired(self, now_us: int) -> int:
        log = self._expiring()
        listed = list(dict.fromkeys(json.loads(e) for _, e in await log.read()))
        values = await self.store.get_values([self.keys.record("e", m) for m in listed])
        records = [MEMORIES.from_row(v) for v in values.values()]
        doomed = {r.id for r in records if r.expires_us is not None and r.expires_us <= now_us}
        for memory_id in doomed:
            await self._delete_memory(memory_id)
        alive = {r.id for r in records if r.id not in doomed and r.expires_us is not None}
        await log.remove(lambda _s, e: json.loads(e) not in alive)
        return len(doomed)

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        key = self.keys.record("s", record.session_id)
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
        value = await self.store.get_value(self.keys.record("s", session_id))
        return SESSIONS.from_row(value) if value is not None else None

    async def _replace_session(self, record: SessionRecord, expected: SessionRecord) -> bool:
        # cas against the value checked: a deletion or another write since makes it fail.
        return await self.store.put_value_if(
            self.keys.record("s", record.session_id),
            SESSIONS.row(record),
            lambda value: same_session(SESSIONS.from_row(value), expected),
            create=False,
        )

    # ================================================================ statistics

    async def _statistics(self, user_id: str) -> dict[str, object]:
        convs = await self._user_conversations(user_id)
        msgs = [r for w in await asyncio.gather(*map(self._window, convs)) for r in w]
        sessions = await self._collect("sessions", user_id)
        return {
            "messages": len(msgs),
            "conversations": len(convs),
            "sessions": len(sessions),
            "active_sessions": sum(1 for s in sessions if s.is_active),
            "memories": len(await self._collect("memories", user_id)),
            "messages_by_role": dict(Counter(r.role for r in msgs)),
            "first_message_us": min((r.ts_us for r in msgs), default=None),
            "last_message_us": max((r.ts_us for r in msgs), default=None),
        }
