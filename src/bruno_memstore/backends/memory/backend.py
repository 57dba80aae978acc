"""``InMemoryStorage``: process memory, for tests, demos and as a cache tier.

Every primitive runs without awaiting, so each is atomic on the event loop. Nothing
survives the process (the backend does not declare ``DURABLE``).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Literal

from ...base import MemoryBackend
from ...capabilities import SEARCHABLE_STORE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import OwnershipError
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
    MessagePruning,
    PendingVectors,
    VectorPrimitives,
    memory_taken,
    same_session,
    session_taken,
)
from ..kit.batches import batches
from ..kit.hits import ranked_hits
from ..kit.keyword_index import KeywordIndex
from ..kit.vectors import VectorIndex, nearest

__all__ = ["InMemoryStorage"]


def _order(rec: MessageRecord) -> tuple[int, int]:
    return (rec.ts_us, rec.seq)


class InMemoryStorage(MemoryBackend, VectorPrimitives, PendingVectors, MessagePruning):
    """Memory in a Python process: full semantics, no durability.

    Args:
        **options: see :class:`~bruno_memstore.base.MemoryBackend`.
    """

    backend_name: ClassVar[str] = "memory"
    overlap_reads = False  # no network to wait for
    capabilities: ClassVar[frozenset[Capability]] = SEARCHABLE_STORE | {
        Capability.VECTORS,
        Capability.IN_PROCESS,
        Capability.PRUNING,
    }

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._reset()

    def describe(self) -> str:
        return "memory://"

    def _reset(self) -> None:
        self._owners: dict[str, str] = {}
        self._user_convs: dict[str, set[str]] = {}
        self._messages: dict[str, MessageRecord] = {}
        self._conv_msgs: dict[str, list[MessageRecord]] = {}
        self._memories: dict[str, MemoryRecord] = {}
        self._sessions: dict[str, SessionRecord] = {}
        self._indexes: dict[str, KeywordIndex] = {}
        self._vectors: dict[tuple[str, str], VectorIndex] = {}  # (user, kind) -> index
        self._stored_space: VectorSpace | None = None
        self._seq = itertools.count(1)
        # Messages waiting for their vectors (``vectors="deferred"``): key -> id, in key order.
        self._waiting: dict[int, str] = {}

    # ---------------------------------------------------------------- conversations

    def _claim(
        self, conversation_id: str, user_id: str, enforce: bool, *, create: bool = True
    ) -> str:
        """The conversation's owner, checked; a new one becomes ``user_id``'s if ``create``."""
        owner = self._owners.get(conversation_id)
        if owner is None:
            if not create:
                return user_id
            self._owners[conversation_id] = user_id
            self._user_convs.setdefault(user_id, set()).add(conversation_id)
            return user_id
        if enforce and owner != user_id:
            raise OwnershipError(f"conversation {conversation_id!r} belongs to another user")
        return owner

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        return self._owners.get(conversation_id)

    def _index(self, user_id: str) -> KeywordIndex:
        index = self._indexes.get(user_id)
        if index is None:
            index = self._indexes[user_id] = KeywordIndex()
        return index

    def _vector_index(self, user_id: str, kind: str) -> VectorIndex:
        index = self._vectors.get((user_id, kind))
        if index is None:
            index = self._vectors[user_id, kind] = VectorIndex()
        return index

    # ---------------------------------------------------------------- messages

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        existing = frozenset(r.id for r in records if r.id in self._messages)
        if records and len(existing) == len(records):
            # Nothing to insert: the owner is checked, but nothing is claimed.
            owner = self._claim(conversation_id, user_id, enforce_owner, create=False)
            return AppendResult(owner, existing)
        owner = self._claim(conversation_id, user_id, enforce_owner)
        window = self._conv_msgs.setdefault(conversation_id, [])
        index = self._index(owner)
        for rec in records:
            if rec.id in existing:
                continue
            rec.seq = next(self._seq)
            rec.user_id = owner
            self._messages[rec.id] = rec
            if not window or _order(window[-1]) <= _order(rec):
                window.append(rec)
            else:
                bisect.insort(window, rec, key=_order)
            index.add_message(rec)
            if rec.vector is not None:
                self._vector_index(owner, "message").put(
                    rec.id, rec.vector, conversation=conversation_id
                )
            elif self.vectors == "deferred":
                self._waiting[rec.seq] = rec.id
        return AppendResult(owner, existing)

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        return [self._messages[i] for i in ids if i in self._messages]

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        if conversation_id is not None:
            if user_id is not None and self._owners.get(conversation_id) != user_id:
                return []
            window = self._conv_msgs.get(conversation_id, [])
            return list(window if limit is None else window[-limit:])
        assert user_id is not None
        tails = [
            self._conv_msgs.get(c, [])[-limit:] if limit else self._conv_msgs.get(c, [])
            for c in self._user_convs.get(user_id, ())
        ]
        merged = list(heapq.merge(*tails, key=_order))
        return merged if limit is None else merged[-limit:]

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        window = self._conv_msgs.get(conversation_id, [])
        owner = self._owners.get(conversation_id)
        kept = [r for r in window if r.role in keep_roles]
        gone = [r for r in window if r.role not in keep_roles]
        for rec in gone:
            del self._messages[rec.id]
            self._waiting.pop(rec.seq, None)
            if owner is not None:
                self._index(owner).remove("message", rec.id)
                self._vector_index(owner, "message").remove(rec.id)
        if keep_roles:
            self._conv_msgs[conversation_id] = kept
        else:
            self._drop_conversation(conversation_id)
        return len(gone)

    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        window = self._conv_msgs.get(conversation_id, [])
        owner = self._owners.get(conversation_id)
        doomed = set(ids)
        gone = [r for r in window if r.id in doomed]
        if not gone:
            return 0
        self._conv_msgs[conversation_id] = [r for r in window if r.id not in doomed]
        for rec in gone:
            del self._messages[rec.id]
            self._waiting.pop(rec.seq, None)
            if owner is not None:
                self._index(owner).remove("message", rec.id)
                self._vector_index(owner, "message").remove(rec.id)
        return len(gone)

    def _drop_conversation(self, conversation_id: str) -> None:
        self._conv_msgs.pop(conversation_id, None)
        owner = self._owners.pop(conversation_id, None)
        if owner is not None:
            self._user_convs.get(owner, set()).discard(conversation_id)
        for sid in [s for s, r in self._sessions.items() if r.conversation_id == conversation_id]:
            del self._sessions[sid]

    # ---------------------------------------------------------------- memories

    async def _put_memory(self, record: MemoryRecord) -> None:
        # No await between the check and the write: one step for every caller.
        old = self._memories.get(record.id)
        if old is not None:
            if old.user_id != record.user_id:
                raise memory_taken(record.id)
            self._vector_index(old.user_id, "memory").remove(old.id)
        self._memories[record.id] = record
        self._index(record.user_id).add_memory(record)
        if record.vector is not None:
            self._vector_index(record.user_id, "memory").put(record.id, record.vector)

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        return self._memories.get(memory_id)

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        found = [r for r in self._memories.values() if flt.matches(r)]
        found.sort(key=memory_sort_key)
        return found[: flt.limit]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        rec = self._memories.get(memory_id)
        if rec is None:
            return False
        if user_id is not None and rec.user_id != user_id:
            raise memory_taken(memory_id)
        del self._memories[memory_id]
        self._index(rec.user_id).remove("memory", memory_id)
        self._vector_index(rec.user_id, "memory").remove(memory_id)
        return True

    # ---------------------------------------------------------------- sessions

    async def _put_session(self, record: SessionRecord) -> None:
        old = self._sessions.get(record.session_id)
        if old is not None and old.user_id != record.user_id:
            raise session_taken(record.session_id)
        self._claim(record.conversation_id, record.user_id, True)
        self._sessions[record.session_id] = record

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        return self._sessions.get(session_id)

    async def _replace_session(self, record: SessionRecord, expected: SessionRecord) -> bool:
        # One step: nothing here awaits between the check and the write.
        if not same_session(self._sessions.get(expected.session_id), expected):
            return False
        self._sessions[record.session_id] = record
        return True

    # ---------------------------------------------------------------- search

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        index = self._indexes.get(request.user_id)
        if index is None:
            return []
        return ranked_hits(index.search(request), self._messages, self._memories)

    # ---------------------------------------------------------------- vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is None:
            return self._stored_space
        if replace:
            self._vectors.clear()
            self._stored_space = space
        elif self._stored_space is None:
            self._stored_space = space
        return self._stored_space

    async def _put_vectors(self, kind: str, items: Sequence[object]) -> None:
        for rid, vec in items:  # type: ignore[misc]
            rec = self._messages.get(rid) if kind == "message" else self._memories.get(rid)
            if rec is None:
                continue
            owner = rec.user_id if kind == "memory" else self._owners.get(rec.conversation_id)
            if owner is not None:
                conv = rec.conversation_id if kind == "message" else None
                self._vector_index(owner, kind).put(rid, vec, conversation=conv)
            if kind == "message":
                self._waiting.pop(rec.seq, None)  # type: ignore[union-attr]

    async def _without_vectors(
        self, kind: Literal["message"], after: int, limit: int
    ) -> list[tuple[int, str, str]]:
        found = itertools.islice((k for k in self._waiting if k > after), limit)
        return [(k, rid, self._messages[rid].content) for k in found for rid in [self._waiting[k]]]

    async def _vector_search(self, request: SearchRequest, vector: object) -> list[SearchHit]:
        user_id = request.user_id
        found = nearest(
            request,
            vector,
            messages=self._vectors.get((user_id, "message")),
            memories=self._vectors.get((user_id, "memory")),
            memory_of=self._memories.__getitem__,
        )
        return ranked_hits(found, self._messages, self._memories)

    # ---------------------------------------------------------------- whole-store operations

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        counts = await super()._forget_user(user_id)
        self._user_convs.pop(user_id, None)
        self._indexes.pop(user_id, None)
        self._vectors.pop((user_id, "message"), None)
        self._vectors.pop((user_id, "memory"), None)
        return counts

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        items: list[object]
        if kind == "conversations":
            items = [(c, o) for c, o in self._owners.items() if user_id in (None, o)]
        elif kind == "messages":
            items = [
                r
                for c, o in list(self._owners.items())
                if user_id in (None, o)
                for r in self._conv_msgs.get(c, [])
            ]
        elif kind == "memories":
            items = [r for r in self._memories.values() if user_id in (None, r.user_id)]
        else:
            items = [r for r in self._sessions.values() if user_id in (None, r.user_id)]
        async for batch in batches(items):
            yield batch
