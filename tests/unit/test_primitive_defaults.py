"""The derived operations' defaults are complete: a backend of only the abstract primitives,
over plain dicts, passes the shipped conformance suite."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any, ClassVar

import numpy as np
import pytest

from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import SEARCHABLE_STORE, Capability
from bruno_memstore.embeddings.adapter import VectorSpace
from bruno_memstore.errors import OwnershipError
from bruno_memstore.models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
    hit_order,
    memory_sort_key,
    utcnow,
)
from bruno_memstore.primitives import (
    AppendResult,
    ExportKind,
    StoragePrimitives,
    VectorPrimitives,
    memory_taken,
    session_taken,
)
from bruno_memstore.testing import MemoryConformance, make_memory_entry, new_user_id


def _abstract(cls: type) -> set[str]:
    return {name for name in dir(cls) if getattr(getattr(cls, name), "__isabstractmethod__", False)}


class DictMemory(MemoryBackend, VectorPrimitives):
    """The fourteen abstract primitives over dicts, and nothing else.

    No primitive awaits, so each is atomic on the event loop.
    """

    backend_name: ClassVar[str] = "dict"
    capabilities: ClassVar[frozenset[Capability]] = SEARCHABLE_STORE | {Capability.VECTORS}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.owners: dict[str, str] = {}
        self.messages: dict[str, MessageRecord] = {}
        self.memories: dict[str, MemoryRecord] = {}
        self.sessions: dict[str, SessionRecord] = {}
        self.space: VectorSpace | None = None
        self.seq = itertools.count(1)

    def _claim(self, conversation_id: str, user_id: str, enforce: bool, create: bool) -> str:
        owner = self.owners.get(conversation_id)
        if owner is None:
            if create:
                self.owners[conversation_id] = user_id
            return user_id
        if enforce and owner != user_id:
            raise OwnershipError(f"conversation {conversation_id!r} belongs to another user")
        return owner

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        return self.owners.get(conversation_id)

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        existing = frozenset(r.id for r in records if r.id in self.messages)
        create = not records or len(existing) < len(records)
        owner = self._claim(conversation_id, user_id, enforce_owner, create)
        for rec in records:
            if rec.id not in existing:
                rec.seq, rec.user_id = next(self.seq), owner
                self.messages[rec.id] = rec
        return AppendResult(owner, existing)

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        return [self.messages[i] for i in ids if i in self.messages]

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        found = sorted(
            (
                r
                for r in self.messages.values()
                if conversation_id in (None, r.conversation_id)
                and user_id in (None, self.owners.get(r.conversation_id))
            ),
            key=lambda r: (r.ts_us, r.seq),
        )
        return found if limit is None else found[-limit:]

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        gone = [
            i
            for i, r in self.messages.items()
            if r.conversation_id == conversation_id and r.role not in keep_roles
        ]
        for i in gone:
            del self.messages[i]
        if not keep_roles:
            self.owners.pop(conversation_id, None)
            for sid in [
                s for s, r in self.sessions.items() if r.conversation_id == conversation_id
            ]:
                del self.sessions[sid]
        return len(gone)

    async def _put_memory(self, record: MemoryRecord) -> None:
        old = self.memories.get(record.id)
        if old is not None and old.user_id != record.user_id:
            raise memory_taken(record.id)
        self.memories[record.id] = record

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        return sorted((r for r in self.memories.values() if flt.matches(r)), key=memory_sort_key)[
            : flt.limit
        ]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        rec = self.memories.get(memory_id)
        if rec is None:
            return False
        if user_id is not None and rec.user_id != user_id:
            raise memory_taken(memory_id)
        del self.memories[memory_id]
        return True

    async def _put_session(self, record: SessionRecord) -> None:
        old = self.sessions.get(record.session_id)
        if old is not None and old.user_id != record.user_id:
            raise session_taken(record.session_id)
        self._claim(record.conversation_id, record.user_id, True, True)
        self.sessions[record.session_id] = record

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        return self.sessions.get(session_id)

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        items: list[Any]
        if kind == "conversations":
            items = [(c, o) for c, o in self.owners.items() if user_id in (None, o)]
        elif kind == "messages":
            items = sorted(
                (r for r in self.messages.values() if user_id in (None, r.user_id)),
                key=lambda r: (r.conversation_id, r.ts_us, r.seq),
            )
        elif kind == "memories":
            items = [r for r in self.memories.values() if user_id in (None, r.user_id)]
        else:
            items = [r for r in self.sessions.values() if user_id in (None, r.user_id)]
        for start in range(0, len(items), 7):  # small pages: the defaults must walk them
            yield items[start : start + 7]

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is not None and (replace or self.space is None):
            if replace:
                for rec in [*self.messages.values(), *self.memories.values()]:
                    rec.vector = None
            self.space = space
        return self.space

    async def _put_vectors(self, kind: str, items: Sequence[Any]) -> None:
        table: dict[str, Any] = self.messages if kind == "message" else self.memories
        for rid, vector in items:
            if rid in table:
                table[rid].vector = vector

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        query = np.asarray(vector, dtype=np.float32)
        flt = request.memories()
        hits: list[SearchHit] = []
        if "message" in request.kinds:
            for rec in self.messages.values():
                mine = rec.user_id == request.user_id and request.admits_message(rec)
                if mine and rec.vector is not None:
                    score = float(np.dot(rec.vector, query))
                    hits.append(SearchHit("message", score, message=rec))
        if "memory" in request.kinds:
            for mem in self.memories.values():
                if mem.vector is not None and request.admits_memory(mem, flt):
                    hits.append(SearchHit("memory", float(np.dot(mem.vector, query)), memory=mem))
        return sorted(hits, key=hit_order)[: request.limit]


def test_the_primitives_are_fourteen() -> None:
    assert len(_abstract(StoragePrimitives)) == 11
    assert len(_abstract(VectorPrimitives)) == 3
    assert _abstract(DictMemory) == set()


class TestDictMemory(MemoryConformance):
    """The whole shipped suite over the defaults."""

    capabilities = DictMemory.capabilities

    async def make_memory(self) -> MemoryBackend:
        return DictMemory()


@pytest.mark.asyncio
async def test_get_memory_reads_any_user_and_expired_entries() -> None:
    memory = DictMemory(embedding_model=None)
    uid = new_user_id()
    entry = make_memory_entry(uid, "an old note", expires_at=utcnow() - timedelta(minutes=1))
    await memory.store_memory(entry)
    rec = await memory._get_memory(str(entry.id))
    assert rec is not None and rec.user_id == uid
    assert await memory._get_memory("missing") is None
    assert await memory.purge_expired() == 1
    assert await memory._get_memory(str(entry.id)) is None
