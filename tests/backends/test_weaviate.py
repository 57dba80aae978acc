"""What only WeaviateMemory promises: URLs and secrets, the layout (a tenant per user, the
registry), batches that Weaviate refuses in part, and how its scores map to ours.

Every test runs against the fake Weaviate of ``tests/fakes/weaviate`` (Weaviate's REST and
gRPC APIs over an in-process store), driven by the unmodified official client; the tests
that look inside the engine read the fake's store.
"""

from __future__ import annotations

import math
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from bruno_memstore import open_memory
from bruno_memstore.backends.weaviate import WeaviateMemory
from bruno_memstore.backends.weaviate.layout import registry_id, tenant_of, unexact
from bruno_memstore.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidArgumentError,
    OwnershipError,
)
from bruno_memstore.models import SearchRequest
from bruno_memstore.registry import known_schemes
from bruno_memstore.search import BM25Index, index_text
from bruno_memstore.testing import make_memory_entry, make_message, new_user_id
from bruno_memstore.url import MemoryURL
from fakes.weaviate import FakeWeaviate

ROOT = Path(__file__).resolve().parents[2]
KEY = "k3y-Secret-9z"


def from_url(url: str, **options: object) -> WeaviateMemory:
    return WeaviateMemory.from_url(MemoryURL.parse(url), **options)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeaviate]:
    with FakeWeaviate() as server:
        yield server


@pytest_asyncio.fixture
async def memory(
    fake: FakeWeaviate, request: pytest.FixtureRequest
) -> AsyncIterator[WeaviateMemory]:
    prefix = "T" + registry_id("meta", request.node.nodeid).replace("-", "")[:12]
    mem = from_url(fake.url, prefix=prefix, embedding_model=None)
    async with mem:
        yield mem


def objects(fake: FakeWeaviate, mem: WeaviateMemory, kind: str) -> dict[str, dict]:
    """The fake's objects of one collection, by tenant."""
    coll = fake.store.collection(getattr(mem.layout, kind))
    return {t: dict(objs) for t, objs in coll.tenants.items()}


# ---------------------------------------------------------------- URLs and secrets


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("weaviate://db:8080", "weaviate://db:8080?grpc_port=50051"),
        ("weaviate://db", "weaviate://db:8080?grpc_port=50051"),
        ("weaviate+http://db:9000?grpc_port=9001", "weaviate://db:9000?grpc_port=9001"),
        ("weaviate+https://db", "weaviate+https://db:443?grpc_port=50051"),
        (
            f"weaviate+https://:{KEY}@db:8443?grpc_port=443&grpc_host=grpc.db&prefix=App",
            "weaviate+https://:***@db:8443?grpc_port=443&grpc_host=grpc.db&prefix=App",
        ),
    ],
)
def test_urls(url: str, described: str) -> None:
    mem = from_url(url, embedding_model=None)
    assert mem.describe() == described
    assert KEY not in repr(mem) and KEY not in str(mem)


@pytest.mark.parametrize(
    "url",
    [
        f"weaviate://db:8080?api_key={KEY}",  # would be logged un-redacted
        f"weaviate://user:{KEY}@db:8080",
        "weaviate+grpc://db:50051",
        "weaviate://db:8080/path",
        "weaviate:///nohost",
        "weaviate://db:8080?grpc_port=x",
        "weaviate://db:8080?unknown=1",
        "weaviate://db:8080?prefix=lower",  # a class name starts with a capital
    ],
)
def test_bad_urls_are_refused_without_the_key(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        from_url(url, embedding_model=None)
    assert KEY not in str(info.value)


def test_constructor_arguments() -> None:
    mem = WeaviateMemory(None, "https://:k@db", grpc_port=443)
    assert mem.describe() == "weaviate+https://:***@db:443?grpc_port=443"
    with pytest.raises(InvalidArgumentError, match="api_key"):
        WeaviateMemory(None, "https://:k@db", api_key="other")
    with pytest.raises(InvalidArgumentError, match="api_key"):
        WeaviateMemory(None, "https://db", api_key="caf\u00e9")  # sent in a header
    with pytest.raises(InvalidArgumentError, match="url"):
        WeaviateMemory(None, "ftp://db")


def test_the_scheme_is_a_builtin_entry_point_with_its_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    points = project["entry-points"]["bruno.memory_backends"]
    assert points["weaviate"] == "bruno_memstore.backends.weaviate:WeaviateMemory [weaviate]"
    extras = project["optional-dependencies"]
    assert any(dep.startswith("weaviate-client>=4.16") for dep in extras["weaviate"])
    assert "weaviate" in extras["all"][0]


async def test_open_memory(fake: FakeWeaviate) -> None:
    assert "weaviate" in known_schemes()
    mem = open_memory(fake.url + "&prefix=Opened", embedding_model=None)
    assert isinstance(mem, WeaviateMemory)
    async with mem:
        user = new_user_id()
        await mem.store_message(make_message("opened by url"), user, "conv")
        assert [m.content for m in await mem.retrieve_context(user, "", limit=5)] == [
            "opened by url"
        ]


async def test_an_api_key_is_sent_and_never_shown() -> None:
    with FakeWeaviate(api_key=KEY) as server:
        good = from_url(server.url.replace("://", f"://:{KEY}@"), embedding_model=None)
        async with good:
            user = new_user_id()
            await good.store_message(make_message("with a key"), user, "c")
            assert len(await good.retrieve_context(user, "", limit=5)) == 1
        # The fake answers 401 to another key, and nothing shows either key.
        wrong = from_url(server.url.replace("://", "://:wrong-key@"), embedding_model=None)
        with pytest.raises(BackendError) as info:
            await wrong.get_statistics("someone")
        await wrong.shutdown()
        for text in (str(info.value), repr(info.value), repr(wrong), wrong.describe()):
            assert "wrong-key" not in text and KEY not in text


async def test_an_unreachable_server_is_unavailable() -> None:
    mem = from_url("weaviate://127.0.0.1:1?grpc_port=2", embedding_model=None, timeout=2)
    with pytest.raises(BackendUnavailableError):
        await mem.get_statistics("someone")
    await mem.shutdown()


# ---------------------------------------------------------------- layout and tenants


async def test_each_user_has_a_tenant(fake: FakeWeaviate, memory: WeaviateMemory) -> None:
    alice, bob = new_user_id(), new_user_id()
    await memory.store_message(make_message("alice speaks"), alice, "ca")
    await memory.store_message(make_message("bob speaks"), bob, "cb")
    await memory.store_memory(make_memory_entry(alice, "alice likes tea"))
    msgs = objects(fake, memory, "messages")
    assert set(msgs) == {tenant_of(alice), tenant_of(bob)}
    # BM25 reads the analyzer's terms; the record itself is the JSON in ``doc``.
    (stored,) = msgs[tenant_of(alice)].values()
    assert stored.props["terms"] == index_text("alice speaks")
    assert '"alice speaks"' in stored.props["doc"]
    assert set(objects(fake, memory, "memories")) == {tenant_of(alice)}
    # The registry says who owns each id, without tenants.
    reg = objects(fake, memory, "registry")[""]
    owners = {(unexact(o.props["kind"]), unexact(o.props["user_id"])) for o in reg.values()}
    assert {("conversation", alice), ("conversation", bob), ("memory", alice)} <= owners


async def test_forget_user_deletes_the_tenants(fake: FakeWeaviate, memory: WeaviateMemory) -> None:
    alice, bob = new_user_id(), new_user_id()
    await memory.store_message(make_message("alice speaks"), alice, "ca")
    await memory.store_message(make_message("bob speaks"), bob, "cb")
    await memory.store_memory(make_memory_entry(alice, "alice likes tea"))
    await memory.create_session(alice)  # in a conversation of its own
    counts = await memory.forget_user(alice)
    assert counts == {"messages": 1, "conversations": 2, "sessions": 1, "memories": 1}
    for kind in ("messages", "memories", "sessions"):
        assert tenant_of(alice) not in objects(fake, memory, kind)
    assert tenant_of(bob) in objects(fake, memory, "messages")
    reg = objects(fake, memory, "registry")[""]
    assert all(unexact(o.props["user_id"]) != alice for o in reg.values())
    # The user can come back, in a new tenant.
    await memory.store_message(make_message("alice again"), alice, "ca2")
    assert [m.content for m in await memory.retrieve_context(alice, "", limit=5)] == ["alice again"]


async def test_ids_differing_in_outer_whitespace_stay_apart(memory: WeaviateMemory) -> None:
    # Weaviate trims whitespace off `field` tokens; the stored values are bracketed so that
    # "x" and " x" stay two conversations, two users, two tags.
    bob = new_user_id()
    spaced = " " + bob
    await memory.store_message(make_message("in x"), bob, "x")
    await memory.store_message(make_message("in spaced x"), bob, " x ")
    window = await memory.retrieve_context(bob, "", limit=5, conversation_id="x")
    assert [m.content for m in window] == ["in x"]
    await memory.store_message(make_message("the other bob"), spaced, "other")
    await memory.store_memory(make_memory_entry(bob, "tagged", tags=[" urgent"]))
    from bruno_core.models import MemoryQuery

    assert await memory.retrieve_memories(MemoryQuery(user_id=bob, tags=["urgent"])) == []
    await memory.forget_user(bob)
    assert [m.content for m in await memory.retrieve_context(spaced, "", limit=5)] == [
        "the other bob"
    ]
    assert await memory.conversation_owner("other") == spaced


async def test_reading_a_user_without_a_tenant_finds_nothing(memory: WeaviateMemory) -> None:
    # Weaviate answers "tenant not found" to reads of a tenant never written.
    user = new_user_id()
    assert await memory.retrieve_context(user, "anything", limit=5) == []
    assert await memory.search_memories(user, "anything") == []
    assert (await memory.get_statistics(user))["total_messages"] == 0


# ---------------------------------------------------------------- batches refused in part


async def test_a_batch_refused_in_part_keeps_nothing(
    fake: FakeWeaviate, memory: WeaviateMemory
) -> None:
    user = new_user_id()
    await memory.store_message(make_message("before"), user, "conv")
    batch = [make_message(f"message {i}") for i in range(5)]
    batch[3] = make_message("poison message")
    fake.store.refuse = lambda coll, props: (
        "refused by the test" if "poison" in str(props.get("doc", "")) else None
    )
    try:
        with pytest.raises(BackendError) as info:
            await memory.store_messages(batch, conversation_id="conv", user_id=user)
    finally:
        fake.store.refuse = None
    # Weaviate kept the other four; the backend took them back, and says which object failed.
    assert "refused 1 of 5" in str(info.value)
    assert "refused by the test" in str(info.value)
    assert [m.content for m in await memory.retrieve_context(user, "", limit=50)] == ["before"]
    assert await memory._get_messages([str(m.id) for m in batch]) == []
    reg = objects(fake, memory, "registry")[""]
    assert not {registry_id("message", str(m.id)) for m in batch} & set(reg)
    # Nothing is left half-written: the same batch goes in whole when retried.
    assert await memory.store_messages(batch, conversation_id="conv", user_id=user) == 5
    assert len(await memory.retrieve_context(user, "", limit=50)) == 6


async def test_a_refused_first_write_claims_no_conversation(
    fake: FakeWeaviate, memory: WeaviateMemory
) -> None:
    alice, bob = new_user_id(), new_user_id()
    fake.store.refuse = lambda coll, props: "no" if coll.endswith("Message") else None
    try:
        with pytest.raises(BackendError):
            await memory.store_message(make_message("first"), alice, "fresh")
    finally:
        fake.store.refuse = None
    assert await memory.conversation_owner("fresh") is None
    await memory.store_message(make_message("bob's now"), bob, "fresh")
    with pytest.raises(OwnershipError):
        await memory.store_message(make_message("alice again"), alice, "fresh")


async def test_a_refused_replacement_keeps_the_old_entry(
    fake: FakeWeaviate, memory: WeaviateMemory
) -> None:
    user = new_user_id()
    entry = make_memory_entry(user, "the old text")
    await memory.store_memory(entry)
    entry.content = "the new text"
    fake.store.refuse = lambda coll, props: "no" if coll.endswith("Memory") else None
    try:
        with pytest.raises(BackendError):
            await memory.store_memory(entry)
    finally:
        fake.store.refuse = None
    stored = await memory.get_memory(str(entry.id))
    assert stored is not None and stored.content == "the old text"


async def test_an_interrupted_append_is_completed_by_the_retry(memory: WeaviateMemory) -> None:
    # A crash between the registry rows and the message objects leaves ids registered with
    # no message: the retried write stores them (existence is read on the messages).
    user = new_user_id()
    msg = make_message("registered, never stored")
    await memory._s.register("message", [(str(msg.id), user)])
    assert await memory._get_messages([str(msg.id)]) == []
    assert await memory.store_messages([msg], conversation_id="c", user_id=user) == 1
    assert [m.content for m in await memory.retrieve_context(user, "", limit=5)] == [
        "registered, never stored"
    ]


# ---------------------------------------------------------------- scores


async def test_bm25_scores_are_weaviates_and_rank_like_ours(memory: WeaviateMemory) -> None:
    user = new_user_id()
    texts = [
        "green tea in the morning",
        "green tea and green apples",
        "coffee in the afternoon",
        "black tea, no sugar",
    ]
    msgs = [make_message(t) for t in texts]
    await memory.store_messages(msgs, conversation_id="c", user_id=user)
    request = SearchRequest(user_id=user, query="green tea", kinds=frozenset({"message"}), limit=10)
    hits = await memory._text_search(request)
    # Weaviate's BM25 (k1 1.2, b 0.75) over the analyzer's terms of the user's messages is
    # the same formula as our own index over the same texts.
    ours = BM25Index()
    for m in msgs:
        ours.add(str(m.id), m.content)
    expected = ours.search("green tea")
    got = {h.message.id: h.score for h in hits if h.message is not None}
    assert set(got) == set(expected)
    for key, score in expected.items():
        assert math.isclose(got[key], score, rel_tol=1e-5)
    # Engine scores are unbounded; the shared layer maps them into [0, 1], best = 1.
    results = await memory.search(user, "green tea", kinds=("message",), mode="keyword")
    scores = [r.score for r in results]
    assert scores[0] == 1.0 and all(0.0 <= x <= 1.0 for x in scores)
    assert results[0].message is not None and results[0].message.content == texts[1]


async def test_vector_scores_are_one_minus_cosine_distance(fake: FakeWeaviate) -> None:
    mem = from_url(fake.url, prefix="Vectors")  # the default local model
    async with mem:
        user = new_user_id()
        await mem.store_message(make_message("the quick brown fox"), user, "c")
        await mem.store_message(make_message("a slow green turtle"), user, "c")
        assert mem.embedder is not None
        vector = await mem.embedder.embed_one("the quick brown fox")
        request = SearchRequest(user_id=user, query="", kinds=frozenset({"message"}), limit=5)
        hits = await mem._vector_search(request, vector)
        assert hits[0].message is not None and hits[0].message.content == "the quick brown fox"
        assert math.isclose(hits[0].score, 1.0, abs_tol=1e-5)
        other = hits[1]
        assert other.message is not None
        v2 = await mem.embedder.embed_one(other.message.content)
        cosine = float(np.dot(vector, v2) / (np.linalg.norm(vector) * np.linalg.norm(v2)))
        assert math.isclose(other.score, cosine, abs_tol=1e-5)


# ---------------------------------------------------------------- cost


async def test_cost_per_operation(fake: FakeWeaviate, memory: WeaviateMemory) -> None:
    """The round trips docs/backends/weaviate.md lists (all gRPC; no REST on these paths)."""
    user = new_user_id()
    await memory.store_message(make_message("warm up"), user, "c")

    async def cost(step: object) -> Counter[str]:
        fake.calls.clear()
        fake.requests.clear()
        await step  # type: ignore[misc]
        assert fake.requests == []
        return Counter(fake.calls)

    assert await cost(memory.store_message(make_message("one"), user, "c")) == {
        "Search": 2,
        "BatchObjects": 2,
    }
    assert await cost(memory.store_message(make_message("new"), user, "c2")) == {
        "Search": 3,
        "BatchObjects": 3,
    }
    twenty = [make_message(f"m{i}") for i in range(20)]
    assert await cost(memory.store_messages(twenty, conversation_id="c", user_id=user)) == {
        "Search": 3,
        "BatchObjects": 2,
    }
    # One search for the conversation's archive state, one for the window.
    assert await cost(memory.retrieve_context(user, "", limit=10, conversation_id="c")) == {
        "Search": 2
    }
    # Messages and memory entries, then the archive state of each conversation hit (c, c2).
    assert await cost(memory.search(user, "one new", mode="keyword")) == {"Search": 4}


# ---------------------------------------------------------------- QUERY_MAXIMUM_RESULTS


async def test_a_server_returning_few_results_per_query_still_gives_everything() -> None:
    # Weaviate caps offset + limit and one batch deletion at QUERY_MAXIMUM_RESULTS; the fake
    # is set to 5 here, so every read and deletion below needs several requests.
    from bruno_core.models import MemoryQuery

    with FakeWeaviate(query_maximum_results=5) as server:
        mem = from_url(server.url + "&query_maximum_results=5", embedding_model=None)
        async with mem:
            user = new_user_id()
            batch = [make_message(f"message number {i}") for i in range(23)]
            assert await mem.store_messages(batch, conversation_id="c", user_id=user) == 23
            window = await mem.retrieve_context(user, "", limit=50, conversation_id="c")
            assert [m.content for m in window] == [m.content for m in batch]
            window = await mem.retrieve_context(user, "", limit=3, conversation_id="c")
            assert [m.content for m in window] == [m.content for m in batch[-3:]]
            assert (await mem.get_statistics(user))["total_messages"] == 23
            for i in range(7):
                await mem.store_memory(make_memory_entry(user, f"fact {i}", importance=i / 10))
            found = await mem.retrieve_memories(MemoryQuery(user_id=user, limit=10))
            assert [m.content for m in found] == [f"fact {i}" for i in reversed(range(7))]
            assert len(await mem.search(user, "message number", limit=20, mode="keyword")) == 5
            await mem.clear_conversation(user, "c")
            assert await mem.retrieve_context(user, "", limit=50, conversation_id="c") == []
            reg = server.store.collection(mem.layout.registry).tenants[""]
            assert not any(unexact(o.props["kind"]) == "message" for o in reg.values())
