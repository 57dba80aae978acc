"""MemcachedMemory against a real memcached: keys, parts, atomic appends, ownership,
expiry, refusals, and the client's behaviour on a misbehaving connection.

The server is ``BRUNO_TEST_MEMCACHED_URL``, or the one ``scripts/services/memcached.sh``
starts (run here if needed); an unreachable server fails these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from bruno_core.models.memory import MemoryQuery

from bruno_memstore import open_memory
from bruno_memstore.backends.kit.kv import ChunkedLog
from bruno_memstore.backends.kit.kv_memory import message_value
from bruno_memstore.backends.memcached.backend import MemcachedMemory
from bruno_memstore.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    CapabilityError,
    InvalidArgumentError,
    MissingDependencyError,
)
from bruno_memstore.models import SearchRequest, message_to_record, to_us
from bruno_memstore.testing.builders import (
    at,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services" / "memcached.sh"
BACKEND_PACKAGE = "bruno_memstore.backends.memcached"


@pytest.fixture(scope="module")
def url() -> str:
    """The configured server, or the project's own one (started if it is down)."""
    configured = os.environ.get("BRUNO_TEST_MEMCACHED_URL")
    if configured:
        return configured
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"could not start memcached with {SCRIPT}: {done.stderr}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


@pytest_asyncio.fixture
async def memory(url: str) -> AsyncIterator[MemcachedMemory]:
    mem = MemcachedMemory(url, prefix=f"t{uuid.uuid4().hex[:10]}", connect_timeout=5)
    try:
        await mem.initialize()
    except BackendUnavailableError as exc:
        pytest.fail(f"memcached is required and unreachable: {exc}", pytrace=False)
    yield mem
    await mem.shutdown()


# ==================================================================== URL and keys


async def test_url_options_are_typed_and_checked(url: str) -> None:
    mem = open_memory(f"{url}?prefix=app.v2&ttl=30&pool_size=3&max_message_bytes=1000")
    assert isinstance(mem, MemcachedMemory)
    assert (mem.prefix, mem.ttl, mem._pool_size, mem._max_bytes) == ("app.v2", 30, 3, 1000)
    assert MemcachedMemory(f"{url}?ttl=30", ttl=5).ttl == 5
    assert "app.v2" in repr(mem)
    with pytest.raises(InvalidArgumentError, match="prefx"):
        MemcachedMemory(f"{url}?prefx=a")
    with pytest.raises(InvalidArgumentError):
        MemcachedMemory(url, prefix="has space")
    with pytest.raises(InvalidArgumentError):
        MemcachedMemory(url, ttl=0)
    with pytest.raises(InvalidArgumentError):
        MemcachedMemory(f"{url}/some/path")


async def test_any_id_becomes_a_valid_key(memory: MemcachedMemory) -> None:
    odd = ["user with spaces", "line\nbreak\r\n", "ünïcødé 😀", "x" * 255, "tab\there"]
    for i, uid in enumerate(odd):
        conv = odd[(i + 1) % len(odd)][:200] + f" conversation {i}"
        msg = make_message(f"message {i}")
        await memory.store_message(msg, uid, conv)
        assert [m.id for m in await memory.retrieve_context(uid, conversation_id=conv)] == [msg.id]
        assert (await memory.get_statistics(uid))["total_messages"] == 1
        ctx = await memory.get_context(uid, conv)
        assert [m.id for m in ctx.messages] == [msg.id]
        key = memory.keys.record("c", conv)
        assert len(key) <= 250 and key.isascii() and key.isprintable() and " " not in key


async def test_prefixes_keep_memories_apart(url: str) -> None:
    a = MemcachedMemory(url, prefix=f"a{uuid.uuid4().hex[:8]}")
    b = MemcachedMemory(url, prefix=f"b{uuid.uuid4().hex[:8]}")
    conv = new_conversation_id()
    try:
        await a.store_message(make_message("in a"), "alice", conv)
        await b.store_message(make_message("in b"), "bob", conv)  # no OwnershipError: apart
        assert [m.content for m in await a.retrieve_messages(conv)] == ["in a"]
        assert [m.content for m in await b.retrieve_messages(conv)] == ["in b"]
    finally:
        await a.shutdown()
        await b.shutdown()


@pytest.mark.parametrize("suffix", [".co", "-co", "_co", ".c", "co"])
async def test_a_prefix_extending_another_shares_no_key(url: str, suffix: str) -> None:
    """Key names are ``prefix:kind:hash`` and a prefix holds no ':', so stores under ``pt``
    and ``pt.co`` (or any two prefixes) never name the same key."""
    base = f"p{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidArgumentError, match="prefix"):
        MemcachedMemory(url, prefix=base + ":co")
    short, long = MemcachedMemory(url, prefix=base), MemcachedMemory(url, prefix=base + suffix)
    try:
        await long.store_message(make_message("long"), "alice", "c1")
        await short.store_message(make_message("short"), "bob", "c1")  # not alice's here
        await short.store_memory(make_memory_entry("alice", "short's entry"))
        assert [m.content for m in await long.retrieve_messages("c1")] == ["long"]
        assert [m.content for m in await short.retrieve_messages("c1")] == ["short"]
        assert (await long.get_statistics("alice"))["memories"] == 0
    finally:
        await short.shutdown()
        await long.shutdown()


# ==================================================================== values and parts


async def test_large_messages_are_split_into_parts(memory: MemcachedMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    content = ("3 MB of text 😀 " * 200_000).strip()
    big = make_message(content, timestamp=at(0), metadata={"blob": "m" * 300_000})
    await memory.store_message(big, uid, conv)
    head = await memory.store.get(memory.keys.record("m", str(big.id)))
    assert head is not None and head[:1] == b"P"  # a manifest naming its parts
    (got,) = await memory.retrieve_messages(conv)
    assert got.content == content and got.metadata == {"blob": "m" * 300_000}


async def test_oversized_messages_are_refused_before_writing(url: str) -> None:
    mem = MemcachedMemory(url, prefix=f"t{uuid.uuid4().hex[:8]}", max_message_bytes=10_000)
    uid, conv = new_user_id(), new_conversation_id()
    try:
        with pytest.raises(InvalidArgumentError, match="max_message_bytes"):
            await mem.store_message(make_message("z" * 20_000), uid, conv)
        assert await mem._run("probe", lambda: mem._conversation_owner(conv)) is None
    finally:
        await mem.shutdown()


async def test_a_lost_part_reads_as_missing_never_as_garbage(memory: MemcachedMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    big = [make_message(f"{i} " + "p" * 1_500_000, timestamp=at(i)) for i in range(2)]
    small = make_message("small", timestamp=at(5))
    for m in [*big, small]:
        await memory.store_message(m, uid, conv)
    store = memory.store
    manifests = {}
    for m in big:
        head = await store.get(memory.keys.record("m", str(m.id)))
        assert head is not None
        manifests[m.id] = json.loads(head[1:])
    # One part evicted; another overwritten with bytes of the same length.
    first, second = (memory.keys.record("m", str(m.id)) for m in big)
    await store.delete(f"{first}:{manifests[big[0].id]['nonce']}:1")
    part = f"{second}:{manifests[big[1].id]['nonce']}:0"
    old = await store.get(part)
    assert old is not None
    await store.set(part, b"#" * len(old))
    got = await memory.retrieve_context(uid, conversation_id=conv, limit=10)
    assert [m.id for m in got] == [small.id]


# ==================================================================== concurrency and ownership


async def test_two_clients_with_many_writers_lose_nothing(url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a, b = MemcachedMemory(url, prefix=prefix), MemcachedMemory(url, prefix=prefix)
    uid, conv = new_user_id(), new_conversation_id()
    msgs = [make_message(f"writer {i}", timestamp=at(i % 3)) for i in range(300)]
    try:
        await asyncio.gather(
            *(
                (a if i % 2 else b).store_message(m, uid, conv)
                for i, m in enumerate(msgs)
                for _ in range(2)  # every message sent twice, by both clients
            )
        )
        from_a = await a.retrieve_context(uid, conversation_id=conv, limit=1000)
        from_b = await b.retrieve_context(uid, conversation_id=conv, limit=1000)
        assert sorted(str(m.id) for m in from_a) == sorted(str(m.id) for m in msgs)
        assert [m.id for m in from_a] == [m.id for m in from_b]
        stamps = [m.timestamp for m in from_a]
        assert stamps == sorted(stamps)
    finally:
        await a.shutdown()
        await b.shutdown()


async def test_an_index_entry_without_its_message_is_skipped(memory: MemcachedMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    stored = make_message("stored", timestamp=at(0))
    await memory.store_message(stored, uid, conv)
    # A writer that died after its index entry and before its commit point.
    ghost = make_message("never committed", timestamp=at(1))
    meta = await memory._conversation(conv)
    assert meta is not None
    await memory._index(meta).append([f"{to_us(at(1))} user {ghost.id}"])
    assert [m.id for m in await memory.retrieve_messages(conv)] == [stored.id]
    assert (await memory.get_statistics(uid))["total_messages"] == 1
    await memory.store_message(ghost, uid, conv)  # its retry lands, once
    assert [m.id for m in await memory.retrieve_messages(conv)] == [ghost.id, stored.id]


async def test_writes_racing_a_clear_cannot_resurrect(memory: MemcachedMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    old = make_message("before the clear", timestamp=at(0))
    await memory.store_message(old, uid, conv)
    before = await memory._conversation(conv)
    assert before is not None
    await memory.clear_conversation(uid, conv)
    # A straggler that still had the old generation writes after the clear.
    straggler = make_message("late write of the old generation", timestamp=at(1))
    (slot,) = await memory._index(before).append([f"0 user {straggler.id}"])
    value = message_value(message_to_record(straggler, conv), uid, before.gen, slot)
    await memory.store.put_value(memory.keys.record("m", str(straggler.id)), value, create=True)
    fresh = make_message("after the clear", timestamp=at(2))
    await memory.store_message(fresh, uid, conv)
    assert [m.id for m in await memory.retrieve_messages(conv)] == [fresh.id]
    await memory.store_message(straggler, uid, conv)  # stale copy replaced, stored once
    assert [m.id for m in await memory.retrieve_messages(conv)] == [fresh.id, straggler.id]


async def test_chunked_log_spans_chunks(memory: MemcachedMemory) -> None:
    log = ChunkedLog(memory.store, f"{memory.prefix}:test-log", per_chunk=10)
    slots = await asyncio.gather(*(log.append([f"entry {i}"]) for i in range(35)))
    assert sorted(s for (s,) in slots) == list(range(1, 36))
    assert await log.chunk_count() == 4
    entries = await log.read()
    assert sorted(e for _, e in entries) == sorted(f"entry {i}" for i in range(35))
    await log.remove(lambda _slot, entry: entry.endswith("7"))
    assert len(await log.read()) == 35 - 3  # entries 7, 17 and 27
    await log.destroy()
    assert await log.read() == []


# ==================================================================== expiry and refusals


async def test_ttl_expires_everything(url: str) -> None:
    # memcached counts expiry in whole seconds from its own clock tick: an item given 3 s
    # lives 2 to 3 s, which leaves the reads below (well under 2 s on a loaded machine) time.
    mem = MemcachedMemory(url, prefix=f"t{uuid.uuid4().hex[:8]}", ttl=3)
    uid, conv = new_user_id(), new_conversation_id()
    try:
        await mem.store_message(make_message("fleeting"), uid, conv)
        session = await mem.create_session(uid)
        await mem.store_memory(make_memory_entry(uid, "fleeting fact"))
        assert len(await mem.retrieve_messages(conv)) == 1
        await asyncio.sleep(4.5)
        assert await mem.retrieve_messages(conv) == []
        assert await mem.get_session(session.session_id) is None
        assert await mem.retrieve_memories(MemoryQuery(user_id=uid)) == []
        # The claim expired too: the conversation is free again.
        await mem.store_message(make_message("new owner"), new_user_id(), conv)
    finally:
        await mem.shutdown()


async def test_what_a_cache_cannot_do_is_refused(memory: MemcachedMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("kept"), uid, conv)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: memory.search(uid, "kept"),
        lambda: memory.search_messages("kept", user_id=uid),
        lambda: memory.retrieve_context(uid, "kept", strategy="relevant"),
        lambda: memory.forget_user(uid),
        lambda: memory.export_batches("messages", uid).__anext__(),
        # The primitives themselves refuse too (never NotImplementedError).
        lambda: memory._text_search(SearchRequest(uid, "kept", frozenset({"message"}), limit=5)),
        lambda: memory._forget_user(uid),
        lambda: memory._export("messages", uid).__anext__(),
    ]
    for call in calls:
        with pytest.raises(CapabilityError) as info:
            await call()
        assert "HybridMemory" in str(info.value) or "capabilit" in str(info.value).lower()
    assert len(await memory.retrieve_messages(conv)) == 1


# ==================================================================== a misbehaving connection


class _FakeMemcached:
    """Speaks just enough of the text protocol: ``version``, ``get`` (slow once), ``incr``
    (cut off mid-reply)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.slow_once = True

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                words = line.split()
                if words[:1] == [b"version"]:
                    writer.write(b"VERSION 1.6.18\r\n")
                elif words[:1] == [b"get"]:
                    if self.slow_once:
                        self.slow_once = False
                        await asyncio.sleep(0.6)
                    for key in words[1:]:
                        data = b"value of " + key
                        writer.write(b"VALUE %s 0 %d\r\n%s\r\n" % (key, len(data), data))
                    writer.write(b"END\r\n")
                elif words[:1] == [b"incr"]:
                    writer.write(b"12")  # no line end: the server dies mid-reply
                    await writer.drain()
                    break
                await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_a_reply_abandoned_by_a_timeout_is_never_read_by_the_next_call() -> None:
    fake = _FakeMemcached()
    port = await fake.start()
    mem = MemcachedMemory(f"memcached://127.0.0.1:{port}", pool_size=1, operation_timeout=0.2)
    try:
        with pytest.raises(BackendTimeoutError):
            await mem._run("probe", lambda: mem.store.get("first"))
        # One pooled connection: without care it would now read "value of first".
        assert await mem._run("probe", lambda: mem.store.get("second")) == b"value of second"
    finally:
        await mem.shutdown()
        await fake.stop()


async def test_a_connection_cut_mid_reply_raises_instead_of_spinning() -> None:
    fake = _FakeMemcached()
    port = await fake.start()
    mem = MemcachedMemory(f"memcached://127.0.0.1:{port}", operation_timeout=5)
    try:
        with pytest.raises(BackendUnavailableError):
            await asyncio.wait_for(mem._run("probe", lambda: mem.store.incr("n", 1)), 10)
    finally:
        await mem.shutdown()
        await fake.stop()


def test_missing_client_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without aiomcache the package cannot be imported; the registry names the extra.
    for name in [m for m in sys.modules if m.startswith(("aiomcache", BACKEND_PACKAGE))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "aiomcache", None)
    with pytest.raises(MissingDependencyError) as info:
        open_memory("memcached://127.0.0.1:21211")
    assert "pip install 'bruno-memstore[memcached]'" in str(info.value)
