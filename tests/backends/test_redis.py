"""Redis-specific behaviour of ``RedisMemory``: key layout, atomicity, search cost, TTL,
real deletion, URL options. Runs against ``BRUNO_TEST_REDIS_URL`` (default: the local server);
every test uses its own key prefix, so nothing here touches anyone else's keys."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from bruno_core.models.memory import MemoryQuery
from bruno_core.models.message import MessageRole
from redis.crc import key_slot

from bruno_memstore import open_memory
from bruno_memstore.backends import redis as redis_backend
from bruno_memstore.backends._redis_keys import encode_id
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.redis import ANALYZER_FINGERPRINT, RedisMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import Capability
from bruno_memstore.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidArgumentError,
    MissingDependencyError,
    OwnershipError,
)
from bruno_memstore.search import terms
from bruno_memstore.testing import at, make_memory_entry, make_message

REDIS_URL = os.environ.get("BRUNO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
GLOBAL_KINDS = {"co", "mo", "so", "eo", "users", "cexp", "eexp", "meta", "vgen"}


@pytest_asyncio.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix for one test; every key under it is deleted afterwards."""
    name = f"bruno-rt-{uuid.uuid4().hex[:10]}"
    yield name
    await _drop_prefix(name)


@pytest_asyncio.fixture
async def memory(prefix: str) -> AsyncIterator[RedisMemory]:
    mem = RedisMemory(REDIS_URL, prefix=prefix, connect_timeout=3)
    try:
        await mem.initialize()
    except BackendUnavailableError as exc:
        pytest.fail(f"Redis is required for these tests and is unreachable: {exc}")
    yield mem
    await mem.shutdown()


@pytest_asyncio.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


async def _keys(prefix: str) -> set[str]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        found = set()
        for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
            found |= {k async for k in client.scan_iter(match=pattern, count=1000)}
        return found
    finally:
        await client.aclose()


async def _drop_prefix(prefix: str) -> None:
    keys = await _keys(prefix)
    if keys:
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        await client.delete(*keys)
        await client.aclose()


async def _snapshot(_raw: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under the prefix with its full value (as bytes: vectors are binary)."""
    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        return await _values(raw, prefix)
    finally:
        await raw.aclose()


async def _values(raw: aioredis.Redis, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(await _keys(prefix)):
        kind = (await raw.type(key)).decode()
        if kind == "string":
            out[key] = await raw.get(key)
        elif kind == "hash":
            out[key] = await raw.hgetall(key)
        elif kind == "set":
            out[key] = sorted(await raw.smembers(key))
        elif kind == "zset":
            out[key] = await raw.zrange(key, 0, -1, withscores=True)
        out[key] = (kind, out.get(key), await raw.pttl(key))
    return out


@contextmanager
def monitor(prefix: str) -> Iterator[list[str]]:
    """Collect the commands Lua scripts run on keys under ``prefix`` (Redis MONITOR)."""
    commands: list[str] = []
    token = uuid.uuid4().hex
    ready = threading.Event()

    def watch() -> None:
        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        with client.monitor() as mon:
            for entry in mon.listen():
                command = entry["command"]
                if command == f"ECHO start-{token}":
                    ready.set()
                elif command == f"ECHO end-{token}":
                    return
                elif ready.is_set() and entry["client_type"] == "lua" and prefix in command:
                    commands.append(command)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    sync = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    deadline = time.monotonic() + 5
    while not ready.is_set() and time.monotonic() < deadline:
        sync.echo(f"start-{token}")
        ready.wait(0.05)
    assert ready.is_set(), "MONITOR did not start"
    try:
        yield commands
    finally:
        sync.echo(f"end-{token}")
        thread.join(5)
        sync.close()


# ==================================================================== key layout


AWKWARD_USERS = ["ali{ce}", "a{b", "a%7Bb", "100% sure", "x:y", "üser 😀", "}{", "%"]


async def test_every_key_of_a_user_hashes_to_the_users_slot(memory: RedisMemory) -> None:
    for user in AWKWARD_USERS:
        conv = f"conv {{of}} {user}"
        await memory.store_messages(
            [make_message(f"hello from {user}", timestamp=at(i)) for i in range(3)],
            conversation_id=conv,
            user_id=user,
        )
        await memory.store_memory(make_memory_entry(user, f"a fact about {user}"))
        await memory.create_session(user)
    keys = await _keys(memory.prefix)
    tags = {user: memory.keys.tag(user) for user in AWKWARD_USERS}
    assert len(set(tags.values())) == len(AWKWARD_USERS)  # escaping keeps ids apart
    vectors = f"{memory.prefix}:v:"
    for user, tag in tags.items():
        mine = {k for k in keys if k.startswith((tag + ":", vectors + tag + ":"))}
        assert len(mine) > 10, (user, mine)
        assert {key_slot(k.encode()) for k in mine} == {key_slot(tag.encode())}
        # Redis takes the hash tag from the first '{' to the next '}': exactly our tag.
        assert all(k[k.index("{") + 1 : k.index("}")] == tag[1:-1] for k in mine)
        # Every record's vector document sits in its owner's slot.
        assert len({k for k in mine if k.startswith(vectors)}) == 4, user
    per_user = {k for k in keys if k.startswith(("{", vectors))}
    assert per_user == {
        k
        for k in per_user
        if any(k.startswith((t + ":", vectors + t + ":")) for t in tags.values())
    }
    for key in keys - per_user:
        kind = key[len(memory.prefix) + 1 :].split(":", 1)[0]
        assert kind in GLOBAL_KINDS, key


async def test_conversation_keys_carry_the_owners_tag(memory: RedisMemory) -> None:
    owner, conv = "owner-1", "shared-conv"
    await memory.store_message(make_message("mine"), owner, conv)
    # bruno-core's two-argument form writes into the existing conversation of its owner.
    await memory.store_message(
        make_message("routed to the owner", metadata={"user_id": "someone"}), conv
    )
    keys = await _keys(memory.prefix)
    conv_keys = {k for k in keys if f":c:{conv}:" in k}
    assert conv_keys and all(k.startswith(memory.keys.tag(owner)) for k in conv_keys)
    assert not any(k.startswith(memory.keys.tag("someone")) for k in keys)
    assert len(await memory.retrieve_messages(conv)) == 2


def test_id_escaping_matches_the_lua_side() -> None:
    assert encode_id("plain-id") == "plain-id"
    assert encode_id("a{b}c%") == "a%7Bb%7Dc%25"
    assert encode_id("a%7Bb") != encode_id("a{b")


async def test_lua_builds_the_same_key_names_as_python(memory: RedisMemory, raw) -> None:
    user, conv = "ü{ser}%", "c{o}nv%25"
    await memory.store_message(make_message("key names"), user, conv)
    assert await raw.exists(memory.keys.conversation(user, conv, "o")) == 1
    assert await raw.exists(memory.keys.conversation(user, conv, "b")) == 1
    assert await raw.get(memory.keys.pointer("co", conv)) == user
    assert await raw.sismember(memory.keys.user(user, "convs"), conv)


# ==================================================================== atomicity


async def test_refused_write_into_anothers_conversation_changes_nothing(
    memory: RedisMemory, raw
) -> None:
    alice, bob, conv = "alice", "bob", "alices-conv"
    await memory.store_messages(
        [make_message("first", timestamp=at(0)), make_message("second", timestamp=at(1))],
        conversation_id=conv,
        user_id=alice,
    )
    await memory.create_session(alice)
    before = await _snapshot(raw, memory.prefix)
    with pytest.raises(OwnershipError):
        await memory.store_message(make_message("intrusion"), bob, conv)
    with pytest.raises(OwnershipError):
        await memory.store_messages(
            [make_message("batch intrusion 1"), make_message("batch intrusion 2")],
            conversation_id=conv,
            user_id=bob,
        )
    with pytest.raises(OwnershipError):
        await memory.get_context(bob, conv)
    assert await _snapshot(raw, memory.prefix) == before
    assert not await raw.sismember(memory.keys.glob("users"), bob)


async def test_conflicting_batch_writes_nothing(memory: RedisMemory, raw) -> None:
    user, conv = "carol", "conv-1"
    stored = make_message("original", timestamp=at(0))
    await memory.store_message(stored, user, conv)
    before = await _snapshot(raw, memory.prefix)
    changed = stored.model_copy(update={"content": "changed"})
    with pytest.raises(ConflictError):
        await memory.store_messages(
            [make_message("new one"), changed], conversation_id=conv, user_id=user
        )
    assert await _snapshot(raw, memory.prefix) == before


async def test_racing_claims_give_the_conversation_to_one_user(memory: RedisMemory) -> None:
    conv = "contested"
    users = [f"racer-{i}" for i in range(20)]
    results = await asyncio.gather(
        *(memory.store_message(make_message(f"from {u}"), u, conv) for u in users),
        return_exceptions=True,
    )
    winners = [u for u, r in zip(users, results, strict=True) if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, OwnershipError) for r in results if r is not None)
    (msg,) = await memory.retrieve_messages(conv)
    assert msg.content == f"from {winners[0]}"


# ==================================================================== search


CORPUS = [
    "guitar lesson on tuesday with the new teacher",
    "the piano lesson moved to friday",
    "bought new strings for the guitar",
    "weather looks fine for the beach",
    "dinner with my sister at the italian place",
    "the project deadline is next month",
    "my guitar teacher recommends scales every morning",
    "football match tickets for saturday",
]


async def test_search_reads_only_the_query_terms_posting_lists(memory: RedisMemory) -> None:
    user = "searcher"
    for i, text in enumerate(CORPUS * 5):
        await memory.store_message(make_message(text, timestamp=at(i)), user, f"conv-{i % 3}")
    await memory.store_memory(make_memory_entry(user, "the user plays classical guitar"))
    with monitor(memory.prefix) as commands:
        results = await memory.search(user, "guitar lessons", limit=3, mode="keyword")
    assert len(results) == 3
    query_terms = set(terms("guitar lessons"))
    read_postings = {c.split(":t:", 1)[1] for c in commands if c.startswith("HGETALL")}
    assert read_postings == query_terms
    assert not [c for c in commands if ":t:" in c and not c.startswith("HGETALL")]
    assert not [c for c in commands if c.split()[0] in ("SCAN", "KEYS", "HSCAN", "SSCAN")]
    # Records are fetched for the results only (plus equal-score ties), not per candidate.
    fetched = [c for c in commands if c.startswith("HGET ") and (":c:" in c or c.endswith(":e"))]
    assert len(fetched) < len(CORPUS * 5) / 2


async def test_ranking_matches_the_in_process_bm25_exactly(memory: RedisMemory) -> None:
    rnd = random.Random(5)
    words = "guitar piano lesson teacher beach dinner sister project music song".split()
    reference = InMemoryStorage()
    user = "parity"
    for c in range(3):
        msgs = [
            make_message(
                " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 12))),
                role=rnd.choice([MessageRole.USER, MessageRole.ASSISTANT]),
                timestamp=at(c * 100 + i),
            )
            for i in range(40)
        ]
        for target in (memory, reference):
            await target.store_messages(msgs, conversation_id=f"c{c}", user_id=user)
    for i in range(15):
        entry = make_memory_entry(
            user, " ".join(rnd.choice(words) for _ in range(5)), importance=i / 15
        )
        for target in (memory, reference):
            await target.store_memory(entry)
    for query in ("guitar", "piano lesson", "sister dinner song", "teacher teacher", "music"):
        for kinds in (("message", "memory"), ("message",), ("memory",)):
            for scope in (None, "c1"):
                ours = await memory.search(
                    user, query, limit=25, kinds=kinds, conversation_id=scope
                )
                theirs = await reference.search(
                    user, query, limit=25, kinds=kinds, conversation_id=scope
                )
                assert [(r.kind, r.score, _rid(r)) for r in ours] == [
                    (r.kind, r.score, _rid(r)) for r in theirs
                ], (query, kinds, scope)
    await reference.shutdown()


def _rid(result: Any) -> str:
    return str(result.message.id if result.message is not None else result.memory.id)


async def test_memory_filters_apply_inside_the_search(memory: RedisMemory) -> None:
    user = "filters"
    # Many strong matches that the filter rejects, one weak match it accepts: filtering
    # after a truncated ranking would starve the result.
    for _ in range(40):
        await memory.store_memory(
            make_memory_entry(user, "tea tea tea tea", category="drinks", importance=0.9)
        )
    wanted = make_memory_entry(user, "tea and a long list of other words here", category="food")
    await memory.store_memory(wanted)
    got = await memory.retrieve_memories(
        MemoryQuery(user_id=user, query_text="tea", categories=["food"], limit=1)
    )
    assert [e.id for e in got] == [wanted.id]


# ==================================================================== windows


async def test_context_across_conversations_reads_only_the_needed_tails(
    memory: RedisMemory,
) -> None:
    user = "many-convs"
    reference = InMemoryStorage()
    for c in range(40):
        # Conversation 38 and 39 hold the newest messages.
        base = at(1000) if c >= 38 else at(c * 10)
        msgs = [
            make_message(f"conv {c} msg {i}", timestamp=base + timedelta(seconds=i))
            for i in range(8)
        ]
        for target in (memory, reference):
            await target.store_messages(msgs, conversation_id=f"conv-{c:02d}", user_id=user)
    with monitor(memory.prefix) as commands:
        got = await memory.retrieve_context(user, limit=10)
    want = await reference.retrieve_context(user, limit=10)
    assert [m.id for m in got] == [m.id for m in want]
    tails = [c for c in commands if c.startswith("ZRANGE ") and c.split()[1].endswith(":o")]
    assert len(tails) <= 3, tails  # not 40
    assert not [c for c in commands if c.split()[0] in ("SCAN", "KEYS", "SMEMBERS")]
    await reference.shutdown()


async def test_equal_timestamps_across_conversations_keep_arrival_order(
    memory: RedisMemory,
) -> None:
    user, tie = "ties", at(7)
    sent = []
    for i in range(30):
        msg = make_message(f"tie {i}", timestamp=tie)
        await memory.store_message(msg, user, f"c{i % 4}")
        sent.append(msg.id)
    assert [m.id for m in await memory.retrieve_context(user, limit=30)] == sent
    assert [m.id for m in await memory.retrieve_context(user, limit=7)] == sent[-7:]


async def test_far_past_and_future_timestamps_order_exactly(memory: RedisMemory) -> None:
    # Beyond 2**53 microseconds a double cannot hold the time: order keys are exact hex.
    user, conv = "extremes", "times"
    stamps = [
        datetime(1, 1, 1),
        datetime(1, 1, 1, 0, 0, 0, 1),
        datetime(1969, 12, 31, 23, 59, 59, 999999),
        datetime(1970, 1, 1),
        datetime(2255, 1, 1, 0, 0, 0, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999998),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
    ]
    shuffled = stamps[:]
    random.Random(3).shuffle(shuffled)
    for ts in shuffled:
        await memory.store_message(make_message(ts.isoformat(), timestamp=ts), user, conv)
    got = await memory.retrieve_context(user, conversation_id=conv, limit=10)
    assert [m.timestamp for m in got] == stamps
    assert [m.timestamp for m in await memory.retrieve_context(user, limit=3)] == stamps[-3:]


# ==================================================================== TTL


async def test_no_expiry_unless_configured(memory: RedisMemory, raw) -> None:
    user, conv = "no-ttl", "forever"
    await memory.store_message(make_message("keep"), user, conv)
    await memory.create_session(user)
    for key in await _keys(memory.prefix):
        assert await raw.pttl(key) == -1, key
    assert not await raw.exists(memory.keys.user(user, "cexp"), memory.keys.glob("cexp"))


async def test_conversation_ttl_expires_everything_of_the_conversation(prefix: str, raw) -> None:
    memory = RedisMemory(REDIS_URL, prefix=prefix, conversation_ttl=1.0)
    try:
        user, conv, other = "ttl-user", "short-lived", "kept"
        await memory.store_message(make_message("ephemeral kiwi", timestamp=at(0)), user, conv)
        bodies = memory.keys.conversation(user, conv, "b")
        first = await raw.pttl(bodies)
        assert 0 < first <= 1000
        await asyncio.sleep(0.5)
        await memory.store_message(make_message("refresh kiwi", timestamp=at(1)), user, conv)
        assert await raw.pttl(bodies) > first - 400  # the write pushed the deadline back
        session = (await memory.get_context(user, conv)).session
        await asyncio.sleep(1.2)
        assert await raw.exists(bodies) == 0  # Redis expired the bodies on its own clock
        assert await memory.retrieve_messages(conv) == []
        assert await memory.search_messages("kiwi", user_id=user) == []
        assert await memory.get_session(session.session_id) is None
        stats = await memory.get_statistics(user)
        assert (stats["total_messages"], stats["conversations"], stats["sessions"]) == (0, 0, 0)
        left = {k for k in await _keys(prefix) if conv in k or ":t:" in k}
        assert left == set()
        # The id is free again: a new conversation starts, owned by whoever writes first.
        await memory.store_message(make_message("again"), other, conv)
        assert len(await memory.retrieve_messages(conv)) == 1
    finally:
        await memory.shutdown()


async def test_purge_expired_sweeps_conversations_nobody_reads(prefix: str, raw) -> None:
    memory = RedisMemory(REDIS_URL, prefix=prefix, conversation_ttl=0.3)
    try:
        for i in range(5):
            await memory.store_message(make_message(f"idle {i}"), f"idle-{i}", f"c-{i}")
        await asyncio.sleep(0.5)
        assert await memory.purge_expired() == 0  # counts memory entries only
        left = {k for k in await _keys(prefix) if ":c:" in k or ":co:" in k or ":mo:" in k}
        assert left == set()
        assert await raw.zcard(memory.keys.glob("cexp")) == 0
    finally:
        await memory.shutdown()


# ==================================================================== deletion


async def test_clear_conversation_removes_every_index_entry(memory: RedisMemory, raw) -> None:
    user, doomed, kept = "deleter", "doomed", "kept"
    gone = [make_message(f"walrus number {i}", timestamp=at(i)) for i in range(5)]
    await memory.store_messages(gone, conversation_id=doomed, user_id=user)
    await memory.store_message(make_message("walrus kept", timestamp=at(9)), user, kept)
    await memory.get_context(user, doomed)
    await memory.clear_conversation(user, doomed)
    keys = await _keys(memory.prefix)
    assert not {k for k in keys if f":c:{doomed}:" in k}
    assert not await raw.exists(memory.keys.pointer("co", doomed))
    for msg in gone:
        assert not await raw.exists(memory.keys.pointer("mo", str(msg.id)))
    postings = await raw.hgetall(memory.keys.posting(user, "walrus"))
    assert len(postings) == 1  # only the kept message
    assert await raw.hlen(memory.keys.user(user, "doc")) == 1
    assert await raw.zrange(memory.keys.user(user, "recent"), 0, -1) == [kept]
    assert await raw.smembers(memory.keys.user(user, "convs")) == {kept}
    assert int(await raw.hget(memory.keys.user(user, "ix"), "len")) == len(terms("walrus kept"))


async def test_forget_user_leaves_no_key_behind(memory: RedisMemory, raw) -> None:
    user, other = "forgotten {user}", "bystander"
    for c in range(3):
        await memory.store_messages(
            [make_message(f"secret {c} {i}", timestamp=at(i)) for i in range(4)],
            conversation_id=f"conv-{c}",
            user_id=user,
        )
    await memory.store_memory(make_memory_entry(user, "a secret fact", expires_at=at(99999)))
    await memory.create_session(user)
    await memory.store_message(make_message("not mine"), other, "bystander-conv")
    before_other = {k for k in await _keys(memory.prefix) if memory.keys.tag(other) in k}
    assert len([k for k in before_other if k.startswith(f"{memory.prefix}:v:")]) == 1
    counts = await memory.forget_user(user)
    assert counts == {"messages": 12, "conversations": 4, "sessions": 1, "memories": 1}
    keys = await _keys(memory.prefix)
    assert not {k for k in keys if memory.keys.tag(user) in k}  # vector documents too
    binary = aioredis.Redis.from_url(REDIS_URL)
    try:
        secret = user.encode()
        for key in keys:
            if not key.startswith("{"):
                kind = (await binary.type(key)).decode()
                if kind == "string":
                    values = [await binary.get(key)]
                elif kind == "set":
                    values = list(await binary.smembers(key))
                elif kind == "hash":
                    values = list((await binary.hgetall(key)).values())
                else:
                    values = await binary.zrange(key, 0, -1)
                assert not any(secret in (v or b"") for v in values), key
    finally:
        await binary.aclose()
    assert {k for k in keys if memory.keys.tag(other) in k} == before_other


async def test_changed_text_analysis_reindexes_on_connect(memory: RedisMemory, raw) -> None:
    user = "reindexed"
    msg = make_message("the dogs were running home")
    entry = make_memory_entry(user, "likes running marathons")
    await memory.store_message(msg, user, "conv")
    await memory.store_memory(entry)
    # Pretend the index was built by an older analysis that knew nothing of "run".
    posting = memory.keys.posting(user, "run")
    assert await raw.hlen(posting) == 2
    await raw.delete(posting)
    await raw.hset(memory.keys.glob("meta"), "analysis", "0:older")
    assert await memory.search(user, "run", mode="keyword") == []
    await memory.shutdown()
    await memory.initialize()
    found = await memory.search(user, "running", mode="keyword")
    assert {r.kind for r in found} == {"message", "memory"}
    assert await raw.hget(memory.keys.glob("meta"), "analysis") == ANALYZER_FINGERPRINT
    assert not await raw.exists(memory.keys.glob("reindex-lock"))
    # Nothing was indexed twice.
    assert await raw.hlen(memory.keys.user(user, "doc")) == 2
    total = len(terms(msg.content)) + len(terms(entry.content))
    assert int(await raw.hget(memory.keys.user(user, "ix"), "len")) == total


# ==================================================================== content


LUA_NASTIES = [
    "redis.call('FLUSHALL') -- ]] [[ %s %d %% \\0",
    "end end return {} --[==[",
    "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\ny\r\n",
    "{bruno:u:x}:t:guitar",
    "\x00 NUL \x00 inside",
    "\t tab \u2028 line separator \ufeff bom",
    "😀 👩‍👩‍👧 𠜎 مرحبا e\u0301",
]


async def test_lua_and_protocol_metacharacters_round_trip(memory: RedisMemory) -> None:
    user, conv = "lua-user %s {x}", "lua-conv ]] %d {y}"
    msgs = [
        make_message(text, timestamp=at(i), metadata={"k": text, "nested": [text, {"x": text}]})
        for i, text in enumerate(LUA_NASTIES)
    ]
    await memory.store_messages(msgs, conversation_id=conv, user_id=user)
    got = await memory.retrieve_context(user, conversation_id=conv, limit=20)
    assert [(m.id, m.content, m.metadata) for m in got] == [
        (m.id, m.content, m.metadata) for m in msgs
    ]
    found = await memory.search(user, "flushall", kinds=("message",), mode="keyword")
    assert [r.message.id for r in found if r.message] == [msgs[0].id]
    entry = make_memory_entry(user, LUA_NASTIES[0], tags=["%s", "]]"], category="{c}")
    await memory.store_memory(entry)
    (back,) = await memory.retrieve_memories(MemoryQuery(user_id=user, tags=["]]"]))
    assert back == entry


async def test_one_megabyte_message_and_unpaired_surrogates(memory: RedisMemory) -> None:
    user, conv = "big", "big-conv"
    big = make_message("x" * 1_000_000 + " needle")
    await memory.store_message(big, user, conv)
    (got,) = await memory.retrieve_messages(conv)
    assert got.content == big.content
    with pytest.raises(InvalidArgumentError):
        await memory.store_message(make_message("ok", metadata={"k": "bad \ud800"}), user, conv)
    assert len(await memory.retrieve_messages(conv)) == 1


# ==================================================================== options and lifecycle


def test_url_options_are_typed() -> None:
    mem = open_memory(
        "redis://:pw@localhost:6390/2?prefix=app&conversation_ttl=60&socket_timeout=2"
        "&connect_timeout=1.5&max_connections=7&pool_timeout=3&context_window=30"
    )
    assert isinstance(mem, RedisMemory)
    assert mem.prefix == "app"
    assert mem.conversation_ttl == 60.0
    assert mem.context_window == 30
    assert mem._settings["max_connections"] == 7
    assert mem._settings["socket_timeout"] == 2.0
    assert "pw" not in repr(mem) and "***" in repr(mem)
    assert open_memory("rediss://localhost:6390/0").describe().startswith("rediss://")
    # A keyword given explicitly wins over the URL.
    assert RedisMemory("redis://localhost/0?prefix=a", prefix="b").prefix == "b"
    assert RedisMemory("redis://localhost/0?prefix=a").prefix == "a"


@pytest.mark.parametrize(
    ("url", "kwargs", "argument"),
    [
        ("redis://localhost/0?bogus=1", {}, "url"),
        ("redis://localhost/0?max_connections=lots", {}, "url option max_connections"),
        ("redis://localhost/0", {"prefix": "a{b}"}, "prefix"),
        ("redis://localhost/0", {"conversation_ttl": 0}, "conversation_ttl"),
        ("redis://localhost/0", {"max_connections": 0}, "max_connections"),
        ("memcached://localhost/0", {}, "redis_url"),
    ],
)
def test_bad_options_are_refused(url: str, kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        RedisMemory(url, **kwargs)
    assert info.value.argument == argument


async def test_durable_only_when_the_server_persists(prefix: str) -> None:
    memory = RedisMemory(REDIS_URL, prefix=prefix)
    await memory.initialize()
    aof = await memory._client.info("persistence")
    assert memory.supports(Capability.DURABLE) == bool(int(aof["aof_enabled"]))
    await memory.shutdown()
    if not int(aof["aof_enabled"]):
        strict = RedisMemory(REDIS_URL, prefix=prefix, require_durable=True)
        with pytest.raises(BackendError, match="appendonly"):
            await strict.initialize()
        assert not strict.connected


def test_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_backend, "aioredis", None)
    with pytest.raises(MissingDependencyError) as info:
        RedisMemory()
    assert "pip install 'bruno-memstore[redis]'" in str(info.value)


async def test_pool_bounds_connections_under_load(prefix: str, raw) -> None:
    memory = RedisMemory(REDIS_URL, prefix=prefix, max_connections=4)
    try:
        msgs = [make_message(f"load {i}", timestamp=at(i)) for i in range(100)]
        await asyncio.gather(*(memory.store_message(m, "loaded", "conv") for m in msgs))
        assert len(memory._pool._available_connections) + len(memory._pool._in_use_connections) <= 4
        got = await memory.retrieve_context("loaded", conversation_id="conv", limit=200)
        assert [m.id for m in got] == [m.id for m in msgs]
    finally:
        await memory.shutdown()


async def test_backend_is_usable_from_bruno_core_registry() -> None:
    from bruno_core.registry.memory_registry import MemoryBackendRegistry

    assert MemoryBackendRegistry().validate_plugin(RedisMemory)
    assert issubclass(RedisMemory, MemoryBackend)
