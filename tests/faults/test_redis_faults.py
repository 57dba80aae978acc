"""``RedisMemory`` when the server is down, hangs, restarts or crashes under load.

Every test runs its own ``redis-server`` (see ``_redis_server``) on a free port; the shared
server on 6379 is never stopped or slowed down.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bruno_memstore.backends.redis import RedisMemory
from bruno_memstore.capabilities import Capability
from bruno_memstore.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
)
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing import make_message

from ._load_harness import PATIENT, USER, WORD, stored_once, under_load
from ._redis_server import RedisServer, free_port


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "aof", appendonly=True)
    server.start()
    yield server
    server.stop()


class CountingRedisMemory(RedisMemory):
    """Counts the driver errors judged transient (each one leads to a retry)."""

    transient_errors = 0

    def _is_transient(self, exc: BaseException) -> bool:
        transient = super()._is_transient(exc)
        if transient:
            self.transient_errors += 1
        return transient


def _memory(url: str, **options: object) -> CountingRedisMemory:
    return CountingRedisMemory(url, prefix=f"faults-{uuid.uuid4().hex[:8]}", **options)  # type: ignore[arg-type]


# ==================================================================== not reachable


async def test_down_at_start_fails_fast_with_a_redacted_url() -> None:
    port = free_port()
    memory = _memory(
        f"redis://app:s3cret-pw@127.0.0.1:{port}/0",
        connect_timeout=1.0,
        retry=RetryPolicy(attempts=1),
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await memory.initialize()
    assert time.monotonic() - started < 2.0
    shown = f"{info.value} {info.value!r} {memory!r}"
    assert "s3cret-pw" not in shown
    assert f"redis://app:***@127.0.0.1:{port}/0" in str(info.value)
    assert not memory.connected
    # Lazily, through any operation: the same clear error.
    with pytest.raises(BackendUnavailableError):
        await memory.store_message(make_message("hello"), USER, "conv")


async def test_a_server_that_stops_answering_times_out(tmp_path: Path) -> None:
    server = RedisServer(
        tmp_path / "slow", appendonly=False, extra_args=("--enable-debug-command", "yes")
    )
    server.start()
    memory = _memory(server.url, socket_timeout=0.5, retry=RetryPolicy(attempts=1))
    try:
        await memory.store_message(make_message("before"), USER, "conv")
        sleeper = _memory(server.url)
        await sleeper.initialize()
        blocked = asyncio.create_task(sleeper._client.execute_command("DEBUG", "SLEEP", "2"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(BackendTimeoutError) as info:
            await memory.retrieve_messages("conv")
        assert 0.4 < time.monotonic() - started < 1.5
        assert isinstance(info.value, TimeoutError)
        await blocked
        await sleeper.shutdown()
        # Once the server answers again, so does the memory.
        assert len(await memory.retrieve_messages("conv")) == 1
    finally:
        await memory.shutdown()
        server.stop()


# ==================================================================== restart and crash under load


async def _check_exactly_once(memory: RedisMemory, acked: list[tuple[str, str]]) -> int:
    """:func:`stored_once`, and the search index holds each message once too."""
    total = await stored_once(memory, acked)
    found = await memory.search(USER, WORD, limit=total + 10)
    assert len(found) == total
    return total


async def test_restart_under_load_keeps_every_acknowledged_store_once(
    aof_server: RedisServer,
) -> None:
    memory = _memory(aof_server.url, socket_timeout=2.0, connect_timeout=1.0, retry=PATIENT)
    await memory.initialize()
    # SHUTDOWN (the AOF is flushed), half a second down, then the same port and files.
    load = await under_load(
        memory, lambda: aof_server.restart(0.5), writers=16, conversations=4, progress=50
    )
    assert not load.failed, load.failed[:3]  # retries bridged the restart
    assert memory.transient_errors >= 16  # every writer hit the restart
    total = await _check_exactly_once(memory, load.acked)
    assert total == len(load.acked)
    # A fresh client after yet another restart reads the same.
    await memory.shutdown()
    await asyncio.to_thread(aof_server.restart)
    reopened = RedisMemory(aof_server.url, prefix=memory.prefix)
    assert await _check_exactly_once(reopened, load.acked) == total
    await reopened.shutdown()


async def test_crash_under_load_keeps_every_acknowledged_store(aof_server: RedisServer) -> None:
    # Under appendfsync always Redis writes (and syncs) the append-only file before it
    # replies, so SIGKILL loses no acknowledged write.
    memory = _memory(aof_server.url, socket_timeout=2.0, connect_timeout=1.0, retry=PATIENT)
    await memory.initialize()
    assert memory.supports(Capability.DURABLE)

    def crash() -> None:
        aof_server.kill()
        time.sleep(0.3)
        aof_server.start()

    load = await under_load(memory, crash, writers=16, conversations=4, progress=50)
    assert not load.failed, load.failed[:3]
    await _check_exactly_once(memory, load.acked)
    await memory.shutdown()


async def test_scripts_are_reloaded_after_the_server_forgets_them(
    aof_server: RedisServer,
) -> None:
    memory = _memory(aof_server.url)
    await memory.store_message(make_message("before"), USER, "conv")
    await memory._client.script_flush()
    await memory.store_message(make_message("after"), USER, "conv")
    assert [m.content for m in await memory.retrieve_messages("conv")] == ["after", "before"]
    await memory.shutdown()


async def test_a_server_that_evicts_keys_is_refused(tmp_path: Path) -> None:
    server = RedisServer(
        tmp_path / "lru",
        appendonly=False,
        extra_args=("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"),
    )
    server.start()
    try:
        memory = _memory(server.url)
        with pytest.raises(BackendError, match="allkeys-lru"):
            await memory.initialize()
        assert not memory.connected
    finally:
        server.stop()


async def test_engine_staying_down_gives_a_clear_error_after_bounded_retries(
    aof_server: RedisServer,
) -> None:
    memory = _memory(
        aof_server.url,
        connect_timeout=0.5,
        retry=RetryPolicy(attempts=4, initial_backoff=0.05, max_backoff=0.1, deadline=2.0),
    )
    await memory.store_message(make_message("stored"), USER, "conv")
    aof_server.shutdown()
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        await memory.store_message(make_message("lost"), USER, "conv")
    assert time.monotonic() - started < 3.0
    aof_server.start()
    assert [m.content for m in await memory.retrieve_messages("conv")] == ["stored"]
    await memory.shutdown()


# ==================================================================== what counts as durable


async def test_appendfsync_everysec_is_not_durable(tmp_path: Path) -> None:
    # Under everysec Redis holds the file write back while a background fsync is slow and
    # replies meanwhile: a crash of the process then loses acknowledged writes.
    server = RedisServer(tmp_path / "everysec", appendfsync="everysec")
    server.start()
    try:
        memory = _memory(server.url)
        await memory.initialize()
        assert not memory.supports(Capability.DURABLE)
        await memory.shutdown()
        strict = _memory(server.url, require_durable=True)
        with pytest.raises(BackendError, match="appendfsync is everysec, not always"):
            await strict.initialize()
        assert not strict.connected
        # The policy is read at each connect: switched to always, the store is durable.
        await memory.initialize()
        await memory._client.config_set("appendfsync", "always")
        await memory.shutdown()
        await strict.initialize()
        assert strict.supports(Capability.DURABLE)
        await strict.shutdown()
    finally:
        server.stop()


async def test_an_unreadable_fsync_policy_is_not_taken_for_durable(tmp_path: Path) -> None:
    # Managed services often rename or refuse CONFIG: the policy cannot be confirmed.
    server = RedisServer(tmp_path / "noconfig", extra_args=("--rename-command", "CONFIG", ""))
    server.start()
    try:
        memory = _memory(server.url)
        await memory.initialize()
        assert not memory.supports(Capability.DURABLE)
        await memory.store_message(make_message("kept"), USER, "c")
        assert len(await memory.retrieve_context(USER, "", conversation_id="c")) == 1
        await memory.shutdown()
        strict = _memory(server.url, require_durable=True)
        with pytest.raises(BackendError, match="CONFIG GET is refused"):
            await strict.initialize()
    finally:
        server.stop()
