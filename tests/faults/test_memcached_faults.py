"""MemcachedMemory when memcached is down, or restarts (losing everything, by nature).

A restart must show up as an error while the server is away, and as an empty cache after
it: never as half a conversation, a duplicate or a message that was not sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from bruno_memstore.backends.memcached import MemcachedMemory
from bruno_memstore.errors import BackendError, BackendUnavailableError
from bruno_memstore.models import MAX_LIMIT
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing.builders import at, make_message, new_conversation_id, new_user_id

from ._memcached_server import MemcachedServer
from ._ports import free_port

pytestmark = pytest.mark.slow

QUICK = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.05, deadline=2.0)


@pytest.fixture
def server() -> Iterator[MemcachedServer]:
    srv = MemcachedServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


async def test_down_at_start_is_a_clear_error() -> None:
    port = free_port()
    memory = MemcachedMemory(f"memcached://127.0.0.1:{port}", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await memory.store_message(make_message("hello"), new_user_id(), new_conversation_id())
    assert time.monotonic() - started < 3
    assert f"127.0.0.1:{port}" in str(info.value)
    assert not memory.connected


async def test_restart_is_reported_then_the_cache_works_again(server: MemcachedServer) -> None:
    memory = MemcachedMemory(server.url, retry=QUICK, operation_timeout=3)
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("before", timestamp=at(0)), uid, conv)
    session = await memory.create_session(uid)
    await asyncio.to_thread(server.kill)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        await memory.retrieve_messages(conv)
    with pytest.raises(BackendUnavailableError):
        await memory.store_message(make_message("during"), uid, conv)
    assert time.monotonic() - started < 10
    await asyncio.to_thread(server.start)
    # Everything was lost, and it reads as lost: empty, not broken.
    assert await memory.retrieve_messages(conv) == []
    assert await memory.get_session(session.session_id) is None
    assert (await memory.get_statistics(uid))["total_messages"] == 0
    after = make_message("after", timestamp=at(1))
    await memory.store_message(after, uid, conv)  # same instance, new connections
    assert [m.id for m in await memory.retrieve_messages(conv)] == [after.id]
    await memory.shutdown()


async def test_restart_mid_load_never_yields_corrupt_data(server: MemcachedServer) -> None:
    memory = MemcachedMemory(server.url, retry=QUICK, operation_timeout=3, pool_size=16)
    uid = new_user_id()
    convs = [new_conversation_id() for _ in range(3)]
    sent: dict[str, str] = {}
    acked_after: set[str] = set()
    errors: list[BaseException] = []
    restarted_at = float("inf")
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            msg = make_message(f"writer {w} message {i}", timestamp=at(i))
            sent[str(msg.id)] = msg.content
            began = time.monotonic()
            try:
                await memory.store_message(msg, uid, convs[(w + i) % 3])
            except BackendError as exc:
                errors.append(exc)
                await asyncio.sleep(0.05)
            else:
                if began > restarted_at:
                    acked_after.add(str(msg.id))
            i += 1

    writers = [asyncio.create_task(writer(w)) for w in range(12)]
    await asyncio.sleep(0.7)
    await asyncio.to_thread(server.kill)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(server.start)
    restarted_at = time.monotonic()
    await asyncio.sleep(0.7)
    stop.set()
    await asyncio.gather(*writers)

    assert errors and all(isinstance(e, BackendError) for e in errors)
    assert acked_after
    seen: set[str] = set()
    for conv in convs:
        window = await memory.retrieve_context(uid, conversation_id=conv, limit=MAX_LIMIT)
        ids = [str(m.id) for m in window]
        assert len(ids) == len(set(ids))  # no duplicates
        assert all(sent[str(m.id)] == m.content for m in window)  # only what was sent, intact
        stamps = [m.timestamp for m in window]
        assert stamps == sorted(stamps)
        seen.update(ids)
    assert acked_after <= seen  # everything acknowledged since the restart is there
    await memory.shutdown()
