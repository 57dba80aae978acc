"""Identity, idempotency and order of messages."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest
from bruno_core.models.message import MessageRole

from ...base import MemoryBackend
from ...errors import ConflictError, InvalidArgumentError
from ...models import DEFAULT_USER
from ..builders import at, make_message, new_conversation_id, new_user_id
from ..harness import ConformanceBase

__all__ = ["IdentitySuite", "OrderSuite"]


def _ids(messages: list) -> list[str]:
    return [str(m.id) for m in messages]


class IdentitySuite(ConformanceBase):
    """``Message.id`` is the key: one copy per id, retries never duplicate nor lose."""

    async def test_store_twice_keeps_one_copy(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msg = make_message("remember the milk", timestamp=at(1))
        await memory.store_message(msg, uid, conv)
        await memory.store_message(msg, uid, conv)
        await memory.store_message(msg.model_copy(), uid, conv)
        got = await memory.retrieve_messages(conv)
        assert _ids(got) == [str(msg.id)]
        stats = await memory.get_statistics(uid)
        assert stats["total_messages"] == 1

    async def test_both_call_forms_and_keywords(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        first = make_message("three-argument form", timestamp=at(1))
        second = make_message("two-argument form", timestamp=at(2))
        third = make_message("keyword form", timestamp=at(3))
        fourth = make_message("mixed form", timestamp=at(4))
        await memory.store_message(first, uid, conv)
        await memory.store_message(second, conv)  # bruno-core's form
        await memory.store_message(third, user_id=uid, conversation_id=conv)
        await memory.store_message(fourth, uid, conversation_id=conv)
        got = await memory.retrieve_context(uid, conversation_id=conv, limit=10)
        assert _ids(got) == _ids([first, second, third, fourth])
        # The two-argument write joined the existing conversation, owned by uid.
        assert (await memory.get_statistics(uid))["total_messages"] == 4

    async def test_two_argument_form_owner_from_metadata(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msg = make_message("owned through metadata", metadata={"user_id": uid})
        await memory.store_message(msg, conv)
        got = await memory.retrieve_context(uid, conversation_id=conv)
        assert _ids(got) == [str(msg.id)]
        assert got[0].metadata == {"user_id": uid}

    async def test_two_argument_form_default_owner(self, memory: MemoryBackend) -> None:
        conv = new_conversation_id()
        msg = make_message("nobody said who I am")
        await memory.store_message(msg, conv)
        got = await memory.retrieve_context(DEFAULT_USER, conversation_id=conv)
        assert _ids(got) == [str(msg.id)]
        ctx = await memory.get_context(DEFAULT_USER, conv)
        assert _ids(ctx.messages) == [str(msg.id)]

    async def test_retried_batch_never_duplicates(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        batch = [make_message(f"batch message {i}", timestamp=at(i)) for i in range(5)]
        assert await memory.store_messages(batch[:3], conversation_id=conv, user_id=uid) == 3
        # A retry after a lost acknowledgement resends everything, plus the rest.
        assert await memory.store_messages(batch, conversation_id=conv, user_id=uid) == 2
        assert await memory.store_messages(batch, conversation_id=conv, user_id=uid) == 0
        got = await memory.retrieve_context(uid, conversation_id=conv, limit=50)
        assert _ids(got) == _ids(batch)

    async def test_same_id_different_content_conflicts(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msg = make_message("the original", timestamp=at(1))
        await memory.store_message(msg, uid, conv)
        changes = [
            {"content": "an impostor"},
            {"role": MessageRole.ASSISTANT},
            {"timestamp": at(2)},
            {"metadata": {"edited": True}},
        ]
        for change in changes:
            with pytest.raises(ConflictError):
                await memory.store_message(msg.model_copy(update=change), uid, conv)
        got = await memory.retrieve_messages(conv)
        assert len(got) == 1
        assert got[0].content == "the original"
        assert got[0].metadata == {}

    async def test_same_id_in_another_conversation_conflicts(self, memory: MemoryBackend) -> None:
        uid, conv, other = new_user_id(), new_conversation_id(), new_conversation_id()
        msg = make_message("belongs to one conversation")
        await memory.store_message(msg, uid, conv)
        with pytest.raises(ConflictError):
            await memory.store_message(msg, uid, other)
        assert await memory.retrieve_messages(other) == []
        assert _ids(await memory.retrieve_messages(conv)) == [str(msg.id)]

    async def test_refused_message_leaves_a_new_conversation_unclaimed(
        self, memory: MemoryBackend
    ) -> None:
        # A single message skips the batch's pre-check: the write itself must claim nothing
        # when its id is stored already, whether with other content or identically elsewhere.
        uid, other, home = new_user_id(), new_user_id(), new_conversation_id()
        msg = make_message("stored in its own conversation", timestamp=at(1))
        await memory.store_message(msg, uid, home)
        for attempt in (msg.model_copy(update={"content": "other words"}), msg):
            fresh = new_conversation_id()
            with pytest.raises(ConflictError):
                await memory.store_message(attempt, uid, fresh)
            assert (await memory.get_statistics(uid))["conversations"] == 1
            # Nobody owns it: another user may still start it.
            ctx = await memory.get_context(other, fresh)
            assert ctx.conversation_id == fresh and ctx.messages == []
        assert (await memory.get_statistics(uid))["total_messages"] == 1
        assert _ids(await memory.retrieve_messages(home)) == [str(msg.id)]

    async def test_conflict_leaves_a_read_conversation_as_it_was(
        self, memory: MemoryBackend
    ) -> None:
        # Read first, so that a backend with a cache holds the conversation when the refused
        # message arrives: neither the store nor any copy of it may show that message.
        uid, conv, other = new_user_id(), new_conversation_id(), new_conversation_id()
        first = make_message("first in this conversation", timestamp=at(0))
        await memory.store_message(first, uid, conv)
        assert _ids(await memory.retrieve_messages(conv)) == [str(first.id)]
        elsewhere = make_message("stored elsewhere", timestamp=at(1))
        await memory.store_message(elsewhere, uid, other)
        for attempt in (elsewhere, elsewhere.model_copy(update={"content": "rewritten"})):
            with pytest.raises(ConflictError):
                await memory.store_message(attempt, uid, conv)
            with pytest.raises(ConflictError):
                await memory.store_messages(
                    [make_message("fresh", timestamp=at(2)), attempt],
                    conversation_id=conv,
                    user_id=uid,
                )
        assert _ids(await memory.retrieve_messages(conv)) == [str(first.id)]
        got = await memory.retrieve_context(uid, conversation_id=conv, limit=10)
        assert _ids(got) == [str(first.id)]

    async def test_conflicting_batch_writes_nothing(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        stored = make_message("stored first", timestamp=at(0))
        await memory.store_message(stored, uid, conv)
        fresh = [make_message(f"fresh {i}", timestamp=at(i + 1)) for i in range(3)]
        clash = stored.model_copy(update={"content": "rewritten"})
        with pytest.raises(ConflictError):
            await memory.store_messages([*fresh, clash], conversation_id=conv, user_id=uid)
        assert _ids(await memory.retrieve_messages(conv)) == [str(stored.id)]
        assert (await memory.get_statistics(uid))["total_messages"] == 1

    async def test_batch_repeating_an_id_is_refused(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msg = make_message("twice in one batch")
        with pytest.raises(InvalidArgumentError) as info:
            await memory.store_messages([msg, msg], conversation_id=conv, user_id=uid)
        assert info.value.argument == "messages"
        assert await memory.retrieve_messages(conv) == []

    async def test_message_conversation_id_must_match(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msg = make_message("addressed elsewhere", conversation_id=new_conversation_id())
        with pytest.raises(InvalidArgumentError) as info:
            await memory.store_message(msg, uid, conv)
        assert info.value.argument == "conversation_id"
        assert await memory.retrieve_messages(conv) == []
        same = make_message("addressed here", conversation_id=conv)
        await memory.store_message(same, uid, conv)
        assert _ids(await memory.retrieve_messages(conv)) == [str(same.id)]


class OrderSuite(ConformanceBase):
    """Windows are chronological; ties keep arrival order; ``retrieve_messages`` is newest first."""

    async def test_window_is_chronological(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        offsets = [5, 1, 4, 2, 3, 0]
        msgs = [make_message(f"said at {s}", timestamp=at(s)) for s in offsets]
        for m in msgs:
            await memory.store_message(m, uid, conv)
        expected = [m for _, m in sorted(zip(offsets, msgs, strict=True), key=lambda p: p[0])]
        got = await memory.retrieve_context(uid, conversation_id=conv, limit=10)
        assert _ids(got) == _ids(expected)
        ctx = await memory.get_context(uid, conv)
        assert _ids(ctx.messages) == _ids(expected)

    async def test_window_holds_the_last_limit(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msgs = [make_message(f"turn {i}", timestamp=at(i)) for i in range(12)]
        await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
        got = await memory.retrieve_context(uid, conversation_id=conv, limit=5)
        assert _ids(got) == _ids(msgs[-5:])
        newest = await memory.retrieve_messages(conv, limit=3)
        assert _ids(newest) == _ids(list(reversed(msgs[-3:])))

    async def test_retrieve_messages_is_newest_first(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msgs = [make_message(f"line {i}", timestamp=at(i)) for i in range(6)]
        for m in reversed(msgs):
            await memory.store_message(m, uid, conv)
        assert _ids(await memory.retrieve_messages(conv)) == _ids(list(reversed(msgs)))
        assert _ids(await memory.retrieve_messages(conv, limit=None)) == _ids(msgs[::-1])

    async def test_equal_timestamps_keep_arrival_order(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        same = at(7)
        singles = [make_message(f"single {i}", timestamp=same) for i in range(8)]
        for m in singles:
            await memory.store_message(m, uid, conv)
        batch = [make_message(f"batched {i}", timestamp=same) for i in range(8)]
        await memory.store_messages(batch, conversation_id=conv, user_id=uid)
        expected = _ids(singles + batch)
        assert _ids(await memory.retrieve_context(uid, conversation_id=conv, limit=50)) == expected
        assert _ids(await memory.retrieve_messages(conv)) == expected[::-1]
        tail = await memory.retrieve_context(uid, conversation_id=conv, limit=5)
        assert _ids(tail) == expected[-5:]

    async def test_late_message_is_placed_by_timestamp(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        early = [make_message(f"early {i}", timestamp=at(i * 10)) for i in range(3)]
        await memory.store_messages(early, conversation_id=conv, user_id=uid)
        late = make_message("arrives last, happened first", timestamp=at(-1))
        tie = make_message("arrives last, ties the second", timestamp=at(10))
        await memory.store_message(late, uid, conv)
        await memory.store_message(tie, uid, conv)
        got = await memory.retrieve_context(uid, conversation_id=conv, limit=10)
        assert _ids(got) == _ids([late, early[0], early[1], tie, early[2]])

    async def test_context_spans_the_users_conversations(self, memory: MemoryBackend) -> None:
        uid, a, b = new_user_id(), new_conversation_id(), new_conversation_id()
        in_a = [make_message(f"a{i}", timestamp=at(2 * i)) for i in range(4)]
        in_b = [make_message(f"b{i}", timestamp=at(2 * i + 1)) for i in range(4)]
        await memory.store_messages(in_a, conversation_id=a, user_id=uid)
        await memory.store_messages(in_b, conversation_id=b, user_id=uid)
        merged = [m for pair in zip(in_a, in_b, strict=True) for m in pair]
        assert _ids(await memory.retrieve_context(uid, limit=20)) == _ids(merged)
        assert _ids(await memory.retrieve_context(uid, limit=3)) == _ids(merged[-3:])
        only_a = await memory.retrieve_context(uid, limit=20, conversation_id=a)
        assert _ids(only_a) == _ids(in_a)

    async def test_aware_timestamps_order_by_instant(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        plus2 = timezone(timedelta(hours=2))
        # 13:00+02:00 is 11:00 UTC: before the naive (UTC) 12:00 message.
        first = make_message("eleven utc", timestamp=at(0).replace(hour=13, tzinfo=plus2))
        second = make_message("twelve utc", timestamp=at(0))
        await memory.store_message(second, uid, conv)
        await memory.store_message(first, uid, conv)
        got = await memory.retrieve_context(uid, conversation_id=conv)
        assert _ids(got) == _ids([first, second])
        assert got[0].timestamp.utcoffset() == timedelta(hours=2)

    async def test_unknown_conversation_reads_empty(self, memory: MemoryBackend) -> None:
        conv = new_conversation_id()
        assert await memory.retrieve_messages(conv) == []
        assert await memory.retrieve_context(new_user_id(), conversation_id=conv) == []
