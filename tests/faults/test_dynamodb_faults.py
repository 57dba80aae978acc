"""DynamoDBMemory when its server goes away: a restart or a kill under load loses no
acknowledged message and stores none twice. The server is dynalite with its tables in
LevelDB files, so they outlive its process (moto keeps them in memory only). A server down
at start is in ``tests/backends/test_dynamodb.py``."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import _engines as engines
from bruno_memstore.backends.dynamodb import DynamoDBMemory
from bruno_memstore.errors import MemstoreError
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing import make_message

from ._dynalite_server import DynaliteServer
from ._progress import until

USER = "loaded-user"
PATIENT = RetryPolicy(attempts=60, initial_backoff=0.05, max_backoff=0.5, deadline=60.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DynaliteServer]:
    dynalite = DynaliteServer(tmp_path / "dynalite")
    dynalite.start()
    yield dynalite
    dynalite.stop()


async def _load(
    memory: DynamoDBMemory, writers: int, stop: asyncio.Event, acked: list[tuple[str, str]]
) -> list[BaseException]:
    """Concurrent writers storing one message at a time until ``stop``; the errors."""
    failed: list[BaseException] = []

    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            msg = make_message(f"writer {w} message {i}")
            try:
                await memory.store_message(msg, USER, f"conv-{w % 3}")
            except MemstoreError as exc:
                failed.append(exc)
            else:
                acked.append((f"conv-{w % 3}", str(msg.id)))
            i += 1

    await asyncio.gather(*(writer(w) for w in range(writers)))
    return failed


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill"])
async def test_restart_under_load_keeps_every_acknowledged_store_once(
    server: DynaliteServer, crash: bool
) -> None:
    memory = DynamoDBMemory(
        "faults",
        region="us-east-1",
        endpoint_url=server.url,
        connect_timeout=1.0,
        retry=PATIENT,
        embedding_model=None,
        **engines.DYNAMODB_KEYS,
    )
    await memory.initialize()
    stop = asyncio.Event()
    acked: list[tuple[str, str]] = []
    load = asyncio.create_task(_load(memory, 8, stop, acked))
    await until(lambda: len(acked) > 30, "30 stores before the restart")
    before = len(acked)
    await asyncio.to_thread(server.restart, 0.5, crash=crash)
    back = len(acked)
    await until(lambda: len(acked) > back + 30, "30 stores after the restart")
    stop.set()
    failed = await load
    assert before > 30 and len(acked) > back + 30
    assert not failed, failed[:3]  # retries bridged the restart
    stored: Counter[str] = Counter()
    for conv in {c for c, _ in acked}:
        stored.update(str(m.id) for m in await memory.retrieve_messages(conv, limit=10_000))
    assert not {i: n for i, n in stored.items() if n > 1}
    lost = {i for _, i in acked} - set(stored)
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged stores lost"
    assert (await memory.get_statistics(USER))["total_messages"] == len(stored)
    await memory.shutdown()
