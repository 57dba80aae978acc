"""Ownership and isolation: one user's data never reaches another user."""

from __future__ import annotations

import pytest
from bruno_core.models.memory import MemoryQuery

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import OwnershipError
from ..builders import (
    at,
    collect_export,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from ..harness import ConformanceBase, requires

__all__ = ["IsolationSuite"]


class IsolationSuite(ConformanceBase):
    """A conversation belongs to one user; reads and writes are scoped to the user."""

    async def _alice_and_bob(self, memory: MemoryBackend) -> tuple[str, str, str, list]:
        alice, bob, conv = new_user_id(), new_user_id(), new_conversation_id()
        msgs = [make_message(f"alice secret pelican number {i}", timestamp=at(i)) for i in range(3)]
        await memory.store_messages(msgs, conversation_id=conv, user_id=alice)
        return alice, bob, conv, msgs

    async def test_claiming_creates_an_empty_conversation_of_one_owner(
        self, memory: MemoryBackend
    ) -> None:
        alice, bob, conv = new_user_id(), new_user_id(), new_conversation_id()
        await memory.claim_conversation(conv, alice)
        await memory.claim_conversation(conv, alice)  # claiming one's own again is a no-op
        with pytest.raises(OwnershipError):
            await memory.claim_conversation(conv, bob)
        with pytest.raises(OwnershipError):
            await memory.store_message(make_message("bob was here"), bob, conv)
        assert await memory.retrieve_messages(conv) == []
        await memory.store_message(make_message("alice writes"), alice, conv)
        assert len(await memory.retrieve_messages(conv)) == 1

    async def test_writing_into_anothers_conversation_is_refused(
        self, memory: MemoryBackend
    ) -> None:
        alice, bob, conv, msgs = await self._alice_and_bob(memory)
        intruder = make_message("bob was here", timestamp=at(10))
        with pytest.raises(OwnershipError):
            await memory.store_message(intruder, bob, conv)
        with pytest.raises(OwnershipError):
            await memory.store_messages([intruder], conversation_id=conv, user_id=bob)
        assert [m.id for m in await memory.retrieve_messages(conv)] == [
            m.id for m in reversed(msgs)
        ]
        assert (await memory.get_statistics(bob))["total_messages"] == 0
        assert (await memory.get_statistics(alice))["total_messages"] == 3

    async def test_reads_are_scoped_to_the_user(self, memory: MemoryBackend) -> None:
        alice, bob, conv, _ = await self._alice_and_bob(memory)
        bobs = make_message("bob's own pelican words", timestamp=at(20))
        await memory.store_message(bobs, bob, new_conversation_id())
        assert [m.id for m in await memory.retrieve_context(bob, limit=50)] == [bobs.id]
        assert await memory.retrieve_context(bob, conversation_id=conv) == []
        stats = await memory.get_statistics(bob)
        assert stats["total_messages"] == 1
        assert stats["conversations"] == 1
        assert len(await memory.retrieve_context(alice, limit=50)) == 3

    async def test_get_context_refuses_anothers_conversation(self, memory: MemoryBackend) -> None:
        alice, bob, conv, _ = await self._alice_and_bob(memory)
        with pytest.raises(OwnershipError):
            await memory.get_context(bob, conv)
        session = await memory.create_session(alice)
        with pytest.raises(OwnershipError):
            await memory.get_context(bob, session.session_id)
        # Nothing was created for bob on the way.
        assert (await memory.get_statistics(bob))["sessions"] == 0
        ctx = await memory.get_context(alice, conv)
        assert len(ctx.messages) == 3

    async def test_a_session_claims_its_conversation(self, memory: MemoryBackend) -> None:
        alice, bob = new_user_id(), new_user_id()
        session = await memory.create_session(alice)
        with pytest.raises(OwnershipError):
            await memory.store_message(make_message("mine now"), bob, session.conversation_id)
        assert await memory.retrieve_messages(session.conversation_id) == []

    async def test_clear_conversation_of_another_user_is_refused(
        self, memory: MemoryBackend
    ) -> None:
        _, bob, conv, msgs = await self._alice_and_bob(memory)
        with pytest.raises(OwnershipError):
            await memory.clear_conversation(bob, conv)
        assert len(await memory.retrieve_messages(conv)) == len(msgs)

    @requires(Capability.FULL_TEXT)
    async def test_search_is_scoped_to_the_user(self, memory: MemoryBackend) -> None:
        alice, bob, _, _ = await self._alice_and_bob(memory)
        assert await memory.search_messages("pelican secret", user_id=bob) == []
        assert await memory.search_memories(bob, "pelican") == []
        assert await memory.search(bob, "pelican") == []
        assert len(await memory.search_messages("pelican", user_id=alice)) == 3
        relevant = await memory.retrieve_context(bob, "pelican", strategy="relevant")
        assert relevant == []

    @requires(Capability.MEMORIES)
    async def test_memories_are_scoped_to_the_user(self, memory: MemoryBackend) -> None:
        alice, bob = new_user_id(), new_user_id()
        entry = make_memory_entry(alice, "alice keeps a pet iguana")
        await memory.store_memory(entry)
        assert await memory.retrieve_memories(MemoryQuery(user_id=bob, include_expired=True)) == []
        stolen = entry.model_copy(update={"user_id": bob, "content": "bob took it"})
        with pytest.raises(OwnershipError):
            await memory.store_memory(stolen)
        with pytest.raises(OwnershipError):
            await memory.delete_memory(str(entry.id), user_id=bob)
        (kept,) = await memory.retrieve_memories(MemoryQuery(user_id=alice))
        assert kept == entry
        assert (await memory.get_statistics(bob))["memories"] == 0

    @requires(Capability.MEMORIES, Capability.FULL_TEXT)
    async def test_memory_search_is_scoped_to_the_user(self, memory: MemoryBackend) -> None:
        alice, bob = new_user_id(), new_user_id()
        await memory.store_memory(make_memory_entry(alice, "alice keeps a pet iguana"))
        assert await memory.search_memories(bob, "iguana") == []
        text_query = MemoryQuery(user_id=bob, query_text="iguana")
        assert await memory.retrieve_memories(text_query) == []
        assert len(await memory.search_memories(alice, "iguana")) == 1

    @requires(Capability.LISTING)
    async def test_export_and_forget_are_scoped(self, memory: MemoryBackend) -> None:
        alice, bob, conv, msgs = await self._alice_and_bob(memory)
        await memory.store_message(make_message("bob's only words"), bob, new_conversation_id())
        exported = await collect_export(memory, "messages", bob)
        assert [r.content for r in exported] == ["bob's only words"]
        convs = await collect_export(memory, "conversations", bob)
        assert conv not in {c for c, _ in convs}
        await memory.forget_user(bob)
        assert len(await memory.retrieve_messages(conv)) == len(msgs)
        assert (await memory.get_statistics(alice))["total_messages"] == 3
