"""Shared fixtures: the engine servers (see ``tests/_engines.py``), each handed out once per
session and cleaned of what the run created there, two private servers for restart tests,
and a fresh in-memory backend.

An engine's fixture is set up only when a test asks for it, so running one module starts no
other engine. An engine that cannot be reached fails the tests that need it, never skips them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

import _engines as engines
from bruno_memstore.backends.memory import InMemoryStorage
from fakes.pinecone_server import FakePinecone
from faults._redis_server import RedisServer

if TYPE_CHECKING:
    from fakes.weaviate import FakeWeaviate


@pytest_asyncio.fixture
async def in_memory() -> AsyncIterator[InMemoryStorage]:
    """A fresh, connected in-memory backend, shut down after the test."""
    async with InMemoryStorage() as memory:
        yield memory


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The shared PostgreSQL 15 (no pgvector)."""
    return engines.postgres_url()


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """The project's PostgreSQL 18 with pgvector; afterwards the run's schemas are dropped."""
    url = engines.pgvector_url()
    yield url
    engines.drop_postgres_schemas(url, engines.SQL_PREFIX)


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """The shared MariaDB; afterwards the run's tables are dropped."""
    url = engines.mysql_url()
    yield url
    engines.drop_mysql_tables(url, engines.SQL_PREFIX)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared Redis (no modules); afterwards the run's keys are removed."""
    url = engines.redis_url()
    yield url
    engines.drop_redis_keys(url, engines.REDIS_PREFIX)


@pytest.fixture(scope="session")
def redis_search_url() -> Iterator[str]:
    """The project's Redis with RediSearch; afterwards the run's keys and indexes are removed."""
    url = engines.redis_search_url()
    yield url
    engines.drop_redis_keys(url, engines.REDIS_PREFIX)
    engines.drop_redis_indexes(url, engines.REDIS_PREFIX)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """The project's Redis Cluster (``redis+cluster://``); afterwards the run's keys are
    removed."""
    url = engines.redis_cluster_url()
    yield url
    engines.drop_redis_cluster_keys(url, engines.REDIS_PREFIX)


@pytest.fixture(scope="session")
def memcached_url() -> str:
    """The project's memcached (what a run leaves there expires by itself)."""
    return engines.memcached_url()


@pytest.fixture(scope="session")
def chroma_url() -> Iterator[str]:
    """The project's Chroma server; afterwards the run's collections are removed."""
    url = engines.chroma_url()
    yield url
    engines.drop_chroma_collections(url, engines.CHROMA_PREFIX)


@pytest.fixture(scope="session")
def qdrant_url() -> Iterator[str]:
    """The Qdrant server at ``QDRANT_URL``; afterwards the run's collections are removed."""
    url = engines.qdrant_url()
    if not url:
        pytest.fail("QDRANT_URL is not set", pytrace=False)
    yield url
    engines.drop_qdrant_collections(url, engines.qdrant_api_key(), engines.QDRANT_PREFIX)


@pytest.fixture(scope="session")
def weaviate_fake() -> Iterator[FakeWeaviate]:
    """A fake Weaviate (tests/fakes/weaviate) on free local ports, for this run."""
    from fakes.weaviate import FakeWeaviate  # needs the weaviate extra: imported on use

    with FakeWeaviate() as fake:
        yield fake


@pytest.fixture(scope="session")
def weaviate_url() -> Iterator[str]:
    """The Weaviate server at ``WEAVIATE_URL``; afterwards the run's collections are removed."""
    url = engines.weaviate_url()
    if not url:
        pytest.fail("WEAVIATE_URL is not set", pytrace=False)
    yield url
    asyncio.run(
        engines.drop_weaviate_collections(url, engines.weaviate_api_key(), engines.WEAVIATE_PREFIX)
    )


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """The project's SecantusDB emulator; afterwards the run's collections are dropped."""
    url = engines.mongo_url()
    yield url
    engines.drop_mongo_collections(url, engines.MONGO_PREFIX)


@pytest.fixture(scope="session")
def mongo_nx_url() -> Iterator[str]:
    """The project's nx-27017 emulator; afterwards the run's collections are dropped."""
    url = engines.mongo_nx_url()
    yield url
    engines.drop_mongo_collections(url, engines.MONGO_PREFIX)


@pytest.fixture(scope="session")
def mongodb_url() -> Iterator[str]:
    """The MongoDB deployment at ``MONGODB_URL``; afterwards the run's collections are
    dropped."""
    url = engines.mongodb_url()
    if not url:
        pytest.fail("MONGODB_URL is not set", pytrace=False)
    yield url
    engines.drop_mongo_collections(url, engines.MONGO_PREFIX)


@pytest.fixture(scope="module")
def chroma_restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.ChromaServer]:
    """A private Chroma server that tests may stop and restart on the same data."""
    server = engines.ChromaServer(tmp_path_factory.mktemp("chroma-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_aof(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private Redis with ``appendonly yes`` that tests may restart on the same files."""
    server = RedisServer(tmp_path_factory.mktemp("redis-aof"), appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dynamodb_url() -> Iterator[str]:
    """The project's moto server (DynamoDB emulator); afterwards the run's tables are dropped."""
    url = engines.dynamodb_emulator_url("moto")
    yield url
    engines.drop_dynamodb_tables(url, engines.DYNAMODB_PREFIX, **engines.DYNAMODB_KEYS)


@pytest.fixture(scope="session")
def dynalite_url() -> Iterator[str]:
    """The project's dynalite (DynamoDB emulator); afterwards the run's tables are dropped."""
    url = engines.dynamodb_emulator_url("dynalite")
    yield url
    engines.drop_dynamodb_tables(url, engines.DYNAMODB_PREFIX, **engines.DYNAMODB_KEYS)


@pytest.fixture(scope="session")
def pinecone_fake() -> Iterator[FakePinecone]:
    """A fake Pinecone index (``tests/fakes/pinecone_server.py``) served for the session,
    writes visible at once."""
    fake = FakePinecone(engines.PINECONE_FAKE_DIMENSION, engines.PINECONE_FAKE_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def pinecone_fake_lagging() -> Iterator[FakePinecone]:
    """A fake Pinecone index whose writes become visible only after a lag (0.2 s)."""
    fake = FakePinecone(engines.PINECONE_FAKE_DIMENSION, engines.PINECONE_FAKE_KEY, lag=0.2).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def pinecone_service() -> Iterator[tuple[str, str | None]]:
    """``(index, host)`` of the Pinecone index the service tests use (``PINECONE_API_KEY``,
    ``PINECONE_INDEX``, ``PINECONE_HOST``); afterwards the run's namespaces are deleted."""
    index, host = engines.pinecone_index(), os.environ.get("PINECONE_HOST") or None
    yield index, host
    engines.drop_pinecone_namespaces(index, host, engines.PINECONE_PREFIX)
