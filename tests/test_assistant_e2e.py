"""End to end with bruno-core's real BaseAssistant and its plugin registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from bruno_core.base import BaseAssistant
from bruno_core.models.message import Message, MessageRole
from bruno_core.registry import MemoryBackendRegistry

from bruno_memstore import InMemoryStorage, OwnershipError
from bruno_memstore.base import MemoryBackend
from bruno_memstore.demo import ScriptedLLM


def _sqlite(path: Path) -> MemoryBackend:
    from bruno_memstore.backends.sqlite import SQLiteMemory

    return SQLiteMemory(str(path))


def _said(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.role.value, m.content) for m in messages]


async def _two_turns(memory: MemoryBackend) -> ScriptedLLM:
    llm = ScriptedLLM(["Kyoto in April is lovely.", "Then book a ryokan in Higashiyama."])
    assistant = BaseAssistant(llm=llm, memory=memory)  # no memory.initialize() anywhere
    await assistant.initialize()
    first = await assistant.process_message(
        Message(role=MessageRole.USER, content="I want to visit Kyoto in April."),
        user_id="alice",
        conversation_id="trip",
    )
    second = await assistant.process_message(
        Message(role=MessageRole.USER, content="Where should we stay?"),
        user_id="alice",
        conversation_id="trip",
    )
    assert (first.text, second.text) == (
        "Kyoto in April is lovely.",
        "Then book a ryokan in Higashiyama.",
    )
    return llm


EXCHANGE = [
    ("user", "I want to visit Kyoto in April."),
    ("assistant", "Kyoto in April is lovely."),
    ("user", "Where should we stay?"),
    ("assistant", "Then book a ryokan in Higashiyama."),
]


@pytest.fixture(params=["memory", "sqlite"])
async def memory(request: pytest.FixtureRequest, tmp_path: Path):
    backend = InMemoryStorage() if request.param == "memory" else _sqlite(tmp_path / "m.db")
    yield backend
    await backend.shutdown()


async def test_second_turn_sees_the_first_exchange(memory: MemoryBackend) -> None:
    assert not memory.connected
    llm = await _two_turns(memory)
    assert memory.connected  # connected lazily by the first call
    assert len(llm.calls) == 2
    assert _said(llm.calls[0]) == EXCHANGE[:1]
    assert _said(llm.calls[1]) == EXCHANGE[:3]  # oldest first: user1, assistant1, user2
    assert all(m.conversation_id == "trip" for m in llm.calls[1])

    context = await memory.get_context("alice", "trip")
    assert _said(context.messages) == EXCHANGE
    assert _said(await memory.retrieve_context("alice", conversation_id="trip")) == EXCHANGE
    assert [m.role.value for m in await memory.retrieve_messages("trip")] == [
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    stats = await memory.get_statistics("alice")
    assert (stats["total_messages"], stats["conversations"], stats["sessions"]) == (4, 1, 1)
    with pytest.raises(OwnershipError):
        await memory.get_context("mallory", "trip")
    hits = await memory.search("alice", "ryokan")
    assert hits and hits[0].content == "Then book a ryokan in Higashiyama."


async def test_sqlite_conversation_survives_a_new_instance(tmp_path: Path) -> None:
    path = tmp_path / "assistant.db"
    first = _sqlite(path)
    try:
        await _two_turns(first)
    finally:
        await first.shutdown()

    reopened = _sqlite(path)
    try:
        context = await reopened.get_context("alice", "trip")
        assert context.conversation_id == "trip"
        assert _said(context.messages) == EXCHANGE
        assert _said(await reopened.retrieve_context("alice", limit=3)) == EXCHANGE[1:]
        # A third turn continues the stored conversation.
        llm = ScriptedLLM(["Nara is an easy day trip."])
        assistant = BaseAssistant(llm=llm, memory=reopened)
        await assistant.initialize()
        await assistant.process_message(
            Message(role=MessageRole.USER, content="Any day trips?"),
            user_id="alice",
            conversation_id="trip",
        )
        assert _said(llm.calls[0]) == [*EXCHANGE, ("user", "Any day trips?")]
    finally:
        await reopened.shutdown()


async def test_message_metadata_user_owns_the_conversation(memory: MemoryBackend) -> None:
    # Without user_id, BaseAssistant falls back to message.metadata["user_id"].
    llm = ScriptedLLM(["Hello Bob."])
    assistant = BaseAssistant(llm=llm, memory=memory)
    await assistant.initialize()
    await assistant.process_message(
        Message(role=MessageRole.USER, content="Hi", metadata={"user_id": "bob"}),
        conversation_id="bob-chat",
    )
    assert _said((await memory.get_context("bob", "bob-chat")).messages) == [
        ("user", "Hi"),
        ("assistant", "Hello Bob."),
    ]
    assert (await memory.get_statistics("default"))["total_messages"] == 0


def test_bruno_core_registry_discovers_and_accepts_our_backends() -> None:
    from bruno_memstore.backends.sqlite import SQLiteMemory

    registry = MemoryBackendRegistry()
    registry.discover_plugins()
    memory_info = registry.get("memory")
    sqlite_info = registry.get("sqlite")
    assert memory_info is not None and memory_info.plugin_class is InMemoryStorage
    assert sqlite_info is not None and sqlite_info.plugin_class is SQLiteMemory
    assert registry.validate_plugin(InMemoryStorage) and registry.validate_plugin(SQLiteMemory)
    assert isinstance(registry.get_instance("memory"), InMemoryStorage)


async def test_registry_instance_serves_an_assistant(tmp_path: Path) -> None:
    registry = MemoryBackendRegistry()
    registry.discover_plugins()
    memory = registry.get_instance("sqlite", db_path=str(tmp_path / "registry.db"))
    try:
        await _two_turns(memory)
        assert _said((await memory.get_context("alice", "trip")).messages) == EXCHANGE
    finally:
        await memory.shutdown()
    assert (tmp_path / "registry.db").exists()
