"""Undeclared capabilities are refused with ``CapabilityError``, never half-served."""

from __future__ import annotations

import pytest
from bruno_core.models.memory import MemoryQuery

from ...base import MemoryBackend
from ...capabilities import REQUIRED, Capability
from ...errors import CapabilityError
from ..builders import (
    collect_export,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from ..harness import ConformanceBase, lacks

__all__ = ["CapabilitySuite"]


class CapabilitySuite(ConformanceBase):
    """What a backend declares is what it does; the rest raises ``CapabilityError``."""

    async def test_declares_the_required_capabilities(self, memory: MemoryBackend) -> None:
        assert memory.capabilities >= REQUIRED
        assert all(isinstance(c, Capability) for c in memory.capabilities)
        assert memory.backend_name and memory.backend_name != "abstract"

    @lacks(Capability.FULL_TEXT)
    async def test_search_is_refused_without_full_text(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        await memory.store_message(make_message("searchable words"), uid, new_conversation_id())
        with pytest.raises(CapabilityError):
            await memory.search(uid, "searchable")
        with pytest.raises(CapabilityError):
            await memory.search_messages("searchable", user_id=uid)
        with pytest.raises(CapabilityError):
            await memory.search_memories(uid, "searchable")
        with pytest.raises(CapabilityError):
            await memory.retrieve_context(uid, "searchable", strategy="relevant")
        if memory.supports(Capability.MEMORIES):
            with pytest.raises(CapabilityError):
                await memory.retrieve_memories(MemoryQuery(user_id=uid, query_text="words"))

    @lacks(Capability.MEMORIES)
    async def test_memory_entries_are_refused(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        with pytest.raises(CapabilityError):
            await memory.store_memory(make_memory_entry(uid))
        with pytest.raises(CapabilityError):
            await memory.retrieve_memories(MemoryQuery(user_id=uid))
        with pytest.raises(CapabilityError):
            await memory.delete_memory("00000000-0000-0000-0000-000000000000")
        with pytest.raises(CapabilityError):
            await memory.purge_expired()
        assert (await memory.get_statistics(uid))["memories"] == 0

    @lacks(Capability.LISTING)
    async def test_listing_is_refused(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        await memory.store_message(make_message("still here"), uid, conv)
        with pytest.raises(CapabilityError):
            await memory.forget_user(uid)
        with pytest.raises(CapabilityError):
            await collect_export(memory, "messages", uid)
        assert len(await memory.retrieve_messages(conv)) == 1
