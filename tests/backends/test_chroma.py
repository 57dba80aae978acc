"""What only ChromaMemory promises: its layout in Chroma, filters inside Chroma's queries,
BM25 equal to the reference, the text cache, grouped writes, space changes, crashes, URLs.

The shared semantics are checked by the conformance suite (``tests/conformance``). Every
test runs against a real engine: an embedded ``PersistentClient`` directory, the project's
Chroma server, or a private ``chroma run``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from bruno_core.models.memory import MemoryQuery
from chromadb.config import Settings

import _engines as engines
from bruno_memstore.backends.chroma import ChromaMemory, ops
from bruno_memstore.backends.chroma.layout import user_collection_name
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidArgumentError,
    OwnershipError,
)
from bruno_memstore.models import MemoryFilter, SearchHit, SearchRequest, to_us, utcnow
from bruno_memstore.testing import (
    at,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from bruno_memstore.testing.erasure import run_erasures
from bruno_memstore.url import MemoryURL
from conformance.test_chroma import ChromaServer, drop_collections, host_port
from faults._ports import free_port

ROOT = Path(__file__).resolve().parents[2]
RUN = f"tb{uuid.uuid4().hex[:10]}"
SETTINGS = Settings(anonymized_telemetry=False)


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[ChromaMemory]:
    mem = ChromaMemory(persist_directory=tmp_path / "chroma")
    try:
        yield mem
    finally:
        await mem.shutdown()


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    url = engines.chroma_url()
    yield url
    drop_collections(url, RUN)


def server_memory(url: str, **options: Any) -> ChromaMemory:
    host, port = host_port(url)
    options.setdefault("prefix", f"{RUN}-{uuid.uuid4().hex[:8]}")
    return ChromaMemory(host=host, port=port, **options)


def raw_embedded(path: Path) -> Any:
    """A plain Chroma client on the directory, as any Chroma tool would open it."""
    return chromadb.PersistentClient(path=str(path), settings=SETTINGS)


class Vectors:
    """A tiny embedding model: each text's vector is given by the test (unit length)."""

    model_name = "test-vectors"
    dimension = 4

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        rows = np.array([self.table.get(t, [0.0, 0.0, 0.0, 1.0]) for t in texts], np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ------------------------------------------------------------------------------ layout


async def test_records_carry_their_filter_columns_and_vectors(
    memory: ChromaMemory, tmp_path: Path
) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    msg = make_message("a grey kitten", timestamp=at(3))
    await memory.store_message(msg, uid, conv)
    entry = make_memory_entry(uid, "likes kittens", category="pets", tags=["a", "b"])
    await memory.store_memory(entry)
    await memory.shutdown()
    client = raw_embedded(tmp_path / "chroma")
    names = {c.name for c in client.list_collections()}
    mine = user_collection_name("bruno", uid, "messages", 1)
    assert names == {
        "bruno_meta",
        "bruno_conversations",
        "bruno_sessions",
        "bruno_ids",
        mine,
        user_collection_name("bruno", uid, "memories", 1),
    }
    messages = client.get_collection(mine)
    assert messages.metadata == {"user": uid, "kind": "messages"}
    # Chroma never embeds: the collections have no embedding function.
    assert messages.configuration.get("embedding_function") is None
    hnsw = messages.configuration["hnsw"]
    assert (hnsw["space"], hnsw["ef_construction"], hnsw["ef_search"]) == ("cosine", 200, 200)
    assert hnsw["max_neighbors"] == 32
    got = messages.get(ids=[str(msg.id)], include=["documents", "metadatas", "embeddings"])
    meta = got["metadatas"][0]
    assert got["documents"] == ["a grey kitten"]
    assert (meta["user"], meta["conv"], meta["role"], meta["vec"]) == (uid, conv, "user", True)
    assert meta["ts_us"] == to_us(at(3)) and meta["seq"] > 0
    pointers = client.get_collection("bruno_ids").get(ids=[f"m:{msg.id}", f"e:{entry.id}"])
    assert [m["user"] for m in pointers["metadatas"]] == [uid, uid]
    assert len(got["embeddings"][0]) == 384
    assert abs(float(np.linalg.norm(got["embeddings"][0])) - 1.0) < 1e-3
    mem = client.get_collection(user_collection_name("bruno", uid, "memories", 1)).get(
        ids=[str(entry.id)]
    )
    assert mem["metadatas"][0]["tags"] == ["a", "b"] and mem["metadatas"][0]["cat"] == "pets"
    owners = client.get_collection("bruno_conversations").get(ids=[conv])
    assert owners["metadatas"][0]["user"] == uid
    space = client.get_collection("bruno_meta").get(ids=["space"])["metadatas"][0]
    assert (space["dim"], space["gen"]) == (384, 1)
    client.close()


async def test_replaced_entry_loses_the_fields_it_no_longer_has(memory: ChromaMemory) -> None:
    uid = new_user_id()
    entry = make_memory_entry(uid, "old", category="pets", tags=["x"], conversation_id="c1")
    await memory.store_memory(entry)
    entry.content = "new"
    entry.metadata.category = None
    entry.metadata.tags = []
    entry.conversation_id = None
    await memory.store_memory(entry)
    rec = await memory._get_memory(str(entry.id))
    assert rec is not None
    assert (rec.content, rec.category, rec.tags, rec.conversation_id) == ("new", None, [], None)
    flt = MemoryFilter(uid, categories=("pets",))
    assert await memory._query_memories(flt) == []


async def test_prefixes_keep_stores_apart_in_one_directory(tmp_path: Path) -> None:
    a = ChromaMemory(persist_directory=tmp_path / "db", prefix="app-a")
    b = ChromaMemory(persist_directory=tmp_path / "db", prefix="app.b")
    uid, conv = new_user_id(), new_conversation_id()
    await a.store_message(make_message("only in a"), uid, conv)
    assert await b.retrieve_messages(conv) == []
    assert (await a.get_statistics(uid))["total_messages"] == 1
    await b.claim_conversation(conv, "someone-else")  # b's conversations are its own
    await a.shutdown()
    await b.shutdown()


async def test_instances_on_one_directory_share_one_store(tmp_path: Path) -> None:
    a = ChromaMemory(persist_directory=tmp_path / "db")
    b = ChromaMemory(persist_directory=tmp_path / "db")
    await a.initialize()
    await b.initialize()
    assert a._store is b._store and a._store is not None and a._store.refs == 2
    await a.shutdown()
    uid, conv = new_user_id(), new_conversation_id()
    await b.store_message(make_message("still open"), uid, conv)
    assert [m.content for m in await b.retrieve_messages(conv)] == ["still open"]
    await b.shutdown()


# ------------------------------------------------------------------------------ writes


async def test_concurrent_appends_share_chroma_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = ChromaMemory(None, tmp_path / "db")
    await mem.initialize()
    store = mem._store
    assert store is not None
    calls = 0
    run = ops.run_appends

    def counting(store_: Any, group: list[ops.Append]) -> list[Any]:
        nonlocal calls
        calls += 1
        return run(store_, group)

    monkeypatch.setattr(ops, "run_appends", counting)
    uid, conv = new_user_id(), new_conversation_id()
    msgs = [make_message(f"m {i}", timestamp=at(i % 3)) for i in range(200)]
    await asyncio.gather(*(mem.store_message(m, uid, conv) for m in msgs))
    assert calls < 50  # one group per queue drain, not one per writer
    got = await mem.retrieve_context(uid, conversation_id=conv, limit=500)
    assert sorted(m.id for m in got) == sorted(m.id for m in msgs)
    await mem.shutdown()


async def test_reads_of_many_records_are_chunked(tmp_path: Path) -> None:
    """More records than one ``get`` returns at once (the SQL-variable limit): windows,
    statistics, full-text loads and exports still see all of them, and windows of a large
    scope stay exact when messages were not added in time order."""
    mem = ChromaMemory(None, tmp_path / "db")
    uid, conv = new_user_id(), new_conversation_id()
    n = ops._ID_CHUNK + 700
    stamps = list(range(n))
    random.Random(7).shuffle(stamps)
    msgs = [make_message(f"numbat note {i}", timestamp=at(t)) for i, t in enumerate(stamps)]
    for start in range(0, n, 2000):
        await mem.store_messages(msgs[start : start + 2000], conversation_id=conv, user_id=uid)
    in_time = sorted(msgs, key=lambda m: m.timestamp)
    assert (await mem.get_statistics(uid))["total_messages"] == n
    for scope in ({}, {"conversation_id": conv}):
        window = await mem.retrieve_context(uid, limit=7, **scope)
        assert [m.id for m in window] == [m.id for m in in_time[-7:]], scope
    assert len(await mem.retrieve_messages(conv)) == n
    assert len(await mem.search(uid, "numbat", limit=n)) == n
    exported = [
        r for batch in [b async for b in mem.export_batches("messages", uid)] for r in batch
    ]
    assert [r.id for r in exported] == [str(m.id) for m in in_time]
    await mem.shutdown()


async def test_a_refused_append_in_a_group_fails_alone(memory: ChromaMemory) -> None:
    owner, intruder, conv = new_user_id(), new_user_id(), new_conversation_id()
    await memory.claim_conversation(conv, owner)
    good = [make_message(f"fine {i}", timestamp=at(i)) for i in range(30)]
    bad = make_message("not mine")
    results = await asyncio.gather(
        *(memory.store_message(m, owner, conv) for m in good[:15]),
        memory.store_message(bad, intruder, conv),
        *(memory.store_message(m, owner, conv) for m in good[15:]),
        return_exceptions=True,
    )
    assert isinstance(results[15], OwnershipError)
    assert [r for i, r in enumerate(results) if i != 15] == [None] * 30
    got = await memory.retrieve_messages(conv)
    assert {m.id for m in got} == {m.id for m in good}


async def test_arrival_numbers_stay_above_the_stored_ceiling(tmp_path: Path) -> None:
    mem = ChromaMemory(None, tmp_path / "db")
    uid, conv = new_user_id(), new_conversation_id()
    await mem.store_message(make_message("first", timestamp=at(0)), uid, conv)
    await mem.shutdown()
    client = raw_embedded(tmp_path / "db")
    meta = client.get_collection("bruno_meta")
    ceiling = meta.get(ids=["seq"])["metadatas"][0]["ceiling"]
    far = ceiling + 10**15  # as if a process with a clock far ahead had written
    meta.upsert(ids=["seq"], embeddings=[[1.0]], metadatas=[{"ceiling": far}])
    client.close()
    again = ChromaMemory(None, tmp_path / "db")
    await again.store_message(make_message("second", timestamp=at(0)), uid, conv)
    got = await again._read_window(conversation_id=conv, user_id=None, limit=None)
    assert [r.content for r in got] == ["first", "second"] and got[1].seq > far
    await again.shutdown()


KILL_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from bruno_memstore.backends.chroma import ChromaMemory
    from bruno_memstore.testing import make_message

    async def main():
        mem = ChromaMemory(None, sys.argv[1])
        i = 0
        while True:
            msgs = [make_message(f"acked {i} {j}") for j in range(5)]
            await mem.store_messages(msgs, conversation_id="c", user_id="u")
            print(" ".join(str(m.id) for m in msgs), flush=True)
            i += 1

    asyncio.run(main())
    """
)


def test_acknowledged_messages_survive_a_killed_process(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-stream: every batch it acknowledged is there after
    reopening, each message once."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_WRITER, str(tmp_path / "db")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    acked: list[str] = []
    for line in proc.stdout:
        acked += line.split()
        if len(acked) >= 100:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    async def check() -> None:
        mem = ChromaMemory(None, tmp_path / "db")
        got = await mem.retrieve_messages("c")
        ids = [str(m.id) for m in got]
        assert len(ids) == len(set(ids))
        assert set(acked) <= set(ids)
        assert len(ids) % 5 == 0  # batches land whole
        await mem.shutdown()

    asyncio.run(check())


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from bruno_memstore.backends.chroma import ChromaMemory

    async def main():
        mem = ChromaMemory(None, sys.argv[1])
        await mem.initialize()
        print("open", flush=True)
        sys.stdin.readline()
        await mem.shutdown()

    asyncio.run(main())
    """
)


async def test_a_directory_serves_one_process_at_a_time(tmp_path: Path) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(tmp_path / "db"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert await holder.stdout.readline() == b"open\n"
        mem = ChromaMemory(None, tmp_path / "db")
        with pytest.raises(BackendError, match=f"another process \\(pid {holder.pid}\\)"):
            await mem.initialize()
    finally:
        holder.stdin.close()
        await holder.wait()
    mem = ChromaMemory(None, tmp_path / "db")
    await mem.store_message(make_message("mine now"), new_user_id(), new_conversation_id())
    await mem.shutdown()


# ------------------------------------------------------------------------------ search


async def test_text_ranking_equals_the_reference_bm25(memory: ChromaMemory) -> None:
    reference = InMemoryStorage(embedding_model=None)
    uid, other = new_user_id(), new_user_id()
    texts = [
        "the cat sat on the mat",
        "cats and dogs are friends",
        "my dog chased the neighbour's cat twice",
        "nothing about animals here",
        "the CAT, the cat, the cat!",
    ]
    for i, text in enumerate(texts):
        msg = make_message(text, timestamp=at(i))
        for target in (memory, reference):
            await target.store_message(msg, uid, "conv-a")
    await memory.store_message(make_message("cat cat cat cat"), other, "conv-o")
    for i in range(3):
        entry = make_memory_entry(uid, f"a note about a cat number {i}", importance=i / 3)
        for target in (memory, reference):
            await target.store_memory(entry)
    flt = MemoryFilter(uid, min_importance=0.3, now_us=to_us(utcnow()))
    for query in ("cat", "dogs cats", "the", "friends of the cat"):
        for kinds in (frozenset({"message"}), frozenset({"message", "memory"})):
            args = {"kinds": kinds, "conversation_id": None, "limit": 10, "memory_filter": flt}
            request = SearchRequest(uid, query, **args)
            ours = await memory._text_search(request)
            theirs = await reference._text_search(request)
            assert [(hit_id(h), round(h.score, 9)) for h in ours] == [
                (hit_id(h), round(h.score, 9)) for h in theirs
            ], (query, kinds)
    await reference.shutdown()


async def test_searches_after_writes_patch_the_cached_index(memory: ChromaMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("first pangolin"), uid, conv)
    assert len(await memory.search(uid, "pangolin", mode="keyword")) == 1
    store = memory._store
    assert store is not None
    loads = store.text.loads
    for i in range(5):
        await memory.store_message(make_message(f"pangolin number {i}"), uid, conv)
        assert len(await memory.search(uid, "pangolin", mode="keyword")) == i + 2
    entry = make_memory_entry(uid, "pangolin facts")
    await memory.store_memory(entry)
    assert len(await memory.search(uid, "pangolin", mode="keyword")) == 7
    await memory.delete_memory(str(entry.id))
    await memory.clear_history(conv, keep_system_messages=False)
    assert await memory.search(uid, "pangolin", mode="keyword") == []
    assert store.text.loads == loads  # embedded: the one process patches its index


CROSS_PROCESS_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from bruno_memstore.backends.chroma import ChromaMemory
    from bruno_memstore.testing import make_message

    async def main():
        host, port, prefix, uid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        mem = ChromaMemory(None, host=host, port=port, prefix=prefix)
        await mem.store_message(make_message("an okapi from elsewhere"), uid, "conv-x")
        await mem.shutdown()

    asyncio.run(main())
    """
)


async def test_server_searches_see_other_processes_writes(server_url: str) -> None:
    mem = server_memory(server_url, embedding_model=None)
    uid = new_user_id()
    await mem.store_message(make_message("an okapi at home"), uid, "conv-h")
    assert len(await mem.search(uid, "okapi")) == 1  # loaded and cached
    host, port = host_port(server_url)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CROSS_PROCESS_WRITER, host, str(port), mem.prefix, uid],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    found = await mem.search(uid, "okapi")
    assert sorted(r.content for r in found) == ["an okapi at home", "an okapi from elsewhere"]
    await mem.shutdown()


def hit_id(hit: SearchHit) -> tuple[str, str]:
    rec = hit.message if hit.message is not None else hit.memory
    assert rec is not None
    return (hit.kind, rec.id)


TOPICS = [
    "my sister adopted a small grey kitten from the animal shelter",
    "the quarterly tax return is due at the end of the month",
    "we hiked up the mountain trail and camped near the summit",
    "I am learning to bake sourdough bread with a new starter",
    "the football match went to penalties after extra time",
    "our flight to Lisbon was delayed by three hours",
]


async def test_strict_filters_are_not_starved_by_nearer_records(tmp_path: Path) -> None:
    """2,000 records nearer the query than the one that passes the filter, far beyond the
    index's search breadth: the unfiltered probe finds only them, so the filtered search
    must run, and it finds the one record (a filter applied after a search would return
    nothing)."""
    table = {f"near {i}": [1.0, 0.001 * (i % 50), 0.0, 0.0] for i in range(2000)}
    table["far"] = [0.2, 1.0, 0.0, 0.0]
    table["query"] = [1.0, 0.01, 0.0, 0.0]
    mem = ChromaMemory(Vectors(table), tmp_path / "db")
    uid, other = new_user_id(), new_user_id()
    near = [make_message(f"near {i}") for i in range(2000)]
    for start in range(0, 2000, 500):
        await mem.store_messages(near[start : start + 500], conversation_id="c-near", user_id=uid)
    far = make_message("far")
    await mem.store_message(far, uid, "c-far")
    found = await mem.search(uid, "query", mode="vector", limit=5, conversation_id="c-far")
    assert [r.message.id for r in found if r.message] == [far.id]
    found = await mem.search(uid, "query", mode="vector", limit=5)
    assert len(found) == 5 and far.id not in {r.message.id for r in found if r.message}
    for i in range(300):
        await mem.store_memory(make_memory_entry(uid, f"near {i}", category="noise"))
    pets = make_memory_entry(uid, "far", category="pets")
    await mem.store_memory(pets)
    got = await mem.retrieve_memories(
        MemoryQuery(user_id=uid, query_text="query", categories=["pets"], limit=3)
    )
    assert [m.id for m in got] == [pets.id]
    # Another user with nothing near the query sees only their own record.
    mine = make_message("far")
    await mem.store_message(mine, other, "c-other")
    theirs = await mem.search(other, "query", mode="vector", limit=5)
    assert [r.message.id for r in theirs if r.message] == [mine.id]
    await mem.shutdown()


# ------------------------------------------------------------------------------ vector space


async def test_a_first_model_keeps_records_written_without_one(tmp_path: Path) -> None:
    plain = ChromaMemory(None, tmp_path / "db")
    uid, conv = new_user_id(), new_conversation_id()
    msgs = [make_message(t, timestamp=at(i)) for i, t in enumerate(TOPICS)]
    await plain.store_messages(msgs, conversation_id=conv, user_id=uid)
    await plain.store_memory(make_memory_entry(uid, "the user adopted a kitten"))
    await plain.shutdown()

    modelled = ChromaMemory("default", tmp_path / "db")
    await modelled.initialize()
    assert modelled._store is not None and modelled._store.generation == 1
    assert len(await modelled.retrieve_messages(conv)) == len(TOPICS)
    assert await modelled.search(uid, "kitten", mode="keyword")
    assert await modelled.search(uid, "a cat", mode="vector") == []  # no vectors yet
    assert await modelled.reindex() == {"message": len(TOPICS), "memory": 1}
    found = await modelled.search(uid, "walking in the hills", mode="vector", limit=1)
    assert found[0].message is not None and found[0].message.id == msgs[2].id
    await modelled.shutdown()
    client = raw_embedded(tmp_path / "db")
    names = {c.name for c in client.list_collections()}
    fixed = {"bruno_meta", "bruno_conversations", "bruno_sessions", "bruno_ids"}
    assert names == fixed | {
        user_collection_name("bruno", uid, "messages", 2),
        user_collection_name("bruno", uid, "memories", 2),
    }
    client.close()


async def test_an_interrupted_space_change_is_finished_on_connect(tmp_path: Path) -> None:
    mem = ChromaMemory(None, tmp_path / "db")
    uid, conv = new_user_id(), new_conversation_id()
    msgs = [make_message(f"message {i}", timestamp=at(i)) for i in range(7)]
    await mem.store_messages(msgs, conversation_id=conv, user_id=uid)
    await mem.shutdown()
    # A crash mid-change: generation 1 recorded, two records copied, generation 0 still
    # there; and an unrecorded generation 2 started by another attempt.
    client = raw_embedded(tmp_path / "db")
    old = client.get_collection(user_collection_name("bruno", uid, "messages", 0))
    new = client.get_or_create_collection(
        user_collection_name("bruno", uid, "messages", 1),
        embedding_function=None,
        metadata={"user": uid, "kind": "messages"},
    )
    part = old.get(ids=[str(m.id) for m in msgs[:2]], include=["documents", "metadatas"])
    metas = [{**m, "vec": False} for m in part["metadatas"]]
    new.add(ids=part["ids"], documents=part["documents"], metadatas=metas, embeddings=[[1.0]] * 2)
    stale = user_collection_name("bruno", uid, "memories", 2)
    client.get_or_create_collection(stale, metadata={"user": uid, "kind": "memories"})
    meta = client.get_collection("bruno_meta")
    meta.upsert(ids=["space"], embeddings=[[1.0]], metadatas=[{"model": "m", "dim": 1, "gen": 1}])
    client.close()

    again = ChromaMemory(None, tmp_path / "db")
    got = await again.retrieve_messages(conv)
    assert sorted(m.id for m in got) == sorted(m.id for m in msgs)
    await again.shutdown()
    client = raw_embedded(tmp_path / "db")
    names = {c.name for c in client.list_collections()}
    assert user_collection_name("bruno", uid, "messages", 0) not in names
    assert stale not in names
    assert user_collection_name("bruno", uid, "messages", 1) in names
    client.close()


async def test_forget_user_drops_the_users_collections(memory: ChromaMemory) -> None:
    uid, other = new_user_id(), new_user_id()
    for user in (uid, other):
        await memory.store_message(make_message("hello"), user, new_conversation_id())
        await memory.store_memory(make_memory_entry(user, "a fact"))
    assert await memory.forget_user(uid) == {
        "messages": 1,
        "memories": 1,
        "sessions": 0,
        "conversations": 1,
    }
    store = memory._store
    assert store is not None
    users = [u for u, _c in store.user_collections("message")]
    assert users == [other]
    left = store.ids.get(where={"user": uid}, include=[])["ids"]
    assert left == []
    assert (await memory.get_statistics(other))["total_messages"] == 1


# ------------------------------------------------------------------------------ server


async def test_server_store_survives_a_server_restart(tmp_path: Path) -> None:
    server = ChromaServer(tmp_path / "server")
    server.start()
    try:
        mem = ChromaMemory(None, host="127.0.0.1", port=server.port, prefix="restart")
        uid, conv = new_user_id(), new_conversation_id()
        await mem.store_message(make_message("before the restart"), uid, conv)
        server.restart()
        # The same instance goes on: the client reconnects to the restarted server.
        await mem.store_message(make_message("after the restart"), uid, conv)
        got = [m.content for m in await mem.retrieve_context(uid, limit=5)]
        assert got == ["before the restart", "after the restart"]
        await mem.shutdown()
    finally:
        server.stop()


FORGETTER = textwrap.dedent(
    """
    import asyncio, sys
    from bruno_memstore.backends.chroma import ChromaMemory

    async def main():
        host, port, prefix, uid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        mem = ChromaMemory(None, host=host, port=port, prefix=prefix)
        await mem.forget_user(uid)
        await mem.shutdown()

    asyncio.run(main())
    """
)


async def test_collections_dropped_by_another_process_are_recreated(server_url: str) -> None:
    mem = server_memory(server_url, embedding_model=None)
    uid, conv = new_user_id(), new_conversation_id()
    await mem.store_message(make_message("before"), uid, conv)
    host, port = host_port(server_url)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", FORGETTER, host, str(port), mem.prefix, uid],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    # This process still holds handles on the dropped collections: the write notices,
    # refreshes and is retried.
    await mem.store_message(make_message("after"), uid, conv)
    assert [m.content for m in await mem.retrieve_messages(conv)] == ["after"]
    await mem.shutdown()


async def test_unreachable_server_is_unavailable() -> None:
    mem = ChromaMemory(None, host="127.0.0.1", port=free_port())
    with pytest.raises(BackendUnavailableError):
        await mem.initialize()


# ------------------------------------------------------------------------------ URLs


def from_url(url: str, **options: Any) -> ChromaMemory:
    return ChromaMemory.from_url(MemoryURL.parse(url), **options)


def test_urls_name_directories_and_servers(tmp_path: Path) -> None:
    rel = from_url("chroma:///data/chroma?prefix=app&readers=3", embedding_model=None)
    assert rel.embedded and rel.persist_directory == os.path.abspath("data/chroma")
    assert (rel.prefix, rel.readers) == ("app", 3)
    absolute = from_url(f"chroma:///{tmp_path}/db", embedding_model=None)
    assert absolute.persist_directory == f"{tmp_path}/db"
    assert from_url(absolute.describe(), embedding_model=None).persist_directory == (
        absolute.persist_directory
    )
    server = from_url(
        "chroma+https://:s3cret@chroma.example:9000?tenant=t&database=d", embedding_model=None
    )
    assert not server.embedded
    assert (server.host, server.port, server.ssl, server.tenant, server.database) == (
        "chroma.example",
        9000,
        True,
        "t",
        "d",
    )
    assert "s3cret" not in server.describe() and "s3cret" not in repr(server)
    assert server.describe() == "chroma+https://chroma.example:9000?tenant=t&database=d"
    assert from_url("chroma+http://h", embedding_model=None).port == 8000
    tuned = from_url("chroma:///d?hnsw_ef_search=50&hnsw_max_neighbors=8", embedding_model=None)
    assert tuned.hnsw == {"ef_construction": 200, "ef_search": 50, "max_neighbors": 8}


async def test_index_settings_apply_to_new_user_collections(tmp_path: Path) -> None:
    mem = ChromaMemory(None, tmp_path / "db", hnsw={"ef_search": 64})
    uid = new_user_id()
    await mem.store_message(make_message("hi"), uid, new_conversation_id())
    await mem.shutdown()
    client = raw_embedded(tmp_path / "db")
    hnsw = client.get_collection(user_collection_name("bruno", uid, "messages", 0)).configuration
    assert (hnsw["hnsw"]["ef_search"], hnsw["hnsw"]["max_neighbors"]) == (64, 32)
    client.close()


@pytest.mark.parametrize(
    ("url", "argument"),
    [
        ("chroma://host/dir", "url"),
        ("chroma:///", "url"),
        ("chroma+grpc://h:1", "url"),
        ("chroma+http://h:1/path", "url"),
        ("chroma+http://user@h:1", "url"),
        ("chroma:///d?colour=red", "url"),
        ("chroma:///d?prefix=-bad", "prefix"),
        ("chroma:///d?prefix=a..b", "prefix"),
        ("chroma:///d?readers=0", "readers"),
        ("chroma:///d?hnsw_ef_search=1", "hnsw.ef_search"),
        ("chroma:///d?hnsw_ef_search=many", "url option hnsw_ef_search"),
    ],
)
def test_bad_urls_are_refused(url: str, argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        from_url(url, embedding_model=None)
    assert info.value.argument == argument


def test_unknown_index_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown setting"):
        ChromaMemory(None, tmp_path / "db", hnsw={"m": 4})


def test_the_embedding_model_may_come_first(tmp_path: Path) -> None:
    mem = ChromaMemory(None, tmp_path / "db")
    assert mem.embedder is None and mem.persist_directory == str(tmp_path / "db")
    keyword = ChromaMemory(embedding_model=None, persist_directory=tmp_path / "db")
    assert keyword.embedder is None


# ==================================================================== erasure

# Chroma's own write-ahead log: it keeps every recent write, erased ones included, until its
# vector segment persists and purges it (documented in docs/backends/chroma.md).
_CHROMA_LOG = "embeddings_queue"


def _rows_with(path: Path, words: set[str]) -> dict[str, set[str]]:
    """Which of ``words`` each table of Chroma's SQLite file holds (its log aside)."""
    conn = sqlite3.connect(path / "chroma.sqlite3")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found: dict[str, set[str]] = {}
        for table in tables:
            if table == _CHROMA_LOG or table.startswith("embedding_fulltext_search_"):
                continue  # the FTS5 shadow tables are read through their table
            text = repr(conn.execute(f'SELECT * FROM "{table}"').fetchall())
            for word in words:
                if word in text:
                    found.setdefault(word, set()).add(table)
        return found
    finally:
        conn.close()


async def test_erasure_leaves_no_record_rows_behind(tmp_path: Path) -> None:
    """Records, metadata (array values such as tags too) and full-text rows of erased data
    go; Chroma dropping a whole collection leaves its records' metadata and full-text rows
    behind, so forget_user deletes the records first."""
    memory = ChromaMemory(persist_directory=tmp_path / "chroma")
    try:
        done = await run_erasures(memory)
    finally:
        await memory.shutdown()
    found = _rows_with(tmp_path / "chroma", done.erased_words | done.kept)
    assert not set(found) & done.erased_words, found
    assert done.kept <= set(found)
