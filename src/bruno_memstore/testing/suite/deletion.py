"""Deletion is real: deleted data is gone from windows, search, statistics and export."""

from __future__ import annotations

from typing import ClassVar

from bruno_core.models.memory import MemoryQuery
from bruno_core.models.message import Message, MessageRole

from ...base import ContextStrategy, MemoryBackend
from ...capabilities import Capability
from ..builders import (
    at,
    collect_export,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from ..erasure import run_erasures
from ..harness import ConformanceBase, requires

__all__ = ["DeletionSuite"]

_WORD = "quokka"  # every deleted message carries it, so search can prove it is gone


class DeletionSuite(ConformanceBase):
    """``clear_conversation``, ``clear_history``, ``delete_memory``, ``forget_user``."""

    suite_search_mode: ClassVar[str] = "keyword"

    async def _conversation(self, memory: MemoryBackend, uid: str, conv: str) -> list:
        roles = [MessageRole.SYSTEM, MessageRole.USER, MessageRole.ASSISTANT, MessageRole.USER]
        msgs = [
            make_message(f"{role.value} line {i} about the {_WORD}", role=role, timestamp=at(i))
            for i, role in enumerate(roles)
        ]
        await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
        return msgs

    async def _search_count(self, memory: MemoryBackend, uid: str) -> int | None:
        if not memory.supports(Capability.FULL_TEXT):
            return None
        return len(await memory.search(uid, _WORD, limit=100))

    async def _exported_ids(self, memory: MemoryBackend, uid: str) -> set[str] | None:
        if not memory.supports(Capability.LISTING):
            return None
        return {r.id for r in await collect_export(memory, "messages", uid)}

    async def test_clear_conversation(self, memory: MemoryBackend) -> None:
        uid, conv, other = new_user_id(), new_conversation_id(), new_conversation_id()
        session = await memory.create_session(uid)
        doomed = await self._conversation(memory, uid, conv)
        await memory.store_message(make_message("keep me", timestamp=at(9)), uid, other)
        sess_in_conv = (await memory.get_context(uid, conv)).session
        if memory.supports(Capability.MEMORIES):
            await memory.store_memory(make_memory_entry(uid, "a fact", conversation_id=conv))
        await memory.clear_conversation(uid, conv)

        assert await memory.retrieve_messages(conv) == []
        assert [m.content for m in await memory.retrieve_context(uid, limit=50)] == ["keep me"]
        assert await memory.get_session(sess_in_conv.session_id) is None
        assert await memory.get_session(session.session_id) is not None
        stats = await memory.get_statistics(uid)
        assert stats["total_messages"] == 1
        assert stats["conversations"] == 2  # `other` and the session's own conversation
        assert await self._search_count(memory, uid) in (None, 0)
        exported = await self._exported_ids(memory, uid)
        assert exported is None or not exported & {str(m.id) for m in doomed}
        if memory.supports(Capability.MEMORIES):
            # Memory entries are the user's, not the conversation's: they stay.
            assert stats["memories"] == 1
        # The id is free again, and clearing twice is harmless.
        await memory.clear_conversation(uid, conv)
        await memory.store_message(make_message("a fresh start"), uid, conv)
        assert len(await memory.retrieve_messages(conv)) == 1

    async def test_clear_history_keeps_system_messages(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msgs = await self._conversation(memory, uid, conv)
        await memory.clear_history(conv)
        kept = await memory.retrieve_messages(conv)
        assert [m.id for m in kept] == [msgs[0].id]
        stats = await memory.get_statistics(uid)
        assert stats["total_messages"] == 1
        assert stats["messages_by_role"] == {"system": 1}
        assert await self._search_count(memory, uid) in (None, 1)
        exported = await self._exported_ids(memory, uid)
        assert exported is None or exported == {str(msgs[0].id)}
        # The conversation is still the user's.
        later = make_message("after the clear", timestamp=at(20))
        await memory.store_message(later, uid, conv)
        assert [m.id for m in await memory.retrieve_messages(conv)] == [later.id, msgs[0].id]

    async def test_clear_history_everything(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        await self._conversation(memory, uid, conv)
        await memory.clear_history(conv, keep_system_messages=False)
        assert await memory.retrieve_messages(conv) == []
        assert await memory.retrieve_context(uid, limit=50) == []
        stats = await memory.get_statistics(uid)
        assert stats["total_messages"] == 0
        assert stats["messages_by_role"] == {}
        assert await self._search_count(memory, uid) in (None, 0)
        assert await self._exported_ids(memory, uid) in (None, set())

    @requires(Capability.MEMORIES)
    async def test_delete_memory_everywhere(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entry = make_memory_entry(uid, f"the user once fed a {_WORD}")
        await memory.store_memory(entry)
        await memory.delete_memory(str(entry.id))
        assert await memory.retrieve_memories(MemoryQuery(user_id=uid, include_expired=True)) == []
        assert (await memory.get_statistics(uid))["memories"] == 0
        assert await self._search_count(memory, uid) in (None, 0)
        if memory.supports(Capability.LISTING):
            assert await collect_export(memory, "memories", uid) == []

    @requires(Capability.LISTING)
    async def test_forget_user(self, memory: MemoryBackend) -> None:
        uid, other = new_user_id(), new_user_id()
        a, b, others_conv = new_conversation_id(), new_conversation_id(), new_conversation_id()
        await self._conversation(memory, uid, a)
        await self._conversation(memory, uid, b)
        session = await memory.create_session(uid)
        await memory.store_message(make_message(f"other {_WORD}"), other, others_conv)
        if memory.supports(Capability.MEMORIES):
            await memory.store_memory(make_memory_entry(uid, f"pet {_WORD}"))
        counts = await memory.forget_user(uid)
        assert counts["messages"] == 8
        assert await memory.retrieve_messages(a) == []
        assert await memory.retrieve_messages(b) == []
        assert await memory.retrieve_context(uid, limit=50) == []
        assert await memory.get_session(session.session_id) is None
        stats = await memory.get_statistics(uid)
        assert (stats["total_messages"], stats["conversations"], stats["sessions"]) == (0, 0, 0)
        assert stats["memories"] == 0
        assert await self._search_count(memory, uid) in (None, 0)
        for kind in ("messages", "conversations", "sessions", "memories"):
            assert await collect_export(memory, kind, uid) == [], kind
        if memory.supports(Capability.MEMORIES):
            assert await memory.retrieve_memories(MemoryQuery(user_id=uid)) == []
        # The other user is untouched, and the forgotten user can start again.
        assert len(await memory.retrieve_messages(others_conv)) == 1
        await memory.store_message(make_message("back again"), uid, a)
        assert (await memory.get_statistics(uid))["total_messages"] == 1

    async def test_erased_words_are_found_nowhere(self, memory: MemoryBackend) -> None:
        """Marker words erased by ``clear_conversation``, ``delete_memory`` and ``forget_user``
        come back from no search mode, read, statistic or export; the kept user's do."""
        done = await run_erasures(memory)
        modes: list[str] = []
        if memory.supports(Capability.FULL_TEXT):
            modes.append("keyword")
        if memory.supports(Capability.VECTORS) and memory.embedder is not None:
            modes += ["vector", "hybrid"]
        for way, words in done.erased.items():
            user = done.users[way]
            word = min(words, key=len)
            for mode in modes:
                found = await memory.search(user, word, limit=50, mode=mode)  # type: ignore[arg-type]
                texts = [_text(r.message or r.memory) for r in found]
                assert not [t for t in texts if word in t], (way, mode, texts)
            strategy: ContextStrategy = "hybrid" if modes else "recent"
            context = await memory.retrieve_context(user, word, limit=50, strategy=strategy)
            assert not [m for m in context if word in m.content], way
            stats = await memory.get_statistics(user)
            assert word not in repr(stats)
            if memory.supports(Capability.MEMORIES):
                entries = await memory.retrieve_memories(
                    MemoryQuery(user_id=user, include_expired=True, limit=100)
                )
                assert not [e for e in entries if word in e.model_dump_json()], way
            if memory.supports(Capability.LISTING):
                for kind in ("conversations", "messages", "memories", "sessions"):
                    exported = await collect_export(memory, kind, user)
                    assert word not in repr(exported), (way, kind)
        # The control: the kept user's word is found by every mode and in the export.
        kept = min(done.kept, key=len)
        for mode in modes:
            found = await memory.search(done.kept_user, kept, limit=50, mode=mode)  # type: ignore[arg-type]
            assert [r for r in found if kept in _text(r.message or r.memory)], mode
        if memory.supports(Capability.LISTING):
            assert kept in repr(await collect_export(memory, "messages", done.kept_user))


def _text(record: object) -> str:
    if isinstance(record, Message):
        return record.content
    return record.model_dump_json() if record is not None else ""  # type: ignore[attr-defined]
