"""What only MongoMemory promises: its URL and options, the layout it creates (indexes, the
schema-version document, the TTL index), both ways of writing multi-document steps
(transactions, and ordered writes without them), ``$text`` search, the document-size limit,
and a clear error when the server is down.

The shared semantics are checked by the conformance suite (``tests/conformance``). These
tests run on the two MongoDB wire-protocol emulators the project's scripts start: SecantusDB
(transactions, no text index) and nx-27017 (``$text``, no transactions).
"""

from __future__ import annotations

import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest

import _engines as engines
from bruno_memstore.backends.mongo import MongoMemory
from bruno_memstore.backends.mongo.layout import SCHEMA_VERSION
from bruno_memstore.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidArgumentError,
    SchemaError,
)
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing import at, make_memory_entry, make_message, new_user_id
from bruno_memstore.url import MemoryURL
from faults._ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def _prefix() -> str:
    return f"{engines.MONGO_PREFIX}_{uuid.uuid4().hex[:8]}"


def _memory(url: str, **options: Any) -> MongoMemory:
    return MongoMemory(url, prefix=_prefix(), embedding_model=None, connect_timeout=5, **options)


def _collection(url: str, memory: MongoMemory, kind: str) -> Any:
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=2000)
    return client, client[memory.database][getattr(memory.layout, kind)]


# ==================================================================== URL and options


def test_url_options_are_ours_and_the_rest_go_to_pymongo() -> None:
    url = "mongodb://app:s3cret@db.internal:27017/assistant?prefix=bot&transactions=false&replicaSet=rs0"
    memory = MongoMemory.from_url(MemoryURL.parse(url))
    assert (memory.database, memory.layout.prefix, memory.transactions) == (
        "assistant",
        "bot",
        False,
    )
    assert memory.layout.messages == "bot_messages"
    assert memory._driver_url == "mongodb://app:s3cret@db.internal:27017/assistant?replicaSet=rs0"
    assert "s3cret" not in repr(memory) and "s3cret" not in memory.describe()
    srv = MongoMemory("mongodb+srv://cluster0.example.net/?text_search=kit", database="other")
    assert (srv.database, srv.text_mode, srv.transactions) == ("other", "kit", None)
    with pytest.raises(InvalidArgumentError, match="text_search"):
        MongoMemory("mongodb://h/?text_search=fuzzy")
    with pytest.raises(InvalidArgumentError, match="url"):
        MongoMemory("redis://h:6379/0")


def test_the_entry_point_table_names_both_schemes_and_the_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["bruno.memory_backends"]["mongodb"] == (
        "bruno_memstore.backends.mongo:MongoMemory [mongodb]"
    )
    assert any(d.startswith("pymongo>=4.13") for d in project["optional-dependencies"]["mongodb"])
    # mongodb+srv:// is the same scheme with a driver part, as every URL parser here reads it.
    assert MemoryURL.parse("mongodb+srv://h/db").scheme == "mongodb"


# ==================================================================== layout


async def test_indexes_ttl_and_schema_version_are_created_once(mongo_url: str) -> None:
    memory = _memory(mongo_url)
    await memory.initialize()
    await memory.shutdown()
    again = MongoMemory(mongo_url, prefix=memory.layout.prefix, embedding_model=None)
    await again.initialize()  # idempotent on an existing store
    assert again.schema_version == SCHEMA_VERSION
    client, meta = _collection(mongo_url, memory, "meta")
    with client:
        assert meta.find_one({"_id": "schema"})["version"] == SCHEMA_VERSION
        memories = meta.database[memory.layout.memories].index_information()
        ttl = [spec for spec in memories.values() if "expireAfterSeconds" in spec]
        assert [(s["key"], s["expireAfterSeconds"]) for s in ttl] == [([("expires_at", 1)], 0)]
        messages = meta.database[memory.layout.messages].index_information()
        keys = {tuple(spec["key"]) for spec in messages.values()}
        assert (("conversation_id", 1), ("ts_us", 1), ("seq", 1)) in keys
        assert (("user_id", 1), ("ts_us", 1), ("seq", 1)) in keys
        meta.update_one({"_id": "schema"}, {"$set": {"version": SCHEMA_VERSION + 1}})
    await again.shutdown()
    newer = MongoMemory(mongo_url, prefix=memory.layout.prefix, embedding_model=None)
    with pytest.raises(SchemaError, match="newer than this code"):
        await newer.initialize()


async def test_expired_entries_are_never_read_before_the_ttl_monitor_runs(mongo_url: str) -> None:
    async with _memory(mongo_url) as memory:
        uid = new_user_id()
        gone = make_memory_entry(uid, "expired", expires_at=at(0))
        kept = make_memory_entry(uid, "kept")
        for entry in (gone, kept):
            await memory.store_memory(entry)
        client, memories = _collection(mongo_url, memory, "memories")
        with client:
            stored = memories.find_one({"_id": str(gone.id)})
        assert stored["expires_at"].year == gone.expires_at.year  # a date, for the TTL monitor
        from bruno_core.models import MemoryQuery

        seen = await memory.retrieve_memories(MemoryQuery(user_id=uid))
        assert [e.id for e in seen] == [kept.id]
        assert await memory.purge_expired() >= 1


# ==================================================================== multi-document steps


class _FailingInserts:
    """A collection whose ``insert_many`` fails: a step that dies after its claim."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def insert_many(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the server went away mid-step")


@pytest.mark.parametrize("transactions", [True, False], ids=["transaction", "ordered"])
async def test_a_failed_append_never_leaves_messages_without_their_claim(
    mongo_url: str, transactions: bool
) -> None:
    async with _memory(mongo_url, transactions=transactions) as memory:
        assert memory.transactions is transactions
        uid, conversation = new_user_id(), f"c-{uuid.uuid4().hex}"
        healthy = memory._messages
        memory._messages = _FailingInserts(healthy)
        with pytest.raises(BackendError, match="went away"):
            await memory.store_message(make_message("lost"), uid, conversation)
        memory._messages = healthy
        assert await memory.retrieve_messages(conversation) == []
        # In a transaction the claim went with the messages; without one it stays, empty,
        # and the next append completes the conversation.
        owner = await memory.conversation_owner(conversation)
        assert owner == (None if transactions else uid)
        await memory.store_message(make_message("kept"), uid, conversation)
        assert [m.content for m in await memory.retrieve_messages(conversation)] == ["kept"]
        assert await memory.conversation_owner(conversation) == uid


async def test_writes_are_journaled_unless_the_url_says_otherwise(mongo_url: str) -> None:
    async with _memory(mongo_url) as memory:
        assert memory._client.write_concern.document == {"j": True}
    async with _memory(mongo_url + "&journal=false") as memory:
        assert memory._client.write_concern.document == {"j": False}


async def test_transactions_follow_the_deployment(mongo_url: str, mongo_nx_url: str) -> None:
    async with _memory(mongo_url) as secantus, _memory(mongo_nx_url) as nx:
        assert secantus.transactions is True  # a replica set to pymongo
        assert nx.transactions is False  # a standalone server


# ==================================================================== keyword search


async def test_text_search_uses_the_servers_text_index_where_it_has_one(
    mongo_url: str, mongo_nx_url: str
) -> None:
    async with _memory(mongo_nx_url, text_search="server") as memory:
        assert memory.server_text
        alice, bob = new_user_id(), new_user_id()
        await memory.store_message(make_message("a ripe mango for breakfast"), alice, "a-" + alice)
        await memory.store_message(make_message("mango smoothie recipe"), bob, "b-" + bob)
        await memory.store_memory(make_memory_entry(alice, "alice likes mango"))
        found = await memory.search(alice, "mango", limit=10)
        assert {r.message.content if r.message else r.memory.content for r in found} == {
            "a ripe mango for breakfast",
            "alice likes mango",
        }
        assert await memory.search(alice, "smoothie") == []  # bob's words stay bob's
    async with _memory(mongo_url) as secantus:
        assert not secantus.server_text  # no text index there: the kit's keyword index
        uid = new_user_id()
        await secantus.store_message(make_message("papaya season"), uid, "c-" + uid)
        assert [m.content for m in await secantus.search_messages("papaya", uid)] == [
            "papaya season"
        ]
    with pytest.raises(BackendError, match="text index"):
        async with _memory(mongo_url, text_search="server"):
            pass


# ==================================================================== limits and faults


async def test_a_record_beyond_the_document_limit_is_refused_before_writing(mongo_url: str) -> None:
    async with _memory(mongo_url) as memory:
        uid = new_user_id()
        with pytest.raises(InvalidArgumentError, match="16 MB"):
            await memory.store_message(make_message("x" * (16 * 1024 * 1024)), uid, "c-" + uid)
        assert await memory.conversation_owner("c-" + uid) is None


async def test_down_at_start_fails_fast_with_a_redacted_url() -> None:
    port = free_port()
    memory = MongoMemory(
        f"mongodb://app:s3cret-pw@127.0.0.1:{port}/db?directConnection=true",
        connect_timeout=1.0,
        retry=RetryPolicy(attempts=1),
        embedding_model=None,
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await memory.initialize()
    assert time.monotonic() - started < 5.0
    shown = f"{info.value} {info.value!r} {memory!r}"
    assert "s3cret-pw" not in shown
    assert f"mongodb://app:***@127.0.0.1:{port}/db" in str(info.value)
    with pytest.raises(BackendUnavailableError):
        await memory.store_message(make_message("hello"), new_user_id(), "conv")


# ==================================================================== copy


async def test_copy_into_mongodb_and_out_again(mongo_url: str, mongo_nx_url: str) -> None:
    from bruno_memstore import InMemoryStorage
    from bruno_memstore.transfer import copy
    from test_transfer import canonical, export_text, populate

    src, back = InMemoryStorage(), InMemoryStorage()
    await populate(src)
    async with _memory(mongo_url) as secantus, _memory(mongo_nx_url) as nx:
        # nx-27017 deletes an entry past its TTL at once, MongoDB within a minute: the copy
        # of an expired entry is compared with the TTL index dropped (as in the suite).
        engines.drop_ttl_indexes(mongo_nx_url, nx.layout.memories)
        counts = await copy(src, secantus)
        assert (counts.conversations, counts.messages, counts.memories) == (4, 8, 3)
        assert (await copy(src, secantus)).existing_messages == 8  # again: nothing new
        await copy(secantus, nx)  # between the two emulators: both write modes
        await copy(nx, back)
        original = canonical(await export_text(src))
        for memory in (secantus, nx, back):
            assert canonical(await export_text(memory)) == original
        # Between stores of one backend the export is byte-identical.
        assert await export_text(nx) == await export_text(secantus)
