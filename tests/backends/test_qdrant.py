"""What only QdrantMemory promises: URLs and secrets, the point layout, directories shared or
locked, crash recovery, vector-dimension switches and the full-text cache.

The shared semantics are checked by the conformance suite (``tests/conformance``). These tests
use local mode (qdrant-client's in-process implementation) except where noted: no Qdrant server
runs on this machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from qdrant_client import models as qm

from bruno_memstore.backends.qdrant import QdrantMemory
from bruno_memstore.backends.qdrant.layout import VECTOR, point_id
from bruno_memstore.capabilities import Capability
from bruno_memstore.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidArgumentError,
    OwnershipError,
)
from bruno_memstore.testing import at, make_memory_entry, make_message, new_user_id
from bruno_memstore.testing.erasure import find_in_files, run_erasures
from bruno_memstore.url import MemoryURL

ROOT = Path(__file__).resolve().parents[2]


def from_url(url: str, **options: object) -> QdrantMemory:
    return QdrantMemory.from_url(MemoryURL.parse(url), **options)


async def messages_collection(mem: QdrantMemory) -> str | None:
    """The collection the messages alias points to."""
    return await mem._s.alias_target(mem._s.layout.messages)


# ----------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "path", "server", "describe"),
    [
        ("qdrant:///data/q", "data/q", None, "qdrant:///data/q"),
        ("qdrant:////srv/q", "/srv/q", None, "qdrant:////srv/q"),
        ("qdrant:///:memory:", ":memory:", None, "qdrant:///:memory:"),
        ("qdrant+http://db:6333", None, "http://db:6333", "qdrant+http://db:6333"),
        ("qdrant+https://db", None, "https://db:6333", "qdrant+https://db:6333"),
        (
            "qdrant+https://:k3y@db:7000/proxy?prefix=app",
            None,
            "https://db:7000",
            "qdrant+https://:***@db:7000/proxy?prefix=app",
        ),
    ],
)
def test_url_forms(url: str, path: str | None, server: str | None, describe: str) -> None:
    mem = from_url(url, embedding_model=None)
    assert mem.path == path
    assert mem.url == server
    assert mem.describe() == describe
    assert "k3y" not in repr(mem)


def test_url_options_and_keywords() -> None:
    mem = from_url(
        "qdrant+http://db:6333?prefix=app&timeout=2.5&prefer_grpc=yes&grpc_port=7001",
        embedding_model=None,
        prefix="mine",
    )
    assert (mem.layout.prefix, mem.timeout, mem.prefer_grpc, mem.grpc_port) == (
        "mine",
        2.5,
        True,
        7001,
    )


@pytest.mark.parametrize(
    "url",
    [
        "qdrant+https://db:6333?api_key=k3y",  # would be logged un-redacted
        "qdrant+https://user:k3y@db:6333",
        "qdrant+grpc://db:6334",
        "qdrant://host/dir",
        "qdrant:///",
        "qdrant:///dir?timeout=3",  # a server option
        "qdrant+http://db?nope=1",
        "qdrant:///dir?prefix=bad/prefix",
    ],
)
def test_url_refusals(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        from_url(url, embedding_model=None)
    assert "k3y" not in str(caught.value)


def test_constructor_refusals(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        QdrantMemory()
    with pytest.raises(InvalidArgumentError):
        QdrantMemory(tmp_path, url="http://db:6333")
    with pytest.raises(InvalidArgumentError):
        QdrantMemory(url="http://:a@db", api_key="b")
    with pytest.raises(InvalidArgumentError):
        QdrantMemory(url="ftp://db")
    with pytest.raises(InvalidArgumentError):
        QdrantMemory(tmp_path, timeout=0)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
async def test_unreachable_server_error_hides_the_key() -> None:
    """A real connection attempt to a closed port (the server code path up to the socket)."""
    secret = "k3y-" + uuid.uuid4().hex
    mem = QdrantMemory(
        url=f"http://127.0.0.1:{_closed_port()}", api_key=secret, embedding_model=None, timeout=2
    )
    with pytest.raises(BackendUnavailableError) as caught:
        await mem.initialize()
    text = f"{caught.value} {caught.value!r} {mem!r} {mem.describe()}"
    assert secret not in text
    assert "***" in mem.describe()
    await mem.shutdown()


# ----------------------------------------------------------------------------- layout


async def test_point_layout(tmp_path: Path) -> None:
    uid = new_user_id()
    async with QdrantMemory(tmp_path / "q") as mem:
        msg = make_message("the grey kitten", timestamp=at(0))
        await mem.store_message(msg, uid, "conv-1")
        entry = make_memory_entry(uid, "likes kittens", tags=["pets"])
        await mem.store_memory(entry)
        client, layout = mem._s.client, mem._s.layout
        aliases = {a.alias_name: a.collection_name for a in (await client.get_aliases()).aliases}
        assert aliases == {
            "bruno_messages": "bruno_messages_d384",
            "bruno_memories": "bruno_memories_d384",
        }
        [point] = await client.retrieve(
            layout.messages, [point_id("message", str(msg.id))], with_vectors=True
        )
        assert point.payload["user_id"] == uid
        assert point.payload["conversation_id"] == "conv-1"
        assert len(point.vector[VECTOR]) == 384
        [owner] = await client.retrieve(layout.conversations, [point_id("conversation", "conv-1")])
        assert owner.payload == {"conversation_id": "conv-1", "user_id": uid}
        [mpoint] = await client.retrieve(layout.memories, [point_id("memory", str(entry.id))])
        assert mpoint.payload["tags"] == ["pets"]
        assert mpoint.payload["expires_us"] is None


async def test_prefixes_are_separate_stores(tmp_path: Path) -> None:
    uid = new_user_id()
    async with (
        QdrantMemory(tmp_path, prefix="a", embedding_model=None) as a,
        QdrantMemory(tmp_path, prefix="b", embedding_model=None) as b,
    ):
        await a.store_message(make_message("only in a"), uid, "conv")
        assert len(await a.retrieve_messages("conv")) == 1
        assert await b.retrieve_messages("conv") == []
        await b.store_message(make_message("b's own"), new_user_id(), "conv")  # not owned here


async def test_memory_mode_is_not_durable() -> None:
    mem = QdrantMemory(":memory:", embedding_model=None)
    assert not mem.supports(Capability.DURABLE)
    assert QdrantMemory.capabilities >= {Capability.DURABLE, Capability.VECTORS}
    uid = new_user_id()
    await mem.store_message(make_message("kept in process"), uid, "c")
    assert [m.content for m in await mem.retrieve_messages("c")] == ["kept in process"]
    await mem.shutdown()
    await mem.initialize()
    assert await mem.retrieve_messages("c") == []  # a new in-process store
    await mem.shutdown()


# ----------------------------------------------------------------------------- directories


async def test_instances_on_one_directory_share_the_store(tmp_path: Path) -> None:
    uid = new_user_id()
    one = QdrantMemory(tmp_path, embedding_model=None)
    two = QdrantMemory(tmp_path, embedding_model=None)
    await one.initialize()
    await two.initialize()
    assert one._s is two._s
    await one.store_message(make_message("written by one about otters"), uid, "c")
    assert [r.content for r in await two.search(uid, "otters")] == ["written by one about otters"]

    async def write(mem: QdrantMemory, i: int) -> None:
        await mem.store_message(make_message(f"race {i}", timestamp=at(i)), uid, "shared")

    await asyncio.gather(*(write(one if i % 2 else two, i) for i in range(60)))
    assert len(await one.retrieve_messages("shared")) == 60
    with pytest.raises(OwnershipError):
        await two.store_message(make_message("intruder"), new_user_id(), "shared")
    await one.shutdown()
    assert len(await two.retrieve_messages("shared")) == 60  # still open
    await two.shutdown()


def _python(code: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return [sys.executable, "-c", textwrap.dedent(code)], env


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 120)).decode().strip()


async def test_directory_used_by_another_process_is_refused(tmp_path: Path) -> None:
    args, env = _python(
        f"""
        import asyncio, sys
        from bruno_memstore.backends.qdrant import QdrantMemory
        async def main():
            mem = QdrantMemory({str(tmp_path)!r}, embedding_model=None)
            await mem.initialize()
            print("open", flush=True)
            sys.stdin.read()
        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert await _line(proc) == "open"
        mem = QdrantMemory(tmp_path, embedding_model=None)
        with pytest.raises(BackendError, match="already accessed"):
            await mem.initialize()
    finally:
        proc.kill()
        await proc.wait()
    async with QdrantMemory(tmp_path, embedding_model=None) as mem:  # free again
        assert await mem.retrieve_messages("none") == []


async def test_acknowledged_messages_survive_a_killed_process(tmp_path: Path) -> None:
    uid = new_user_id()
    args, env = _python(
        f"""
        import asyncio, time
        from bruno_memstore.backends.qdrant import QdrantMemory
        from bruno_memstore.testing import make_message, make_memory_entry, at
        async def main():
            mem = QdrantMemory({str(tmp_path)!r}, embedding_model=None)
            for i in range(20):
                await mem.store_message(make_message(f"m{{i}}", timestamp=at(i)), {uid!r}, "c")
            await mem.store_memory(make_memory_entry({uid!r}, "a durable fact"))
            print("stored", flush=True)
            time.sleep(60)
        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.PIPE)
    try:
        assert await _line(proc) == "stored"
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown, no flush
        await proc.wait()
    async with QdrantMemory(tmp_path, embedding_model=None) as mem:
        got = await mem.retrieve_messages("c")
        assert [m.content for m in reversed(got)] == [f"m{i}" for i in range(20)]
        stats = await mem.get_statistics(uid)
        assert (stats["total_messages"], stats["memories"]) == (20, 1)
        # The arrival counter continues above what the killed process wrote.
        await mem.store_message(make_message("m20", timestamp=at(19)), uid, "c")
        assert (await mem.retrieve_messages("c", limit=1))[0].content == "m20"


# ----------------------------------------------------------------------------- crash states


async def test_claim_left_without_messages_is_a_plain_empty_conversation(tmp_path: Path) -> None:
    """The state a crash between the claim and the message write leaves."""
    uid = new_user_id()
    async with QdrantMemory(tmp_path, embedding_model=None) as mem:
        await mem._append_messages("c", uid, [], enforce_owner=True)
        assert await mem.retrieve_messages("c") == []
        assert (await mem.get_statistics(uid))["conversations"] == 1
        with pytest.raises(OwnershipError):
            await mem.store_message(make_message("intruder"), new_user_id(), "c")
        await mem.store_message(make_message("the retried write"), uid, "c")
        assert len(await mem.retrieve_messages("c")) == 1


async def test_records_without_vectors_then_a_model(tmp_path: Path) -> None:
    uid = new_user_id()
    async with QdrantMemory(tmp_path, embedding_model=None) as plain:
        await plain.store_message(make_message("my kitten is grey", timestamp=at(0)), uid, "c")
        await plain.store_memory(make_memory_entry(uid, "owns a grey kitten"))
        assert await messages_collection(plain) == "bruno_messages_d0"
    async with QdrantMemory(tmp_path) as mem:
        # Claiming the model's space moved the records to collections with vectors.
        assert await messages_collection(mem) == "bruno_messages_d384"
        assert mem.vector_space is not None and mem.vector_space.dimension == 384
        assert len(await mem.retrieve_messages("c")) == 1
        assert await mem.search(uid, "kitten", mode="vector") == []  # nothing embedded yet
        assert len(await mem.search(uid, "kitten", mode="keyword")) == 2
        assert await mem.reindex() == {"message": 1, "memory": 1}
        assert len(await mem.search(uid, "a cat", mode="vector")) == 2


async def test_interrupted_dimension_switch_is_done_again(tmp_path: Path) -> None:
    uid = new_user_id()
    async with QdrantMemory(tmp_path, embedding_model=None) as plain:
        await plain.store_message(make_message("kept across the switch"), uid, "c")
        client = plain._s.client
        # What a switch interrupted mid-copy leaves: a partial target collection.
        await client.create_collection(
            "bruno_messages_d384",
            vectors_config={VECTOR: qm.VectorParams(size=384, distance=qm.Distance.COSINE)},
        )
        await client.upsert(
            "bruno_messages_d384",
            points=[qm.PointStruct(id=str(uuid.uuid4()), vector={}, payload={"stray": 1})],
        )
    async with QdrantMemory(tmp_path) as mem:
        client = mem._s.client
        assert await messages_collection(mem) == "bruno_messages_d384"
        assert (await client.count("bruno_messages")).count == 1  # the stray point is gone
        assert not await client.collection_exists("bruno_messages_d0")
        assert [m.content for m in await mem.retrieve_messages("c")] == ["kept across the switch"]


async def test_switch_done_but_not_recorded_is_repaired(tmp_path: Path) -> None:
    """A reindex to another dimension interrupted after the switch, before the record."""
    uid = new_user_id()
    async with QdrantMemory(tmp_path) as mem:
        await mem.store_message(make_message("a message"), uid, "c")
        async with mem._s.write_lock:
            await mem._s.set_dimension(16, drop_vectors=True)
    async with QdrantMemory(tmp_path) as mem:
        assert mem.vector_space is not None and mem.vector_space.dimension == 384
        assert await messages_collection(mem) == "bruno_messages_d384"
        await mem.store_message(make_message("a grey kitten"), uid, "c")
        found = await mem.search(uid, "kitten", mode="vector")
        assert [r.content for r in found] == ["a grey kitten"]


# ----------------------------------------------------------------------------- reads


async def test_window_with_a_tie_across_the_limit(tmp_path: Path) -> None:
    uid = new_user_id()
    async with QdrantMemory(tmp_path, embedding_model=None) as mem:
        older = [make_message(f"old {i}", timestamp=at(i)) for i in range(5)]
        tied = [make_message(f"tie {i}", timestamp=at(10)) for i in range(10)]
        await mem.store_messages(older, conversation_id="c", user_id=uid)
        for msg in tied:  # one at a time: arrival order is the only order among them
            await mem.store_message(msg, uid, "c")
        for limit in (3, 7, 10, 12, 15, 50):
            got = await mem.retrieve_context(uid, conversation_id="c", limit=limit)
            assert [m.content for m in got] == [m.content for m in [*older, *tied][-limit:]]


# ----------------------------------------------------------------------------- text cache


async def test_text_index_follows_this_process_writes(tmp_path: Path) -> None:
    uid = new_user_id()
    async with QdrantMemory(tmp_path, embedding_model=None) as mem:
        await mem.store_message(make_message("otters hold hands"), uid, "c")
        assert len(await mem.search(uid, "otters")) == 1
        cache = mem._s.text
        assert cache.loads == 1
        await mem.store_message(make_message("otters sleep"), uid, "c")
        entry = make_memory_entry(uid, "likes otters")
        await mem.store_memory(entry)
        assert len(await mem.search(uid, "otters")) == 3
        entry.content = "likes beavers"
        await mem.store_memory(entry)
        assert [r.kind for r in await mem.search(uid, "otters")] == ["message", "message"]
        assert [r.kind for r in await mem.search(uid, "beavers")] == ["memory"]
        await mem.delete_memory(str(entry.id))
        await mem.clear_history("c")
        assert await mem.search(uid, "otters beavers") == []
        assert cache.loads == 1  # never reloaded: every change was applied in place


async def test_server_cache_check_sees_other_writers_exercised_in_local_mode(
    tmp_path: Path,
) -> None:
    """On a server, a search compares the cached index with counts and write numbers read
    from Qdrant, so another process's writes are seen. No server runs here: the check is
    switched on for a local store, and "another process" writes points directly."""
    uid = new_user_id()
    async with QdrantMemory(tmp_path, embedding_model=None) as mem:
        store = mem._s
        await mem.store_message(make_message("otters hold hands", timestamp=at(0)), uid, "c")
        assert len(await mem.search(uid, "otters")) == 1

        async def foreign_write(text: str) -> None:
            rec_id = str(uuid.uuid4())
            payload = {
                "id": rec_id,
                "conversation_id": "c",
                "user_id": uid,
                "role": "user",
                "content": text,
                "message_type": "text",
                "timestamp": at(1).isoformat(),
                "ts_us": 1,
                "metadata": "{}",
                "parent_id": None,
                "seq": store.clock.next(),
            }
            await store.client.upsert(
                store.layout.messages,
                points=[qm.PointStruct(id=point_id("message", rec_id), vector={}, payload=payload)],
            )

        await foreign_write("otters swim")
        # Local mode: one process per directory, so the cache is trusted as it is.
        assert len(await mem.search(uid, "otters")) == 1
        store.local = False  # what a server store does
        assert len(await mem.search(uid, "otters")) == 2
        loads = store.text.loads
        assert len(await mem.search(uid, "otters")) == 2
        assert store.text.loads == loads  # unchanged data: the cached index is used
        await mem.store_message(make_message("otters again"), uid, "c")
        assert len(await mem.search(uid, "otters")) == 3
        assert store.text.loads == loads  # own writes keep the cached tag exact
        await store.client.delete(
            store.layout.messages,
            points_selector=qm.FilterSelector(
                filter=qm.Filter(
                    must=[
                        qm.FieldCondition(key="content", match=qm.MatchValue(value="otters swim"))
                    ]
                )
            ),
        )
        assert len(await mem.search(uid, "otters")) == 2
        store.local = True


# ------------------------------------------------------------------------------ erasure


def _local_connections(mem: QdrantMemory) -> list[sqlite3.Connection]:
    """The SQLite connections of local mode, one per collection."""
    local = mem._s.client._client
    return [c.storage.storage for c in local.collections.values() if c.storage is not None]


async def test_erasure_leaves_no_words_in_the_local_files(tmp_path: Path) -> None:
    """Local mode keeps points in SQLite files; deleted points are overwritten with zeros
    even where SQLite's build leaves ``secure_delete`` off (as set here, on purpose)."""
    mem = QdrantMemory(tmp_path / "qdrant", embedding_model=None)
    try:
        await mem.initialize()
        for conn in _local_connections(mem):
            conn.execute("PRAGMA secure_delete = OFF")
        done = await run_erasures(mem)
        pragmas = {
            c.execute("PRAGMA secure_delete").fetchall()[0][0] for c in _local_connections(mem)
        }
    finally:
        await mem.shutdown()
    found = find_in_files([tmp_path / "qdrant"], done.erased_words | done.kept)
    assert not set(found) & done.erased_words, found
    assert pragmas == {1}
    assert done.kept <= set(found)
