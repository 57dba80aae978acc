"""Expiry and retention: expired records leave every read before any sweep, the sweeper
removes them from storage, retention policies remove what they declare (and a dry run
nothing).

No test depends on tight timing: what must have expired is stored with a TTL of 10 ms and
read 200 ms later (a slower machine only makes it older); what must not have expired has an
hour to go. Sweeps use the real clock, so data of other tests sharing the store is swept
only when it has really expired.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from bruno_core.models.memory import MemoryQuery

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import CapabilityError, InvalidArgumentError, NotFoundError, OwnershipError
from ...models import utcnow
from ...retention import RetentionPolicy
from ..builders import (
    at,
    collect_export,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from ..harness import ConformanceBase, lacks, requires

__all__ = ["ArchiveSuite", "ExpirySuite", "RetentionRefusalSuite", "RetentionSuite", "SweepSuite"]

_GONE = 0.01  # seconds: a TTL that has passed by the time the test reads
_WAIT = 0.2
_HOUR = 3600.0


async def _three(memory: MemoryBackend, uid: str, conv: str, word: str = "kestrel") -> list[str]:
    """An expiring message between two lasting ones; returns the contents, in order."""
    keep_a = make_message(f"first {word} stays", timestamp=at(1))
    doomed = make_message(f"second {word} expires", timestamp=at(2))
    keep_b = make_message(f"third {word} stays too", timestamp=at(3))
    await memory.store_message(keep_a, uid, conv)
    await memory.store_message(doomed, uid, conv, ttl=_GONE)
    await memory.store_message(keep_b, uid, conv, ttl=_HOUR)
    await asyncio.sleep(_WAIT)
    return [keep_a.content, doomed.content, keep_b.content]


class ExpirySuite(ConformanceBase):
    """TTLs per call and per store; no read returns an expired record, swept or not."""

    async def test_expired_message_leaves_windows_and_context(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        first, _doomed, third = await _three(memory, uid, conv)
        newest_first = await memory.retrieve_messages(conv)
        assert [m.content for m in newest_first] == [third, first]
        window = await memory.retrieve_context(uid, conversation_id=conv, limit=2)
        assert [m.content for m in window] == [first, third]  # the window refills past it
        context = await memory.get_context(uid, conv)
        assert [m.content for m in context.messages] == [first, third]
        # What callers read holds no trace of the deadline.
        assert all(m.metadata == {} for m in newest_first)

    async def test_a_window_of_one_skips_many_expired(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        lasting = make_message("the one that stays", timestamp=at(0))
        await memory.store_message(lasting, uid, conv)
        doomed = [make_message(f"gone {i}", timestamp=at(10 + i)) for i in range(12)]
        await memory.store_messages(doomed, conversation_id=conv, user_id=uid, ttl=_GONE)
        await asyncio.sleep(_WAIT)
        got = await memory.retrieve_messages(conv, limit=1)
        assert [m.content for m in got] == [lasting.content]

    async def test_store_default_ttl_and_a_lasting_call(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        memory.message_ttl = _GONE
        try:
            await memory.store_message(make_message("short lived", timestamp=at(1)), uid, conv)
            kept = make_message("asked to last", timestamp=at(2))
            await memory.store_message(kept, uid, conv, ttl=timedelta(hours=1))
        finally:
            memory.message_ttl = None
        await asyncio.sleep(_WAIT)
        assert [m.content for m in await memory.retrieve_messages(conv)] == [kept.content]

    async def test_retried_store_of_a_message_with_ttl_is_idempotent(
        self, memory: MemoryBackend
    ) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msg = make_message("sent twice", metadata={"k": "v"})
        await memory.store_message(msg, uid, conv, ttl=_HOUR)
        await memory.store_message(msg, uid, conv, ttl=_HOUR)  # another deadline: no conflict
        got = await memory.retrieve_messages(conv)
        assert len(got) == 1 and got[0].metadata == {"k": "v"}

    async def test_bad_ttl_is_refused(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        for bad in (0, -1, "soon", float("nan")):
            with pytest.raises(InvalidArgumentError):
                await memory.store_message(make_message("x"), uid, conv, ttl=bad)
        assert await memory.retrieve_messages(conv) == []

    async def test_expired_conversation_leaves_reads_whole(self, memory: MemoryBackend) -> None:
        uid, conv, other = new_user_id(), new_conversation_id(), new_conversation_id()
        memory.conversation_ttl = _GONE
        try:
            await memory.store_message(make_message("idle talk", timestamp=at(1)), uid, conv)
            await memory.store_message(make_message("idle reply", timestamp=at(2)), uid, conv)
        finally:
            memory.conversation_ttl = None
        lasting = make_message("a lasting talk", timestamp=at(3))
        await memory.store_message(lasting, uid, other)
        await asyncio.sleep(_WAIT)
        assert await memory.retrieve_messages(conv) == []
        window = await memory.retrieve_context(uid, limit=10)
        assert [m.content for m in window] == [lasting.content]

    async def test_writes_extend_a_conversation(self, memory: MemoryBackend) -> None:
        # The second write comes well within the first one's 3 s; the read comes after them.
        uid, conv = new_user_id(), new_conversation_id()
        memory.conversation_ttl = 3.0
        try:
            await memory.store_message(make_message("early", timestamp=at(1)), uid, conv)
        finally:
            memory.conversation_ttl = None
        memory.conversation_ttl = _HOUR
        try:
            await memory.store_message(make_message("later", timestamp=at(2)), uid, conv)
        finally:
            memory.conversation_ttl = None
        await asyncio.sleep(3.2)
        assert [m.content for m in await memory.retrieve_messages(conv)] == ["later", "early"]

    async def test_expired_session_is_not_found(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        short = await memory.create_session(uid, {"topic": "brief"}, ttl=_GONE)
        lasting = await memory.create_session(uid, {"topic": "long"}, ttl=_HOUR)
        await asyncio.sleep(_WAIT)
        assert await memory.get_session(short.session_id) is None
        found = await memory.get_session(lasting.session_id)
        assert found is not None and found.metadata == {"topic": "long"}

    async def test_context_of_an_expired_session_starts_afresh(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        memory.session_ttl = _GONE
        try:
            first = await memory.get_context(uid)
        finally:
            memory.session_ttl = None
        await asyncio.sleep(_WAIT)
        again = await memory.get_context(uid)
        assert again.session.session_id != first.session.session_id

    @requires(Capability.FULL_TEXT)
    async def test_search_leaves_out_expired_messages(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        await _three(memory, uid, conv, "ptarmigan")
        results = await memory.search(uid, "ptarmigan", kinds=("message",), mode="keyword")
        contents = sorted(r.content for r in results)
        assert contents == ["first ptarmigan stays", "third ptarmigan stays too"]

    @requires(Capability.MEMORIES)
    async def test_memory_ttl_per_call_and_per_store(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        await memory.store_memory(make_memory_entry(uid, "fleeting fact"), ttl=_GONE)
        memory.memory_ttl = _HOUR
        try:
            lasting = make_memory_entry(uid, "lasting fact")
            await memory.store_memory(lasting)
        finally:
            memory.memory_ttl = None
        assert lasting.expires_at is None  # the caller's entry is not changed
        await asyncio.sleep(_WAIT)
        found = await memory.retrieve_memories(MemoryQuery(user_id=uid))
        assert [e.content for e in found] == ["lasting fact"]
        assert found[0].expires_at is not None and found[0].expires_at > utcnow()

    @requires(Capability.LISTING)
    async def test_export_leaves_out_expired_records(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        first, _doomed, third = await _three(memory, uid, conv)
        await memory.create_session(uid, ttl=_GONE)
        await asyncio.sleep(_WAIT)
        exported = await collect_export(memory, "messages", uid)
        assert sorted(m.content for m in exported) == sorted([first, third])
        assert await collect_export(memory, "sessions", uid) == []
        package = await memory.export_user(uid)
        assert package["counts"]["messages"] == 2 and package["counts"]["sessions"] == 0


@requires(Capability.LISTING)
class SweepSuite(ConformanceBase):
    """``sweep()`` / ``purge_expired()`` remove expired records from storage."""

    async def test_sweep_removes_an_expired_conversation_whole(self, memory: MemoryBackend) -> None:
        uid, conv, kept = new_user_id(), new_conversation_id(), new_conversation_id()
        memory.conversation_ttl = _GONE
        try:
            await memory.store_message(make_message("gone soon", timestamp=at(1)), uid, conv)
            await memory.get_context(uid, conv)  # a session in it
        finally:
            memory.conversation_ttl = None
        await memory.store_message(make_message("stays", timestamp=at(2)), uid, kept)
        await asyncio.sleep(_WAIT)
        before = await memory.get_statistics(uid)
        assert before["conversations"] == 2  # hidden from reads, still stored
        counts = await memory.sweep()
        assert counts["conversations"] >= 1 and counts["messages"] >= 1
        after = await memory.get_statistics(uid)
        assert after["conversations"] == 1 and after["total_messages"] == 1
        assert await memory.conversation_owner(conv) is None
        assert await memory.conversation_owner(kept) == uid

    @requires(Capability.PRUNING)
    async def test_sweep_removes_single_expired_messages(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        first, _doomed, third = await _three(memory, uid, conv)
        assert (await memory.get_statistics(uid))["total_messages"] == 3
        assert await memory.purge_expired() >= 1
        stats = await memory.get_statistics(uid)
        assert stats["total_messages"] == 2 and stats["conversations"] == 1
        got = await memory.retrieve_messages(conv)
        assert [m.content for m in got] == [third, first]

    @requires(Capability.MEMORIES)
    async def test_sweep_counts_memory_entries(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        await memory.store_memory(make_memory_entry(uid, "fleeting"), ttl=_GONE)
        await asyncio.sleep(_WAIT)
        counts = await memory.sweep()
        # An engine that deletes expired entries itself may have been first.
        assert counts["memories"] >= 1 or memory.deletes_expired_itself
        query = MemoryQuery(user_id=uid, include_expired=True)
        assert await memory.retrieve_memories(query) == []

    async def test_background_sweeper_runs_and_stops_with_shutdown(
        self, memory: MemoryBackend
    ) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        memory.sweep_interval = 0.05
        memory.conversation_ttl = _GONE
        try:
            await memory.store_message(make_message("swept for me"), uid, conv)  # starts it
            for _ in range(200):  # up to 20 s on a loaded machine
                if await memory.conversation_owner(conv) is None:
                    break
                await asyncio.sleep(0.1)
            assert await memory.conversation_owner(conv) is None
        finally:
            memory.conversation_ttl = None
            memory.sweep_interval = None
        await memory.shutdown()  # stops the sweeper with the connections


@requires(Capability.LISTING, Capability.PRUNING)
class RetentionSuite(ConformanceBase):
    """``apply_retention``: keep the last N, drop by age, dry runs that delete nothing."""

    async def _filled(self, memory: MemoryBackend, uid: str, n: int) -> str:
        conv = new_conversation_id()
        msgs = [make_message(f"message {i}", timestamp=at(i)) for i in range(n)]
        await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
        return conv

    async def test_keep_last_dry_run_then_apply(self, memory: MemoryBackend) -> None:
        uid, other = new_user_id(), new_user_id()
        conv = await self._filled(memory, uid, 5)
        await self._filled(memory, other, 5)
        policy = RetentionPolicy(keep_last=2)
        report = await memory.apply_retention(policy, dry_run=True, user_id=uid)
        assert report["dry_run"] is True
        assert report["users"] == {uid: {"messages": 3, "conversations": 0}}
        assert (await memory.get_statistics(uid))["total_messages"] == 5  # nothing went
        report = await memory.apply_retention(policy, user_id=uid)
        assert report["totals"] == {"messages": 3, "conversations": 0}
        got = await memory.retrieve_messages(conv)
        assert [m.content for m in got] == ["message 4", "message 3"]
        assert (await memory.get_statistics(uid))["total_messages"] == 2
        assert (await memory.get_statistics(other))["total_messages"] == 5  # not in scope

    async def test_age_rules(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        old = new_conversation_id()
        await memory.store_message(make_message("ancient", timestamp=at(0)), uid, old)
        mixed = new_conversation_id()
        await memory.store_message(make_message("old part", timestamp=at(0)), uid, mixed)
        await memory.store_message(make_message("fresh part"), uid, mixed)
        policy = {"max_message_age": timedelta(days=30), "max_conversation_age": 86400 * 60}
        memory.retention = RetentionPolicy(**policy)
        try:
            report = await memory.apply_retention(dry_run=True, user_id=uid)
            assert report["users"][uid] == {"messages": 2, "conversations": 1}
            await memory.apply_retention(user_id=uid)
        finally:
            memory.retention = None
        assert await memory.conversation_owner(old) is None
        assert [m.content for m in await memory.retrieve_messages(mixed)] == ["fresh part"]

    async def test_no_policy_is_refused(self, memory: MemoryBackend) -> None:
        with pytest.raises(InvalidArgumentError):
            await memory.apply_retention(dry_run=True)
        with pytest.raises(InvalidArgumentError):
            RetentionPolicy(keep_last=0)


@lacks(Capability.PRUNING)
class RetentionRefusalSuite(ConformanceBase):
    """Without single-message deletion, rules that need it are refused, deleting nothing."""

    @requires(Capability.LISTING)
    async def test_keep_last_is_refused(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msgs = [make_message(f"m {i}", timestamp=at(i)) for i in range(3)]
        await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
        with pytest.raises(CapabilityError):
            await memory.apply_retention(RetentionPolicy(keep_last=1), user_id=uid)
        assert len(await memory.retrieve_messages(conv)) == 3


class ArchiveSuite(ConformanceBase):
    """``archive_conversation`` / ``restore_conversation``: out of context windows and
    default search, still stored, listed, exported and counted apart; back exactly."""

    async def _two(self, memory: MemoryBackend, uid: str) -> tuple[str, str, list[str]]:
        old, live = new_conversation_id(), new_conversation_id()
        words = ["the ibis nests by the river", "an ibis flew over"]
        await memory.store_message(make_message(words[0], timestamp=at(1)), uid, old)
        await memory.store_message(make_message(words[1], timestamp=at(2)), uid, old)
        await memory.store_message(make_message("the heron stays", timestamp=at(3)), uid, live)
        return old, live, words

    async def test_archive_and_restore_round_trip(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        old, _live, words = await self._two(memory, uid)
        before = await memory.retrieve_messages(old)
        assert await memory.archive_conversation(uid, old) is True
        assert await memory.archive_conversation(uid, old) is False  # already archived
        window = await memory.retrieve_context(uid, limit=10)
        assert [m.content for m in window] == ["the heron stays"]
        assert (await memory.get_context(uid, old)).messages == []
        # Still stored, and read by id.
        assert await memory.retrieve_messages(old) == before
        assert await memory.restore_conversation(uid, old) is True
        assert await memory.restore_conversation(uid, old) is False
        window = await memory.retrieve_context(uid, limit=10)
        assert [m.content for m in window] == [*words, "the heron stays"]
        assert [m.content for m in (await memory.get_context(uid, old)).messages] == words
        assert await memory.retrieve_messages(old) == before

    @requires(Capability.FULL_TEXT)
    async def test_default_search_leaves_archived_out(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        old, _live, words = await self._two(memory, uid)
        await memory.archive_conversation(uid, old)
        kinds = ("message",)
        assert await memory.search(uid, "ibis", kinds=kinds, mode="keyword") == []
        found = await memory.search(uid, "ibis", kinds=kinds, mode="keyword", include_archived=True)
        assert sorted(r.content for r in found) == sorted(words)

    @requires(Capability.FULL_TEXT)
    async def test_search_leaves_out_each_archived_conversation_among_its_hits(
        self, memory: MemoryBackend
    ) -> None:
        uid = new_user_id()
        convs = [new_conversation_id() for _ in range(5)]
        for i, conv in enumerate(convs):
            message = make_message(f"egret number {i}", timestamp=at(i))
            await memory.store_message(message, uid, conv)
        await memory.archive_conversation(uid, convs[1])
        await memory.archive_conversation(uid, convs[3])
        await memory.restore_conversation(uid, convs[3])  # its marker now says "not archived"
        found = await memory.search(uid, "egret", kinds=("message",), mode="keyword", limit=10)
        assert sorted(r.content for r in found) == [f"egret number {i}" for i in (0, 2, 3, 4)]

    @requires(Capability.LISTING)
    async def test_listed_counted_apart_and_exported(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        old, live, words = await self._two(memory, uid)
        await memory.create_session(uid)
        plain = await memory.get_statistics(uid)
        await memory.archive_conversation(uid, old)
        listed = {c["conversation_id"]: c["archived"] for c in await memory.list_conversations(uid)}
        assert listed[old] is True and listed[live] is False
        stats = await memory.get_statistics(uid)
        assert stats["archived_conversations"] == 1 and stats["archived_messages"] == 2
        assert stats["conversations"] == plain["conversations"] - 1
        assert stats["total_messages"] == plain["total_messages"] - 2
        assert stats["sessions"] == plain["sessions"]  # the archive state is no session
        package = await memory.export_user(uid)
        exported = {r["content"] for r in package["records"] if r["type"] == "message"}
        assert set(words) <= exported
        await memory.restore_conversation(uid, old)
        again = await memory.get_statistics(uid)
        assert again["archived_conversations"] == 0
        assert again["conversations"] == plain["conversations"]
        assert again["total_messages"] == plain["total_messages"]
        assert again["sessions"] == plain["sessions"]
        erased = await memory.forget_user(uid)
        assert erased["sessions"] == plain["sessions"]  # the archive state is no session
        assert erased["messages"] == plain["total_messages"]

    @requires(Capability.LISTING)
    async def test_archive_by_age_for_one_user(self, memory: MemoryBackend) -> None:
        uid, other = new_user_id(), new_user_id()
        old, live = new_conversation_id(), new_conversation_id()
        await memory.store_message(make_message("long ago", timestamp=at(0)), uid, old)
        await memory.store_message(make_message("just now"), uid, live)
        theirs = new_conversation_id()
        await memory.store_message(make_message("theirs, long ago", timestamp=at(0)), other, theirs)
        assert await memory.archive(uid, older_than=timedelta(days=30)) == 1
        listed = {c["conversation_id"]: c["archived"] for c in await memory.list_conversations(uid)}
        assert listed == {old: True, live: False}
        assert [m.content for m in await memory.retrieve_context(other, limit=5)] == [
            "theirs, long ago"
        ]

    async def test_archive_is_refused_for_another_user_or_nothing(
        self, memory: MemoryBackend
    ) -> None:
        uid, other = new_user_id(), new_user_id()
        conv = new_conversation_id()
        await memory.store_message(make_message("mine"), uid, conv)
        with pytest.raises(OwnershipError):
            await memory.archive_conversation(other, conv)
        with pytest.raises(NotFoundError):
            await memory.archive_conversation(uid, new_conversation_id())
        assert [m.content for m in await memory.retrieve_context(uid, limit=5)] == ["mine"]

    @requires(Capability.LISTING, Capability.PRUNING)
    async def test_archive_moves_to_a_target_and_back(self, memory: MemoryBackend) -> None:
        from ...backends.memory import InMemoryStorage

        uid = new_user_id()
        old, _live, words = await self._two(memory, uid)
        session = await memory.get_context(uid, old)
        before = await memory.retrieve_messages(old)
        target = InMemoryStorage()
        try:
            assert await memory.archive_conversation(uid, old, target=target) is True
            assert await memory.retrieve_messages(old) == []  # moved: nothing left here
            assert await target.retrieve_messages(old) == before
            assert (await target.get_session(session.session.session_id)) is not None
            listed = {
                c["conversation_id"]: c["archived"] for c in await memory.list_conversations(uid)
            }
            assert listed[old] is True
            # Archiving again is a no-op; a move interrupted before its deletion is
            # completed by restoring (the copy back skips what is already here).
            assert await memory.archive_conversation(uid, old, target=target) is False
            assert await memory.restore_conversation(uid, old, source=target) is True
            assert await memory.retrieve_messages(old) == before
            assert await target.retrieve_messages(old) == []
            window = await memory.retrieve_context(uid, conversation_id=old, limit=10)
            assert [m.content for m in window] == words
        finally:
            await target.shutdown()
