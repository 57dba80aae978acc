"""Round-trip fidelity: what is read back equals what was stored, field by field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from bruno_core.models.message import Message, MessageRole, MessageType
from hypothesis import given
from hypothesis import strategies as st

from ...base import MemoryBackend
from ...errors import InvalidArgumentError
from ...models import to_us
from ..builders import at, make_message, new_conversation_id, new_user_id
from ..harness import ConformanceBase, applies_when
from ..strategies import NASTY_SNIPPETS, PROPERTY_SETTINGS, messages

__all__ = ["RoundTripSuite"]


def assert_same_message(got: Message, want: Message, conversation_id: str) -> None:
    """``got`` is ``want`` stored in ``conversation_id``, to the microsecond and the offset."""
    expected = want.model_copy(update={"conversation_id": conversation_id})
    assert got.model_dump() == expected.model_dump()
    assert got.content == want.content
    assert got.metadata == want.metadata
    assert (got.timestamp.tzinfo is None) == (want.timestamp.tzinfo is None)
    assert got.timestamp.utcoffset() == want.timestamp.utcoffset()
    assert got.timestamp.replace(tzinfo=None) == want.timestamp.replace(tzinfo=None)


class RoundTripSuite(ConformanceBase):
    """Every field survives storage: Unicode, metacharacters, nested JSON, exact timestamps."""

    @PROPERTY_SETTINGS
    @given(data=st.data())
    async def test_messages_round_trip(self, memory: MemoryBackend, data: st.DataObject) -> None:
        drawn = data.draw(
            st.lists(
                messages(self.forbidden_text, self.forbidden_metadata_text), min_size=1, max_size=4
            ),
            label="messages",
        )
        # Fresh ids per example: examples share the memory, and shrinking reuses values.
        batch = [m.model_copy(update={"id": uuid4()}) for m in drawn]
        uid, conv = new_user_id(), new_conversation_id()
        await memory.store_message(batch[0], uid, conv)
        if len(batch) > 1:
            await memory.store_messages(batch[1:], conversation_id=conv, user_id=uid)

        arrival = {str(m.id): i for i, m in enumerate(batch)}
        order = sorted(batch, key=lambda m: (to_us(m.timestamp), arrival[str(m.id)]))
        window = await memory.retrieve_context(uid, conversation_id=conv, limit=10)
        assert [str(m.id) for m in window] == [str(m.id) for m in order]
        for got, want in zip(window, order, strict=True):
            assert_same_message(got, want, conv)
        newest_first = await memory.retrieve_messages(conv)
        assert [str(m.id) for m in newest_first] == [str(m.id) for m in reversed(order)]
        for got, want in zip(newest_first, reversed(order), strict=True):
            assert_same_message(got, want, conv)

    async def test_every_role_and_type(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        batch = [
            make_message(f"{role.value} says {mtype.value}", role=role, message_type=mtype)
            for role in MessageRole
            for mtype in MessageType
        ]
        stamped = [m.model_copy(update={"timestamp": at(i)}) for i, m in enumerate(batch)]
        await memory.store_messages(stamped, conversation_id=conv, user_id=uid)
        window = await memory.retrieve_context(uid, conversation_id=conv, limit=len(stamped))
        assert len(window) == len(stamped)
        for got, want in zip(window, stamped, strict=True):
            assert_same_message(got, want, conv)

    async def test_metacharacters_and_parent_round_trip(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        snippets = [s for s in NASTY_SNIPPETS if s.strip() and not self._forbidden(s)]
        parent = make_message("the parent", timestamp=at(0))
        await memory.store_message(parent, uid, conv)
        children = [
            make_message(
                f"x{s}y",
                timestamp=at(i + 1),
                parent_id=parent.id,
                metadata={s: [s, {"nested": s}], "plain": s}
                if not self._forbidden(s, True)
                else {},
            )
            for i, s in enumerate(snippets)
        ]
        for child in children:
            await memory.store_message(child, uid, conv)
        window = await memory.retrieve_context(uid, conversation_id=conv, limit=100)
        assert len(window) == len(children) + 1
        for got, want in zip(window[1:], children, strict=True):
            assert_same_message(got, want, conv)
            assert got.parent_id == parent.id

    async def test_nested_metadata_round_trip(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        metadata: dict[str, Any] = {
            "intent": "timer_set",
            "entities": [{"type": "duration", "value": 5, "unit": "min"}, None, True, -1.5e-7],
            "deep": {"a": {"b": {"c": {"d": [1, [2, [3, {"e": "f"}]]]}}}},
            "big": 2**53,
            "empty": {"list": [], "dict": {}, "str": ""},
            "unicode": "naïve café 😀 \U0001d518",
        }
        msg = make_message("with metadata", metadata=metadata)
        await memory.store_message(msg, uid, conv)
        (got,) = await memory.retrieve_messages(conv)
        assert got.metadata == metadata
        assert_same_message(got, msg, conv)

    async def test_microsecond_timestamps(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        stamps = [
            datetime(2024, 1, 1, 0, 0, 0, 1),
            datetime(2024, 1, 1, 0, 0, 0, 2),
            datetime(1969, 12, 31, 23, 59, 59, 999999),
            datetime(2024, 1, 1, 0, 0, 0, 3, tzinfo=UTC),
            datetime(2024, 1, 1, 5, 30, 0, 4, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            datetime(2023, 12, 31, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=-10))),
        ]
        batch = [make_message(f"stamp {i}", timestamp=ts) for i, ts in enumerate(stamps)]
        await memory.store_messages(batch, conversation_id=conv, user_id=uid)
        got = {str(m.id): m for m in await memory.retrieve_messages(conv)}
        for want in batch:
            assert_same_message(got[str(want.id)], want, conv)

    async def test_one_megabyte_content(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        unit = 'Lorem ipsum 😀 \'quoted\' "double" 100% _x_ \\ ]] {"a":1} 日本語\n'
        content = (unit * (1_048_576 // len(unit.encode()) + 1)).strip()
        assert len(content.encode()) >= 1_000_000
        big = make_message(content, metadata={"blob": "m" * 65_536, "list": list(range(2000))})
        small = make_message("a normal message after the big one", timestamp=at(1))
        await memory.store_message(big.model_copy(update={"timestamp": at(0)}), uid, conv)
        await memory.store_message(small, uid, conv)
        window = await memory.retrieve_context(uid, conversation_id=conv, limit=5)
        assert [m.id for m in window] == [big.id, small.id]
        assert window[0].content == content
        assert window[0].metadata["blob"] == "m" * 65_536
        assert window[0].metadata["list"] == list(range(2000))

    async def test_control_characters_round_trip(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        controls = "".join(c for c in map(chr, range(32)) if not self._forbidden(c))
        content = f"start{controls}\x7f\u2028\u2029\ufeffend"
        msg = make_message(content, metadata={"ctl": controls} if controls else {})
        await memory.store_message(msg, uid, conv)
        (got,) = await memory.retrieve_messages(conv)
        assert_same_message(got, msg, conv)

    @applies_when(
        lambda cls: bool(cls.forbidden_text or cls.forbidden_metadata_text),
        "the backend declares no forbidden text",
    )
    async def test_forbidden_text_is_refused_before_writing(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        fine = make_message("an acceptable message", timestamp=at(0))
        for bad in self.forbidden_text:
            msg = make_message(f"before{bad}after", timestamp=at(1))
            with pytest.raises(InvalidArgumentError) as info:
                await memory.store_message(msg, uid, conv)
            assert "content" in info.value.argument
            with pytest.raises(InvalidArgumentError):
                await memory.store_messages([fine, msg], conversation_id=conv, user_id=uid)
        for bad in self.forbidden_metadata_text:
            msg = make_message("metadata holds it", metadata={"k": f"a{bad}b"}, timestamp=at(2))
            with pytest.raises(InvalidArgumentError) as info:
                await memory.store_message(msg, uid, conv)
            assert "metadata" in info.value.argument
        assert await memory.retrieve_messages(conv) == []
        stats = await memory.get_statistics(uid)
        assert stats["total_messages"] == 0
        assert stats["conversations"] == 0

    def _forbidden(self, text: str, metadata: bool = False) -> bool:
        bad = self.forbidden_metadata_text if metadata else self.forbidden_text
        return any(f in text for f in bad)
