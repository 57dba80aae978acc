"""What only PineconeMemory promises: URLs and secrets, one namespace per user, the record
layout (ids listable in order, long values in parts within Pinecone's metadata limit),
reading this process's writes while Pinecone does not show them yet, and forgetting a user.

The shared semantics are checked by the conformance suite (``tests/conformance``). These
tests run against the fake index (``tests/fakes/pinecone_server.py``) through the official
SDK; no Pinecone account is needed.
"""

from __future__ import annotations

import socket
import uuid
from urllib.parse import quote

import pytest
from bruno_core.models.memory import MemoryQuery
from pinecone import AsyncIndex, Pinecone
from pinecone.errors.exceptions import ApiError

from _engines import PINECONE_FAKE_KEY as KEY
from bruno_memstore import open_memory
from bruno_memstore.backends.kit.kv import hash_id
from bruno_memstore.backends.pinecone import PineconeMemory
from bruno_memstore.backends.pinecone import store as store_module
from bruno_memstore.backends.pinecone.layout import META_BUDGET, metadata_bytes
from bruno_memstore.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    InvalidArgumentError,
)
from bruno_memstore.testing import make_memory_entry, make_message, new_user_id
from bruno_memstore.url import MemoryURL
from fakes.pinecone_server import FakePinecone


def _memory(fake: FakePinecone, **options: object) -> PineconeMemory:
    options.setdefault("embedding_model", None)
    options.setdefault("namespace", f"t{uuid.uuid4().hex[:12]}")
    return PineconeMemory(host=fake.host, api_key=KEY, **options)  # type: ignore[arg-type]


def _user_ns(mem: PineconeMemory, user_id: str) -> str:
    return f"{mem.prefix}.u.{hash_id(user_id)}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- URLs


def test_url_forms_and_redaction() -> None:
    url = "pinecone://:s3cr3t-key@memories?namespace=app&host=https://memories-x.svc.pinecone.io"
    mem = PineconeMemory.from_url(MemoryURL.parse(url), embedding_model=None)
    assert (mem.index_name, mem.prefix, mem.api_key) == ("memories", "app", "s3cr3t-key")
    assert mem.host == "https://memories-x.svc.pinecone.io"
    assert "s3cr3t" not in repr(mem) + mem.describe()
    plain = PineconeMemory.from_url(MemoryURL.parse("pinecone://idx"), embedding_model=None)
    assert (plain.index_name, plain.prefix, plain.host) == ("idx", "bruno", None)


@pytest.mark.parametrize(
    "url",
    [
        "pinecone://user:s3cr3t@idx",  # a user name means nothing here
        "pinecone://idx?api_key=s3cr3t",  # would be logged
        "pinecone+grpc://idx",
        "pinecone://idx:443",
        "pinecone://idx/path",
        "pinecone://idx?nope=1",
        "pinecone://idx?namespace=a.b",
        "pinecone://Bad_Index",
        "pinecone://:s3cr%C3%A4t@idx",  # not ASCII: cannot travel in a header
    ],
)
def test_url_refusals(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        PineconeMemory.from_url(MemoryURL.parse(url), embedding_model=None)
    assert "s3cr" not in str(caught.value)


async def test_unreachable_host_error_hides_the_key() -> None:
    secret = "k3y-" + uuid.uuid4().hex
    mem = PineconeMemory(None, host=f"http://127.0.0.1:{_closed_port()}", api_key=secret, timeout=2)
    with pytest.raises(BackendUnavailableError) as caught:
        await mem.initialize()
    text = f"{caught.value} {caught.value!r} {mem!r} {mem.describe()}"
    assert secret not in text
    await mem.shutdown()


async def test_a_wrong_key_is_an_error_without_the_key(pinecone_fake: FakePinecone) -> None:
    mem = PineconeMemory(None, host=pinecone_fake.host, api_key="wrong-k3y-123")
    with pytest.raises(BackendError) as caught:
        await mem.initialize()
    assert "wrong-k3y-123" not in f"{caught.value} {caught.value!r}"
    assert "Invalid API Key" in str(caught.value)


async def test_open_memory_by_url(pinecone_fake: FakePinecone) -> None:
    url = f"pinecone://:{quote(KEY)}@bruno-memory?host={quote(pinecone_fake.host)}&namespace=u1"
    mem = open_memory(url, embedding_model=None)
    assert isinstance(mem, PineconeMemory)
    uid = new_user_id()
    await mem.store_message(make_message("hello"), uid, "c")
    assert [m.content for m in await mem.retrieve_context(uid)] == ["hello"]
    await mem.shutdown()


async def test_index_too_small_for_the_model_is_refused() -> None:
    fake = FakePinecone(8, KEY).start()
    try:
        mem = PineconeMemory("default", host=fake.host, api_key=KEY)
        with pytest.raises(BackendError, match="8"):
            await mem.initialize()
        await mem.shutdown()
    finally:
        fake.stop()


# ----------------------------------------------------------------------------- layout


async def test_one_namespace_per_user(pinecone_fake: FakePinecone) -> None:
    mem = _memory(pinecone_fake)
    alice, bob = new_user_id(), new_user_id()
    await mem.store_message(make_message("alice words"), alice, "a-conv")
    await mem.store_message(make_message("bob words"), bob, "b-conv")
    await mem.store_memory(make_memory_entry(bob, "bob entry"))
    pinecone_fake.settle()
    mine = pinecone_fake.visible(_user_ns(mem, alice))
    texts = " ".join(str(meta) for _values, meta in mine.values())
    assert "alice words" in texts and "bob" not in texts
    theirs = " ".join(str(m) for _v, m in pinecone_fake.visible(_user_ns(mem, bob)).values())
    assert "bob words" in theirs and "bob entry" in theirs and "alice" not in theirs
    # The store's own namespace holds pointers: owners, never contents.
    meta = " ".join(str(m) for _v, m in pinecone_fake.visible(f"{mem.prefix}.meta").values())
    assert "words" not in meta and "entry" not in meta
    await mem.shutdown()


async def test_a_conversation_lists_in_order_across_pages(pinecone_fake: FakePinecone) -> None:
    """250 messages: three pages of Pinecone's list (100 ids each), read back in order."""
    mem = _memory(pinecone_fake)
    uid = new_user_id()
    msgs = [make_message(f"message {i}") for i in range(250)]
    await mem.store_messages(msgs, conversation_id="long", user_id=uid)
    pinecone_fake.settle()
    before = sum(1 for r in pinecone_fake.requests if r == ("GET", "/vectors/list"))
    got = await mem.retrieve_context(uid, limit=250)
    pages = sum(1 for r in pinecone_fake.requests if r == ("GET", "/vectors/list")) - before
    assert [m.id for m in got] == [m.id for m in msgs]
    assert pages >= 3
    ids = sorted(r for r in pinecone_fake.visible(_user_ns(mem, uid)) if r.startswith("m#"))
    assert len(ids) == 250  # one record per message: ids alone give the order
    await mem.shutdown()


async def test_a_long_message_is_kept_whole_in_parts(pinecone_fake: FakePinecone) -> None:
    mem = _memory(pinecone_fake)
    uid = new_user_id()
    # 1.2 million characters, 2.8 MB of UTF-8: over Pinecone's 2 MB per upsert request too.
    content = "é🌸x" * 400_000
    before = pinecone_fake.requests.count(("POST", "/vectors/upsert"))
    await mem.store_message(make_message(content), uid, "c")
    assert pinecone_fake.requests.count(("POST", "/vectors/upsert")) - before >= 3
    pinecone_fake.settle()
    records = pinecone_fake.visible(_user_ns(mem, uid))
    parts = [r for r in records if r.startswith("p#")]
    assert len(parts) > 10
    assert all(metadata_bytes(meta) <= META_BUDGET for _v, meta in records.values())
    [back] = await mem.retrieve_context(uid)
    assert back.content == content
    # Cleared: the parts go with their message.
    await mem.clear_conversation(uid, "c")
    pinecone_fake.settle()
    assert not [r for r in pinecone_fake.visible(_user_ns(mem, uid)) if r.startswith(("m#", "p#"))]
    await mem.shutdown()


async def test_the_fake_refuses_metadata_over_40_kb(pinecone_fake: FakePinecone) -> None:
    """Pinecone's documented limit, which the layout stays under."""
    async with AsyncIndex(host=pinecone_fake.host, api_key=KEY) as index:
        vector = [1.0] + [0.0] * (pinecone_fake.dimension - 1)
        with pytest.raises(ApiError, match="exceeds the limit"):
            await index.upsert(
                vectors=[{"id": "big", "values": vector, "metadata": {"d": "x" * 41_000}}],
                namespace=f"n{uuid.uuid4().hex}",
            )


async def test_forget_user_deletes_the_namespace(pinecone_fake: FakePinecone) -> None:
    mem = _memory(pinecone_fake)
    uid, other = new_user_id(), new_user_id()
    await mem.store_message(make_message("to forget"), uid, "c1")
    await mem.store_memory(make_memory_entry(uid, "forgotten fact"))
    await mem.get_context(uid, "c1")  # a session in the conversation
    await mem.store_message(make_message("to keep"), other, "c2")
    counts = await mem.forget_user(uid)
    assert counts == {"messages": 1, "conversations": 1, "sessions": 1, "memories": 1}
    assert _user_ns(mem, uid) not in pinecone_fake.namespaces()
    pinecone_fake.settle()
    meta = pinecone_fake.visible(f"{mem.prefix}.meta")
    assert not [m for _v, m in meta.values() if m.get("user") == uid]
    assert await mem.retrieve_context(uid) == []
    assert [m.content for m in await mem.retrieve_context(other)] == ["to keep"]
    await mem.shutdown()


# ----------------------------------------------------------------------------- consistency


async def test_own_writes_read_back_while_pinecone_shows_none(
    pinecone_fake: FakePinecone,
) -> None:
    """While the index applies nothing (the fake's hold), this process still reads what
    it wrote and does not read what it deleted."""
    mem = _memory(pinecone_fake)
    uid = new_user_id()
    await mem.initialize()
    with pinecone_fake.hold():
        first, second = make_message("first words"), make_message("second words")
        await mem.store_message(first, uid, "c")
        await mem.store_message(second, uid, "c")
        await mem.store_memory(entry := make_memory_entry(uid, "a fact about tea"))
        assert pinecone_fake.visible(_user_ns(mem, uid)) == {}  # Pinecone shows nothing yet
        assert [m.id for m in await mem.retrieve_context(uid)] == [first.id, second.id]
        assert (await mem.search(uid, "tea"))[0].memory is not None
        await mem.delete_memory(str(entry.id), user_id=uid)
        await mem.clear_conversation(uid, "c")
        assert await mem.retrieve_context(uid) == []
        assert await mem.search(uid, "tea") == []
    await mem.shutdown()


async def test_a_new_instance_of_the_process_reads_them_too(pinecone_fake: FakePinecone) -> None:
    first = _memory(pinecone_fake)
    uid = new_user_id()
    with pinecone_fake.hold():
        await first.store_message(make_message("said before"), uid, "c")
        await first.shutdown()
        second = _memory(pinecone_fake, namespace=first.prefix)
        assert [m.content for m in await second.retrieve_context(uid)] == ["said before"]
        await second.shutdown()


async def test_vector_query_waits_for_the_index(pinecone_fake_lagging: FakePinecone) -> None:
    mem = _memory(pinecone_fake_lagging, embedding_model="default")
    uid = new_user_id()
    await mem.store_message(make_message("the grey kitten sleeps"), uid, "c")
    await mem.store_message(make_message("stock markets fell"), uid, "c")
    found = await mem.search(uid, "a cat napping", mode="vector")
    assert found and found[0].content == "the grey kitten sleeps"
    await mem.shutdown()


async def test_vector_query_gives_up_after_visibility_timeout(
    pinecone_fake: FakePinecone,
) -> None:
    mem = _memory(pinecone_fake, embedding_model="default", visibility_timeout=0.5)
    uid = new_user_id()
    await mem.initialize()
    with pinecone_fake.hold():
        await mem.store_message(make_message("the grey kitten sleeps"), uid, "c")
        with pytest.raises(BackendTimeoutError, match="visibility_timeout"):
            await mem.search(uid, "kitten", mode="vector")
    # Once the index has caught up, the same query answers.
    pinecone_fake.settle()
    assert (await mem.search(uid, "kitten", mode="vector"))[0].content == "the grey kitten sleeps"
    await mem.shutdown()


# ----------------------------------------------------------------------------- the fake


async def test_the_fake_answers_in_the_sdks_models(pinecone_fake: FakePinecone) -> None:
    """Every call the backend makes, decoded by the SDK's own response models
    (``pinecone/models/vectors/responses.py``; in SDK 10 ``pinecone.core.openapi.db_data``
    only re-exports them), with the documented filter semantics."""
    ns = f"n{uuid.uuid4().hex}"
    one = [1.0] + [0.0] * (pinecone_fake.dimension - 1)
    two = [0.0, 1.0] + [0.0] * (pinecone_fake.dimension - 2)
    async with AsyncIndex(host=pinecone_fake.host, api_key=KEY) as index:
        done = await index.upsert(
            vectors=[
                {"id": "a#1", "values": one, "metadata": {"tags": ["x", "y"], "n": 1}},
                {"id": "a#2", "values": two, "metadata": {"tags": ["z"], "n": 2, "s": "q"}},
                {"id": "b#1", "values": one, "metadata": {"n": 3}},
            ],
            namespace=ns,
        )
        assert done.upserted_count == 3
        assert done.response_info is not None and done.response_info.lsn_committed == 1
        found = await index.query(vector=one, top_k=2, namespace=ns, include_metadata=True)
        assert [m.id for m in found.matches] == ["a#1", "b#1"]
        assert found.matches[0].score == pytest.approx(1.0)
        assert found.response_info is not None and found.response_info.lsn_reconciled == 1

        async def ids(flt: dict[str, object]) -> list[str]:
            got = await index.query(vector=one, top_k=10, namespace=ns, filter=flt)
            return sorted(m.id for m in got.matches)

        # https://docs.pinecone.io/guides/search/filter-by-metadata
        assert await ids({"tags": {"$in": ["y", "q"]}}) == ["a#1"]
        assert await ids({"tags": "z"}) == ["a#2"]
        assert await ids({"tags": {"$nin": ["x"]}}) == ["a#2", "b#1"]
        assert await ids({"s": {"$exists": True}}) == ["a#2"]
        assert await ids({"$or": [{"n": {"$gte": 3}}, {"n": {"$lt": 2}}]}) == ["a#1", "b#1"]
        assert await ids({"$and": [{"n": {"$gt": 1}}, {"n": {"$ne": 3}}]}) == ["a#2"]
        fetched = await index.fetch(ids=["a#2", "missing"], namespace=ns)
        assert list(fetched.vectors) == ["a#2"]
        assert fetched.vectors["a#2"].metadata == {"tags": ["z"], "n": 2, "s": "q"}
        page = await index.list_paginated(prefix="a#", limit=1, namespace=ns)
        assert [v.id for v in page.vectors] == ["a#1"] and page.pagination is not None
        rest = await index.list_paginated(
            prefix="a#", limit=1, namespace=ns, pagination_token=page.pagination.next
        )
        assert [v.id for v in rest.vectors] == ["a#2"] and rest.pagination is None
        stats = await index.describe_index_stats()
        assert stats.dimension == pinecone_fake.dimension and stats.metric == "cosine"
        assert stats.namespaces[ns].vector_count == 3
        await index.delete(ids=["b#1"], namespace=ns)
        await index.delete_namespace(name=ns)
        assert ns not in (await index.describe_index_stats()).namespaces
        with pytest.raises(ApiError, match="not found"):
            await index.delete_namespace(name=ns)


async def test_written_records_leave_the_journal_once_indexed(
    pinecone_fake: FakePinecone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal holds a write only until a query reports its LSN indexed."""
    monkeypatch.setattr(store_module, "PROBE_EVERY", 0.0)
    mem = _memory(pinecone_fake)
    uid = new_user_id()
    await mem.initialize()
    with pinecone_fake.hold():
        await mem.store_message(make_message("kept"), uid, "c")
        journal = mem._store.shared.journal(_user_ns(mem, uid))
        assert journal.lsn
        await mem.retrieve_context(uid)  # probes: nothing indexed yet
        assert journal.lsn
    pinecone_fake.settle()
    assert [m.content for m in await mem.retrieve_context(uid)] == ["kept"]
    assert not journal.lsn and not journal.records
    assert [m.content for m in await mem.retrieve_context(uid)] == ["kept"]  # from Pinecone
    await mem.shutdown()


def test_the_run_cleans_its_namespaces_up(
    pinecone_fake: FakePinecone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the service fixture does after a run (shown on the fake)."""
    import _engines as engines

    monkeypatch.setenv("PINECONE_API_KEY", KEY)
    prefix = f"gone{uuid.uuid4().hex[:8]}"
    one = [1.0] + [0.0] * (pinecone_fake.dimension - 1)
    kept = f"kept{uuid.uuid4().hex[:8]}"
    handle = Pinecone(api_key=KEY).index(host=pinecone_fake.host)
    for ns in (f"{prefix}.a", f"{prefix}.b", kept):
        handle.upsert(vectors=[{"id": "x", "values": one}], namespace=ns)
    engines.drop_pinecone_namespaces("bruno-memory", pinecone_fake.host, prefix)
    names = pinecone_fake.namespaces()
    assert kept in names and not [n for n in names if n.startswith(prefix)]


async def test_large_filter_fields_push_the_value_into_parts(
    pinecone_fake: FakePinecone,
) -> None:
    """Tags are filterable, so they stay on the head: with 31 KB of them the whole value
    goes to parts; with more than the head can hold, nothing is written."""
    mem = _memory(pinecone_fake)
    uid = new_user_id()
    tags = [f"tag-{i:05d}-{'t' * 40}" for i in range(600)]  # about 31 KB
    entry = make_memory_entry(uid, "many tags", tags=tags)
    await mem.store_memory(entry)
    pinecone_fake.settle()
    heads = {
        r: m for r, (_v, m) in pinecone_fake.visible(_user_ns(mem, uid)).items() if r[0] == "e"
    }
    [head] = heads.values()
    assert "d" not in head and head["d0"] is False
    [back] = await mem.retrieve_memories(MemoryQuery(user_id=uid, tags=[tags[-1]]))
    assert back.id == entry.id and back.metadata.tags == tags
    more = [f"more-{i:05d}-{'t' * 40}" for i in range(600)]
    too_many = make_memory_entry(uid, "too many tags", tags=tags + more)
    with pytest.raises(InvalidArgumentError, match="too large"):
        await mem.store_memory(too_many)
    assert [m.id for m in await mem.retrieve_memories(MemoryQuery(user_id=uid))] == [entry.id]
    await mem.shutdown()
