"""Export: ``export_batches`` returns everything stored for a user, in order."""

from __future__ import annotations

import pytest
from bruno_core.models.message import MessageRole

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import InvalidArgumentError
from ...models import MemoryRecord, MessageRecord, SessionRecord, record_to_message
from ..builders import (
    at,
    collect_export,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from ..harness import ConformanceBase, requires
from .roundtrip import assert_same_message

__all__ = ["ExportSuite"]


@requires(Capability.LISTING)
class ExportSuite(ConformanceBase):
    """Every record of every kind, exactly once, as stored."""

    async def test_export_returns_everything(self, memory: MemoryBackend) -> None:
        uid, a, b = new_user_id(), new_conversation_id(), new_conversation_id()
        in_a = [
            make_message("a0", timestamp=at(3)),
            make_message("a1", role=MessageRole.ASSISTANT, timestamp=at(1), metadata={"k": 1}),
            make_message("a2", timestamp=at(1)),
        ]
        in_b = [make_message("b0", timestamp=at(2))]
        await memory.store_messages(in_a, conversation_id=a, user_id=uid)
        await memory.store_messages(in_b, conversation_id=b, user_id=uid)
        session = await memory.create_session(uid, {"via": "export"})
        entries = []
        if memory.supports(Capability.MEMORIES):
            entries = [make_memory_entry(uid, f"fact {i}") for i in range(3)]
            for e in entries:
                await memory.store_memory(e)

        messages = await collect_export(memory, "messages", uid)
        assert all(isinstance(r, MessageRecord) for r in messages)
        by_conv: dict[str, list[str]] = {}
        for rec in messages:
            by_conv.setdefault(rec.conversation_id, []).append(rec.id)
        # Within a conversation, (timestamp, arrival) order.
        assert by_conv == {
            a: [str(in_a[1].id), str(in_a[2].id), str(in_a[0].id)],
            b: [str(in_b[0].id)],
        }
        stored = {str(m.id): m for m in [*in_a, *in_b]}
        for rec in messages:
            assert_same_message(record_to_message(rec), stored[rec.id], rec.conversation_id)

        conversations = await collect_export(memory, "conversations", uid)
        assert sorted(conversations) == sorted([(a, uid), (b, uid), (session.conversation_id, uid)])

        sessions = await collect_export(memory, "sessions", uid)
        assert all(isinstance(r, SessionRecord) for r in sessions)
        assert [r.session_id for r in sessions] == [session.session_id]

        memories = await collect_export(memory, "memories", uid)
        assert all(isinstance(r, MemoryRecord) for r in memories)
        assert sorted(r.id for r in memories) == sorted(str(e.id) for e in entries)

    async def test_export_of_an_unknown_user_is_empty(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        for kind in ("messages", "conversations", "sessions", "memories"):
            assert await collect_export(memory, kind, uid) == []

    async def test_export_refuses_unknown_kinds(self, memory: MemoryBackend) -> None:
        with pytest.raises(InvalidArgumentError) as info:
            await collect_export(memory, "everything", new_user_id())
        assert info.value.argument == "kind"

    async def test_large_export_comes_whole(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msgs = [make_message(f"bulk {i}", timestamp=at(i)) for i in range(1200)]
        for start in range(0, len(msgs), 300):
            await memory.store_messages(
                msgs[start : start + 300], conversation_id=conv, user_id=uid
            )
        exported = await collect_export(memory, "messages", uid)
        assert [r.id for r in exported] == [str(m.id) for m in msgs]
