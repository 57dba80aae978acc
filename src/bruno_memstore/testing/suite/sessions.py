"""Sessions, conversation resolution in ``get_context``, the assistant flow, statistics."""

from __future__ import annotations

import pytest
from bruno_core.base.assistant import BaseAssistant
from bruno_core.interfaces.memory import MemoryInterface
from bruno_core.models.message import MessageRole
from bruno_core.registry.memory_registry import MemoryBackendRegistry

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import ClosedError, NotFoundError
from ..builders import (
    ScriptedLLM,
    at,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_session_id,
    new_user_id,
)
from ..harness import ConformanceBase, requires
from .roundtrip import assert_same_message

__all__ = ["ResolutionSuite", "SessionSuite", "StatisticsSuite"]


class SessionSuite(ConformanceBase):
    """``create_session`` / ``get_session`` / ``end_session``, and the two interface faces."""

    async def test_both_faces_are_present(self, memory: MemoryBackend) -> None:
        assert isinstance(memory, MemoryInterface)
        assert MemoryBackendRegistry().validate_plugin(type(memory))
        assert repr(memory).startswith(type(memory).__name__)

    async def test_works_without_initialize_and_as_context_manager(
        self, memory: MemoryBackend
    ) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        fresh = await self.open_memory()
        await fresh.store_message(make_message("no ceremony"), uid, conv)
        assert len(await fresh.retrieve_messages(conv)) == 1
        await fresh.shutdown()
        assert fresh.closed and not fresh.connected
        with pytest.raises(ClosedError):  # shut down until initialize() opens it again
            await fresh.retrieve_messages(conv)
        await fresh.initialize()
        assert fresh.connected and not fresh.closed
        reread = await fresh.retrieve_messages(conv)
        if fresh.supports(Capability.DURABLE):
            assert len(reread) == 1
        async with await self.open_memory() as managed:
            await managed.store_message(make_message("managed"), uid, new_conversation_id())
            assert managed.connected
        assert not managed.connected

    async def test_create_and_get(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        session = await memory.create_session(uid, {"channel": "voice", "n": [1, {"x": None}]})
        assert session.user_id == uid
        assert session.is_active
        assert session.metadata == {"channel": "voice", "n": [1, {"x": None}]}
        got = await memory.get_session(session.session_id)
        assert got == session
        other = await memory.create_session(uid)
        assert other.session_id != session.session_id
        assert other.conversation_id != session.conversation_id

    async def test_end_session(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        session = await memory.create_session(uid)
        await memory.end_session(session.session_id)
        ended = await memory.get_session(session.session_id)
        assert ended is not None
        assert not ended.is_active
        assert ended.ended_at is not None
        assert ended.session_id == session.session_id
        await memory.end_session(session.session_id)  # ending twice is harmless
        again = await memory.get_session(session.session_id)
        assert again == ended

    async def test_unknown_sessions(self, memory: MemoryBackend) -> None:
        assert await memory.get_session(new_session_id()) is None
        with pytest.raises(NotFoundError):
            await memory.end_session(new_session_id())
        with pytest.raises(LookupError):  # NotFoundError is a LookupError
            await memory.end_session(new_session_id())


class ResolutionSuite(ConformanceBase):
    """``get_context`` accepts a session id, a conversation id, an unknown id, or nothing."""

    async def test_by_session_id(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        session = await memory.create_session(uid)
        msg = make_message("in the session's conversation")
        await memory.store_message(msg, uid, session.conversation_id)
        ctx = await memory.get_context(uid, session.session_id)
        assert ctx.session.session_id == session.session_id
        assert ctx.conversation_id == session.conversation_id
        assert ctx.user.user_id == uid
        assert [m.id for m in ctx.messages] == [msg.id]

    async def test_by_conversation_id(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msgs = [make_message(f"turn {i}", timestamp=at(i)) for i in range(3)]
        await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
        ctx = await memory.get_context(uid, conv)
        assert ctx.conversation_id == conv
        assert ctx.session.conversation_id == conv
        assert [m.id for m in ctx.messages] == [m.id for m in msgs]
        for got, want in zip(ctx.messages, msgs, strict=True):
            assert_same_message(got, want, conv)
        again = await memory.get_context(uid, conv)
        assert again.session.session_id == ctx.session.session_id

    async def test_unknown_id_is_created(self, memory: MemoryBackend) -> None:
        uid, ref = new_user_id(), new_conversation_id()
        ctx = await memory.get_context(uid, ref)
        assert ctx.conversation_id == ref
        assert ctx.messages == []
        assert ctx.session.user_id == uid
        stored = await memory.get_session(ctx.session.session_id)
        assert stored is not None
        assert stored.conversation_id == ref
        again = await memory.get_context(uid, ref)
        assert again.session.session_id == ctx.session.session_id
        assert (await memory.get_statistics(uid))["sessions"] == 1

    async def test_none_continues_the_latest_active_session(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        first = await memory.create_session(uid)
        second = await memory.create_session(uid)
        second_started = second.started_at
        assert (await memory.get_context(uid)).session.session_id == second.session_id
        await memory.end_session(second.session_id)
        assert (await memory.get_context(uid)).session.session_id == first.session_id
        await memory.end_session(first.session_id)
        fresh = await memory.get_context(uid)
        assert fresh.session.session_id not in (first.session_id, second.session_id)
        assert fresh.session.is_active
        assert fresh.session.started_at >= second_started
        assert (await memory.get_context(uid)).session.session_id == fresh.session.session_id

    async def test_none_for_a_new_user_starts_a_session(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        ctx = await memory.get_context(uid)
        assert ctx.session.user_id == uid
        assert ctx.messages == []
        assert await memory.get_session(ctx.session.session_id) is not None

    async def test_context_window(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        n = memory.context_window + 3
        msgs = [make_message(f"m{i}", timestamp=at(i)) for i in range(n)]
        await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
        ctx = await memory.get_context(uid, conv)
        assert [m.id for m in ctx.messages] == [m.id for m in msgs[-memory.context_window :]]

    async def test_context_of_a_session_is_its_conversations_not_one_named_like_it(
        self, memory: MemoryBackend
    ) -> None:
        # get_context reads the conversation named like the session id beside the session
        # (BaseAssistant passes a conversation id): a session of another conversation must
        # get that one's messages.
        uid = new_user_id()
        session = await memory.create_session(uid)
        mine = make_message("in the session's conversation", timestamp=at(1))
        await memory.store_message(mine, uid, session.conversation_id)
        lookalike = make_message("in a conversation named like the session", timestamp=at(2))
        await memory.store_message(lookalike, uid, session.session_id)
        ctx = await memory.get_context(uid, session.session_id)
        assert ctx.session.session_id == session.session_id
        assert ctx.conversation_id == session.conversation_id
        assert [m.id for m in ctx.messages] == [mine.id]
        ctx = await memory.get_context(uid, session.conversation_id)  # a session of its own
        assert [m.id for m in ctx.messages] == [mine.id]

    async def test_assistant_style_flow(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        ctx = await memory.get_context(uid, conv)
        question = make_message("what is the capital of France?", timestamp=at(0))
        await memory.store_message(question, ctx.conversation_id)  # two-argument form
        answer = make_message("Paris", role=MessageRole.ASSISTANT, timestamp=at(1))
        await memory.store_message(answer, ctx.conversation_id)
        again = await memory.get_context(uid, conv)
        assert [m.id for m in again.messages] == [question.id, answer.id]
        # The conversation is the user's, not the default owner's.
        assert (await memory.get_statistics(uid))["total_messages"] == 2
        assert len(await memory.retrieve_context(uid, limit=10)) == 2

    async def test_base_assistant_end_to_end(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        llm = ScriptedLLM(["Hello!", "You said your name is Ada."])
        assistant = BaseAssistant(llm=llm, memory=memory)
        await assistant.initialize()
        first = make_message("hi, my name is Ada")
        await assistant.process_message(first, user_id=uid, conversation_id=conv)
        second = make_message("what is my name?")
        reply = await assistant.process_message(second, user_id=uid, conversation_id=conv)
        assert reply.text == "You said your name is Ada."
        # The second call saw the first exchange, loaded from memory.
        assert [m.content for m in llm.seen[1]] == [
            "hi, my name is Ada",
            "Hello!",
            "what is my name?",
        ]
        stored = await memory.retrieve_context(uid, conversation_id=conv, limit=10)
        assert [m.role for m in stored] == [
            MessageRole.USER,
            MessageRole.ASSISTANT,
            MessageRole.USER,
            MessageRole.ASSISTANT,
        ]
        assert [m.content for m in stored][-1] == "You said your name is Ada."


class StatisticsSuite(ConformanceBase):
    """``get_statistics`` counts exactly, for one user."""

    async def test_counts_are_exact(self, memory: MemoryBackend) -> None:
        uid, a, b = new_user_id(), new_conversation_id(), new_conversation_id()
        roles = [MessageRole.USER, MessageRole.ASSISTANT, MessageRole.USER, MessageRole.SYSTEM]
        in_a = [make_message(f"a{i}", role=r, timestamp=at(i)) for i, r in enumerate(roles)]
        in_b = [make_message("b0", timestamp=at(-5)), make_message("b1", timestamp=at(50))]
        await memory.store_messages(in_a, conversation_id=a, user_id=uid)
        await memory.store_messages(in_b, conversation_id=b, user_id=uid)
        s1 = await memory.create_session(uid)
        await memory.create_session(uid)
        await memory.end_session(s1.session_id)
        stats = await memory.get_statistics(uid)
        assert stats["user_id"] == uid
        assert stats["total_messages"] == 6
        assert stats["messages_by_role"] == {"user": 4, "assistant": 1, "system": 1}
        assert stats["conversations"] == 4  # a, b, and one per session
        assert stats["sessions"] == 2
        assert stats["active_sessions"] == 1
        assert stats["first_message_at"] == at(-5).isoformat()
        assert stats["last_message_at"] == at(50).isoformat()

    async def test_unknown_user_has_zero_counts(self, memory: MemoryBackend) -> None:
        stats = await memory.get_statistics(new_user_id())
        assert stats["total_messages"] == 0
        assert stats["conversations"] == 0
        assert stats["sessions"] == 0
        assert stats["memories"] == 0
        assert stats["messages_by_role"] == {}
        assert stats["first_message_at"] is None

    @requires(Capability.MEMORIES)
    async def test_memory_count(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        for i in range(3):
            await memory.store_memory(make_memory_entry(uid, f"fact number {i}"))
        assert (await memory.get_statistics(uid))["memories"] == 3
