"""Redis-specific behaviour of ``RedisMemory``: key layout, atomicity, search cost, TTL,
real deletion, URL options. Runs against ``BRUNO_TEST_REDIS_URL`` (default: the local server);
every test uses its own key prefix, so nothing here touches anyone else's keys."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryQuery
from bruno_core.models.message import MessageRole
from redis.crc import key_slot

import _engines as engines
from bruno_memstore import open_memory
from bruno_memstore.backends.kit.vectors import vector_from_bytes
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.redis import backend as redis_backend
from bruno_memstore.backends.redis.backend import ANALYZER_FINGERPRINT, RedisMemory, vector_tag
from bruno_memstore.backends.redis.keys import encode_id
from bruno_memstore.backends.redis.quiet import QUIET
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import Capability
from bruno_memstore.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidArgumentError,
    MissingDependencyError,
    OwnershipError,
    SchemaError,
)
from bruno_memstore.models import (
    DEFAULT_USER,
    MemoryFilter,
    to_us,
)
from bruno_memstore.search import terms
from bruno_memstore.testing import at, make_memory_entry, make_message
from bruno_memstore.testing.erasure import find_in_files, run_erasures
from faults._redis_server import RedisServer

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


async def _keys(prefix: str, url: str = REDIS_URL) -> set[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
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
    # bruno-core's two-argument form, naming no user, writes into the existing conversation
    # of its owner (under the owner's tag, not the default user's).
    await memory.store_message(make_message("routed to the owner"), conv)
    keys = await _keys(memory.prefix)
    conv_keys = {k for k in keys if f":c:{conv}:" in k}
    assert conv_keys and all(k.startswith(memory.keys.tag(owner)) for k in conv_keys)
    assert not any(k.startswith(memory.keys.tag(DEFAULT_USER)) for k in keys)
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
    await memory.search(user, "anything", mode="keyword")  # indexes the waiting messages
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
    await memory.search(user, "walrus", mode="keyword")  # indexes the kept message
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


async def test_a_message_stored_alone_waits_for_its_index_until_a_search(
    memory: RedisMemory, raw
) -> None:
    user = "waiter"
    pend, doc = memory.keys.user(user, "pend"), memory.keys.user(user, "doc")
    await memory.store_messages(
        [make_message(f"heron batch {i}", timestamp=at(i)) for i in range(3)],
        conversation_id="batch",
        user_id=user,
    )
    assert not await raw.exists(pend)  # a batch is indexed as it is written
    alone = make_message("a heron landed on the roof", timestamp=at(10))
    await memory.store_message(alone, user, "single")
    assert await raw.smembers(pend) == {"4"}
    assert await raw.hget(doc, "4") == f"user\0{_member(memory, user, 'single')}\0single\x000"
    assert not await raw.hexists(memory.keys.posting(user, "roof"), "4")
    found = await memory.search(user, "roof", mode="keyword")
    assert [r.message.id for r in found] == [alone.id]
    assert not await raw.exists(pend)
    assert await raw.hexists(memory.keys.posting(user, "roof"), "4")
    words = sum(len(terms(t)) for t in ["heron batch 0", "heron batch 1", "heron batch 2"])
    total = words + len(terms(alone.content))
    assert int(await raw.hget(memory.keys.user(user, "ix"), "len")) == total
    # A deleted message leaves the pending set with its document.
    await memory.store_message(make_message("gone before indexed", timestamp=at(11)), user, "x")
    assert await raw.scard(pend) == 1
    await memory.clear_conversation(user, "x")
    assert not await raw.exists(pend)
    assert int(await raw.hget(memory.keys.user(user, "ix"), "len")) == total
    # A number left in T:pend for a document indexed since (an earlier version deleted and
    # reused it) is cleared without indexing the document twice.
    await raw.sadd(pend, "1")
    found = await memory.search(user, "heron", mode="keyword", limit=10)
    assert len(found) == 4 and not await raw.exists(pend)
    assert int(await raw.hget(memory.keys.user(user, "ix"), "len")) == total


async def _until_indexed(raw: aioredis.Redis, pend: str) -> None:
    """Wait (at most 20 s) until the quiet-time task has emptied ``pend``."""
    for _ in range(400):
        if not await raw.exists(pend):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{pend} still holds {await raw.scard(pend)} documents after 20 s")


async def test_waiting_messages_are_indexed_when_the_stores_pause(memory: RedisMemory, raw) -> None:
    user = "batcher"
    pend = memory.keys.user(user, "pend")
    batch = redis_backend.INDEX_BATCH
    memory._quiet.quiet = 3600.0  # no pause long enough: the task must leave them waiting
    for i in range(batch - 1):
        await memory.store_message(make_message(f"otter {i}", timestamp=at(i)), user, "c")
    await memory.store_message(make_message("the last otter", timestamp=at(batch)), user, "c")
    await asyncio.sleep(0.2)  # the task looks again (every QUIET seconds), writes nothing
    assert await raw.scard(pend) == batch
    assert not await raw.exists(memory.keys.posting(user, "otter"))
    memory._quiet.quiet = QUIET
    await _until_indexed(raw, pend)  # no search asked for it
    assert await raw.hlen(memory.keys.posting(user, "otter")) == batch
    # A search that finds nothing waiting reads only the query's posting lists.
    with monitor(memory.prefix) as commands:
        found = await memory.search(user, "last", mode="keyword")
    assert len(found) == 1 and found[0].message.content == "the last otter"
    assert not [c for c in commands if "pend" in c and not c.startswith("EXISTS")]


async def test_a_full_backlog_is_indexed_by_the_store_that_finds_it(
    memory: RedisMemory, raw, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = redis_backend.INDEX_BATCH
    monkeypatch.setattr(redis_backend, "INDEX_BACKLOG", 2 * batch)
    memory._quiet.quiet = 3600.0  # stores without a pause: the backlog is the store's
    user = "busy"
    pend = memory.keys.user(user, "pend")
    for i in range(2 * batch - 1):
        await memory.store_message(make_message(f"stoat {i}", timestamp=at(i)), user, "c")
    assert await raw.scard(pend) == 2 * batch - 1
    await memory.store_message(make_message("one stoat more", timestamp=at(2 * batch)), user, "c")
    assert await raw.scard(pend) == batch  # one batch written by that store, the rest wait
    assert await raw.hlen(memory.keys.posting(user, "stoat")) == batch
    found = await memory.search(user, "stoat", mode="keyword", limit=3)
    assert len(found) == 3 and not await raw.exists(pend)  # a search writes what waits
    assert await raw.hlen(memory.keys.posting(user, "stoat")) == 2 * batch


async def test_shutdown_stops_the_indexer_and_what_waits_stays_findable(prefix: str, raw) -> None:
    batch = redis_backend.INDEX_BATCH
    user, pend = "pauser", None
    mem = RedisMemory(REDIS_URL, prefix=prefix)
    await mem.initialize()
    try:
        mem._quiet.quiet = 3600.0
        pend = mem.keys.user(user, "pend")
        msgs = [make_message(f"marten {i}", timestamp=at(i)) for i in range(batch)]
        for msg in msgs:
            await mem.store_message(msg, user, "c")
        task = mem._quiet._task
        assert task is not None and not task.done()
    finally:
        await mem.shutdown()
    assert task.done()
    assert await raw.scard(pend) == batch  # left waiting, durable
    again = RedisMemory(REDIS_URL, prefix=prefix)
    try:
        found = await again.search(user, "marten", mode="keyword", limit=batch)
        assert {h.message.id for h in found} == {m.id for m in msgs}
        assert not await raw.exists(pend)
    finally:
        await again.shutdown()


async def test_a_search_reads_the_archive_markers_of_its_hits_in_one_call(
    memory: RedisMemory,
) -> None:
    user = "marker reader"
    for i in range(6):
        await memory.store_message(make_message(f"heron {i}", timestamp=at(i)), user, f"c{i}")
    await memory.archive_conversation(user, "c2")
    names: list[str] = []
    run = memory._eval

    async def counting(name: str, args: Any, home: str | None = None) -> Any:
        names.append(name)
        return await run(name, args, home)

    memory._eval = counting  # type: ignore[method-assign]
    found = await memory.search(user, "heron", mode="keyword", limit=10)
    assert sorted(h.content for h in found) == [f"heron {i}" for i in (0, 1, 3, 4, 5)]
    assert names.count("get_markers") == 1 and "get_session" not in names


def _member(memory: RedisMemory, user: str, conv: str) -> str:
    """The only order-zset member of a conversation (read synchronously)."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        (member,) = client.zrange(memory.keys.conversation(user, conv, "o"), 0, -1)
        return member
    finally:
        client.close()


async def test_forgetting_a_user_spares_an_id_another_user_stored_since(
    memory: RedisMemory,
) -> None:
    # forget_user reads the user's memory ids, then deletes them: an id deleted and stored
    # again by another user in between is that user's (erasure runs the stale list here).
    leaving, staying = "leaving user", "staying user"
    mine = make_memory_entry(leaving, "a fact of the user leaving")
    await memory.store_memory(mine)
    theirs = make_memory_entry(staying, "reused id", expires_at=at(99999), id=mine.id)
    await memory.delete_memory(str(mine.id))
    await memory.store_memory(theirs)
    kept = make_memory_entry(leaving, "still the leaving user's")
    await memory.store_memory(kept)
    await memory._forget_memories(leaving, [str(mine.id), str(kept.id)])
    assert await memory._get_memory(str(kept.id)) is None
    stored = await memory._get_memory(str(mine.id))
    assert stored is not None and (stored.user_id, stored.content) == (staying, "reused id")
    assert await memory._purge_expired(to_us(at(100000))) == 1  # its expiry is listed still
    assert await memory._get_memory(str(mine.id)) is None


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
    await memory.search(user, "home", mode="keyword")  # indexes the waiting message
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
    # Without redis-py the package cannot be imported; the registry names the extra.
    package = "bruno_memstore.backends.redis"
    for name in [m for m in sys.modules if m == "redis" or m.startswith(("redis.", package))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError) as info:
        open_memory(REDIS_URL)
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


# ==================================================================== vectors


@pytest.fixture(scope="module")
def search_url() -> str:
    """The project's Redis with RediSearch (started if it is down)."""
    return engines.redis_search_url()


@pytest_asyncio.fixture
async def search_memory(prefix: str, search_url: str) -> AsyncIterator[RedisMemory]:
    """A memory on the RediSearch server, its keys and index removed afterwards."""
    mem = RedisMemory(search_url, prefix=prefix, connect_timeout=3, vector_search="redisearch")
    await mem.initialize()
    yield mem
    await mem.shutdown()
    engines.drop_redis_keys(search_url, prefix)
    with redis.Redis.from_url(search_url) as client:
        for name in client.execute_command("FT._LIST"):
            if name.decode().startswith(prefix):
                client.execute_command("FT.DROPINDEX", name)


async def test_vector_mode_is_detected_and_exposed(
    prefix: str, search_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    plain = RedisMemory(REDIS_URL, prefix=prefix)
    assert plain.vector_mode is None
    with caplog.at_level("INFO", logger="bruno_memstore.redis"):
        await plain.initialize()
    assert plain.vector_mode == "client"
    assert plain.describe().endswith("vectors=client")
    assert "exact, in the client (the server has no RediSearch)" in caplog.text
    assert await plain.vector_index_info() == {"mode": "client"}
    await plain.shutdown()
    with pytest.raises(BackendError, match="RediSearch"):
        await RedisMemory(REDIS_URL, prefix=prefix, vector_search="redisearch").initialize()
    searching = RedisMemory(search_url, prefix=prefix)
    forced = RedisMemory(search_url, prefix=prefix, vector_search="client")
    try:
        caplog.clear()
        with caplog.at_level("INFO", logger="bruno_memstore.redis"):
            await searching.initialize()
        assert searching.vector_mode == "redisearch"
        assert "by RediSearch" in caplog.text
        info = await searching.vector_index_info()
        assert info["mode"] == "redisearch" and info["dimension"] == 384
        assert info["name"] == f"{prefix}:vectors"
        await forced.initialize()
        assert forced.vector_mode == "client"
    finally:
        await searching.shutdown()
        await forced.shutdown()
        engines.drop_redis_keys(search_url, prefix)
        with redis.Redis.from_url(search_url) as client:
            client.execute_command("FT.DROPINDEX", f"{prefix}:vectors")
    with pytest.raises(InvalidArgumentError) as bad:
        RedisMemory(REDIS_URL, vector_search="faiss")
    assert bad.value.argument == "vector_search"
    assert RedisMemory(f"{REDIS_URL}?vector_search=client")._settings["vector_search"] == "client"
    assert RedisMemory(f"{REDIS_URL}?hnsw_ef_runtime=400")._settings["hnsw_ef_runtime"] == 400
    with pytest.raises(InvalidArgumentError) as bad:
        RedisMemory(REDIS_URL, hnsw_ef_runtime=0)
    assert bad.value.argument == "hnsw_ef_runtime"


async def test_vector_documents_follow_their_records(memory: RedisMemory, raw) -> None:
    binary = aioredis.Redis.from_url(REDIS_URL)
    user, conv = "vec {user} %", "vec-conv"
    log_key = memory.keys.user(user, "vml")

    async def generation() -> tuple[str | None, str | None]:
        """(message epoch, memory-entry generation)"""
        return (
            await raw.get(memory.keys.user(user, "vme")),
            await raw.get(memory.keys.user(user, "vge")),
        )

    async def fields(key: str) -> dict[str, str]:
        """The document's fields but its vector."""
        got = await binary.hgetall(key)
        return {k.decode(): v.decode() for k, v in got.items() if k != b"vec"}

    try:
        system = make_message("you talk about kittens", role=MessageRole.SYSTEM, timestamp=at(0))
        chat = make_message("my kitten is grey", timestamp=at(1))
        await memory.store_messages([system, chat], conversation_id=conv, user_id=user)
        g1 = await generation()
        assert g1[0] is not None and g1[1] is None
        # Appended message vectors are logged: readers load just those.
        assert await raw.lrange(log_key, 0, -1) == [str(system.id), str(chat.id)]
        doc = await binary.hgetall(memory.keys.vector(user, "m", str(chat.id)))
        assert doc[b"u"].decode() == vector_tag(f"{memory.prefix}\0{user}")
        assert doc[b"k"] == b"m" and doc[b"c"].decode() == vector_tag(conv)
        assert memory.embedder is not None
        want = await memory.embedder.embed_one(chat.content)
        assert np.array_equal(vector_from_bytes(doc[b"vec"]), want)
        assert await raw.smembers(memory.keys.user(user, "vm")) == {str(system.id), str(chat.id)}

        entry = make_memory_entry(
            user,
            "likes grey kittens",
            category="pets",
            tags=["a,b", "c"],
            confidence=0.75,
            importance=0.25,
            expires_at=at(10),
            conversation_id=conv,
        )
        await memory.store_memory(entry)
        g2 = await generation()
        assert g2[0] == g1[0] and g2[1] is not None
        mdoc = await fields(memory.keys.vector(user, "e", str(entry.id)))
        assert mdoc["k"] == "e" and mdoc["t"] == vector_tag("fact")
        assert mdoc["g"] == vector_tag("pets") and mdoc["c"] == vector_tag(conv)
        assert mdoc["tg"] == f"{vector_tag('a,b')},{vector_tag('c')}"
        assert float(mdoc["f"]) == 0.75 and float(mdoc["i"]) == 0.25
        assert float(mdoc["x"]) == to_us(at(10))

        # Replacing the entry rewrites its document (no stale filter field stays).
        entry.metadata.category = None
        entry.metadata.tags = []
        entry.expires_at = None
        await memory.store_memory(entry)
        mdoc = await fields(memory.keys.vector(user, "e", str(entry.id)))
        assert "g" not in mdoc and "tg" not in mdoc and float(mdoc["x"]) == 1e18
        g3 = await generation()
        assert g3[0] == g2[0] and g3[1] != g2[1]

        await memory.clear_history(conv)  # the system message stays
        assert await raw.smembers(memory.keys.user(user, "vm")) == {str(system.id)}
        assert not await raw.exists(memory.keys.vector(user, "m", str(chat.id)))
        g4 = await generation()
        assert g4[0] != g3[0] and g4[1] == g3[1]  # a removal: a new message epoch, no log
        assert not await raw.exists(log_key)
        await memory.delete_memory(str(entry.id))
        assert not await raw.exists(memory.keys.vector(user, "e", str(entry.id)))
        assert await raw.scard(memory.keys.user(user, "ve")) == 0
        assert (await generation())[1] != g4[1]
        # Reading and searching change nothing.
        g5 = await generation()
        await memory.search(user, "kitten", mode="vector")
        await memory.retrieve_context(user, conversation_id=conv)
        assert await generation() == g5
        await memory.clear_conversation(user, conv)
        assert not [k for k in await _keys(memory.prefix) if k.startswith(f"{memory.prefix}:v:")]
    finally:
        await binary.aclose()


async def test_a_write_without_a_model_stores_no_vector(prefix: str, raw) -> None:
    memory = RedisMemory(REDIS_URL, prefix=prefix, embedding_model=None)
    try:
        await memory.store_message(make_message("no vector here"), "plain", "conv")
        await memory.store_memory(make_memory_entry("plain", "nor here"))
        assert not [k for k in await _keys(prefix) if k.startswith(f"{prefix}:v:")]
        assert not await raw.exists(memory.keys.user("plain", "vgen"))
    finally:
        await memory.shutdown()


async def test_search_in_the_client_reloads_after_any_process_changes_vectors(
    memory: RedisMemory, prefix: str
) -> None:
    other = RedisMemory(REDIS_URL, prefix=prefix)
    try:
        user = "two-processes"
        await memory.store_message(make_message("the grey kitten sleeps"), user, "c1")
        first = await memory.search(user, "kitten", mode="vector")
        assert len(first) == 1
        loads = memory._vector_cache.loads
        await memory.search(user, "kitten", mode="vector")
        await memory.search(user, "sleeping cat", mode="vector", kinds=("message",))
        assert memory._vector_cache.loads == loads  # unchanged: served from the cache
        await other.store_message(make_message("another kitten arrived"), user, "c2")
        assert len(await memory.search(user, "kitten", mode="vector")) == 2
        # An append is read from the log: no reload.
        assert memory._vector_cache.loads == loads
        scoped = await memory.search(user, "kitten", mode="vector", conversation_id="c2")
        assert [r.content for r in scoped] == ["another kitten arrived"]
        await other.clear_conversation(user, "c1")
        found = await memory.search(user, "kitten", mode="vector")
        assert [r.content for r in found] == ["another kitten arrived"]
        assert memory._vector_cache.loads > loads  # a removal: reloaded
        # Forgotten, then written again: nothing of the old vectors survives anywhere.
        await other.forget_user(user)
        await other.store_messages(
            [make_message("a new kitten"), make_message("a second new kitten")],
            conversation_id="c3",
            user_id=user,
        )
        found = await memory.search(user, "kitten", mode="vector")
        assert sorted(r.content for r in found) == ["a new kitten", "a second new kitten"]
    finally:
        await other.shutdown()


async def test_expired_conversations_leave_the_vector_index(prefix: str, search_url: str) -> None:
    for url, mode in ((REDIS_URL, "client"), (search_url, "redisearch")):
        memory = RedisMemory(url, prefix=prefix, conversation_ttl=0.3, vector_search=mode)
        try:
            await memory.store_message(make_message("a short-lived kitten"), "ttl", "brief")
            assert len(await memory.search("ttl", "kitten", mode="vector")) == 1
            await asyncio.sleep(0.5)
            assert await memory.search("ttl", "kitten", mode="vector") == [], mode
            with redis.Redis.from_url(url) as client:
                assert not list(client.scan_iter(match=f"{prefix}:v:*")), mode
        finally:
            await memory.shutdown()
            engines.drop_redis_keys(url, prefix)
    with redis.Redis.from_url(search_url) as client:
        client.execute_command("FT.DROPINDEX", f"{prefix}:vectors")


VECTOR_TOPICS = [
    "my sister adopted a small grey kitten from the animal shelter",
    "the quarterly tax return is due at the end of the month",
    "we hiked up the mountain trail and camped near the summit",
    "I am learning to bake sourdough bread with a new starter",
    "the football match went to penalties after extra time",
    "our flight to Lisbon was delayed by three hours",
]


def test_knn_query_holds_every_filter_as_a_digest() -> None:
    memory = RedisMemory(REDIS_URL, prefix="p")
    flt = MemoryFilter(
        "u} | @u:{*",
        memory_types=("fact",),
        categories=("x}|y",),
        tags=("a b", "c"),
        min_confidence=0.5,
        min_importance=0.25,
        now_us=1_700_000_000_000_000,
    )
    query = memory._knn_query("u} | @u:{*", frozenset({"message", "memory"}), "conv {1}", flt)
    h = vector_tag
    assert query == (
        f"(@u:{{{h('p' + chr(0) + 'u} | @u:{*')}}} @c:{{{h('conv {1}')}}} (@k:{{m}} | "
        f"(@k:{{e}} @t:{{{h('fact')}}} @g:{{{h('x}|y')}}} @tg:{{{h('a b')}|{h('c')}}} "
        "@f:[0.5 +inf] @i:[0.25 +inf] @x:[(1700000000000000 +inf])))"
        "=>[KNN $k @vec $blob EF_RUNTIME $ef AS dist]"
    )
    only = memory._knn_query("u", frozenset({"message"}), None, MemoryFilter("u"))
    assert (
        only
        == f"(@u:{{{h('p' + chr(0) + 'u')}}} @k:{{m}})=>[KNN $k @vec $blob EF_RUNTIME $ef AS dist]"
    )


async def test_awkward_user_ids_see_only_their_own_vectors(search_memory: RedisMemory) -> None:
    users = [*AWKWARD_USERS, "x} | @u:{*", "*", "-", "a b", "@k:{m}"]
    for user in users:
        await search_memory.store_message(make_message(f"kitten of {user}"), user, f"c-{user}")
        await search_memory.store_memory(make_memory_entry(user, f"a kitten fact of {user}"))
    for user in users:
        found = await search_memory.search(user, "kitten", mode="vector", limit=50)
        assert sorted(r.content for r in found) == [f"a kitten fact of {user}", f"kitten of {user}"]


async def test_a_store_written_without_redisearch_is_indexed_on_connect(
    prefix: str, search_url: str
) -> None:
    before = RedisMemory(search_url, prefix=prefix, vector_search="client")
    searching = RedisMemory(search_url, prefix=prefix, vector_search="redisearch")
    try:
        user = "older"
        texts = [f"{topic} ({i})" for i, topic in enumerate(VECTOR_TOPICS * 5)]
        await before.store_messages(
            [make_message(t, timestamp=at(i)) for i, t in enumerate(texts)],
            conversation_id="old",
            user_id=user,
        )
        await before.shutdown()
        await searching.initialize()  # creates the index over the stored documents
        for _ in range(100):
            info = await searching.vector_index_info()
            if not info["indexing"] and info["documents"] == len(texts):
                break
            await asyncio.sleep(0.05)
        assert info["documents"] == len(texts) and info["failures"] == 0
        found = await searching.search(user, "a kitten from the shelter", mode="vector", limit=5)
        assert [r.content.split(" (")[0] for r in found] == [VECTOR_TOPICS[0]] * 5
    finally:
        await searching.shutdown()
        engines.drop_redis_keys(search_url, prefix)
        with redis.Redis.from_url(search_url) as client:
            client.execute_command("FT.DROPINDEX", f"{prefix}:vectors")


async def test_a_dropped_index_is_recreated_by_the_next_query(search_memory: RedisMemory) -> None:
    await search_memory.store_message(make_message("the grey kitten"), "u", "c")
    with redis.Redis.from_url(search_memory._driver_url) as client:
        client.execute_command("FT.DROPINDEX", search_memory.vector_index_name)
    for _ in range(100):
        found = await search_memory.search("u", "kitten", mode="vector")
        if found:  # the new index scans the stored documents in the background
            break
        await asyncio.sleep(0.05)
    assert [r.content for r in found] == ["the grey kitten"]


# ==================================================================== prefixes


async def _everything(memory: RedisMemory) -> dict[str, list[Any]]:
    """Every record the store lists, by kind (what another store must never see)."""
    out: dict[str, list[Any]] = {}
    for kind in ("conversations", "messages", "memories", "sessions"):
        out[kind] = [r async for batch in memory.export_batches(kind) for r in batch]
    return out


async def _fill(memory: RedisMemory, user: str, conversations: list[str], **ids: Any) -> None:
    """A message and a session in each conversation (the session id is the conversation's),
    and one memory entry; ``message_id``/``entry_id`` fix the ids of the first two."""
    for n, conv in enumerate(conversations):
        msg_id = ids.get("message_id") if n == 0 else None
        await memory.store_message(make_message(f"said in {conv}", id=msg_id), user, conv)
        await memory.save_session(
            SessionContext(session_id=conv, user_id=user, conversation_id=conv)
        )
    await memory.store_memory(make_memory_entry(user, f"fact of {user}", id=ids.get("entry_id")))


# Suffixes that, appended to a prefix, rebuilt the other store's key names in the layout
# before version 2: ``co``/``mo``/``eo``/``so`` pointers, ``u`` user tags, ``v`` vectors.
PREFIX_SUFFIXES = [":co", ":u", ":v", ":mo", ":eo", ":so", ":co:co", "%3Aco", ":"]


@pytest.mark.parametrize("suffix", PREFIX_SUFFIXES)
async def test_a_prefix_extending_another_shares_no_key_with_it(prefix: str, suffix: str) -> None:
    """Stores under ``P`` and ``P:co`` (and the like) on one server are fully separate."""
    short = RedisMemory(REDIS_URL, prefix=prefix)
    long = RedisMemory(REDIS_URL, prefix=prefix + suffix)
    message_id, entry_id = uuid.uuid4(), uuid.uuid4()
    try:
        await _fill(long, "alice", ["c1"], message_id=message_id, entry_id=entry_id)
        # Conversation ids and a user id that spell the long store's key names.
        spelled = [
            f"{k}:{x}" for k in ("co", "mo", "eo", "so") for x in ("c1", message_id, entry_id)
        ]
        spelled += ["c1", "users", "meta", "cexp", "eexp", "vgen", "v:{x}"]
        await _fill(short, "u:alice", spelled)
        await _fill(short, "co", ["x"])
        await _fill(long, "bob", ["co:c1", "u:alice"])
        short_all, long_all = await _everything(short), await _everything(long)
        assert {r.user_id for r in short_all["memories"]} == {"u:alice", "co"}
        assert {r.user_id for r in long_all["memories"]} == {"alice", "bob"}
        assert len(short_all["messages"]) == len(spelled) + 1
        assert len(long_all["messages"]) == 3
        assert len(short_all["sessions"]) == len(short_all["conversations"]) == len(spelled) + 1
        assert len(long_all["sessions"]) == len(long_all["conversations"]) == 3
        assert [m.content for m in await long.retrieve_messages("c1")] == ["said in c1"]
        assert [m.content for m in await short.retrieve_messages("c1")] == ["said in c1"]
        # Erasing a user of one store leaves the other store's records alone.
        await short.forget_user("u:alice")
        assert await _everything(long) == long_all
    finally:
        for mem in (short, long):
            await mem.shutdown()
            await _drop_prefix(mem.keys.prefix)


def _layout_1(memory: RedisMemory) -> RedisMemory:
    """``memory`` naming its keys as key layout 1 did: with its prefix as configured."""
    memory.keys.prefix = memory.prefix
    return memory


@pytest.mark.parametrize("server", ["plain", "redisearch"])
async def test_keys_of_key_layout_1_are_refused_until_migrated(prefix: str, server: str) -> None:
    url = REDIS_URL if server == "plain" else engines.redis_search_url()
    name = prefix + ":app*[1]%"
    kw: dict[str, Any] = {"vector_search": "redisearch"} if server == "redisearch" else {}
    old = _layout_1(RedisMemory(url, prefix=name, **kw))
    new = RedisMemory(url, prefix=name, **kw)
    neighbour = RedisMemory(url, prefix=prefix + ":app")  # spells layout 1's names for ids
    try:
        await _fill(old, "ali:ce", ["c1", "c:2"])
        await _fill(old, "bob", ["c3"])
        await _fill(neighbour, "carol", ["x"])
        if server == "redisearch":
            assert (await old.search("ali:ce", "said", mode="vector"))[0].content
        before = await _everything(old)
        await old.shutdown()
        with pytest.raises(SchemaError, match="bruno-memstore migrate"):
            await new.initialize()
        moved = await new.migrate_key_layout()
        assert moved > 10
        assert await new.migrate_key_layout() == 0  # nothing is left under the old names
        await new.initialize()
        if server == "redisearch":  # the new index has scanned every migrated vector
            info = await new.vector_index_info()
            assert info["indexing"] == 0 and info["documents"] >= 3
        assert await _everything(new) == before
        assert await _everything(neighbour) != before
        hits = await new.search("ali:ce", "said", mode="vector", limit=5)
        assert {h.content for h in hits} == {"said in c1", "said in c:2", "fact of ali:ce"}
        assert [m.content for m in await new.retrieve_messages("c:2")] == ["said in c:2"]
        # Layout 1's keys are gone; the other store kept every one of its own.
        left = {k for k in await _keys(name) if _layout_1_owned(k, name)}
        assert left == set()
        assert (await _everything(neighbour))["messages"][0].content == "said in x"
    finally:
        for mem in (old, new, neighbour):
            await mem.shutdown()
        engines.drop_redis_keys(url, prefix)  # every name above starts with it
        if server == "redisearch":
            with redis.Redis.from_url(url) as client:
                for index in client.execute_command("FT._LIST"):
                    if index.decode().startswith(prefix):
                        client.execute_command("FT.DROPINDEX", index)


def _layout_1_owned(key: str, prefix: str) -> bool:
    return redis_backend._layout_2_name(key, prefix, "new") is not None or key == prefix + ":meta"


async def _keyspace_blob(prefix: str, url: str = REDIS_URL) -> bytes:
    """Every key name under the prefix and every part of its value, as one blob of bytes:
    hash fields and values, set, zset and list members, strings (not ``DUMP``, which may
    compress them)."""
    names = await _keys(prefix, url)
    client = aioredis.Redis.from_url(url)
    parts: list[bytes] = []
    try:
        for key in names:
            parts.append(key.encode())
            kind = (await client.type(key)).decode()
            if kind == "string":
                parts.append(await client.get(key) or b"")
            elif kind == "hash":
                for field, value in (await client.hgetall(key)).items():
                    parts += [field, value]
            elif kind == "set":
                parts += list(await client.smembers(key))
            elif kind == "zset":
                parts += await client.zrange(key, 0, -1)
            elif kind == "list":
                parts += await client.lrange(key, 0, -1)
            else:
                raise AssertionError(f"{key}: a {kind} the test cannot read")
    finally:
        await client.aclose()
    return b"\0".join(parts)


def _words_in(blob: bytes, words: set[str]) -> set[str]:
    return {w for w in words if w.encode() in blob}


async def test_erasure_leaves_no_words_in_the_keyspace(memory: RedisMemory) -> None:
    """Bodies, posting lists (keys named by their terms), document term lists, memory
    records, sessions and vector documents of erased records all go."""
    done = await run_erasures(memory)
    blob = await _keyspace_blob(memory.prefix)
    assert not _words_in(blob, done.erased_words)
    assert _words_in(blob, done.kept) == done.kept  # the look reaches the data


async def test_erasure_leaves_no_words_with_redisearch(search_memory: RedisMemory) -> None:
    done = await run_erasures(search_memory)
    blob = await _keyspace_blob(search_memory.prefix, engines.redis_search_url())
    assert not _words_in(blob, done.erased_words)
    assert _words_in(blob, done.kept) == done.kept


def _aof_files_settled(directory: Path) -> bool:
    """Whether the append-only directory holds only the files its manifest names (the
    server unlinks replaced files on a background thread after a rewrite)."""
    aof = directory / "appendonlydir"
    manifests = list(aof.glob("*.manifest"))
    if len(manifests) != 1:
        return False
    named = {line.split()[1] for line in manifests[0].read_text().splitlines() if line}
    return {p.name for p in aof.iterdir()} == named | {manifests[0].name}


async def test_compact_rewrites_the_append_only_file(tmp_path: Path) -> None:
    """The AOF keeps the commands that wrote erased records until ``compact`` rewrites it."""
    server = RedisServer(tmp_path / "aof", extra_args=("--rdbcompression", "no"))
    server.start()
    memory = RedisMemory(server.url, prefix="erasure", embedding_model=None)
    try:
        done = await run_erasures(memory)
        await memory.compact()
        deadline = time.monotonic() + 30
        while not _aof_files_settled(server.directory):
            assert time.monotonic() < deadline, sorted(os.listdir(server.directory))
            await asyncio.sleep(0.05)
        found = find_in_files([server.directory / "appendonlydir"], done.erased_words | done.kept)
        assert not set(found) & done.erased_words, found
        assert done.kept <= set(found)
        # Without an append-only file there is nothing to rewrite.
        await memory._client.config_set("appendonly", "no")
        await memory.compact()
    finally:
        await memory.shutdown()
        server.stop()
