"""How the conformance classes build their memories: one factory per engine setup, for the
harness's ``memory_factory``, ``reopen_factory`` and ``private_factory``.

Each factory takes the running test. File engines keep their data in the test's
``tmp_path``; server engines reach the fixtures of ``tests/conftest.py`` and are connected at
once, so an unreachable server fails the test saying so (never a skip). Main stores on a
server share one schema, key prefix or collection prefix between tests (tests use fresh ids);
private stores (model changes affect a whole store) get a name of the test's own, starting
with the run's prefix, and are removed when the session ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis

import _engines as engines
from bruno_memstore.backends.chroma import ChromaMemory
from bruno_memstore.backends.hybrid import HybridMemory
from bruno_memstore.backends.memcached import MemcachedMemory
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.mongo import MongoMemory
from bruno_memstore.backends.mysql import MySQLMemory
from bruno_memstore.backends.pinecone import PineconeMemory
from bruno_memstore.backends.postgres import PostgresMemory
from bruno_memstore.backends.qdrant import QdrantMemory
from bruno_memstore.backends.redis import RedisMemory
from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.backends.weaviate import WeaviateMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import Capability
from bruno_memstore.limits import Limits
from bruno_memstore.models import MemoryRecord, SearchHit, SearchRequest, utcnow
from bruno_memstore.testing import ConformanceBase
from bruno_memstore.url import MemoryURL

NUL = ("\x00",)  # PostgreSQL cannot hold it
SURROGATE = ("\udfff",)  # not UTF-8: utf8mb4 and Chroma cannot hold it in metadata

# Main stores of this test process only (each pytest-xdist worker has its own), so that
# store-wide figures (statistics, counts) see no other run's writes; the engines' fixtures
# drop them when the process ends, and memcached lets them expire.
POSTGRES_SCHEMA = f"{engines.SQL_PREFIX}conformance"
HYBRID_SCHEMA = f"{engines.SQL_PREFIX}hybrid"
MYSQL_TABLES = f"{engines.SQL_PREFIX}conf_"
MEMCACHED_PREFIX = f"{engines.REDIS_PREFIX}-conformance"
MEMCACHED_TTL = 3600  # what a run leaves in the shared memcached goes away by itself
REDIS_PREFIX = f"{engines.REDIS_PREFIX}-test"
HYBRID_PREFIX = f"{engines.REDIS_PREFIX}-hybrid"


# ---------------------------------------------------------------- in-process and files


def in_process(test: ConformanceBase) -> InMemoryStorage:
    return InMemoryStorage()


def sqlite_file(test: ConformanceBase) -> SQLiteMemory:
    return SQLiteMemory(test.tmp_path / "memory.db")


def sqlite_private(test: ConformanceBase) -> SQLiteMemory:
    return SQLiteMemory(test.tmp_path / "private.db")


def sqlite_in_memory(test: ConformanceBase) -> SQLiteMemory:
    return SQLiteMemory(":memory:")


def chroma_embedded(test: ConformanceBase) -> ChromaMemory:
    return ChromaMemory(persist_directory=test.tmp_path / "chroma")


def chroma_embedded_private(test: ConformanceBase) -> ChromaMemory:
    return ChromaMemory(persist_directory=test.tmp_path / "private")


def qdrant_local(test: ConformanceBase) -> QdrantMemory:
    return QdrantMemory(test.tmp_path / "qdrant")


def qdrant_local_private(test: ConformanceBase) -> QdrantMemory:
    return QdrantMemory(test.tmp_path / "qdrant-private")


# ---------------------------------------------------------------- SQL servers


async def postgres(test: ConformanceBase) -> PostgresMemory:
    """PostgreSQL 15 without pgvector: the memory says it searches full text only."""
    url = test.fixture("postgres_url")
    memory = PostgresMemory(url, schema=POSTGRES_SCHEMA, connect_timeout=5)
    await engines.connected(memory, "postgres")
    assert memory.vector_support == "none", memory.vector_support_reason
    return memory


async def pgvector(test: ConformanceBase) -> PostgresMemory:
    url = test.fixture("pgvector_url")
    memory = PostgresMemory(url, schema=POSTGRES_SCHEMA, connect_timeout=5)
    await engines.connected(memory, "pgvector")
    assert memory.supports(Capability.VECTORS) and memory.vector_support == "pgvector"
    return memory


def pgvector_private(test: ConformanceBase) -> PostgresMemory:
    schema = f"{engines.SQL_PREFIX}{test.key}"
    return PostgresMemory(test.fixture("pgvector_url"), schema=schema, connect_timeout=5)


async def mysql(test: ConformanceBase) -> MySQLMemory:
    memory = MySQLMemory(test.fixture("mysql_url"), table_prefix=MYSQL_TABLES, connect_timeout=5)
    return await engines.connected(memory, "mysql")


def mysql_private(test: ConformanceBase) -> MySQLMemory:
    tables = f"{engines.SQL_PREFIX}{test.key[:10]}_"
    return MySQLMemory(test.fixture("mysql_url"), table_prefix=tables, connect_timeout=5)


# ---------------------------------------------------------------- key-value servers


def redis_capabilities() -> frozenset[Capability]:
    """What ``RedisMemory`` declares on the shared Redis: ``DURABLE`` only with its AOF on.

    An unreachable server changes nothing here; the factory then fails every test.
    """
    try:
        url = engines.redis_url()
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            persistent = int(client.info("persistence").get("aof_enabled", 0))
    except redis.RedisError:
        persistent = 0
    extra = {Capability.DURABLE} if persistent else set()
    return RedisMemory.capabilities | extra


async def redis_client_vectors(test: ConformanceBase) -> RedisMemory:
    """The shared Redis has no RediSearch: vectors are searched in the client."""
    memory = RedisMemory(test.fixture("redis_url"), prefix=REDIS_PREFIX, connect_timeout=3)
    await engines.connected(memory, "redis")
    assert memory.vector_mode == "client"
    return memory


def redis_private(test: ConformanceBase) -> RedisMemory:
    prefix = f"{engines.REDIS_PREFIX}-{test.key}"
    return RedisMemory(test.fixture("redis_url"), prefix=prefix, connect_timeout=3)


def _redisearch(test: ConformanceBase, prefix: str) -> RedisMemory:
    url = test.fixture("redis_search_url")
    return RedisMemory(url, prefix=prefix, connect_timeout=3, vector_search="redisearch")


async def redisearch(test: ConformanceBase) -> RedisMemory:
    return await engines.connected(_redisearch(test, REDIS_PREFIX), "redis-search")


def redisearch_private(test: ConformanceBase) -> RedisMemory:
    return _redisearch(test, f"{engines.REDIS_PREFIX}-{test.key}")


async def redis_cluster(test: ConformanceBase) -> RedisMemory:
    """The project's Redis Cluster: users spread over the slots, writes waiting for a replica."""
    url = test.fixture("redis_cluster_url")
    memory = RedisMemory(url, prefix=REDIS_PREFIX, connect_timeout=3)
    await engines.connected(memory, "redis-cluster")
    assert memory.cluster and memory.vector_mode == "client"
    return memory


def redis_cluster_private(test: ConformanceBase) -> RedisMemory:
    prefix = f"{engines.REDIS_PREFIX}-{test.key}"
    return RedisMemory(test.fixture("redis_cluster_url"), prefix=prefix, connect_timeout=3)


async def redis_aof(test: ConformanceBase) -> RedisMemory:
    url = test.fixture("redis_aof").url
    memory = RedisMemory(url, prefix=REDIS_PREFIX, require_durable=True)
    await engines.connected(memory, "redis")
    assert memory.supports(Capability.DURABLE)
    return memory


async def redis_aof_restarted(test: ConformanceBase) -> RedisMemory:
    test.fixture("redis_aof").restart()  # SHUTDOWN, then the same port and append-only file
    return await redis_aof(test)


async def memcached(test: ConformanceBase) -> MemcachedMemory:
    url = test.fixture("memcached_url")
    memory = MemcachedMemory(url, prefix=MEMCACHED_PREFIX, connect_timeout=5)
    return await engines.connected(memory, "memcached")


# ---------------------------------------------------------------- vector servers


def _chroma_server(test: ConformanceBase, prefix: str) -> ChromaMemory:
    host, port = engines.host_port(test.fixture("chroma_url"))
    return ChromaMemory(host=host, port=port, prefix=prefix)


async def chroma_server(test: ConformanceBase) -> ChromaMemory:
    """Collections of the test's own on the shared server."""
    memory = _chroma_server(test, f"{engines.CHROMA_PREFIX}-{test.key}")
    return await engines.connected(memory, "chroma")


def chroma_server_private(test: ConformanceBase) -> ChromaMemory:
    return _chroma_server(test, f"{engines.CHROMA_PREFIX}-{test.key}-p")


async def chroma_server_teardown(test: ConformanceBase, memory: MemoryBackend) -> None:
    """Shut ``memory`` down; after the test's own memory (the last one released), delete the
    test's collections, its private store's too. A store lists every collection of the server
    when it opens, so the list is kept to the tests running now (else it grows by a dozen
    collections a test, and every later test pays for them)."""
    await memory.shutdown()
    if test._opened and memory is test._opened[0]:
        prefix = f"{engines.CHROMA_PREFIX}-{test.key}"
        await asyncio.to_thread(engines.drop_chroma_collections, test.fixture("chroma_url"), prefix)


async def chroma_restartable(test: ConformanceBase) -> ChromaMemory:
    port = test.fixture("chroma_restartable").port
    memory = ChromaMemory(host="127.0.0.1", port=port, prefix=engines.CHROMA_PREFIX)
    return await engines.connected(memory, "chroma")


async def chroma_restarted(test: ConformanceBase) -> ChromaMemory:
    test.fixture("chroma_restartable").restart()
    return await chroma_restartable(test)


def qdrant_server(test: ConformanceBase) -> QdrantMemory:
    prefix = f"{engines.QDRANT_PREFIX}t{test.key}"
    url, api_key = test.fixture("qdrant_url"), engines.qdrant_api_key()
    return QdrantMemory(url=url, api_key=api_key, prefix=prefix)


def qdrant_server_private(test: ConformanceBase) -> QdrantMemory:
    prefix = f"{engines.QDRANT_PREFIX}p{test.key}"
    url, api_key = test.fixture("qdrant_url"), engines.qdrant_api_key()
    return QdrantMemory(url=url, api_key=api_key, prefix=prefix)


def _weaviate(url: str, prefix: str, api_key: str | None = None) -> WeaviateMemory:
    return WeaviateMemory.from_url(MemoryURL.parse(url), api_key=api_key, prefix=prefix)


async def weaviate_fake(test: ConformanceBase) -> WeaviateMemory:
    """The run's fake Weaviate; one prefix shared by every test (tests use fresh ids)."""
    memory = _weaviate(test.fixture("weaviate_fake_process").url, f"{engines.WEAVIATE_PREFIX}F")
    return await engines.connected(memory, "weaviate")


def weaviate_fake_private(test: ConformanceBase) -> WeaviateMemory:
    return _weaviate(
        test.fixture("weaviate_fake_process").url, f"{engines.WEAVIATE_PREFIX}P{test.key}"
    )


async def weaviate_server(test: ConformanceBase) -> WeaviateMemory:
    """The Weaviate at ``WEAVIATE_URL``; one prefix of this run shared by every test."""
    url, key = test.fixture("weaviate_url"), engines.weaviate_api_key()
    memory = _weaviate(url, f"{engines.WEAVIATE_PREFIX}S", key)
    return await engines.connected(memory, "weaviate")


def weaviate_server_private(test: ConformanceBase) -> WeaviateMemory:
    url, key = test.fixture("weaviate_url"), engines.weaviate_api_key()
    return _weaviate(url, f"{engines.WEAVIATE_PREFIX}P{test.key}", key)


# ---------------------------------------------------------------- document servers


def _mongo(test: ConformanceBase, fixture: str, prefix: str, **options: object) -> MongoMemory:
    return MongoMemory(test.fixture(fixture), prefix=prefix, connect_timeout=5, **options)


async def mongo_secantus(test: ConformanceBase) -> MongoMemory:
    """SecantusDB (emulator): transactions, no text index, so the kit's keyword index."""
    memory = _mongo(test, "mongo_url", f"{engines.MONGO_PREFIX}_main")
    await engines.connected(memory, "mongo")
    assert memory.transactions and not memory.server_text
    return memory


def mongo_secantus_private(test: ConformanceBase) -> MongoMemory:
    return _mongo(test, "mongo_url", f"{engines.MONGO_PREFIX}_{test.key}")


class MonitoredMongoMemory(MongoMemory):
    """``MongoMemory`` with MongoDB's TTL monitor run at a chosen moment: before the
    ``wakes_at``-th vector search it deletes the expired entries, as the monitor does when
    it wakes (the searches before it have read them)."""

    wakes_at = 12
    _searches = 0

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        self._searches += 1
        if self._searches == self.wakes_at:
            await self._memories.delete_many({"expires_at": {"$lte": utcnow()}})
        return await super()._vector_search(request, vector)


async def mongo_monitored(test: ConformanceBase) -> MongoMemory:
    memory = MonitoredMongoMemory(
        test.fixture("mongo_url"), prefix=f"{engines.MONGO_PREFIX}_monitored", connect_timeout=5
    )
    return await engines.connected(memory, "mongo")


class NxMongoMemory(MongoMemory):
    """``MongoMemory`` as the suite runs it on nx-27017, which cannot match a string holding
    NUL (MongoDB can): memory entries holding one are refused, as a backend declaring it
    would (the class declares ``forbidden_memory_text``)."""

    def _check_memory(self, record: MemoryRecord) -> None:
        super()._check_memory(record)
        NX_ENTRY_LIMITS.check(record)


NX_ENTRY_LIMITS = Limits(nul_in_text=False, nul_in_json=False, nul_holder="nx-27017's matching")


def _nx(test: ConformanceBase, prefix: str) -> MongoMemory:
    url = test.fixture("mongo_nx_url")
    return NxMongoMemory(url, prefix=prefix, connect_timeout=5, text_search="kit")


async def mongo_nx(test: ConformanceBase) -> MongoMemory:
    """nx-27017 (emulator): no transactions, so the ordered writes. Two of its differences
    from MongoDB are worked around here: its ``$text`` is not MongoDB's (every word required,
    no stop words, no scores with a compound index), so the suite runs with the kit's keyword
    index (``tests/backends/test_mongo.py`` tests ``$text``); and it deletes a document past
    its TTL at once, where MongoDB's monitor runs once a minute, so the TTL index is dropped
    and expired entries stay readable (``include_expired``) until ``purge_expired``."""
    prefix = f"{engines.MONGO_PREFIX}_main"
    memory = await engines.connected(_nx(test, prefix), "mongo")
    assert not memory.transactions
    engines.drop_ttl_indexes(test.fixture("mongo_nx_url"), f"{prefix}_memories")
    memory.deletes_expired_itself = False
    return memory


def mongo_nx_private(test: ConformanceBase) -> MongoMemory:
    return _nx(test, f"{engines.MONGO_PREFIX}_{test.key}")


async def mongodb(test: ConformanceBase) -> MongoMemory:
    """A real MongoDB at ``MONGODB_URL``, as it is: transactions and ``$text`` when it has them."""
    memory = _mongo(test, "mongodb_url", f"{engines.MONGO_PREFIX}_main")
    return await engines.connected(memory, "mongodb")


def mongodb_private(test: ConformanceBase) -> MongoMemory:
    return _mongo(test, "mongodb_url", f"{engines.MONGO_PREFIX}_{test.key}")


# ---------------------------------------------------------------- hybrids


async def hybrid_over_sqlite(test: ConformanceBase) -> HybridMemory:
    memory = HybridMemory(InMemoryStorage(), sqlite_file(test))
    await memory.initialize()
    return memory


def hybrid_over_sqlite_private(test: ConformanceBase) -> HybridMemory:
    return HybridMemory(InMemoryStorage(), sqlite_private(test))


def _memcached_cache(test: ConformanceBase) -> MemcachedMemory:
    url = test.fixture("memcached_url")
    return MemcachedMemory(url, prefix=HYBRID_PREFIX, ttl=MEMCACHED_TTL, connect_timeout=5)


async def hybrid_memcached_over_sqlite(test: ConformanceBase) -> HybridMemory:
    cache = await engines.connected(_memcached_cache(test), "memcached")
    memory = HybridMemory(cache, sqlite_file(test))
    await memory.initialize()
    return memory


def hybrid_memcached_over_sqlite_private(test: ConformanceBase) -> HybridMemory:
    return HybridMemory(_memcached_cache(test), sqlite_private(test))


async def hybrid_redis_over_postgres(test: ConformanceBase) -> HybridMemory:
    cache = RedisMemory(test.fixture("redis_url"), prefix=HYBRID_PREFIX, connect_timeout=3)
    persistent = PostgresMemory(
        test.fixture("postgres_url"), schema=HYBRID_SCHEMA, connect_timeout=5
    )
    await engines.connected(cache, "redis")
    await engines.connected(persistent, "postgres")
    memory = HybridMemory(cache, persistent)
    await memory.initialize()
    return memory


# ---------------------------------------------------------------- DynamoDB


_MOTO_TIMEOUT = 180.0  # seconds per operation on moto (see dynamodb_moto)


def _dynamodb(test: ConformanceBase, emulator: str, table: str, **options: object):
    from bruno_memstore.backends.dynamodb import DynamoDBMemory

    endpoint = test.fixture(f"{emulator}_url")
    return DynamoDBMemory(
        f"{engines.DYNAMODB_PREFIX}{table}",
        endpoint_url=endpoint,
        region="us-east-1",
        **engines.DYNAMODB_KEYS,
        **options,
    )


async def dynamodb_moto(test: ConformanceBase):
    """moto's server: transactions and the TTL API. moto copies the whole table for every
    transaction (to roll back): a table per test, and time for the bulk tests' writes."""
    memory = _dynamodb(test, "dynamodb", f"t{test.key}", operation_timeout=_MOTO_TIMEOUT)
    return _keeps_expired(await engines.connected(memory, "dynamodb"))


def _keeps_expired(memory):
    """moto keeps a table's TTL setting but never deletes an item by it."""
    memory.deletes_expired_itself = False
    return memory


def dynamodb_moto_private(test: ConformanceBase):
    return _dynamodb(test, "dynamodb", f"p{test.key}")


async def dynamodb_moto_ordered(test: ConformanceBase):
    """moto's server with transactions turned off: the ordered writes dynalite gets."""
    memory = _dynamodb(test, "dynamodb", f"o{test.key}", transactions=False)
    return _keeps_expired(await engines.connected(memory, "dynamodb"))


async def dynamodb_dynalite(test: ConformanceBase):
    """dynalite: no transactions (detected), no TTL API."""
    return await engines.connected(_dynamodb(test, "dynalite", "conformance"), "dynamodb")


def dynamodb_dynalite_private(test: ConformanceBase):
    return _dynamodb(test, "dynalite", f"p{test.key}")


def _dynamodb_service(test: ConformanceBase, table: str):
    """The endpoint ``DYNAMODB_ENDPOINT`` names (DynamoDB Local, or AWS with ``aws``),
    with the environment's credentials and region."""
    import os

    from bruno_memstore.backends.dynamodb import DynamoDBMemory

    endpoint = os.environ["DYNAMODB_ENDPOINT"]
    return DynamoDBMemory(
        f"{engines.DYNAMODB_PREFIX}{table}",
        endpoint_url=None if endpoint == "aws" else endpoint,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


async def dynamodb_service(test: ConformanceBase):
    return await engines.connected(_dynamodb_service(test, "conformance"), "dynamodb")


def dynamodb_service_private(test: ConformanceBase):
    return _dynamodb_service(test, f"p{test.key}")


# ---------------------------------------------------------------- Pinecone


def _pinecone_fake(test: ConformanceBase, fixture: str, namespace: str) -> PineconeMemory:
    fake = test.fixture(fixture)
    return PineconeMemory(host=fake.host, api_key=engines.PINECONE_FAKE_KEY, namespace=namespace)


def pinecone_fake(test: ConformanceBase) -> PineconeMemory:
    """The fake index (``tests/fakes/pinecone_server.py``, a process of its own), one store
    shared by the tests."""
    return _pinecone_fake(test, "pinecone_fake_process", "conformance")


def pinecone_fake_private(test: ConformanceBase) -> PineconeMemory:
    return _pinecone_fake(test, "pinecone_fake_process", f"p{test.key}")


def pinecone_fake_lagging(test: ConformanceBase) -> PineconeMemory:
    """The fake index whose writes show only after a lag: what this process wrote must read
    back all the same."""
    return _pinecone_fake(test, "pinecone_fake_lagging", "conformance")


def pinecone_fake_lagging_private(test: ConformanceBase) -> PineconeMemory:
    return _pinecone_fake(test, "pinecone_fake_lagging", f"p{test.key}")


def pinecone_service(test: ConformanceBase) -> PineconeMemory:
    """The index ``PINECONE_INDEX`` names (``bruno-memstore-test`` by default) on Pinecone,
    with the key in ``PINECONE_API_KEY``; namespaces of the run's own, deleted after it."""
    index, host = test.fixture("pinecone_service")
    return PineconeMemory(index=index, host=host, namespace=f"{engines.PINECONE_PREFIX}-c")


def pinecone_service_private(test: ConformanceBase) -> PineconeMemory:
    index, host = test.fixture("pinecone_service")
    return PineconeMemory(index=index, host=host, namespace=f"{engines.PINECONE_PREFIX}-{test.key}")
