"""The connections a Redis store holds for its scripts, on the machine's Redis: kept and
reused, never more open than ``max_connections`` (the server's own client list counts
them), handed back to the pool when another command needs room, and connected again after
the server drops them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

import _engines as engines
from bruno_memstore.backends.redis.backend import RedisMemory
from bruno_memstore.backends.redis.held import HeldConnections
from bruno_memstore.testing import make_message, new_conversation_id, new_user_id

_BLOCK = ("BLPOP", "bruno-held-test-never-pushed", "0.2")  # holds a connection 0.2 s


async def _named_connections(name: str) -> int:
    """Connections the server has open under client name ``name``."""
    observer = aioredis.Redis.from_url(engines.redis_url())
    try:
        listed = await observer.client_list()
    finally:
        await observer.aclose()
    return sum(1 for c in listed if c.get("name") == name)


@pytest_asyncio.fixture
async def named_pool() -> AsyncIterator[tuple[aioredis.ConnectionPool, str]]:
    name = f"bruno-held-{uuid.uuid4().hex[:8]}"
    pool = aioredis.ConnectionPool.from_url(
        engines.redis_url(), max_connections=2, client_name=name, decode_responses=True
    )
    yield pool, name
    await pool.aclose()


async def test_one_caller_after_another_reuses_one_connection(named_pool) -> None:
    pool, name = named_pool
    held = HeldConnections(pool, 2)
    for _ in range(20):
        assert await held.run("PING") == "PONG"
    assert held.held == 1
    assert await _named_connections(name) == 1


async def test_a_pooled_call_gets_room_when_held_connections_fill_the_pool(named_pool) -> None:
    pool, name = named_pool
    held = HeldConnections(pool, 2)
    await asyncio.gather(held.run(*_BLOCK), held.run(*_BLOCK))
    assert held.held == 2  # both idle now, and the pool has no connection left to give
    client = aioredis.Redis(connection_pool=pool)
    assert await held.pooled(client.ping) is True
    assert held.held == 1
    assert await _named_connections(name) <= 2
    # The scripts' side takes a connection again when it needs one.
    await asyncio.gather(held.run(*_BLOCK), held.run(*_BLOCK))
    assert held.held == 2
    assert await _named_connections(name) == 2


async def test_a_dropped_connection_connects_again_on_its_next_command(named_pool) -> None:
    pool, name = named_pool
    held = HeldConnections(pool, 2)
    assert await held.run("SET", f"bruno-held-{name}", "1") == "OK"
    own = await held.run("CLIENT", "ID")  # the one held connection's
    killer = aioredis.Redis.from_url(engines.redis_url())
    try:
        assert await killer.execute_command("CLIENT", "KILL", "ID", own) == 1
    finally:
        await killer.aclose()
    # The first command after the kill may fail (the error is the caller's to retry, as
    # RedisMemory's retry policy does); the one after it runs on a new connection.
    with contextlib.suppress(ConnectionError, aioredis.ConnectionError):
        await held.run("PING")
    assert await held.run("GET", f"bruno-held-{name}") == "1"
    assert await held.run("CLIENT", "ID") != own
    assert held.held == 1
    assert await held.run("DEL", f"bruno-held-{name}") == 1


async def test_a_store_under_concurrent_callers_keeps_within_max_connections() -> None:
    memory = RedisMemory(
        engines.redis_url(),
        prefix=f"held-{uuid.uuid4().hex[:8]}",
        max_connections=3,
        embedding_model=None,
    )
    await memory.initialize()
    uid, conv = new_user_id(), new_conversation_id()
    try:
        messages = [make_message(f"message {i}") for i in range(60)]
        await asyncio.gather(*(memory.store_message(m, uid, conv) for m in messages))
        assert memory._held is not None and 1 <= memory._held.held <= 3
        stored = await memory.retrieve_messages(conv)
        assert sorted(str(m.id) for m in stored) == sorted(str(m.id) for m in messages)
        # A command through the pool while scripts hold the connections.
        results = await asyncio.gather(
            memory._command(memory._client.ping),
            *(memory.store_message(make_message(f"more {i}"), uid, conv) for i in range(10)),
        )
        assert results[0] is True
        assert memory._held.held <= 3
        assert len(await memory.retrieve_messages(conv)) == 70
    finally:
        await memory.forget_user(uid)
        await memory.shutdown()
