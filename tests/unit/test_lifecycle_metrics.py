"""The sweeper and retention count what they remove in the Prometheus metrics."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.retention import RetentionPolicy
from bruno_memstore.testing import at, make_message


def _removed(reason: str, kind: str) -> float:
    labels = {"backend": "memory", "reason": reason, "kind": kind}
    return REGISTRY.get_sample_value("bruno_memstore_lifecycle_removed_total", labels) or 0.0


async def test_sweeps_and_retention_are_counted() -> None:
    memory = InMemoryStorage(embedding_model=None)
    await memory.store_message(make_message("brief", timestamp=at(1)), "u", "c", ttl=0.01)
    msgs = [make_message(f"m {i}", timestamp=at(2 + i)) for i in range(3)]
    await memory.store_messages(msgs, conversation_id="c", user_id="u")
    await asyncio.sleep(0.2)
    swept_before = _removed("expiry", "messages")
    assert (await memory.sweep())["messages"] == 1
    assert _removed("expiry", "messages") == swept_before + 1
    kept_before = _removed("retention", "messages")
    await memory.apply_retention(RetentionPolicy(keep_last=1), dry_run=True)
    assert _removed("retention", "messages") == kept_before  # a dry run counts nothing
    await memory.apply_retention(RetentionPolicy(keep_last=1))
    assert _removed("retention", "messages") == kept_before + 2
    await memory.shutdown()
