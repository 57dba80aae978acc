"""PostgresMemory when the server is down, silent, restarted or crashed under load.

Every test runs its own PostgreSQL 15 (see ``_pg_server``); the shared server is never
touched. What must hold: a clear ``BackendUnavailableError`` naming the redacted URL within
the connect timeout; every store that returned normally is in the database exactly once;
writers keep going once the server is back, thanks to bounded retries.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg
import pytest

from bruno_memstore.backends.postgres import PostgresMemory
from bruno_memstore.errors import BackendUnavailableError, MemstoreError
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing.builders import make_message, new_conversation_id, new_user_id

from ._pg_server import PostgresServer, free_port
from ._progress import until

# Long enough to outlast a restart; the deadline bounds the wait when the server stays down.
PATIENT = RetryPolicy(attempts=30, initial_backoff=0.05, max_backoff=0.5, deadline=30.0)


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    srv = PostgresServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


# ==================================================================== down at start


async def test_no_server_gives_a_clear_error_naming_the_redacted_url() -> None:
    port = free_port()
    mem = PostgresMemory(
        f"postgresql://bob:hunter2@127.0.0.1:{port}/test", connect_timeout=3, retry=PATIENT
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await mem.store_message(make_message("x"), "u", "c")
    assert time.monotonic() - started < 3.5
    text = str(info.value)
    assert f"postgresql://bob:***@127.0.0.1:{port}/test" in text
    assert "hunter2" not in text and "hunter2" not in repr(info.value)
    assert isinstance(info.value.cause, OSError)
    assert not mem.connected
    # Nothing was left half-open: the next call tries again, and fails the same way.
    with pytest.raises(BackendUnavailableError):
        await mem.get_statistics("u")


async def test_a_silent_server_times_out_within_connect_timeout() -> None:
    # A socket that accepts connections (the kernel's backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        mem = PostgresMemory(f"postgresql://bob:hunter2@127.0.0.1:{port}/test", connect_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="connect_timeout=1s") as info:
            await mem.initialize()
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0, elapsed
    assert "bob:***@" in str(info.value) and "hunter2" not in str(info.value)


async def test_a_stopped_cluster_is_unavailable_then_usable_once_started() -> None:
    srv = PostgresServer()
    try:
        mem = PostgresMemory(srv.url, connect_timeout=2)
        with pytest.raises(BackendUnavailableError, match=str(srv.port)):
            await mem.initialize()
        srv.start()
        uid, conv = new_user_id(), new_conversation_id()
        await mem.store_message(make_message("after start"), uid, conv)
        assert [m.content for m in await mem.retrieve_messages(conv)] == ["after start"]
        await mem.shutdown()
    finally:
        srv.close()


# ==================================================================== restart under load


@dataclass
class Load:
    """Concurrent writers storing unique messages until told to stop."""

    memory: PostgresMemory
    writers: int = 12
    acknowledged: dict[str, float] = field(default_factory=dict)  # message id -> when
    failed: list[tuple[str, BaseException]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    conversations: list[str] = field(default_factory=list)

    async def run(self) -> None:
        self.conversations = [new_conversation_id() for _ in range(self.writers)]
        await asyncio.gather(*(self._writer(w) for w in range(self.writers)))

    async def _writer(self, w: int) -> None:
        uid, conv = f"writer-{w}", self.conversations[w]
        n = 0
        while not self.stop.is_set():
            msg = make_message(f"writer {w} message {n}")
            n += 1
            try:
                if n % 5 == 0:  # some batches too
                    extra = make_message(f"writer {w} message {n} (batch)")
                    await self.memory.store_messages(
                        [msg, extra], conversation_id=conv, user_id=uid
                    )
                    self.acknowledged[str(extra.id)] = time.monotonic()
                else:
                    await self.memory.store_message(msg, uid, conv)
            except MemstoreError as exc:
                self.failed.append((str(msg.id), exc))
                await asyncio.sleep(0.05)
                continue
            self.acknowledged[str(msg.id)] = time.monotonic()


async def _check_exactly_once(server: PostgresServer, load: Load) -> None:
    conn = await asyncpg.connect(server.url)
    try:
        rows = await conn.fetch("SELECT id, content, conversation_id FROM bruno_memstore.messages")
        seqs = await conn.fetch(
            "SELECT conversation_id, array_agg(seq ORDER BY ts_us, seq) AS seqs, count(*) "
            "FROM bruno_memstore.messages GROUP BY conversation_id"
        )
    finally:
        await conn.close()
    stored = [r["id"] for r in rows]
    contents = [r["content"] for r in rows]
    missing = set(load.acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged messages were lost"
    # Each message was sent once, under its own id and content: a retry that stored it a
    # second time would show up as a repeated content (or violate the primary key).
    assert len(contents) == len(set(contents))
    assert len(stored) == len(set(stored))
    for row in seqs:
        assert len(set(row["seqs"])) == row["count"]


async def test_restart_under_load_loses_and_duplicates_nothing(server: PostgresServer) -> None:
    memory = PostgresMemory(server.url, connect_timeout=5, retry=PATIENT, max_size=8)
    load = Load(memory)
    task = asyncio.create_task(load.run())
    await until(lambda: len(load.acknowledged) > 20, "the load to get going")
    restarted_at = time.monotonic()
    await asyncio.to_thread(server.restart, "fast")
    back_at = time.monotonic()
    await until(
        lambda: sum(t > back_at for t in load.acknowledged.values()) > 20,
        "20 stores after the restart",
    )
    load.stop.set()
    await asyncio.wait_for(task, timeout=60)
    await memory.shutdown()

    # The load kept going after the restart, on the same memory object.
    after = [t for t in load.acknowledged.values() if t > back_at]
    assert len(after) > 20, f"only {len(after)} stores succeeded after the restart"
    # Retries absorbed the restart: stores in flight during it still returned normally.
    during = [t for t in load.acknowledged.values() if restarted_at <= t <= back_at + 0.5]
    assert during or not load.failed, "no store survived the restart window"
    assert len(load.failed) <= load.writers, [repr(e) for _, e in load.failed[:3]]
    await _check_exactly_once(server, load)


async def test_crash_under_load_keeps_every_acknowledged_store(server: PostgresServer) -> None:
    memory = PostgresMemory(server.url, connect_timeout=5, retry=PATIENT, max_size=8)
    load = Load(memory, writers=8)
    task = asyncio.create_task(load.run())
    await until(lambda: len(load.acknowledged) > 20, "the load to get going")
    # No shutdown checkpoint: recovery replays the write-ahead log on the next start.
    await asyncio.to_thread(server.stop, "immediate")
    await asyncio.sleep(0.5)
    await asyncio.to_thread(server.start)
    back = len(load.acknowledged)
    await until(lambda: len(load.acknowledged) > back + 20, "20 stores after the restart")
    load.stop.set()
    await asyncio.wait_for(task, timeout=60)
    await memory.shutdown()
    assert len(load.acknowledged) > 20
    await _check_exactly_once(server, load)


async def test_a_server_that_stays_down_fails_within_the_retry_deadline(
    server: PostgresServer,
) -> None:
    policy = RetryPolicy(attempts=50, initial_backoff=0.05, max_backoff=0.2, deadline=2.0)
    memory = PostgresMemory(server.url, connect_timeout=2, retry=policy)
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("before"), uid, conv)
    await asyncio.to_thread(server.stop, "fast")
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await memory.store_message(make_message("while down"), uid, conv)
    assert time.monotonic() - started < 6.0
    assert str(server.port) in str(info.value)
    await asyncio.to_thread(server.start)
    await memory.store_message(make_message("after"), uid, conv)
    contents = [m.content for m in await memory.retrieve_messages(conv)]
    assert contents[0] == "after" and "before" in contents
    await memory.shutdown()
