"""Shared fixtures: the engine servers (see ``tests/_engines.py``), each handed out once per
session and cleaned of what the run created there, two private servers for restart tests,
and a fresh in-memory backend.

An engine's fixture is set up only when a test asks for it, so running one module starts no
other engine. An engine that cannot be reached fails the tests that need it, never skips them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

import _engines as engines
from bruno_memstore.backends.memory import InMemoryStorage
from fakes.pinecone_server import FakePinecone
from fakes.process import PineconeFakeProcess, WeaviateFakeProcess
from faults._redis_server import RedisServer

if TYPE_CHECKING:
    from fakes.weaviate import FakeWeaviate


@pytest_asyncio.fixture
async def in_memory() -> AsyncIterator[InMemoryStorage]:
    """A fresh, connected in-memory backend, shut down after the test."""
    async with InMemoryStorage() as memory:
        yield memory


def _engine(
    name: str,
    doc: str,
    url: Callable[[], str | None],
    clean: Callable[[str], object] | None = None,
    *,
    env: str = "",
) -> Any:
    """A session fixture handing out an engine's URL, then removing what the run left there
    (``clean``). An engine given only by the environment variable ``env`` fails the tests
    that ask for it when the variable is not set."""

    @pytest.fixture(scope="session", name=name)
    def fixture() -> Iterator[str]:
        found = url()
        if not found:
            pytest.fail(f"{env or name} is not set", pytrace=False)
        yield found
        if clean is not None:
            clean(found)

    fixture.__doc__ = doc
    return fixture


def _then(*steps: Callable[[str], object]) -> Callable[[str], None]:
    def run(url: str) -> None:
        for step in steps:
            step(url)

    return run


e = engines
postgres_url = _engine(
    "postgres_url",
    "The shared PostgreSQL 15 (no pgvector); afterwards the run's schemas are dropped.",
    e.postgres_url,
    lambda url: e.drop_postgres_schemas(url, e.SQL_PREFIX),
)
pgvector_url = _engine(
    "pgvector_url",
    "The project's PostgreSQL 18 with pgvector; afterwards the run's schemas are dropped.",
    e.pgvector_url,
    lambda url: e.drop_postgres_schemas(url, e.SQL_PREFIX),
)
mysql_url = _engine(
    "mysql_url",
    "The shared MariaDB; afterwards the run's tables are dropped.",
    e.mysql_url,
    lambda url: e.drop_mysql_tables(url, e.SQL_PREFIX),
)
redis_url = _engine(
    "redis_url",
    "The shared Redis (no modules); afterwards the run's keys are removed.",
    e.redis_url,
    lambda url: e.drop_redis_keys(url, e.REDIS_PREFIX),
)
redis_search_url = _engine(
    "redis_search_url",
    "The project's Redis with RediSearch; afterwards the run's keys and indexes are removed.",
    e.redis_search_url,
    _then(
        lambda url: e.drop_redis_keys(url, e.REDIS_PREFIX),
        lambda url: e.drop_redis_indexes(url, e.REDIS_PREFIX),
    ),
)
redis_cluster_url = _engine(
    "redis_cluster_url",
    "The project's Redis Cluster (``redis+cluster://``); afterwards the run's keys are removed.",
    e.redis_cluster_url,
    lambda url: e.drop_redis_cluster_keys(url, e.REDIS_PREFIX),
)
memcached_url = _engine(
    "memcached_url",
    "The project's memcached (what a run leaves there expires by itself).",
    e.memcached_url,
)
chroma_url = _engine(
    "chroma_url",
    "The project's Chroma server; afterwards the run's collections are removed.",
    e.chroma_url,
    lambda url: e.drop_chroma_collections(url, e.CHROMA_PREFIX),
)
qdrant_url = _engine(
    "qdrant_url",
    "The Qdrant server at QDRANT_URL; afterwards the run's collections are removed.",
    e.qdrant_url,
    lambda url: e.drop_qdrant_collections(url, e.qdrant_api_key(), e.QDRANT_PREFIX),
    env="QDRANT_URL",
)
weaviate_url = _engine(
    "weaviate_url",
    "The Weaviate server at WEAVIATE_URL; afterwards the run's collections are removed.",
    e.weaviate_url,
    lambda url: asyncio.run(
        e.drop_weaviate_collections(url, e.weaviate_api_key(), e.WEAVIATE_PREFIX)
    ),
    env="WEAVIATE_URL",
)
mongo_url = _engine(
    "mongo_url",
    "The project's SecantusDB emulator; afterwards the run's collections are dropped.",
    e.mongo_url,
    lambda url: e.drop_mongo_collections(url, e.MONGO_PREFIX),
)
mongo_nx_url = _engine(
    "mongo_nx_url",
    "The project's nx-27017 emulator; afterwards the run's collections are dropped.",
    e.mongo_nx_url,
    lambda url: e.drop_mongo_collections(url, e.MONGO_PREFIX),
)
mongodb_url = _engine(
    "mongodb_url",
    "The MongoDB deployment at MONGODB_URL; afterwards the run's collections are dropped.",
    e.mongodb_url,
    lambda url: e.drop_mongo_collections(url, e.MONGO_PREFIX),
    env="MONGODB_URL",
)
dynamodb_url = _engine(
    "dynamodb_url",
    "The project's moto server (DynamoDB emulator); afterwards the run's tables are dropped.",
    lambda: e.dynamodb_emulator_url("moto"),
    lambda url: e.drop_dynamodb_tables(url, e.DYNAMODB_PREFIX, **e.DYNAMODB_KEYS),
)
dynalite_url = _engine(
    "dynalite_url",
    "The project's dynalite (DynamoDB emulator); afterwards the run's tables are dropped.",
    lambda: e.dynamodb_emulator_url("dynalite"),
    lambda url: e.drop_dynamodb_tables(url, e.DYNAMODB_PREFIX, **e.DYNAMODB_KEYS),
)


@pytest.fixture(scope="session")
def weaviate_fake_process() -> Iterator[WeaviateFakeProcess]:
    """The fake Weaviate served by a process of its own for the session (the conformance
    classes use it)."""
    fake = WeaviateFakeProcess()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def weaviate_fake() -> Iterator[FakeWeaviate]:
    """A fake Weaviate (tests/fakes/weaviate) on free local ports, for this run."""
    from fakes.weaviate import FakeWeaviate  # needs the weaviate extra: imported on use

    with FakeWeaviate() as fake:
        yield fake


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
def pinecone_fake() -> Iterator[FakePinecone]:
    """A fake Pinecone index (``tests/fakes/pinecone_server.py``) served for the session,
    writes visible at once."""
    fake = FakePinecone(engines.PINECONE_FAKE_DIMENSION, engines.PINECONE_FAKE_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def pinecone_fake_process() -> Iterator[PineconeFakeProcess]:
    """The fake Pinecone index served by a process of its own for the session, writes
    visible at once (the conformance classes use it)."""
    yield from _pinecone_process(lag=0.0)


@pytest.fixture(scope="session")
def pinecone_fake_lagging() -> Iterator[PineconeFakeProcess]:
    """The fake Pinecone index, as a process, whose writes become visible only after a lag
    (0.2 s)."""
    yield from _pinecone_process(lag=0.2)


def _pinecone_process(lag: float) -> Iterator[PineconeFakeProcess]:
    fake = PineconeFakeProcess(engines.PINECONE_FAKE_DIMENSION, engines.PINECONE_FAKE_KEY, lag)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def pinecone_service() -> Iterator[tuple[str, str | None]]:
    """``(index, host)`` of the Pinecone index the service tests use (``PINECONE_API_KEY``,
    ``PINECONE_INDEX``, ``PINECONE_HOST``); afterwards the run's namespaces are deleted."""
    index, host = engines.pinecone_index(), os.environ.get("PINECONE_HOST") or None
    yield index, host
    engines.drop_pinecone_namespaces(index, host, engines.PINECONE_PREFIX)
