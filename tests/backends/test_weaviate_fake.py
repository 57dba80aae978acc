"""The fake Weaviate (``tests/fakes/weaviate``) behaves as Weaviate documents, where
``WeaviateMemory`` relies on it. Each test drives the fake with the unmodified official
client and names the documentation page (weaviate.io/developers/weaviate/...) it follows.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import weaviate
from weaviate.classes.config import Configure, DataType, Property, Tokenization
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, MetadataQuery, Sort
from weaviate.exceptions import WeaviateQueryError

from bruno_memstore.errors import BackendTimeoutError, BackendUnavailableError
from bruno_memstore.testing import make_message, new_user_id
from fakes.weaviate import FakeWeaviate

U = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(10)]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeaviate]:
    with FakeWeaviate() as server:
        yield server


@pytest_asyncio.fixture
async def client(fake: FakeWeaviate) -> AsyncIterator[weaviate.WeaviateAsyncClient]:
    c = weaviate.use_async_with_custom(
        "127.0.0.1", fake.http_port, False, "127.0.0.1", fake.grpc_port, False,
        skip_init_checks=True,
    )  # fmt: skip
    await c.connect()
    yield c
    await c.close()


async def _collection(client: weaviate.WeaviateAsyncClient, name: str) -> None:
    if await client.collections.exists(name):
        await client.collections.delete(name)
    await client.collections.create(
        name,
        properties=[
            Property(name="tag", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
            Property(name="n", data_type=DataType.INT),
            Property(name="words", data_type=DataType.TEXT, tokenization=Tokenization.WHITESPACE),
        ],
        multi_tenancy_config=Configure.multi_tenancy(enabled=True, auto_tenant_creation=True),
        vector_config=Configure.Vectors.self_provided(),
    )


async def test_tenants_are_apart_and_reads_need_one(client: weaviate.WeaviateAsyncClient) -> None:
    # Manage data > Multi-tenancy operations: objects of one tenant are invisible from
    # another; a read of a tenant that does not exist fails ("tenant not found");
    # autoTenantCreation creates a tenant on insert (never on read).
    await _collection(client, "Tenants")
    coll = client.collections.use("Tenants")
    await coll.with_tenant("a").data.insert_many([DataObject({"tag": "x", "n": 1}, uuid=U[1])])
    assert len((await coll.with_tenant("a").query.fetch_objects(limit=10)).objects) == 1
    with pytest.raises(WeaviateQueryError, match="tenant not found"):
        await coll.with_tenant("b").query.fetch_objects(limit=10)
    await coll.with_tenant("b").data.insert_many([DataObject({"tag": "y", "n": 2}, uuid=U[1])])
    a = (await coll.with_tenant("a").query.fetch_objects(limit=10)).objects
    assert [o.properties["tag"] for o in a] == ["x"]  # same UUID, another tenant: apart
    assert set(await coll.tenants.get()) == {"a", "b"}
    await coll.tenants.remove(["a"])  # deleting a tenant deletes its objects
    with pytest.raises(WeaviateQueryError, match="tenant not found"):
        await coll.with_tenant("a").query.fetch_objects(limit=10)


async def test_batches_upsert_and_report_errors_per_object(
    client: weaviate.WeaviateAsyncClient,
) -> None:
    # Manage data > Import: a stored UUID is replaced; each object's error is reported and
    # the rest of the batch is written. Every vector of an index has one length.
    await _collection(client, "Batches")
    coll = client.collections.use("Batches").with_tenant("t")
    await coll.data.insert_many([DataObject({"tag": "old"}, uuid=U[1], vector=[1.0, 0.0])])
    res = await coll.data.insert_many(
        [
            DataObject({"tag": "new"}, uuid=U[1], vector=[0.0, 1.0]),
            DataObject({"tag": "bad"}, uuid=U[2], vector=[1.0, 0.0, 0.0]),
            DataObject({"tag": "ok"}, uuid=U[3], vector=[1.0, 1.0]),
        ]
    )
    assert list(res.errors) == [1]
    assert "vector with length 3" in res.errors[1].message
    objs = (await coll.query.fetch_objects(limit=10, sort=Sort.by_property("tag"))).objects
    assert [o.properties["tag"] for o in objs] == ["new", "ok"]


async def test_filters_sorting_and_prefiltered_vectors(
    client: weaviate.WeaviateAsyncClient,
) -> None:
    # Search > Filters; Search > Basics (sorting on several keys); Search > Similarity:
    # filters narrow the candidates before ranking, and cosine distance is 1 - cos.
    await _collection(client, "Filters")
    coll = client.collections.use("Filters").with_tenant("t")
    rows = [("a", 3, [1.0, 0.0]), ("b", 1, [0.9, 0.1]), ("a", 1, [0.0, 1.0]), ("c", 2, None)]
    await coll.data.insert_many(
        [DataObject({"tag": t, "n": n}, uuid=U[i], vector=v) for i, (t, n, v) in enumerate(rows)]
    )
    where = Filter.by_property("tag").contains_any(["a", "c"]) & Filter.by_property("n").less_than(
        3
    )
    got = await coll.query.fetch_objects(filters=where, limit=10, sort=Sort.by_property("n"))
    assert [(o.properties["tag"], o.properties["n"]) for o in got.objects] == [("a", 1), ("c", 2)]
    order = Sort.by_property("tag", ascending=False).by_property("n", ascending=True)
    got = await coll.query.fetch_objects(limit=10, sort=order)
    assert [(o.properties["tag"], o.properties["n"]) for o in got.objects] == [
        ("c", 2), ("b", 1), ("a", 1), ("a", 3),
    ]  # fmt: skip
    # The nearest object overall is "a"/3; filtered on "b", limit 1 still finds "b" (a
    # filter applied after taking the nearest one would find nothing).
    near = await coll.query.near_vector(
        [1.0, 0.0], filters=Filter.by_property("tag").equal("b"), limit=1,
        return_metadata=MetadataQuery(distance=True),
    )  # fmt: skip
    assert len(near.objects) == 1
    cosine = 0.9 / math.hypot(0.9, 0.1)
    assert math.isclose(near.objects[0].metadata.distance, 1.0 - cosine, rel_tol=1e-5)


async def test_field_tokens_are_trimmed_and_new_operators_refused(
    client: weaviate.WeaviateAsyncClient,
) -> None:
    # Config refs > Tokenization: `field` indexes the whole value, whitespace trimmed, so
    # filters cannot tell " x " from "x". Search > Filters: Not and ContainsNone need 1.33.
    await _collection(client, "Fields")
    coll = client.collections.use("Fields").with_tenant("t")
    await coll.data.insert_many([DataObject({"tag": " x "}, uuid=U[1])])
    got = await coll.query.fetch_objects(filters=Filter.by_property("tag").equal("x"), limit=5)
    assert [o.properties["tag"] for o in got.objects] == [" x "]
    with pytest.raises(WeaviateQueryError, match=r"1\.33"):
        await coll.query.fetch_objects(
            filters=Filter.by_property("tag").contains_none(["y"]), limit=5
        )


async def test_bm25_is_bm25f_over_the_tenant(client: weaviate.WeaviateAsyncClient) -> None:
    # Concepts > Search > Keyword search: BM25F, k1 1.2, b 0.75, statistics of the
    # tenant's objects; whitespace tokenization keeps tokens as written; OR of the terms.
    await _collection(client, "Keyword")
    coll = client.collections.use("Keyword")
    docs = ["tea tea cake", "tea", "coffee cake cake", "water"]
    await coll.with_tenant("t").data.insert_many(
        [DataObject({"words": d}, uuid=U[i]) for i, d in enumerate(docs)]
    )
    # Another tenant's objects do not change this tenant's statistics.
    await coll.with_tenant("o").data.insert_many([DataObject({"words": "tea"}, uuid=U[9])])
    res = await coll.with_tenant("t").query.bm25(
        "tea", query_properties=["words"], limit=10, return_metadata=MetadataQuery(score=True)
    )
    avg = (3 + 1 + 3 + 1) / 4
    idf = math.log(1 + (4 - 2 + 0.5) / (2 + 0.5))

    def score(tf: int, length: int) -> float:
        return idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / avg))

    got = {str(o.uuid): o.metadata.score for o in res.objects}
    assert set(got) == {U[0], U[1]}
    assert math.isclose(got[U[0]], score(2, 3), rel_tol=1e-6)
    assert math.isclose(got[U[1]], score(1, 1), rel_tol=1e-6)
    res = await coll.with_tenant("t").query.bm25("Tea", query_properties=["words"], limit=10)
    assert res.objects == []  # whitespace tokenization is case-sensitive


async def test_a_server_restart_is_survived(fake: FakeWeaviate) -> None:
    from bruno_memstore.backends.weaviate import WeaviateMemory
    from bruno_memstore.url import MemoryURL

    server = FakeWeaviate().start()
    mem = WeaviateMemory.from_url(
        MemoryURL.parse(server.url), embedding_model=None, operation_timeout=3
    )
    try:
        user = new_user_id()
        await mem.store_message(make_message("before"), user, "c")
        server.stop()
        with pytest.raises((BackendUnavailableError, BackendTimeoutError)):
            await mem.retrieve_context(user, "", limit=5)
        server.start()  # the same ports and data: a restart
        await mem.store_message(make_message("after"), user, "c")
        got = [m.content for m in await mem.retrieve_context(user, "", limit=5)]
        assert got == ["before", "after"]
    finally:
        await mem.shutdown()
        server.stop()


async def test_the_schema_reads_back_as_the_client_expects(
    client: weaviate.WeaviateAsyncClient,
) -> None:
    # Manage collections: the server answers with the whole definition, defaults filled in
    # (the client parses it; a missing vector index configuration would be refused).
    await _collection(client, "Schema")
    listed = await client.collections.list_all(simple=False)
    config = listed["Schema"]
    assert config.multi_tenancy_config.enabled
    assert [p.name for p in config.properties] == ["tag", "n", "words"]
