"""Durability: acknowledged writes survive a shutdown and a new instance."""

from __future__ import annotations

from typing import ClassVar

import pytest
from bruno_core.models.memory import MemoryQuery
from bruno_core.models.message import MessageRole

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import ConflictError, OwnershipError
from ..builders import at, make_memory_entry, make_message, new_conversation_id, new_user_id
from ..harness import ConformanceBase, requires
from .roundtrip import assert_same_message

__all__ = ["DurabilitySuite"]


@requires(Capability.DURABLE)
class DurabilitySuite(ConformanceBase):
    """Store, shut down, reopen with ``reopen_memory``, read everything back."""

    suite_search_mode: ClassVar[str] = "keyword"

    async def test_everything_survives_a_restart(self, memory: MemoryBackend) -> None:
        uid, a, b = new_user_id(), new_conversation_id(), new_conversation_id()
        in_a = [
            make_message("first 😀 '; DROP TABLE x;--", timestamp=at(0), metadata={"k": [1, 2]}),
            make_message("second", role=MessageRole.ASSISTANT, timestamp=at(1)),
        ]
        in_b = [make_message("elsewhere", timestamp=at(2))]
        await memory.store_messages(in_a, conversation_id=a, user_id=uid)
        await memory.store_messages(in_b, conversation_id=b, user_id=uid)
        active = await memory.create_session(uid, {"device": "kitchen"})
        ended = await memory.create_session(uid)
        await memory.end_session(ended.session_id)
        entry = None
        if memory.supports(Capability.MEMORIES):
            entry = make_memory_entry(uid, "durable fact about lighthouses", tags=["sea"])
            await memory.store_memory(entry)
        stats_before = await memory.get_statistics(uid)

        reopened = await self.reopen(memory)
        window = await reopened.retrieve_context(uid, conversation_id=a, limit=10)
        assert len(window) == 2
        for got, want in zip(window, in_a, strict=True):
            assert_same_message(got, want, a)
        assert [m.id for m in await reopened.retrieve_context(uid, limit=10)] == [
            m.id for m in [*in_a, *in_b]
        ]
        assert await reopened.get_session(active.session_id) == active
        got_ended = await reopened.get_session(ended.session_id)
        assert got_ended is not None and not got_ended.is_active
        assert (await reopened.get_context(uid)).session.session_id == active.session_id
        assert await reopened.get_statistics(uid) == stats_before
        if entry is not None:
            assert await reopened.retrieve_memories(MemoryQuery(user_id=uid)) == [entry]
        if reopened.supports(Capability.FULL_TEXT):
            found = await reopened.search_messages("elsewhere", user_id=uid)
            assert [m.id for m in found] == [in_b[0].id]
            if entry is not None:
                assert len(await reopened.search_memories(uid, "lighthouses")) == 1

    async def test_identity_and_ownership_survive_a_restart(self, memory: MemoryBackend) -> None:
        uid, other, conv = new_user_id(), new_user_id(), new_conversation_id()
        msg = make_message("stored once", timestamp=at(0))
        await memory.store_message(msg, uid, conv)
        reopened = await self.reopen(memory)
        await reopened.store_message(msg, uid, conv)
        assert len(await reopened.retrieve_messages(conv)) == 1
        with pytest.raises(ConflictError):
            await reopened.store_message(msg.model_copy(update={"content": "changed"}), uid, conv)
        with pytest.raises(OwnershipError):
            await reopened.store_message(make_message("intruder"), other, conv)
        assert [m.content for m in await reopened.retrieve_messages(conv)] == ["stored once"]

    async def test_arrival_order_continues_after_a_restart(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        tie = at(5)
        before = [make_message(f"before {i}", timestamp=tie) for i in range(3)]
        for m in before:
            await memory.store_message(m, uid, conv)
        reopened = await self.reopen(memory)
        after = [make_message(f"after {i}", timestamp=tie) for i in range(3)]
        for m in after:
            await reopened.store_message(m, uid, conv)
        got = await reopened.retrieve_context(uid, conversation_id=conv, limit=10)
        assert [m.id for m in got] == [m.id for m in [*before, *after]]

    async def test_deletions_survive_a_restart(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        await memory.store_message(make_message("to be deleted pangolin"), uid, conv)
        await memory.clear_conversation(uid, conv)
        reopened = await self.reopen(memory)
        assert await reopened.retrieve_messages(conv) == []
        assert (await reopened.get_statistics(uid))["total_messages"] == 0
        if reopened.supports(Capability.FULL_TEXT):
            assert await reopened.search_messages("pangolin", user_id=uid) == []
