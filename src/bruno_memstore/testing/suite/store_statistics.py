"""``store_statistics``: the whole store's records by kind and its storage use."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import CapabilityError
from ...metrics import STORE_KINDS
from ..builders import make_memory_entry, make_message, new_conversation_id, new_user_id
from ..harness import ConformanceBase, lacks, requires

__all__ = ["StoreStatisticsRefusalSuite", "StoreStatisticsSuite"]


@requires(Capability.LISTING)
class StoreStatisticsSuite(ConformanceBase):
    """Counts over every user, exact; storage in bytes where the engine tells; gauges set."""

    async def test_counts_grow_by_exactly_what_was_stored(self, memory: MemoryBackend) -> None:
        # Expired records count until they are deleted, and some engines delete them on their
        # own schedule (MongoDB's TTL monitor): sweep earlier tests' first, so none leaves the
        # count between the two readings.
        await memory.sweep()
        before = await memory.store_statistics()
        a, b = new_user_id(), new_user_id()
        await memory.store_messages(
            [make_message(f"note {i}") for i in range(3)],
            conversation_id=new_conversation_id(),
            user_id=a,
        )
        await memory.store_messages(
            [make_message("hello")], conversation_id=new_conversation_id(), user_id=b
        )
        await memory.create_session(b)
        memories = 0
        if memory.supports(Capability.MEMORIES):
            await memory.store_memory(make_memory_entry(a, "likes tea"))
            memories = 1
        after = await memory.store_statistics()

        grown = {kind: after[kind] - before[kind] for kind in STORE_KINDS}
        # The session claims a conversation of its own.
        assert grown == {
            "users": 2,
            "conversations": 3,
            "messages": 4,
            "sessions": 1,
            "memories": memories,
        }
        assert after["backend"] == memory.backend_name
        nbytes = after["storage_bytes"]
        assert nbytes is None or (isinstance(nbytes, int) and nbytes >= 0)

    async def test_the_gauges_hold_the_last_count(self, memory: MemoryBackend) -> None:
        await memory.store_messages(
            [make_message("counted")], conversation_id=new_conversation_id(), user_id=new_user_id()
        )
        found = await memory.store_statistics()
        for kind in STORE_KINDS:
            labels = {"backend": memory.backend_name, "kind": kind}
            assert REGISTRY.get_sample_value("bruno_memstore_records", labels) == found[kind]
        if found["storage_bytes"] is not None:
            value = REGISTRY.get_sample_value(
                "bruno_memstore_storage_bytes", {"backend": memory.backend_name}
            )
            assert value == found["storage_bytes"]


@lacks(Capability.LISTING)
class StoreStatisticsRefusalSuite(ConformanceBase):
    """A backend that cannot list its records refuses to count them."""

    async def test_store_statistics_is_refused(self, memory: MemoryBackend) -> None:
        with pytest.raises(CapabilityError):
            await memory.store_statistics()
