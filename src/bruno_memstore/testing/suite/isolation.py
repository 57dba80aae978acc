"""Ownership and isolation: one user's data never reaches another user."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import uuid4

import pytest
from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryQuery

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import InvalidArgumentError, OwnershipError
from ..builders import (
    at,
    collect_export,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_session_id,
    new_user_id,
)
from ..harness import ConformanceBase, requires

__all__ = ["IsolationSuite"]

RACING_PAIRS = 32  # ids two users race for at once: enough that a check-then-write loses


def _one_winner(outcomes: Sequence[object]) -> int:
    """The index of the one write of a racing pair that succeeded (the other was refused)."""
    refused = [isinstance(r, OwnershipError) for r in outcomes]
    assert sorted(refused) == [False, True], outcomes
    assert all(r is None or isinstance(r, OwnershipError) for r in outcomes), outcomes
    return refused.index(False)


class IsolationSuite(ConformanceBase):
    """A conversation belongs to one user; reads and writes are scoped to the user."""

    async def _alice_and_bob(self, memory: MemoryBackend) -> tuple[str, str, str, list]:
        alice, bob, conv = new_user_id(), new_user_id(), new_conversation_id()
        msgs = [make_message(f"alice secret pelican number {i}", timestamp=at(i)) for i in range(3)]
        await memory.store_messages(msgs, conversation_id=conv, user_id=alice)
        return alice, bob, conv, msgs

    async def _writers(self, memory: MemoryBackend) -> list[MemoryBackend]:
        """``memory``, plus two more instances on its store when ``make_memory`` reaches the
        same store again (server and file backends), so that racing writes meet in the
        engine rather than in one instance."""
        other = await self.open_memory()
        probe = await memory.create_session(new_user_id())
        if await other.get_session(probe.session_id) is None:
            return [memory]  # every instance is a store of its own
        return [memory, other, await self.open_memory()]

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

    @requires(Capability.MEMORIES)
    async def test_racing_users_store_a_new_memory_id_once(self, memory: MemoryBackend) -> None:
        writers = await self._writers(memory)
        alice, bob = new_user_id(), new_user_id()
        pairs, calls = [], []
        for i in range(RACING_PAIRS):
            mine = make_memory_entry(alice, f"alice wrote entry {i}")
            theirs = mine.model_copy(update={"user_id": bob, "content": f"bob wrote entry {i}"})
            pair = (mine, theirs) if i % 2 else (theirs, mine)  # either may go first
            pairs.append(pair)
            calls += [writers[(i + k) % len(writers)].store_memory(e) for k, e in enumerate(pair)]
        for writer in writers:  # embedded beforehand, so that the writes start together
            if writer.embedder is not None:
                await writer.embedder.embed([e.content for pair in pairs for e in pair])
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        stored = {
            str(e.id): e
            for user in (alice, bob)
            for e in await memory.retrieve_memories(
                MemoryQuery(user_id=user, include_expired=True, limit=1000)
            )
        }
        for i, pair in enumerate(pairs):
            winner = pair[_one_winner(outcomes[2 * i : 2 * i + 2])]
            assert stored[str(winner.id)] == winner  # the winner's, with the winner's content
        assert len(stored) == RACING_PAIRS

    async def test_racing_users_save_a_new_session_id_once(self, memory: MemoryBackend) -> None:
        writers = await self._writers(memory)
        alice, bob = new_user_id(), new_user_id()
        pairs, calls = [], []
        for i in range(RACING_PAIRS):
            sid = new_session_id()
            pair = tuple(
                SessionContext(
                    session_id=sid,
                    user_id=user,
                    conversation_id=new_conversation_id(),
                    metadata={"written_by": user, "round": i},
                )
                for user in ((alice, bob) if i % 2 else (bob, alice))
            )
            pairs.append(pair)
            calls += [writers[(i + k) % len(writers)].save_session(s) for k, s in enumerate(pair)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for i, pair in enumerate(pairs):
            winner = pair[_one_winner(outcomes[2 * i : 2 * i + 2])]
            assert await memory.get_session(winner.session_id) == winner
        counts = [(await memory.get_statistics(u))["sessions"] for u in (alice, bob)]
        assert sum(counts) == RACING_PAIRS

    async def test_save_session_keeps_anothers_session(self, memory: MemoryBackend) -> None:
        alice, bob = new_user_id(), new_user_id()
        session = await memory.create_session(alice, {"who": "alice"})
        stolen = SessionContext(session_id=session.session_id, user_id=bob, metadata={"x": 1})
        with pytest.raises(OwnershipError, match="belongs to another user"):
            await memory.save_session(stolen)
        assert await memory.get_session(session.session_id) == session
        assert (await memory.get_statistics(bob))["sessions"] == 0
        # The refused session's conversation was not claimed for bob either.
        await memory.store_message(make_message("alice's"), alice, stolen.conversation_id)

    @requires(Capability.MEMORIES)
    async def test_the_ownership_check_is_part_of_the_deletion(self, memory: MemoryBackend) -> None:
        # delete_memory hands the check to the engine's deletion itself (no read before it):
        # another user's entry is refused and kept, a missing one is no error, one's own goes.
        alice, bob = new_user_id(), new_user_id()
        entry = make_memory_entry(alice, "alice's to keep")
        await memory.store_memory(entry)
        mid, missing = str(entry.id), str(uuid4())
        with pytest.raises(OwnershipError):
            await memory.delete_memory(mid, user_id=bob)
        await memory.delete_memory(missing, user_id=bob)
        (kept,) = await memory.retrieve_memories(MemoryQuery(user_id=alice))
        assert kept == entry
        await memory.delete_memory(mid, user_id=alice)
        assert await memory.retrieve_memories(MemoryQuery(user_id=alice)) == []
        await memory.delete_memory(mid, user_id=alice)  # gone: deleting again is no error

    async def test_a_message_naming_another_user_cannot_join(self, memory: MemoryBackend) -> None:
        alice, bob, conv, msgs = await self._alice_and_bob(memory)
        named = make_message("bob was here", timestamp=at(10), metadata={"user_id": bob})
        with pytest.raises(OwnershipError):
            await memory.store_message(named, conv)  # bruno-core's two-argument form
        with pytest.raises(OwnershipError):
            await memory.store_messages([make_message("plain"), named], conversation_id=conv)
        assert len(await memory.retrieve_messages(conv)) == len(msgs)
        context = await memory.get_context(alice, conv)
        assert [m.id for m in context.messages] == [m.id for m in msgs]
        # Unattributed writes, and writes naming the owner, still join the conversation.
        await memory.store_message(make_message("anonymous", timestamp=at(11)), conv)
        own = make_message("alice again", timestamp=at(12), metadata={"user_id": alice})
        await memory.store_message(own, conv)
        assert len(await memory.retrieve_messages(conv)) == len(msgs) + 2
        # A new conversation named by its writer is that writer's.
        fresh = new_conversation_id()
        await memory.store_message(named, fresh)
        got = await memory.retrieve_context(bob, conversation_id=fresh)
        assert [m.id for m in got] == [named.id]

    async def test_a_batch_naming_two_users_is_refused(self, memory: MemoryBackend) -> None:
        alice, bob, conv = new_user_id(), new_user_id(), new_conversation_id()
        batch = [
            make_message("one", metadata={"user_id": alice}),
            make_message("two", metadata={"user_id": bob}),
        ]
        with pytest.raises(InvalidArgumentError) as info:
            await memory.store_messages(batch, conversation_id=conv)
        assert info.value.argument == "messages"
        assert await memory.retrieve_messages(conv) == []

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
