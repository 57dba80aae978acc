"""``RedisMemory`` on a Redis Cluster (``redis+cluster://``): URL options, the key layout (each
user in the slot of its own tag, directory keys in slots of their own), the directory
protocol's races (keys written by hand), WAIT after writes, what stays standalone-only. Runs
against the project's cluster (``BRUNO_TEST_REDIS_CLUSTER_URL``, default:
``scripts/services/redis-cluster.sh``); the conformance suite runs there too
(``tests/conformance/test_redis.py``)."""

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
from bruno_memstore.backends.redis.backend import _append_args
from bruno_memstore.backends.redis.keys import RedisKeys
from bruno_memstore.errors import (
    BackendError,
    ConflictError,
    InvalidArgumentError,
    OwnershipError,
    SchemaError,
)
from bruno_memstore.models import message_to_record
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
    prefix = memory.keys.prefix
    with _cluster(url) as client:
        keys: list[str] = []
        for node in client.get_primaries():
            for pattern in (f"{prefix}:*", f"{{{prefix}:*", f"{{{prefix}}}*"):
                keys += client.scan_iter(match=pattern, count=1000, target_nodes=node)
        return keys


# ==================================================================== URLs and options


def test_cluster_urls_and_options() -> None:
    by_scheme = open_memory("redis+cluster://127.0.0.1:27001?prefix=app&wait_replicas=2")
    assert isinstance(by_scheme, RedisMemory) and by_scheme.cluster
    assert by_scheme.keys.prefix == "app"  # the standalone names
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


_USERS = ("alice", "b{o}b", "c:d%", "dave", "erin", "frank")


async def test_each_user_has_a_slot_and_each_directory_key_its_own(
    memory: RedisMemory, redis_cluster_url: str
) -> None:
    for user in _USERS:
        await memory.store_message(make_message(f"hello from {user}"), user, f"conv-{user}")
        await memory.store_memory(make_memory_entry(user, "likes tea"))
        await memory.create_session(user)
    keys = _store_keys(redis_cluster_url, memory)
    k = memory.keys
    slots: dict[str, set[int]] = {}
    directory: list[str] = []
    for key in keys:
        user = k.user_of(key) or k.user_of(key[len(k.prefix) + 3 :])  # P:v:{P:u:...
        if user is not None:
            slots.setdefault(user, set()).add(key_slot(key.encode()))
        else:
            directory.append(key)
    # Every key of one user (data, vectors, the user's copies of directory keys) in the
    # slot of the user's tag; the users spread over slots, and over the masters.
    assert sorted(slots) == sorted(_USERS)
    for user, found in slots.items():
        assert found == {key_slot(k.tag(user).encode())}, user
    assert len({next(iter(found)) for found in slots.values()}) == len(_USERS)
    masters = {memory._client.get_node_from_key(k.tag(user)).name for user in _USERS}
    assert len(masters) > 1
    # The global directory keys have the standalone names, each hashed by its whole name.
    kinds = {key.split(":")[1] for key in directory}
    assert kinds == {"co", "mo", "so", "eo", "meta"}
    assert len({key_slot(key.encode()) for key in directory}) > len(directory) // 2
    # Nothing of the earlier one-slot layout ({P}...), nothing store-wide per user.
    assert not [key for key in keys if key.startswith("{" + k.prefix + "}")]
    # Users' keys never share a name, whatever their ids hold.
    names = RedisKeys("p", cluster=True)
    assert names.user("a}:x", "convs") != names.user("a", "x}:convs")
    assert names.user("b{o}b", "convs") == "{p:u:b%7Bo%7Db}:convs"


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


async def test_a_store_of_the_one_slot_layout_is_refused(redis_cluster_url: str) -> None:
    prefix = f"{engines.REDIS_PREFIX}-{uuid.uuid4().hex[:8]}"
    old = RedisKeys(prefix, cluster=True).one_slot_meta()
    with _cluster(redis_cluster_url) as raw:
        raw.hset(old, "analysis", "x")  # what every store of that layout has
    memory = RedisMemory(redis_cluster_url, prefix=prefix, retry=RetryPolicy(attempts=1))
    try:
        with pytest.raises(SchemaError, match="earlier Redis Cluster layout") as info:
            await memory.initialize()
        assert "bruno-memstore copy" in str(info.value)
        assert not memory.connected
    finally:
        with _cluster(redis_cluster_url) as raw:
            raw.delete(old)
    await memory.initialize()  # once it is gone, the prefix opens
    await memory.shutdown()


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


def _user_keys(url: str, memory: RedisMemory, user: str) -> list[str]:
    return [k for k in _store_keys(url, memory) if memory.keys.tag(user) in k]


async def test_a_dangling_claim_is_taken_over_and_a_stale_mark_cleared(
    memory: RedisMemory, redis_cluster_url: str
) -> None:
    k = memory.keys
    entry = make_memory_entry("taker", "a fact")
    with _cluster(redis_cluster_url) as raw:
        # Claims whose writer died before its data step; one also marked by a taker that
        # died after marking.
        raw.set(k.pointer("co", "c-dangling"), "ghost")
        raw.set(k.pointer("eo", str(entry.id)), "ghost\0!dead-taker")
    await memory.store_message(make_message("mine now"), "taker", "c-dangling")
    await memory.store_memory(entry)
    with _cluster(redis_cluster_url) as raw:
        assert raw.get(k.pointer("co", "c-dangling")) == "taker"
        assert raw.get(k.pointer("eo", str(entry.id))) == "taker"
    assert await memory.conversation_owner("c-dangling") == "taker"
    assert (await memory.get_memory(entry.id)).content == "a fact"
    # A mark left on a key whose owner holds the record: the owner keeps it.
    with _cluster(redis_cluster_url) as raw:
        raw.set(k.pointer("co", "c-dangling"), "taker\0!dead-taker")
    with pytest.raises(OwnershipError):
        await memory.store_message(make_message("not yours"), "other", "c-dangling")
    with _cluster(redis_cluster_url) as raw:
        assert raw.get(k.pointer("co", "c-dangling")) == "taker"
    assert (await memory.get_statistics("other"))["conversations"] == 0
    assert _user_keys(redis_cluster_url, memory, "other") == []
    await memory.store_message(make_message("still mine"), "taker", "c-dangling")
    assert len(await memory.retrieve_messages("c-dangling")) == 2


async def test_a_claim_lost_before_the_second_read_undoes_the_data_step(
    memory: RedisMemory, redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = memory._directory
    assert directory is not None
    k = memory.keys
    steps: list[str] = []
    real_eval = directory.eval

    async def eval_then_lose(name: str, args: list, home: str | None = None, **kw: object):
        result = await real_eval(name, args, home, **kw)
        steps.append(name)
        if name == "append" and home == "slow" and steps.count("append") == 1:
            # Between the slow writer's data step and its second read, a taker that found
            # no data yet marked the claim, and then another user's writer won it.
            with _cluster(redis_cluster_url) as raw:
                raw.set(k.pointer("co", "c-lost"), "slow\0!taker")
            await real_eval("append", _thief_args(), "thief")
            with _cluster(redis_cluster_url) as raw:
                raw.set(k.pointer("co", "c-lost"), "thief")
        return result

    monkeypatch.setattr(directory, "eval", eval_then_lose)
    with pytest.raises(OwnershipError):
        await memory.store_message(make_message("too slow"), "slow", "c-lost")
    assert steps.count("undo") == 1
    # The slow writer's data step was undone: nothing of it is left.
    assert (await memory.get_statistics("slow"))["conversations"] == 0
    assert [m.content for m in await memory.retrieve_messages("c-lost")] == ["the thief's"]
    assert await memory.conversation_owner("c-lost") == "thief"
    leftover = [
        key
        for key in _user_keys(redis_cluster_url, memory, "slow")
        if not key.endswith((":here", ":seq", ":vgc", ":vme"))  # counters stay
    ]
    assert leftover == []


def _thief_args() -> list:
    record = message_to_record(make_message("the thief's"), "c-lost")
    return _append_args("c-lost", "thief", False, 0, [record])


async def test_two_users_racing_for_a_conversation_get_one_winner(
    memory: RedisMemory, redis_cluster_url: str
) -> None:
    wins = {"left": 0, "right": 0}
    for round_ in range(50):
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
    # The loser of each round kept nothing of it: no conversation, no message, no copy of
    # a directory key.
    for user, won in wins.items():
        stats = await memory.get_statistics(user)
        assert stats["conversations"] == won and stats["total_messages"] == won
        copies = [key for key in _user_keys(redis_cluster_url, memory, user) if ":co:" in key]
        assert len(copies) == won


# A store into a conversation its user already holds sends its data step with the claims
# (speculatively) and then the second read: the races of that shortcut.


def _count_pipelines(
    monkeypatch: pytest.MonkeyPatch, memory: RedisMemory, *, keys: bool = False
) -> list:
    """Record each pipeline the directory sends: its first command's name (with ``keys``,
    every key it names)."""
    directory = memory._directory
    assert directory is not None
    sent: list = []
    real_pipe = directory.pipe

    async def pipe(ops, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append({str(a) for op in ops for a in op[1:]} if keys else ops[0][0])
        return await real_pipe(ops, *args, **kwargs)

    monkeypatch.setattr(directory, "pipe", pipe)
    return sent


def _record_undos(monkeypatch: pytest.MonkeyPatch, memory: RedisMemory) -> list[list]:
    directory = memory._directory
    assert directory is not None
    undos: list[list] = []
    real_eval = directory.eval

    async def eval_(name: str, args: list, home: str | None = None, **kw: object):
        if name == "undo":
            undos.append(list(args))
        return await real_eval(name, args, home, **kw)

    monkeypatch.setattr(directory, "eval", eval_)
    return undos


async def test_a_store_into_a_held_conversation_is_two_round_trips(
    memory: RedisMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_message("first"), make_message("second")
    sent = _count_pipelines(monkeypatch, memory)
    undos = _record_undos(monkeypatch, memory)
    await memory.store_message(first, "fast", "c-fast")
    # A new conversation: claims with the step (which writes nothing), step, second read.
    assert len(sent) == 3
    sent.clear()
    await memory.store_message(second, "fast", "c-fast")
    assert sent == ["setnx", "evalsha"]  # claims and step; second read and WAIT
    sent.clear()
    # Stored again: a no-op, in the same two round trips (beside the reads by id that
    # compare the copies), nothing taken back.
    assert (
        await memory.store_messages([first, second], conversation_id="c-fast", user_id="fast") == 0
    )
    assert [op for op in sent if op != "get"] == ["setnx", "evalsha"]
    assert undos == []
    got = await memory.retrieve_messages("c-fast")
    assert sorted(m.content for m in got) == ["first", "second"]
    assert (await memory.get_statistics("fast"))["total_messages"] == 2


async def test_a_speculative_step_losing_an_id_to_another_user_keeps_nothing(
    memory: RedisMemory, redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = memory.keys
    await memory.store_message(make_message("b's own"), "b", "c-b")
    taken = make_message("a's message")
    await memory.store_message(taken, "a", "c-a")
    undos = _record_undos(monkeypatch, memory)
    # b's step runs beside its claim of the id, which finds a (holding it): the message it
    # added is taken back, and only it: b's conversation stays. (The id is a's: a conflict.)
    with pytest.raises(ConflictError):
        await memory.store_messages([taken], conversation_id="c-b", user_id="b")
    assert undos == [["M", "c-b", str(taken.id)]]
    assert [m.content for m in await memory.retrieve_messages("c-b")] == ["b's own"]
    assert (await memory.get_statistics("b"))["total_messages"] == 1
    assert not [key for key in _user_keys(redis_cluster_url, memory, "b") if str(taken.id) in key]
    with _cluster(redis_cluster_url) as raw:
        assert raw.get(k.pointer("mo", str(taken.id))) == "a"
        assert raw.get(k.pointer("co", "c-b")) == "b"
    assert [m.content for m in await memory.retrieve_messages("c-a")] == ["a's message"]


async def test_a_mark_before_a_speculative_second_read_takes_back_only_the_step(
    memory: RedisMemory, redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = memory.keys
    await memory.store_message(make_message("kept"), "held", "c-held")
    directory = memory._directory
    assert directory is not None
    undos = _record_undos(monkeypatch, memory)
    reads: list[list] = []
    real_confirm = directory.confirm

    async def mark_then_confirm(items: list, owner: str, home: str) -> bool:
        reads.append(list(items))
        if len(reads) == 1:
            # A taker marked the conversation's key after the step (it will find the data
            # and take its mark back, or die): the writer must not acknowledge on it.
            with _cluster(redis_cluster_url) as raw:
                raw.set(k.pointer("co", "c-held"), "held\0!taker")
        return await real_confirm(items, owner, home)

    monkeypatch.setattr(directory, "confirm", mark_then_confirm)
    late = make_message("late")
    await memory.store_message(late, "held", "c-held")
    assert len(reads) == 2  # the first second read failed; the claiming round confirmed
    assert undos == [["M", "c-held", str(late.id)]]
    assert sorted(m.content for m in await memory.retrieve_messages("c-held")) == ["kept", "late"]
    assert (await memory.get_statistics("held"))["total_messages"] == 2
    with _cluster(redis_cluster_url) as raw:
        assert raw.get(k.pointer("co", "c-held")) == "held"
        assert raw.get(k.pointer("mo", str(late.id))) == "held"


async def test_racing_copies_of_a_message_into_a_held_conversation_store_it_once(
    memory: RedisMemory,
) -> None:
    await memory.store_message(make_message("opening"), "dup", "c-dup")
    for round_ in range(20):
        msg = make_message(f"copy {round_}")
        added = await asyncio.gather(
            *(
                memory.store_messages([msg], conversation_id="c-dup", user_id="dup")
                for _ in range(6)
            )
        )
        assert sum(added) == 1
    got = await memory.retrieve_messages("c-dup")
    assert sorted(m.content for m in got) == sorted(["opening"] + [f"copy {r}" for r in range(20)])
    assert (await memory.get_statistics("dup"))["total_messages"] == 21


async def test_a_stale_held_hint_claims_the_conversation_again(
    memory: RedisMemory, redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = memory.keys
    sent = _count_pipelines(monkeypatch, memory, keys=True)
    await memory.store_message(make_message("first"), "hinted", "c-hint")
    sent.clear()
    await memory.store_message(make_message("second"), "hinted", "c-hint")
    # Held (as this client saw): the conversation's key is left to the second read.
    assert k.pointer("co", "c-hint") not in sent[0]
    assert k.pointer("co", "c-hint") in sent[1]
    # The conversation goes, and another user takes it: the hint is stale. The step,
    # which checks the user's copy, writes nothing; the claim then finds the other user.
    await memory.clear_conversation("hinted", "c-hint")
    await memory.store_message(make_message("the new owner's"), "other", "c-hint")
    with pytest.raises(OwnershipError):
        await memory.store_message(make_message("third"), "hinted", "c-hint")
    assert (await memory.get_statistics("hinted"))["total_messages"] == 0
    assert not [key for key in _user_keys(redis_cluster_url, memory, "hinted") if ":co:" in key]
    assert await memory.conversation_owner("c-hint") == "other"
    # Gone again: the user claims it anew.
    await memory.clear_conversation("other", "c-hint")
    await memory.store_message(make_message("fourth"), "hinted", "c-hint")
    assert await memory.conversation_owner("c-hint") == "hinted"
    assert [m.content for m in await memory.retrieve_messages("c-hint")] == ["fourth"]


async def test_deletions_delete_global_keys_after_their_data(
    memory: RedisMemory, redis_cluster_url: str
) -> None:
    k = memory.keys
    first, second = make_message("first"), make_message("second")
    await memory.store_messages([first, second], conversation_id="c-del", user_id="del")
    entry = make_memory_entry("del", "a fact")
    await memory.store_memory(entry)
    with _cluster(redis_cluster_url) as raw:
        assert raw.get(k.pointer("mo", str(first.id))) == "del"  # the owner only
        assert raw.get(k.local_pointer("del", "mo", str(first.id))).startswith("del\0c-del\0")
    await memory.delete_memory(entry.id)
    await memory.clear_conversation("del", "c-del")
    with _cluster(redis_cluster_url) as raw:
        for kind, rid in (("eo", str(entry.id)), ("co", "c-del"), ("mo", str(first.id))):
            assert not raw.exists(k.pointer(kind, rid)), kind
            assert not raw.exists(k.local_pointer("del", kind, rid)), kind
        assert not raw.exists(k.user("del", "gone"))
    # A record stored again before its queued key is deleted keeps its key (mark, check,
    # and the mark taken back).
    await memory.store_memory(entry)
    with _cluster(redis_cluster_url) as raw:
        raw.sadd(k.user("del", "gone"), f"eo:{entry.id}")
    await memory.store_message(make_message("a write drains the queue"), "del", "c-other")
    with _cluster(redis_cluster_url) as raw:
        assert raw.get(k.pointer("eo", str(entry.id))) == "del"
        assert not raw.exists(k.user("del", "gone"))
    assert (await memory.get_memory(entry.id)).content == "a fact"


async def test_a_ttl_purge_in_a_read_queues_keys_for_the_next_write(
    redis_cluster_url: str,
) -> None:
    memory = RedisMemory(
        redis_cluster_url,
        prefix=f"{engines.REDIS_PREFIX}-{uuid.uuid4().hex[:8]}",
        conversation_ttl=0.2,
    )
    k = memory.keys
    try:
        msg = make_message("short-lived")
        await memory.store_message(msg, "ttl", "c-ttl")
        await asyncio.sleep(0.4)
        assert await memory.get_statistics("ttl") is not None  # a read purges it
        with _cluster(redis_cluster_url) as raw:
            assert raw.smembers(k.user("ttl", "gone")) == {"co:c-ttl", f"mo:{msg.id}"}
            assert raw.exists(k.pointer("co", "c-ttl"))  # nobody's until deleted
        assert await memory.conversation_owner("c-ttl") is None
        await memory.store_message(make_message("later"), "ttl", "c-later")
        with _cluster(redis_cluster_url) as raw:
            assert not raw.exists(k.pointer("co", "c-ttl"), k.pointer("mo", str(msg.id)))
            assert not raw.exists(k.user("ttl", "gone"))
    finally:
        await memory.shutdown()


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
    master = memory._client.get_node_from_key(memory.keys.tag("u"))
    replica = next(
        n
        for n in memory._client.get_replicas()
        if key_slot(memory.keys.tag("u").encode()) in _slots_of(memory, master)
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
    msg = make_message("unconfirmed")
    try:
        with pytest.raises(BackendError) as info:
            await memory.store_message(msg, "u", "c")
        assert "1 of 3 replica(s) confirmed the write within 100 ms" in str(info.value)
        # Writes are idempotent: stored again (whatever of it was kept), it is there once.
        memory._wait = (1, 1000)
        await memory.store_message(msg, "u", "c")
        await memory.store_message(msg, "u", "c")
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
