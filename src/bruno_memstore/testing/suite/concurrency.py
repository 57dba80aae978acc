"""Concurrent writers: every message exactly once, in one consistent order; writers racing
``shutdown()``."""

from __future__ import annotations

import asyncio
from collections import Counter
from uuid import UUID

import pytest
from bruno_core.models.message import Message

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import ClosedError, ConflictError, OwnershipError
from ...models import to_us
from ..builders import at, make_message, new_conversation_id, new_session_id, new_user_id
from ..harness import ConformanceBase

__all__ = ["ConcurrencySuite"]


class ConcurrencySuite(ConformanceBase):
    """Hundreds of writers into one conversation; dozens over many; racing first use and
    shutdown."""

    async def test_many_writers_one_conversation(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        n = self.concurrent_writers
        # Few distinct timestamps, so most order decisions are ties broken by arrival.
        msgs = [make_message(f"writer {i}", timestamp=at(i % 7)) for i in range(n)]
        results = await asyncio.gather(
            *(memory.store_message(m, uid, conv) for m in msgs), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]

        first = await memory.retrieve_context(uid, conversation_id=conv, limit=n + 10)
        second = await memory.retrieve_context(uid, conversation_id=conv, limit=n + 10)
        ids = [str(m.id) for m in first]
        assert Counter(ids) == Counter(str(m.id) for m in msgs)  # each exactly once
        assert ids == [str(m.id) for m in second]  # one consistent order
        stamps = [to_us(m.timestamp) for m in first]
        assert stamps == sorted(stamps)  # chronological; ties in a fixed arrival order
        newest_first = await memory.retrieve_messages(conv)
        assert [str(m.id) for m in newest_first] == ids[::-1]
        tail = await memory.retrieve_context(uid, conversation_id=conv, limit=25)
        assert [str(m.id) for m in tail] == ids[-25:]
        assert (await memory.get_statistics(uid))["total_messages"] == n

    async def test_concurrent_duplicates_store_once(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msgs = [make_message(f"retried {i}", timestamp=at(i)) for i in range(10)]
        # Every message is sent by five racing writers (a client retrying aggressively).
        await asyncio.gather(*(memory.store_message(m, uid, conv) for m in msgs for _ in range(5)))
        got = await memory.retrieve_context(uid, conversation_id=conv, limit=100)
        assert [m.id for m in got] == [m.id for m in msgs]

    async def test_writers_over_many_conversations(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        convs = [new_conversation_id() for _ in range(16)]
        per_writer = 8

        async def writer(w: int) -> list:
            sent = []
            for j in range(per_writer):
                conv = convs[(w + j) % len(convs)]
                msg = make_message(f"w{w} j{j}", timestamp=at(j, base=at(w / 1000)))
                await memory.store_message(msg, uid, conv)
                sent.append((conv, msg))
            return sent

        sent = [
            pair
            for batch in await asyncio.gather(*(writer(w) for w in range(32)))
            for pair in batch
        ]
        for conv in convs:
            expected = sorted((m for c, m in sent if c == conv), key=lambda m: to_us(m.timestamp))
            got = await memory.retrieve_context(uid, conversation_id=conv, limit=500)
            assert [m.id for m in got] == [m.id for m in expected]
        stats = await memory.get_statistics(uid)
        assert stats["total_messages"] == 32 * per_writer
        assert stats["conversations"] == len(convs)

    async def test_a_refused_writer_fails_alone(self, memory: MemoryBackend) -> None:
        # Writers arriving together may share one group commit: the engine-side refusals of
        # two of them (another user's conversation, a stored id with other content) must
        # fail only those two, and every other writer is stored and acknowledged.
        uid, owner = new_user_id(), new_user_id()
        taken = new_conversation_id()
        stored = make_message("already stored", timestamp=at(0))
        await memory.store_message(stored, owner, taken)
        intruder = make_message("into another user's conversation", timestamp=at(1))
        changed = stored.model_copy(update={"content": "same id, other words"})
        good = [
            (make_message(f"good {i}", timestamp=at(i)), new_conversation_id()) for i in range(10)
        ]
        writers = [*good[:3], (intruder, taken), *good[3:7], (changed, new_conversation_id())]
        writers += good[7:]
        results = await asyncio.gather(
            *(memory.store_message(m, uid, conv) for m, conv in writers), return_exceptions=True
        )
        outcome = {str(m.id) + conv: r for (m, conv), r in zip(writers, results, strict=True)}
        assert isinstance(outcome[str(intruder.id) + taken], OwnershipError)
        assert isinstance(outcome[str(changed.id) + writers[8][1]], ConflictError)
        for m, conv in good:
            assert outcome[str(m.id) + conv] is None
            assert [x.id for x in await memory.retrieve_messages(conv)] == [m.id]
        assert [m.id for m in await memory.retrieve_messages(taken)] == [stored.id]
        assert (await memory.get_statistics(uid))["total_messages"] == 10

    async def test_a_refused_writer_claims_nothing_from_a_racing_one(
        self, memory: MemoryBackend
    ) -> None:
        # Writers arriving together into one new conversation, the first one refused for a
        # stored id: whatever order they are written in, the other one gets the
        # conversation (the refused write claimed nothing, or came second and found it taken).
        stored = make_message("already stored", timestamp=at(0))
        await memory.store_message(stored, new_user_id(), new_conversation_id())
        changed = stored.model_copy(update={"content": "same id, other words"})
        for _round in range(4):
            loser, winner, conv = new_user_id(), new_user_id(), new_conversation_id()
            fresh = make_message("the first real message", timestamp=at(1))
            results = await asyncio.gather(
                memory.store_message(changed, loser, conv),
                memory.store_message(stored, loser, conv),
                memory.store_message(fresh, winner, conv),
                return_exceptions=True,
            )
            assert all(isinstance(r, (ConflictError, OwnershipError)) for r in results[:2])
            assert results[2] is None
            assert [m.id for m in await memory.retrieve_messages(conv)] == [fresh.id]
            assert (await memory.get_statistics(loser))["conversations"] == 0

    async def test_users_racing_for_a_new_conversation_have_one_winner(
        self, memory: MemoryBackend
    ) -> None:
        conv = new_conversation_id()
        users = [new_user_id() for _ in range(12)]
        results = await asyncio.gather(
            *(memory.store_message(make_message(f"from {u}"), u, conv) for u in users),
            return_exceptions=True,
        )
        winners = [u for u, r in zip(users, results, strict=True) if r is None]
        assert len(winners) == 1
        assert all(isinstance(r, OwnershipError) for r in results if r is not None)
        assert [m.content for m in await memory.retrieve_messages(conv)] == [f"from {winners[0]}"]
        assert await memory.conversation_owner(conv) == winners[0]
        for loser in set(users) - set(winners):
            assert (await memory.get_statistics(loser))["conversations"] == 0

    async def test_concurrent_first_use(self, memory: MemoryBackend) -> None:
        fresh = await self.open_memory()  # not connected yet: 50 calls race to connect
        uid, conv = new_user_id(), new_conversation_id()
        msgs = [make_message(f"race {i}", timestamp=at(i)) for i in range(50)]
        await asyncio.gather(*(fresh.store_message(m, uid, conv) for m in msgs))
        got = await fresh.retrieve_context(uid, conversation_id=conv, limit=100)
        assert [m.id for m in got] == [m.id for m in msgs]

    async def test_one_event_loop_after_another(self, memory: MemoryBackend) -> None:
        """``asyncio.run`` again and again with one memory, as a script or a notebook does:
        every loop's calls work, and so do the test's own loop's after them."""
        fresh = await self.open_memory()
        uid, conv = new_user_id(), new_conversation_id()
        msgs = [make_message(f"loop {i}", timestamp=at(i)) for i in range(3)]

        async def store_and_read(i: int) -> list[UUID]:
            await fresh.store_message(msgs[i], uid, conv)
            got = await fresh.retrieve_context(uid, conversation_id=conv, limit=10)
            return [m.id for m in got]

        def one_loop_after_another() -> list[list[UUID]]:
            return [asyncio.run(store_and_read(i)) for i in range(len(msgs))]

        seen = await asyncio.to_thread(one_loop_after_another)
        assert seen == [[m.id for m in msgs[: i + 1]] for i in range(len(msgs))]
        got = await fresh.retrieve_context(uid, conversation_id=conv, limit=10)
        assert [m.id for m in got] == [m.id for m in msgs]
        await fresh.shutdown()
        assert fresh.closed

    async def test_racing_get_context_creates_one_session(self, memory: MemoryBackend) -> None:
        uid, ref = new_user_id(), new_session_id()
        contexts = await asyncio.gather(*(memory.get_context(uid, ref) for _ in range(20)))
        assert {c.conversation_id for c in contexts} == {ref}
        assert len({c.session.session_id for c in contexts}) == 1
        assert (await memory.get_statistics(uid))["sessions"] == 1

    async def test_writes_racing_shutdown(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        first = make_message("before the race", timestamp=at(0))
        await memory.store_message(first, uid, conv)
        writers, per_writer = 20, 10
        acknowledged = asyncio.Event()
        outcomes: list[tuple[Message, Exception | None]] = []

        async def writer(w: int) -> None:
            for j in range(per_writer):
                msg = make_message(f"racing {w} {j}", timestamp=at(1 + w * per_writer + j))
                try:
                    await memory.store_message(msg, uid, conv)
                except Exception as exc:
                    outcomes.append((msg, exc))
                    return
                outcomes.append((msg, None))
                acknowledged.set()

        tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
        await acknowledged.wait()  # writes are under way
        await memory.shutdown()
        await asyncio.gather(*tasks)
        # Each write either succeeded or was refused as closed: no driver error leaks out.
        wrong = [repr(exc) for _, exc in outcomes if exc and not isinstance(exc, ClosedError)]
        assert not wrong, wrong[:3]
        acked = {first.id} | {m.id for m, exc in outcomes if exc is None}
        assert memory.closed and not memory.connected
        with pytest.raises(ClosedError):
            await memory.store_message(make_message("after shutdown"), uid, conv)
        with pytest.raises(ClosedError):
            await memory.retrieve_messages(conv)
        await memory.shutdown()  # again: nothing to do

        await memory.initialize()  # opens it again
        stored = {m.id for m in await memory.retrieve_messages(conv)}
        assert stored <= acked  # a refused write left nothing behind
        if memory.supports(Capability.DURABLE):
            assert stored == acked  # every acknowledged write is there
        late = make_message("after initialize", timestamp=at(10_000))
        await memory.store_message(late, uid, conv)
        assert (await memory.retrieve_messages(conv, limit=1))[0].id == late.id
