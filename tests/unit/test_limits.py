"""Declared limits: the shared layer refuses what the engine cannot store, before any write."""

from __future__ import annotations

from typing import ClassVar

import pytest
from bruno_core.models.context import SessionContext

from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.embeddings.adapter import Embedder
from bruno_memstore.errors import InvalidArgumentError
from bruno_memstore.limits import NO_LIMITS, Limits
from bruno_memstore.models import message_to_record, session_to_record
from bruno_memstore.testing import (
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)


class NulRefusing(InMemoryStorage):
    limits = Limits(nul_in_text=False, nul_in_json=False, nul_holder="this test's engine")


class SizeLimited(InMemoryStorage):
    limits = Limits(max_record_bytes=100, size_limit="the test's limit (100 bytes)")


def test_limits_say_what_the_suite_should_refuse() -> None:
    assert NO_LIMITS.forbidden_text == NO_LIMITS.forbidden_json_text == ()
    assert NulRefusing.limits.forbidden_text == NulRefusing.limits.forbidden_json_text == ("\x00",)


@pytest.mark.asyncio
async def test_nul_is_refused_in_each_field_and_nothing_is_written() -> None:
    memory = NulRefusing(embedding_model=None)
    uid, conv = new_user_id(), new_conversation_id()
    cases = [
        (make_message("a \x00 b"), "message.content"),
        (make_message("fine", metadata={"k": ["\x00"]}), "message.metadata"),
    ]
    for message, argument in cases:
        with pytest.raises(InvalidArgumentError, match="this test's engine") as info:
            await memory.store_message(message, uid, conv)
        assert info.value.argument == argument
    assert await memory.retrieve_messages(conv) == []
    with pytest.raises(InvalidArgumentError) as info:
        await memory.store_memory(make_memory_entry(uid, "x \x00"))
    assert info.value.argument == "memory_entry.content"
    with pytest.raises(InvalidArgumentError) as info:
        await memory.store_memory(make_memory_entry(uid, "x", custom_fields={"\x00": 1}))
    assert info.value.argument == "memory_entry"
    with pytest.raises(InvalidArgumentError) as info:
        await memory.create_session(uid, metadata={"note": "\x00"})
    assert info.value.argument == "session"
    stats = await memory.get_statistics(uid)
    assert (stats["total_messages"], stats["memories"], stats["sessions"]) == (0, 0, 0)


@pytest.mark.asyncio
async def test_a_record_over_the_size_limit_is_refused() -> None:
    memory = SizeLimited(embedding_model=None)
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("small"), uid, conv)
    with pytest.raises(InvalidArgumentError, match=r"the test's limit \(100 bytes\)") as info:
        await memory.store_message(make_message("big " * 50), uid, conv)
    assert info.value.argument == "message"
    assert len(await memory.retrieve_messages(conv)) == 1


def test_check_storable_is_the_public_check() -> None:
    memory = NulRefusing(embedding_model=None)
    fine = message_to_record(make_message("fine"), "c")
    session = session_to_record(SessionContext(user_id="u", metadata={"a": "\x00"}))
    memory.check_storable([fine])
    with pytest.raises(InvalidArgumentError) as info:
        memory.check_storable([fine, session])
    assert info.value.argument == "session"


class _Named:
    """An embedding model whose name is not Unicode text."""

    model_name: ClassVar[str] = "bad \ud800 name"
    dimension = 2

    def embed_texts(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]


@pytest.mark.asyncio
async def test_a_model_name_that_is_not_text_is_refused_on_connect() -> None:
    memory = InMemoryStorage(embedding_model=Embedder(_Named()))
    with pytest.raises(InvalidArgumentError) as info:
        await memory.initialize()
    assert info.value.argument == "embedding_model"
