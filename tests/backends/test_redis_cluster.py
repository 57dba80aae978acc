"""``RedisMemory`` on a Redis Cluster (``redis+cluster://``): URL options, the key layout (one
hash slot per store), WAIT after writes, what stays standalone-only. Runs against the project's
cluster (``BRUNO_TEST_REDIS_CLUSTER_URL``, default: ``scripts/services/redis-cluster.sh``); the
conformance suite runs there too (``tests/conformance/test_redis.py``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
import redis
from redis.crc import key_slot

import _engines as engines
from bruno_memstore import open_memory
from bruno_memstore.backends.redis import RedisMemory
from bruno_memstore.backends.redis.keys import RedisKeys
from bruno_memstore.errors import BackendError, InvalidArgumentError, OwnershipError
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing import make_memory_entry, make_message


@pytest_asyncio.fixture
async def memory(redis_cluster_url: str) -> AsyncIterator[RedisMemory]:
    mem = RedisMemory(
        redis_cluster_url,
        prefix=f"{engines.REDIS_PREFIX}-{uuid.uuid4().hex[:8]}",
        connect_timeout=3,
    )
    await engines.connected(mem, "redis-cluster")
    yield mem
    await mem.shutdown()


def _cluster(url: str) -> redis.RedisCluster:
    host, port = engines.host_port(url)
    return redis.RedisCluster(host=host, port=port, decode_responses=True)


def _store_keys(url: str, memory: RedisMemory) -> list[str]:
    with _cluster(url) as client:
        keys: list[str] = []
        for node in client.get_primaries():
            pattern = memory.keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*"
            keys += client.scan_iter(match=pattern, count=1000, target_nodes=node)
        return keys


# ==================================================================== URLs and options


def test_cluster_urls_and_options() -> None:
    by_scheme = open_memory("redis+cluster://127.0.0.1:27001?prefix=app&wait_replicas=2")
    assert isinstance(by_scheme, RedisMemory) and by_scheme.cluster
    assert by_scheme.keys.prefix == "{app}"
    assert by_scheme._driver_url == "redis://127.0.0.1:27001"
    assert by_scheme._settings["wait_replicas"] == 2
    by_option = open_memory("redis://127.0.0.1:27001?cluster=true&wait_timeout=0.5")
    assert isinstance(by_option, RedisMemory) and by_option.cluster
    assert by_option._settings["wait_timeout"] == 0.5
    assert by_option._driver_url == "redis://127.0.0.1:27001"
    assert not RedisMemory("redis://127.0.0.1:6379/0").cluster
    tls = RedisMemory("rediss+cluster://:pw@h:7000?ssl_cert_reqs=none")
    assert tls.cluster and tls._driver_url == "rediss://:pw@h:7000?ssl_cert_reqs=none"
    assert "pw" not in tls.describe()
    assert tls.describe().startswith("rediss+cluster://:***@h:7000")


@pytest.mark.parametrize(
    ("url", "options", "name"),
    [
        ("redis+cluster://h:7000/3", {}, "redis_url"),
        ("redis+sentinel://h:7000", {}, "redis_url"),
        ("redis+cluster://h:7000", {"vector_search": "redisearch"}, "vector_search"),
        ("redis+cluster://h:7000", {"wait_replicas": -1}, "wait_replicas"),
        ("redis+cluster://h:7000", {"wait_timeout": 0}, "wait_timeout"),
    ],
)
def test_bad_cluster_settings_are_refused(url: str, options: dict, name: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        RedisMemory(url, **options)
    assert name in str(info.value)


# ==================================================================== layout


async def test_every_key_of_a_store_is_in_one_slot(
    memory: RedisMemory, redis_cluster_url: str
) -> None:
    for user in ("alice", "b{o}b", "c:d%"):
        await memory.store_message(make_message(f"hello from {user}"), user, f"conv-{user}")
        await memory.store_memory(make_memory_entry(user, "likes tea"))
        await memory.create_session(user)
    keys = _store_keys(redis_cluster_url, memory)
    assert len(keys) > 30
    assert {key_slot(k.encode()) for k in keys} == {key_slot(memory.keys.prefix.encode())}
    # Users' keys never share a name, whatever their ids hold.
    names = RedisKeys("p", cluster=True)
    assert names.user("a}:x", "convs") != names.user("a", "x}:convs")
    assert names.user("b{o}b", "convs") == "{p}:u:b%7Bo%7Db}:convs"


async def test_forget_user_leaves_no_key(memory: RedisMemory, redis_cluster_url: str) -> None:
    await memory.store_message(make_message("first words"), "gone", "conv-gone")
    await memory.store_memory(make_memory_entry("gone", "a fact"))
    before = _store_keys(redis_cluster_url, memory)
    assert any("gone" in k for k in before)
    await memory.forget_user("gone")
    assert not [k for k in _store_keys(redis_cluster_url, memory) if "gone" in k]


_STORE_WIDE = ("users", "cexp", "eexp", "vgen")


def _tomorrow() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


async def test_per_user_writes_touch_no_store_wide_set(
    memory: RedisMemory, redis_cluster_url: str
) -> None:
    ttl = RedisMemory(
        redis_cluster_url, prefix=memory.prefix, conversation_ttl=3600, connect_timeout=3
    )
    try:
        for user in ("alice", "b{o}b", "c:d%"):
            await ttl.store_message(make_message(f"hello from {user}"), user, f"conv-{user}")
            await ttl.store_memory(make_memory_entry(user, "likes tea", expires_at=_tomorrow()))
            await ttl.create_session(user)
        keys = set(_store_keys(redis_cluster_url, memory))
        assert not keys & {memory.keys.glob(name) for name in _STORE_WIDE}
        # Each user is listed by a key of its own, and retention is swept user by user.
        assert {memory.keys.user(u, "here") for u in ("alice", "b{o}b", "c:d%")} <= keys
        users = [u async for u in memory._users(None)]
        assert sorted(users) == ["alice", "b{o}b", "c:d%"]
        assert await memory.purge_expired() == 0
        later = datetime.now(UTC) + timedelta(days=2)
        assert await memory._purge_expired(int(later.timestamp() * 1_000_000)) == 3
        assert not [k for k in _store_keys(redis_cluster_url, memory) if k.endswith(":eexp")]
    finally:
        await ttl.shutdown()


async def test_a_store_listing_users_in_one_set_is_brought_up_to_date(
    memory: RedisMemory, redis_cluster_url: str
) -> None:
    await memory.store_message(make_message("before"), "old-user", "conv-old")
    await memory.store_memory(make_memory_entry("old-user", "kept", expires_at=_tomorrow()))
    k = memory.keys
    with _cluster(redis_cluster_url) as raw:
        # As the previous cluster layout wrote it: a user set and store-wide retention sets.
        raw.delete(k.user("old-user", "here"))
        raw.sadd(k.glob("users"), "old-user")
        raw.zadd(k.glob("eexp"), {"some-id": 1})
        raw.set(k.glob("vgen"), 7)
    reopened = RedisMemory(redis_cluster_url, prefix=memory.prefix, connect_timeout=3)
    try:
        await reopened.initialize()
        assert [u async for u in reopened._users(None)] == ["old-user"]
        with _cluster(redis_cluster_url) as raw:
            assert raw.get(k.user("old-user", "here")) == "old-user"
            assert not raw.exists(*(k.glob(name) for name in _STORE_WIDE))
        exported = [m async for batch in reopened.export_batches("messages") for m in batch]
        assert [m.content for m in exported] == ["before"]
    finally:
        await reopened.shutdown()


async def test_pointers_left_without_data_block_nothing(
    memory: RedisMemory, redis_cluster_url: str
) -> None:
    k = memory.keys
    ghost, orphan, stray = (str(uuid.uuid4()) for _ in range(3))
    with _cluster(redis_cluster_url) as raw:
        # What a write that stopped after its directory keys would leave.
        raw.set(k.pointer("co", "ghost-conv"), "ghost")
        raw.set(k.pointer("mo", ghost), f"ghost\0ghost-conv\0{'0' * 27}1{ghost}")
        raw.set(k.pointer("mo", orphan), f"ghost\0other\0{'0' * 27}1{orphan}")
    assert await memory.conversation_owner("ghost-conv") is None
    assert await memory._get_messages([ghost, orphan]) == []
    await memory.store_message(make_message("first words"), "real", "conv-first")
    msg = make_message("real", id=uuid.UUID(ghost))
    await memory.store_message(msg, "real", "ghost-conv")  # no OwnershipError
    assert await memory.conversation_owner("ghost-conv") == "real"
    [got] = await memory._get_messages([ghost])
    assert got.content == "real" and got.conversation_id == "ghost-conv"
    # A retry stores it once; a dangling message pointer does not make its id "stored".
    await memory.store_message(msg, "real", "ghost-conv")
    await memory.store_message(make_message("second", id=uuid.UUID(orphan)), "real", "ghost-conv")
    assert [m.content for m in await memory.retrieve_messages("ghost-conv")] == ["second", "real"]
    # Deleting by a pointer without its message touches nothing (its order member names
    # arrival 1, the user's first message's, whose search entry stays).
    with _cluster(redis_cluster_url) as raw:
        raw.set(k.pointer("mo", stray), f"real\0ghost-conv\0{'0' * 27}1{stray}")
    assert await memory._delete_message_ids("ghost-conv", [stray]) == 0
    with _cluster(redis_cluster_url) as raw:
        assert raw.hexists(k.user("real", "doc"), "1")
    assert (await memory.search_messages("first", "real"))[0].content == "first words"
    assert [u async for u in memory._users(None)] == ["real"]


async def test_two_users_racing_for_a_conversation_get_one_winner(memory: RedisMemory) -> None:
    wins = {"left": 0, "right": 0}
    for round_ in range(20):
        conv = f"race-{round_}"
        results = await asyncio.gather(
            *(memory.store_message(make_message(f"{u} {round_}"), u, conv) for u in wins),
            return_exceptions=True,
        )
        winners = [u for u, r in zip(wins, results, strict=True) if r is None]
        assert len(winners) == 1
        assert isinstance(next(r for r in results if r is not None), OwnershipError)
        wins[winners[0]] += 1
        assert await memory.conversation_owner(conv) == winners[0]
        [kept] = await memory.retrieve_messages(conv)
        assert kept.content == f"{winners[0]} {round_}"
    # The loser of each round kept nothing of it.
    for user, won in wins.items():
        assert (await memory.get_statistics(user))["conversations"] == won


async def test_forget_user_removes_the_users_pointers(
    memory: RedisMemory, redis_cluster_url: str
) -> None:
    msg = make_message("mine")
    await memory.store_message(msg, "leaving", "conv-leaving")
    entry = make_memory_entry("leaving", "a fact")
    await memory.store_memory(entry)
    session = await memory.create_session("leaving")
    k = memory.keys
    pointers = [
        k.pointer("co", "conv-leaving"),
        k.pointer("co", session.conversation_id),
        k.pointer("mo", str(msg.id)),
        k.pointer("eo", str(entry.id)),
        k.pointer("so", str(session.session_id)),
    ]
    with _cluster(redis_cluster_url) as raw:
        assert [raw.exists(p) for p in pointers] == [1] * 5
    await memory.forget_user("leaving")
    with _cluster(redis_cluster_url) as raw:
        assert [raw.exists(p) for p in pointers] == [0] * 5
    assert [u async for u in memory._users(None)] == []


# ==================================================================== WAIT


async def test_writes_wait_for_a_replica(memory: RedisMemory) -> None:
    assert memory._wait == (1, 1000)  # the project's cluster has a replica per master
    msg = make_message("replicated")
    await memory.store_message(msg, "u", "c")
    master = memory._client.get_node_from_key(memory._slot_key)
    replica = next(
        n
        for n in memory._client.get_replicas()
        if key_slot(memory._slot_key.encode()) in _slots_of(memory, master)
        and n.server_type == "replica"
        and _master_of(memory, n) == master.name
    )
    # Read from the replica itself: the acknowledged write is already there.
    body = await memory._client.execute_command(
        "HGET", memory.keys.conversation("u", "c", "b"), str(msg.id), target_nodes=replica
    )
    assert body is not None and "replicated" in body


def _slots_of(memory: RedisMemory, node: object) -> set[int]:
    slots = memory._client.nodes_manager.slots_cache
    return {slot for slot, nodes in slots.items() if nodes and nodes[0] is node}


def _master_of(memory: RedisMemory, node: object) -> str:
    for nodes in memory._client.nodes_manager.slots_cache.values():
        if node in nodes[1:]:
            return nodes[0].name
    return ""


async def test_a_write_no_replica_confirms_fails_clearly(redis_cluster_url: str) -> None:
    memory = RedisMemory(
        redis_cluster_url,
        prefix=f"{engines.REDIS_PREFIX}-{uuid.uuid4().hex[:8]}",
        wait_replicas=3,  # each master has one
        wait_timeout=0.1,
        retry=RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.05, deadline=5.0),
    )
    try:
        with pytest.raises(BackendError) as info:
            await memory.store_message(make_message("unconfirmed"), "u", "c")
        assert "1 of 3 replica(s) confirmed the write within 100 ms" in str(info.value)
        # Writes are idempotent: the retried one kept one copy.
        memory._wait = (1, 1000)
        assert len(await memory.retrieve_messages("c")) == 1
    finally:
        await memory.shutdown()


async def test_no_wait_when_asked(redis_cluster_url: str) -> None:
    memory = RedisMemory(
        redis_cluster_url, prefix=f"{engines.REDIS_PREFIX}-{uuid.uuid4().hex[:8]}", wait_replicas=0
    )
    try:
        await memory.store_message(make_message("fast"), "u", "c")
        assert memory._wait[0] == 0
        assert [m.content for m in await memory.retrieve_messages("c")] == ["fast"]
    finally:
        await memory.shutdown()


async def test_a_standalone_server_is_not_taken_for_a_cluster(
    redis_url: str, redis_cluster_url: str
) -> None:
    url = redis_url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0]
    memory = RedisMemory(url, connect_timeout=2, retry=RetryPolicy(attempts=1))
    with pytest.raises(BackendError, match="not in cluster mode"):
        await memory.initialize()
    assert not memory.connected
    # And the other way round.
    node = RedisMemory(redis_cluster_url.replace("redis+cluster://", "redis://"))
    with pytest.raises(BackendError, match=r"Redis Cluster node: open it with a redis\+cluster"):
        await node.initialize()
    assert not node.connected
