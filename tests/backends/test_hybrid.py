"""HybridMemory against real tiers: what the cache serves, how its copies stay complete, and
what happens when the cache tier fails, goes away, or is shared by several instances.

Pairs: ``InMemoryStorage`` + SQLite, memcached + SQLite, Redis + PostgreSQL (the servers of
``tests/conformance/test_hybrid.py``; an unreachable one fails these tests). Faults use a
private memcached (``tests/faults/_memcached_server.py``), a closed port, or a tier whose
primitive fails part-way through a write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

import _engines as engines
from bruno_memstore import open_memory
from bruno_memstore.backends.hybrid import backend as hybrid_backend
from bruno_memstore.backends.hybrid.backend import HybridMemory, _marker_id
from bruno_memstore.backends.memcached import MemcachedMemory
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.postgres import PostgresMemory
from bruno_memstore.backends.redis import RedisMemory
from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import Capability
from bruno_memstore.errors import BackendUnavailableError, InvalidArgumentError
from bruno_memstore.models import MessageRecord
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing.builders import (
    at,
    make_message,
    new_conversation_id,
    new_user_id,
)
from bruno_memstore.testing.erasure import find_in_files, marker
from faults._memcached_server import MemcachedServer

REDIS_URL = os.environ.get("BRUNO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "BRUNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SCHEMA = f"{engines.SQL_PREFIX}hybrid_tests"  # this run's, dropped afterwards
PREFIX = f"bruno-hybrid-t-{uuid.uuid4().hex[:12]}"
NO_RETRY = RetryPolicy(attempts=1)
RACE_DEADLINE = 30  # seconds one round of racing calls may take


# ==================================================================== tiers


@pytest.fixture(scope="module")
def memcached_url() -> str:
    """The memcached under test (see ``tests/_engines.py``)."""
    return engines.memcached_url()


@pytest.fixture(scope="module", autouse=True)
def _drop_what_the_run_left() -> Iterator[None]:
    """Afterwards the run's keys and schema are removed from the shared servers."""
    yield
    engines.drop_redis_keys(REDIS_URL, PREFIX)
    engines.drop_postgres_schemas(POSTGRES_URL, SCHEMA)


@dataclass
class Pair:
    """Builds hybrids over one pair of tiers; every build shares the same storage."""

    name: str
    make_cache: Callable[..., MemoryBackend]
    make_persistent: Callable[[], MemoryBackend]
    shared_cache: bool  # whether two instances see one cache (not InMemoryStorage)
    opened: list[HybridMemory] = field(default_factory=list)

    async def open(self, cache_options: dict[str, Any] | None = None, **options: Any):
        cache = self.make_cache(**(cache_options or {}))
        persistent = self.make_persistent()
        for tier in (cache, persistent):
            try:
                await tier.initialize()
            except BackendUnavailableError as exc:
                pytest.fail(f"{self.name}: a required engine is unreachable: {exc}", pytrace=False)
        memory = HybridMemory(cache, persistent, **options)
        await memory.initialize()
        self.opened.append(memory)
        return memory


def _pair(name: str, tmp_path: Path, memcached_url: str) -> Pair:
    db = tmp_path / "persistent.db"
    prefix = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    if name == "memory+sqlite":
        return Pair(name, lambda **o: InMemoryStorage(**o), lambda: SQLiteMemory(db), False)
    if name == "memcached+sqlite":
        return Pair(
            name,
            lambda **o: MemcachedMemory(memcached_url, prefix=prefix, ttl=3600, **o),
            lambda: SQLiteMemory(db),
            True,
        )
    return Pair(
        name,
        lambda **o: RedisMemory(REDIS_URL, prefix=prefix, connect_timeout=3, **o),
        lambda: PostgresMemory(POSTGRES_URL, schema=SCHEMA, connect_timeout=5),
        True,
    )


PAIRS = ["memory+sqlite", "memcached+sqlite", "redis+postgres"]


@pytest_asyncio.fixture(params=PAIRS)
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path, memcached_url: str
) -> AsyncIterator[Pair]:
    built = _pair(request.param, tmp_path, memcached_url)
    yield built
    for memory in built.opened:
        await memory.shutdown()


@pytest_asyncio.fixture(params=[p for p in PAIRS if p != "memory+sqlite"])
async def shared(
    request: pytest.FixtureRequest, tmp_path: Path, memcached_url: str
) -> AsyncIterator[Pair]:
    built = _pair(request.param, tmp_path, memcached_url)
    yield built
    for memory in built.opened:
        await memory.shutdown()


# ==================================================================== helpers


def cache_requests(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "bruno_memstore_cache_requests_total", {"backend": "hybrid", "result": result}
    )
    return value or 0.0


async def persistent_ids(memory: HybridMemory, conv: str) -> list[str]:
    records = await memory.persistent._read_window(conversation_id=conv, user_id=None, limit=None)
    return [r.id for r in records]


async def cached_ids(memory: HybridMemory, conv: str) -> list[str] | None:
    """The ids of the cache tier's copy, or ``None`` when no trusted copy exists."""
    marker = await memory.cache._get_session(_marker_id(conv))
    if not memory._trusted(marker, conv):
        return None
    records = await memory.cache._read_window(conversation_id=conv, user_id=None, limit=None)
    return [r.id for r in records]


async def cache_holds_nothing(memory: HybridMemory, conv: str) -> bool:
    cache = memory.cache
    return (
        await cache._conversation_owner(conv) is None
        and await cache._read_window(conversation_id=conv, user_id=None, limit=None) == []
        and await cache._get_session(_marker_id(conv)) is None
    )


async def context_ids(memory: HybridMemory, uid: str, conv: str) -> list[str]:
    return [str(m.id) for m in await memory.retrieve_context(uid, conversation_id=conv, limit=500)]


def count_calls(monkeypatch: pytest.MonkeyPatch, tier: MemoryBackend, name: str) -> list[int]:
    """Count calls of one primitive of a tier (it still runs)."""
    calls = [0]
    real = getattr(tier, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(tier, name, counted)
    return calls


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def stored(memory: HybridMemory, uid: str, conv: str, n: int, start: int = 0) -> list[str]:
    msgs = [make_message(f"message {start + i}", timestamp=at(start + i)) for i in range(n)]
    await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
    return [str(m.id) for m in msgs]


# ==================================================================== served by the cache


async def test_a_cached_window_does_not_touch_the_persistent_tier(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = await pair.open()
    uid, conv = new_user_id(), new_conversation_id()
    ids = await stored(memory, uid, conv, 30)
    misses = cache_requests("miss")
    assert await context_ids(memory, uid, conv) == ids  # first read: builds the copy
    assert cache_requests("miss") == misses + 1
    assert await cached_ids(memory, conv) == ids

    reads = count_calls(monkeypatch, memory.persistent, "_read_window")
    hits = cache_requests("hit")
    assert await context_ids(memory, uid, conv) == ids
    assert [str(m.id) for m in await memory.retrieve_messages(conv, limit=5)] == ids[:-6:-1]
    ctx = await memory.get_context(uid, conv)
    assert [str(m.id) for m in ctx.messages] == ids[-memory.context_window :]
    assert cache_requests("hit") == hits + 3
    assert reads[0] == 0

    # Another user never sees the cached window.
    assert await memory.retrieve_context(new_user_id(), conversation_id=conv) == []
    # Reads across the user's conversations are the persistent tier's.
    assert [str(m.id) for m in await memory.retrieve_context(uid, limit=5)] == ids[-5:]
    assert reads[0] == 1


async def test_context_reads_overlap_only_where_a_tier_waits_for_a_network(pair: Pair) -> None:
    memory = await pair.open()
    assert memory.overlap_reads is (pair.name != "memory+sqlite")
    uid, conv = new_user_id(), new_conversation_id()
    ids = await stored(memory, uid, conv, 3)
    ctx = await memory.get_context(uid, conv)
    assert [str(m.id) for m in ctx.messages] == ids


async def test_store_statistics_show_both_tiers_and_the_hit_rate(pair: Pair) -> None:
    memory = await pair.open()
    uid, conv = new_user_id(), new_conversation_id()
    await stored(memory, uid, conv, 4)
    for _ in range(4):  # one miss builds the copy, three hits read it
        await context_ids(memory, uid, conv)
    found = await memory.store_statistics()
    persistent = await memory.persistent.store_statistics()
    assert {k: found[k] for k in ("users", "messages", "storage_bytes")} == {
        k: persistent[k] for k in ("users", "messages", "storage_bytes")
    }
    assert found["messages"] >= 4 and found["storage_bytes"] > 0
    assert found["cache_requests"] == {"hit": 3, "miss": 1, "hit_rate": 0.75}
    assert found["cache"]["backend"] == memory.cache.backend_name
    if memory.cache.supports(Capability.LISTING):  # memcached cannot count its records
        assert found["cache"]["messages"] >= 4


async def test_writes_reach_a_cached_copy(pair: Pair) -> None:
    memory = await pair.open()
    uid, conv = new_user_id(), new_conversation_id()
    ids = await stored(memory, uid, conv, 3)
    await context_ids(memory, uid, conv)
    ids += await stored(memory, uid, conv, 2, start=3)
    await memory.store_message(make_message("one more", timestamp=at(10)), uid, conv)
    expected = await persistent_ids(memory, conv)
    assert len(expected) == 6 and expected[:5] == ids
    assert await cached_ids(memory, conv) == expected
    hits = cache_requests("hit")
    assert await context_ids(memory, uid, conv) == expected
    assert cache_requests("hit") == hits + 1


async def test_capabilities_and_repr_follow_the_tiers(pair: Pair) -> None:
    memory = await pair.open()
    assert memory.capabilities == memory.persistent.capabilities
    assert memory.supports(Capability.DURABLE)
    assert repr(memory) == (
        f"HybridMemory(cache={memory.cache.describe()} persistent={memory.persistent.describe()})"
    )
    private = HybridMemory(InMemoryStorage(), SQLiteMemory(":memory:"))
    assert not private.supports(Capability.DURABLE)


# ==================================================================== completeness under races


async def test_first_reads_racing_writers_leave_complete_copies(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = await pair.open()
    rng = random.Random(5)
    real_read = memory.persistent._read_window

    async def slow_read(**kwargs: Any) -> list[MessageRecord]:
        # Widens the gap between claiming the copy and filling it, where writes land.
        await asyncio.sleep(rng.uniform(0, 0.004))
        records = await real_read(**kwargs)
        await asyncio.sleep(rng.uniform(0, 0.004))
        return records

    monkeypatch.setattr(memory.persistent, "_read_window", slow_read)
    for _round in range(25):
        uid, conv = new_user_id(), new_conversation_id()
        initial = await stored(memory, uid, conv, 5)
        racing = [make_message(f"racing {j}", timestamp=at(10 + j)) for j in range(8)]

        async def write(message: Any, uid: str = uid, conv: str = conv) -> None:
            await asyncio.sleep(rng.uniform(0, 0.01))
            await memory.store_message(message, uid, conv)

        async with asyncio.timeout(RACE_DEADLINE):  # a hang fails instead of blocking
            first, *_ = await asyncio.gather(
                context_ids(memory, uid, conv), *(write(m) for m in racing)
            )
        expected = [r.id for r in await real_read(conversation_id=conv, user_id=None, limit=None)]
        assert len(expected) == 13
        # The first read saw everything stored before it, and racing writes in their order.
        assert first[:5] == initial
        assert first == [i for i in expected if i in set(first)]
        assert await cached_ids(memory, conv) == expected
        assert await context_ids(memory, uid, conv) == expected


async def test_instances_sharing_a_cache_keep_copies_complete(shared: Pair) -> None:
    a, b = await shared.open(), await shared.open()
    rng = random.Random(11)
    for _round in range(15):
        uid, conv = new_user_id(), new_conversation_id()
        await stored(a, uid, conv, 4)
        racing = [make_message(f"racing {j}", timestamp=at(10 + j)) for j in range(10)]

        async def write(j: int, message: Any, uid: str = uid, conv: str = conv) -> None:
            await asyncio.sleep(rng.uniform(0, 0.01))
            await (a if j % 2 else b).store_message(message, uid, conv)

        async with asyncio.timeout(RACE_DEADLINE):  # a hang fails instead of blocking
            await asyncio.gather(
                context_ids(a, uid, conv),
                context_ids(b, uid, conv),
                *(write(j, m) for j, m in enumerate(racing)),
            )
        expected = await persistent_ids(a, conv)
        assert len(expected) == 14
        assert await cached_ids(a, conv) in (expected, None)
        assert await context_ids(a, uid, conv) == expected
        assert await context_ids(b, uid, conv) == expected
        assert await cached_ids(b, conv) == expected


def _during_rebuild_read(
    monkeypatch: pytest.MonkeyPatch, memory: HybridMemory, step: Callable[[], Any]
) -> None:
    """Run ``step`` once, right after ``memory``'s next full read of the persistent tier
    (its rebuild's read): between its claim of the copy and its vouching for it."""
    real = memory.persistent._read_window
    pending = [step]

    async def read(**kwargs: Any) -> list[MessageRecord]:
        records = await real(**kwargs)
        if kwargs.get("limit") is None and pending:
            await pending.pop()()
        return records

    monkeypatch.setattr(memory.persistent, "_read_window", read)


async def test_a_copy_another_instance_deletes_during_a_rebuild_is_not_vouched_for(
    shared: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await shared.open(), await shared.open()
    uid, conv = new_user_id(), new_conversation_id()
    await stored(a, uid, conv, 3)
    late = make_message("stored after the rebuild read", timestamp=at(10))

    async def race() -> None:
        await b.store_message(late, uid, conv)  # reaches the claimed copy by write-through
        await b._invalidate(conv)  # then the copy goes, as another rebuild would delete it

    before = await persistent_ids(a, conv)
    _during_rebuild_read(monkeypatch, a, race)
    seen = await context_ids(a, uid, conv)
    everything = await persistent_ids(a, conv)
    assert everything == [*before, str(late.id)]
    assert seen in (before, everything)  # as its read found it, or read again
    assert await cached_ids(a, conv) in (None, everything)  # never a copy without it
    assert await context_ids(a, uid, conv) == everything
    assert await context_ids(b, uid, conv) == everything
    assert await cached_ids(b, conv) == everything


async def test_words_deleted_during_another_instances_rebuild_stay_deleted(
    shared: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await shared.open(), await shared.open()
    uid, conv = new_user_id(), new_conversation_id()
    await stored(a, uid, conv, 3)
    _during_rebuild_read(monkeypatch, a, lambda: b.clear_conversation(uid, conv))
    assert len(await context_ids(a, uid, conv)) in (3, 0)  # before the deletion, or after
    assert await cached_ids(a, conv) in (None, [])
    assert await context_ids(b, uid, conv) == []
    assert await context_ids(a, uid, conv) == []


def _as_it_fills(
    monkeypatch: pytest.MonkeyPatch, memory: HybridMemory, step: Callable[[], Any]
) -> None:
    """Run ``step`` once, right before ``memory``'s next rebuild appends its records to the
    copy it claimed (and found still its own)."""
    real = memory.cache._append_messages
    armed: list[Callable[[], Any]] = []

    async def append(*args: Any, **kwargs: Any) -> Any:
        if armed:
            await armed.pop()()
        return await real(*args, **kwargs)

    async def arm() -> None:
        armed.append(step)

    monkeypatch.setattr(memory.cache, "_append_messages", append)
    _during_rebuild_read(monkeypatch, memory, arm)


@pytest.mark.parametrize("moment", ["after its read", "as it fills"])
async def test_a_stale_rebuild_never_leaves_deleted_words_in_anothers_copy(
    shared: Pair, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    # a reads the conversation; b deletes messages and claims a copy of its own, either
    # before a checks its claim (a must not fill b's copy) or after (a's fill, holding the
    # deleted messages, lands in b's copy: it must go before b can vouch for it).
    a, b = await shared.open(), await shared.open()
    uid, conv = new_user_id(), new_conversation_id()
    system = make_message("you are terse", role="system", timestamp=at(0))
    await a.store_message(system, uid, conv)
    await stored(a, uid, conv, 2, start=1)
    b_read, a_done = asyncio.Event(), asyncio.Event()
    rebuilding: list[asyncio.Task[list[str]]] = []

    async def delete_then_let_b_claim() -> None:
        await b.clear_history(conv)  # keeps the system message: the conversation stays
        rebuilding.append(asyncio.create_task(context_ids(b, uid, conv)))
        await b_read.wait()

    async def hold_b_until_a_is_done() -> None:
        b_read.set()
        await a_done.wait()

    if moment == "after its read":
        _during_rebuild_read(monkeypatch, a, delete_then_let_b_claim)
    else:
        _as_it_fills(monkeypatch, a, delete_then_let_b_claim)
    _during_rebuild_read(monkeypatch, b, hold_b_until_a_is_done)
    async with asyncio.timeout(RACE_DEADLINE):
        await context_ids(a, uid, conv)
        a_done.set()
        assert await rebuilding[0] == [str(system.id)]
    assert await cached_ids(b, conv) in (None, [str(system.id)])
    assert await context_ids(b, uid, conv) == [str(system.id)]
    assert await context_ids(a, uid, conv) == [str(system.id)]


async def test_a_deletion_by_another_instance_is_seen(shared: Pair) -> None:
    a, b = await shared.open(), await shared.open()
    uid, conv = new_user_id(), new_conversation_id()
    await stored(a, uid, conv, 3)
    assert len(await context_ids(a, uid, conv)) == 3
    assert len(await context_ids(b, uid, conv)) == 3

    await b.clear_conversation(uid, conv)
    assert await context_ids(a, uid, conv) == []
    fresh = await stored(b, uid, conv, 2, start=20)
    assert await context_ids(a, uid, conv) == fresh
    await b.store_message(make_message("system note", role="system", timestamp=at(30)), uid, conv)
    await b.store_message(make_message("chat", timestamp=at(31)), uid, conv)
    await a.clear_history(conv)  # keeps the system message
    expected = await persistent_ids(a, conv)
    assert len(expected) == 1
    assert await context_ids(b, uid, conv) == expected
    assert await context_ids(a, uid, conv) == expected


# ==================================================================== deletion reaches both tiers


async def test_deletions_empty_the_cache_tier(pair: Pair) -> None:
    memory = await pair.open()
    uid = new_user_id()
    convs = [new_conversation_id() for _ in range(3)]
    for conv in convs:
        await stored(memory, uid, conv, 3)
        await context_ids(memory, uid, conv)
        assert await cached_ids(memory, conv) is not None

    await memory.clear_conversation(uid, convs[0])
    assert await cache_holds_nothing(memory, convs[0])
    assert await memory.retrieve_messages(convs[0]) == []

    await memory.forget_user(uid)
    for conv in convs[1:]:
        assert await cache_holds_nothing(memory, conv)
        assert await persistent_ids(memory, conv) == []
        assert await memory.retrieve_context(uid, conversation_id=conv) == []


async def cache_lists_user(memory: HybridMemory, uid: str) -> bool:
    """Whether the cache tier still lists the user anywhere it keeps users."""
    cache = memory.cache
    if isinstance(cache, RedisMemory):
        client = cache._client
        if await client.sismember(cache.keys.glob("users"), uid):
            return True
        # No key of the user's own (hash tag) may remain either.
        return bool([k async for k in client.scan_iter(match=f"{cache.keys.tag(uid)}*")])
    if isinstance(cache, InMemoryStorage):
        return any(uid in table for table in (cache._user_convs, cache._indexes, cache._vectors))
    return False  # memcached keeps no set of users (it cannot list them)


async def test_forget_user_leaves_no_trace_in_the_cache_tier(pair: Pair) -> None:
    memory = await pair.open()
    uid, conv = new_user_id(), new_conversation_id()
    await stored(memory, uid, conv, 3)
    await context_ids(memory, uid, conv)
    assert await cached_ids(memory, conv) is not None
    await memory.forget_user(uid)
    assert await cache_holds_nothing(memory, conv)
    assert not await cache_lists_user(memory, uid)


async def test_a_cache_failing_to_forget_the_user_is_retried(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = await pair.open(cache_options={"retry": NO_RETRY})
    uid, conv = new_user_id(), new_conversation_id()
    await stored(memory, uid, conv, 2)
    await context_ids(memory, uid, conv)
    cache = memory.cache
    real_forget = cache._forget_user

    async def refuse(user_id: str) -> Any:
        raise RuntimeError("the cache refused")

    monkeypatch.setattr(cache, "_forget_user", refuse)
    await memory.forget_user(uid)  # succeeds: the persistent tier forgot the user
    assert await cache_holds_nothing(memory, conv)
    listed = isinstance(cache, (RedisMemory, InMemoryStorage))
    assert await cache_lists_user(memory, uid) is listed
    monkeypatch.setattr(cache, "_forget_user", real_forget)
    await memory._drain()
    assert not await cache_lists_user(memory, uid)
    assert uid not in memory._forgotten


async def test_clear_history_rebuilds_with_what_stays(pair: Pair) -> None:
    memory = await pair.open()
    uid, conv = new_user_id(), new_conversation_id()
    system = make_message("you are helpful", role="system", timestamp=at(0))
    await memory.store_message(system, uid, conv)
    await stored(memory, uid, conv, 4, start=1)
    assert len(await context_ids(memory, uid, conv)) == 5
    await memory.clear_history(conv)
    assert await cache_holds_nothing(memory, conv)
    assert await context_ids(memory, uid, conv) == [str(system.id)]
    assert await cached_ids(memory, conv) == [str(system.id)]


# ==================================================================== the cache tier failing


async def test_a_cache_failing_mid_write_is_never_served_stale(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    memory = await pair.open(cache_options={"retry": NO_RETRY}, cache_retry_after=0.05)
    uid, conv = new_user_id(), new_conversation_id()
    await stored(memory, uid, conv, 3)
    await context_ids(memory, uid, conv)
    cache = memory.cache
    real_append = cache._append_messages

    async def half_then_drop(conv_id: str, user: str, records: Any, **kw: Any) -> Any:
        # The connection drops after part of the batch reached the cache.
        await real_append(conv_id, user, records[:1], **kw)
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(cache, "_append_messages", half_then_drop)
    with caplog.at_level(logging.WARNING, logger="bruno_memstore.backends.hybrid"):
        await stored(memory, uid, conv, 2, start=3)  # succeeds: the persistent tier has it
    assert "cache tier" in caplog.text
    expected = await persistent_ids(memory, conv)
    assert len(expected) == 5
    assert conv in memory._pending  # not trusted here until its copy is deleted
    assert await context_ids(memory, uid, conv) == expected
    monkeypatch.setattr(cache, "_append_messages", real_append)
    await asyncio.sleep(0.1)  # past the pause the connection error started
    await memory._drain()
    # The damaged copy is gone (a read may already have rebuilt a complete one).
    assert await cached_ids(memory, conv) in (None, expected)
    assert conv not in memory._pending
    assert await context_ids(memory, uid, conv) == expected
    assert await cached_ids(memory, conv) == expected

    # Now the deletion fails too: the damaged copy stays in the cache, and is not served.
    real_delete = cache._delete_messages

    async def refuse(*args: Any, **kwargs: Any) -> int:
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(cache, "_append_messages", half_then_drop)
    monkeypatch.setattr(cache, "_delete_messages", refuse)
    await stored(memory, uid, conv, 2, start=5)
    expected = await persistent_ids(memory, conv)
    assert len(expected) == 7
    monkeypatch.setattr(cache, "_append_messages", real_append)
    damaged = await cached_ids(memory, conv)
    assert damaged is not None and damaged != expected  # stale, marker still there
    for _ in range(3):
        await asyncio.sleep(0.06)
        assert await context_ids(memory, uid, conv) == expected
    monkeypatch.setattr(cache, "_delete_messages", real_delete)
    await asyncio.sleep(0.5)
    assert await context_ids(memory, uid, conv) == expected  # deletes, then rebuilds
    assert await cached_ids(memory, conv) == expected
    hits = cache_requests("hit")
    assert await context_ids(memory, uid, conv) == expected
    assert cache_requests("hit") == hits + 1


async def test_a_write_cancelled_before_reaching_the_cache_is_never_served_stale(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = await pair.open()
    uid, conv = new_user_id(), new_conversation_id()
    ids = await stored(memory, uid, conv, 3)
    await context_ids(memory, uid, conv)
    real_append = memory.cache._append_messages

    async def stalled(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(5)
        return await real_append(*args, **kwargs)

    monkeypatch.setattr(memory.cache, "_append_messages", stalled)
    late = make_message("stored, then the caller gave up", timestamp=at(50))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(memory.store_message(late, uid, conv), 0.3)
    monkeypatch.setattr(memory.cache, "_append_messages", real_append)
    expected = [*ids, str(late.id)]
    assert await persistent_ids(memory, conv) == expected
    assert await cached_ids(memory, conv) == ids  # the copy still lacks it...
    assert await context_ids(memory, uid, conv) == expected  # ...and is not served
    assert await cached_ids(memory, conv) == expected
    hits = cache_requests("hit")
    assert await context_ids(memory, uid, conv) == expected
    assert cache_requests("hit") == hits + 1


async def test_an_unreachable_cache_costs_one_timeout_per_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "hunter2-cache-secret"
    cache = RedisMemory(
        f"redis://:{secret}@127.0.0.1:{closed_port()}/0",
        connect_timeout=0.2,
        socket_timeout=0.2,
        retry=NO_RETRY,
    )
    tries = count_calls(monkeypatch, cache, "_ensure_connected")
    memory = HybridMemory(cache, SQLiteMemory(tmp_path / "m.db"), cache_retry_after=30)
    uid, conv = new_user_id(), new_conversation_id()
    with caplog.at_level(logging.WARNING, logger="bruno_memstore.backends.hybrid"):
        await memory.initialize()  # the persistent tier is up: that is enough
        started = time.monotonic()
        ids = []
        for i in range(20):
            ids += await stored(memory, uid, conv, 1, start=i)
            assert await context_ids(memory, uid, conv) == ids
        elapsed = time.monotonic() - started
    assert tries[0] == 1  # connect failed once; the pause keeps every later call away
    assert elapsed < 2.0
    assert secret not in caplog.text and secret not in repr(memory)
    assert "cache tier" in caplog.text
    assert len(memory._pending) == 1  # written while paused: its copy is deleted later
    await memory.shutdown()


async def test_the_persistent_tier_must_be_reachable(tmp_path: Path) -> None:
    persistent = PostgresMemory(
        f"postgresql://postgres@127.0.0.1:{closed_port()}/test", connect_timeout=1
    )
    memory = HybridMemory(InMemoryStorage(), persistent)
    with pytest.raises(BackendUnavailableError):
        await memory.initialize()


@pytest.fixture
def private_memcached() -> Iterator[MemcachedServer]:
    server = MemcachedServer()
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.send_signal(signal.SIGCONT)
    server.kill()


def _memcached_hybrid(server: MemcachedServer, db: Path) -> HybridMemory:
    cache = MemcachedMemory(
        server.url,
        prefix="hy",
        connect_timeout=0.5,
        operation_timeout=0.5,
        retry=NO_RETRY,
    )
    return HybridMemory(cache, SQLiteMemory(db), cache_timeout=0.5, cache_retry_after=0.1)


async def _until_hit(memory: HybridMemory, uid: str, conv: str, expected: list[str]) -> None:
    """Read until the cache serves the window again (each read must be right)."""
    deadline = time.monotonic() + 15
    while True:
        hits = cache_requests("hit")
        assert await context_ids(memory, uid, conv) == expected
        if cache_requests("hit") > hits:
            return
        assert time.monotonic() < deadline, "the cache tier was never used again"
        await asyncio.sleep(0.1)


async def test_writes_and_reads_carry_on_while_the_cache_is_down(
    private_memcached: MemcachedServer, tmp_path: Path
) -> None:
    memory = _memcached_hybrid(private_memcached, tmp_path / "m.db")
    uid, conv = new_user_id(), new_conversation_id()
    ids = await stored(memory, uid, conv, 3)
    await _until_hit(memory, uid, conv, ids)

    private_memcached.kill()
    for i in range(5):
        ids += await stored(memory, uid, conv, 1, start=3 + i)
        assert await context_ids(memory, uid, conv) == ids
    assert await persistent_ids(memory, conv) == ids

    private_memcached.start()  # the same port, empty
    await _until_hit(memory, uid, conv, ids)
    ids += await stored(memory, uid, conv, 1, start=20)
    assert await context_ids(memory, uid, conv) == ids
    assert await cached_ids(memory, conv) == ids
    await memory.shutdown()


async def test_a_frozen_cache_keeps_a_stale_copy_nobody_is_served_after_it_returns(
    private_memcached: MemcachedServer, tmp_path: Path
) -> None:
    db = tmp_path / "m.db"
    writer, reader = (
        _memcached_hybrid(private_memcached, db),
        _memcached_hybrid(private_memcached, db),
    )
    uid, conv = new_user_id(), new_conversation_id()
    ids = await stored(writer, uid, conv, 3)
    await _until_hit(writer, uid, conv, ids)
    await _until_hit(reader, uid, conv, ids)

    assert private_memcached.process is not None
    private_memcached.process.send_signal(signal.SIGSTOP)  # answers nothing, keeps its data
    try:
        ids += await stored(writer, uid, conv, 2, start=3)
        assert await context_ids(writer, uid, conv) == ids
        assert conv in writer._pending
    finally:
        private_memcached.process.send_signal(signal.SIGCONT)
    # The writer deletes the copy it could not update as soon as the cache answers again,
    # then serves (and rebuilds) it from the persistent tier.
    await asyncio.sleep(0.5)
    assert await context_ids(writer, uid, conv) == ids
    assert conv not in writer._pending
    await _until_hit(reader, uid, conv, ids)
    await _until_hit(writer, uid, conv, ids)
    await writer.shutdown()
    await reader.shutdown()


async def test_copies_expire_after_cache_max_age(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hybrid's clock stands still until the test moves it past the age, so a machine
    # busy enough to stall between the two reads cannot age the copy (the tiers' own
    # clocks run on).
    now = [hybrid_backend._now_us()]
    monkeypatch.setattr(hybrid_backend, "_now_us", lambda: now[0])
    memory = await pair.open(cache_max_age=1.5)
    uid, conv = new_user_id(), new_conversation_id()
    ids = await stored(memory, uid, conv, 3)
    await context_ids(memory, uid, conv)
    hits = cache_requests("hit")
    assert await context_ids(memory, uid, conv) == ids
    assert cache_requests("hit") == hits + 1
    now[0] += 1_600_000
    misses = cache_requests("miss")
    assert await context_ids(memory, uid, conv) == ids
    assert cache_requests("miss") == misses + 1


async def test_memcached_item_ttl_bounds_the_age_of_copies(memcached_url: str) -> None:
    cache = MemcachedMemory(memcached_url, prefix="ttl", ttl=10)
    assert HybridMemory(cache, InMemoryStorage()).cache_max_age == 5
    assert HybridMemory(cache, InMemoryStorage(), cache_max_age=2).cache_max_age == 2
    assert HybridMemory(cache, InMemoryStorage(), cache_max_age=None).cache_max_age == 5
    untimed = MemcachedMemory(memcached_url, prefix="ttl")
    assert HybridMemory(untimed, InMemoryStorage(), cache_max_age=None).cache_max_age is None


def test_choices_follow_what_the_cache_declares() -> None:
    """Record expiry and in-process data are declared by the tiers, whatever their class."""

    class Expiring(InMemoryStorage):
        ttl = 8.0

    assert HybridMemory(Expiring(), SQLiteMemory(":memory:")).cache_max_age == 4
    assert HybridMemory(InMemoryStorage(), InMemoryStorage()).supports(Capability.IN_PROCESS)
    remote = HybridMemory(RedisMemory(REDIS_URL), InMemoryStorage())
    assert not remote.supports(Capability.IN_PROCESS)
    assert remote.capabilities == InMemoryStorage.capabilities - {Capability.IN_PROCESS}


# ==================================================================== construction and URLs


def _hybrid_url(cache: str, persistent: str, extra: str = "") -> str:
    return f"hybrid://?cache={quote(cache, safe='')}&persistent={quote(persistent, safe='')}{extra}"


async def test_the_url_form_builds_and_owns_both_tiers(tmp_path: Path) -> None:
    db = tmp_path / "via-url.db"
    memory = open_memory(
        _hybrid_url("memory://", f"sqlite:///{db}", "&cache_timeout=0.5&context_window=7")
    )
    assert isinstance(memory, HybridMemory)
    assert isinstance(memory.cache, InMemoryStorage)
    assert isinstance(memory.persistent, SQLiteMemory) and memory.persistent.db_path == str(db)
    assert (memory.cache_timeout, memory.context_window) == (0.5, 7)
    uid, conv = new_user_id(), new_conversation_id()
    ids = await stored(memory, uid, conv, 2)
    assert await context_ids(memory, uid, conv) == ids
    await memory.shutdown()
    assert not memory.persistent.connected and not memory.cache.connected
    given = HybridMemory(InMemoryStorage(), SQLiteMemory(db))
    assert await context_ids(given, uid, conv) == ids
    assert given.cache.connected and given.persistent.connected
    await given.shutdown()
    assert not given.persistent.connected and not given.cache.connected
    keyword = open_memory(
        _hybrid_url("memory://", f"sqlite:///{db}", "&cache_timeout=3"), cache_timeout=1
    )
    assert isinstance(keyword, HybridMemory) and keyword.cache_timeout == 1


async def test_bad_hybrid_urls_name_the_problem(tmp_path: Path) -> None:
    sqlite = quote(f"sqlite:///{tmp_path}/x.db", safe="")
    with pytest.raises(InvalidArgumentError, match="persistent"):
        open_memory("hybrid://?cache=memory%3A%2F%2F")
    with pytest.raises(InvalidArgumentError, match="cache"):
        open_memory(f"hybrid://?persistent={sqlite}")
    with pytest.raises(InvalidArgumentError, match="cache"):
        open_memory(f"hybrid://?cache=&persistent={sqlite}")
    with pytest.raises(InvalidArgumentError, match="colour"):
        open_memory(f"hybrid://?cache=memory%3A%2F%2F&persistent={sqlite}&colour=red")
    with pytest.raises(InvalidArgumentError, match="no host"):
        open_memory(f"hybrid://somehost/?cache=memory%3A%2F%2F&persistent={sqlite}")
    with pytest.raises(InvalidArgumentError, match="cache_timeout"):
        open_memory(f"hybrid://?cache=memory%3A%2F%2F&persistent={sqlite}&cache_timeout=soon")
    with pytest.raises(InvalidArgumentError, match="cache"):
        HybridMemory("memory://", InMemoryStorage())  # type: ignore[arg-type]
    same = InMemoryStorage()
    with pytest.raises(InvalidArgumentError):
        HybridMemory(same, same)
    with pytest.raises(InvalidArgumentError, match="cache_retry_after"):
        HybridMemory(InMemoryStorage(), InMemoryStorage(), cache_retry_after=0)


def test_repr_and_describe_redact_both_passwords() -> None:
    redis_url = "redis://:redis-pass-123@127.0.0.1:6379/0"
    pg_url = "postgresql://postgres:pg-pass-456@127.0.0.1:5432/test"
    built = HybridMemory(RedisMemory(redis_url), PostgresMemory(pg_url))
    from_url = open_memory(_hybrid_url(redis_url, pg_url))
    for memory in (built, from_url):
        text = repr(memory) + memory.describe()
        assert "redis-pass-123" not in text and "pg-pass-456" not in text
        assert "***" in text and "127.0.0.1:6379" in text and "5432/test" in text


async def test_compact_runs_on_both_tiers(
    tmp_path: Path, memcached_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = _pair("memory+sqlite", tmp_path, memcached_url)
    memory = await pair.open()
    calls = {
        name: count_calls(monkeypatch, tier, "_compact")
        for name, tier in (("cache", memory.cache), ("persistent", memory.persistent))
    }
    try:
        uid, conv = new_user_id(), new_conversation_id()
        word = marker()
        await memory.store_message(make_message(f"the word {word}"), uid, conv)
        await context_ids(memory, uid, conv)
        await memory.forget_user(uid)
        await memory.compact()
    finally:
        await memory.shutdown()
    assert {name: n[0] for name, n in calls.items()} == {"cache": 1, "persistent": 1}
    assert find_in_files([tmp_path], [word]) == {}
