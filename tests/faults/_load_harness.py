"""A store under load while its server goes away: concurrent writers storing one message at
a time, a fault between two stretches of progress, and the check that every acknowledged
message is stored exactly once. The fault tests of the server backends share it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bruno_memstore.base import MemoryBackend
from bruno_memstore.errors import MemstoreError
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing import make_message

from ._progress import until

__all__ = ["PATIENT", "USER", "WORD", "Load", "stored_once", "under_load"]

USER = "loaded-user"
# Retries that outlast a restart: a store waits up to a minute for its server.
PATIENT = RetryPolicy(attempts=60, initial_backoff=0.05, max_backoff=0.5, deadline=60.0)
WORD = "lighthouse"  # in every message the writers store (for a search over them all)


@dataclass
class Load:
    """What the writers did: ``(conversation, message id)`` of each acknowledged store, and
    ``(conversation, message id, error)`` of each failed one."""

    acked: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, BaseException]] = field(default_factory=list)


async def under_load(
    memory: MemoryBackend,
    fault: Callable[[], object],
    *,
    writers: int,
    conversations: int,
    progress: int,
    within: float = 120.0,
) -> Load:
    """Run ``writers`` tasks storing :data:`USER`'s messages one at a time into
    ``conversations`` conversations; once ``progress`` stores are acknowledged run ``fault``
    (blocking: in a thread), and stop once ``progress`` more are (within ``within`` s)."""
    load = Load()
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        conv = f"conv-{w % conversations}"
        i = 0
        while not stop.is_set():
            msg = make_message(f"writer {w} message {i} {WORD}")
            try:
                await memory.store_message(msg, USER, conv)
            except MemstoreError as exc:
                load.failed.append((conv, str(msg.id), exc))
            else:
                load.acked.append((conv, str(msg.id)))
            i += 1

    tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
    try:
        await until(lambda: len(load.acked) > progress, f"{progress} stores before the fault")
        await asyncio.to_thread(fault)
        back = len(load.acked)
        await until(
            lambda: len(load.acked) > back + progress,
            f"{progress} stores after the fault",
            within,
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return load


async def stored_once(memory: MemoryBackend, acked: list[tuple[str, str]]) -> int:
    """Assert that every acknowledged message is stored, none twice, and that the user's
    statistics count what is stored; how many messages are stored."""
    stored: Counter[str] = Counter()
    for conv in {c for c, _ in acked}:
        stored.update(str(m.id) for m in await memory.retrieve_messages(conv, limit=10_000))
    assert not {i: n for i, n in stored.items() if n > 1}, "a message is stored twice"
    lost = {i for _, i in acked} - set(stored)
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged stores lost"
    assert (await memory.get_statistics(USER))["total_messages"] == len(stored)
    return len(stored)
