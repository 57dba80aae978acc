"""The conformance suite against Redis (``BRUNO_TEST_REDIS_URL``, default: the local server).

An unreachable server fails every test: this engine is required, never skipped. All keys of a
run carry one fresh prefix, so runs never see each other's data.

The shared server runs without persistence, so ``RedisMemory`` does not declare ``DURABLE``
there. :class:`TestRedisMemoryDurable` runs the durability tests against a private server
with ``appendonly yes``, and "reopening" there means restarting that server.

The shared server has no RediSearch, so :class:`TestRedisMemory` checks vector search done
in the client; :class:`TestRedisSearchMemory` runs the whole suite again against the
project's Redis with RediSearch (``_engines.redis_search_url()``), where vectors are searched
through the server's HNSW index. Tests that replace the store's embedding model get a prefix
of their own.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

import _engines as engines
from bruno_memstore.backends.redis import RedisMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import Capability
from bruno_memstore.errors import BackendUnavailableError
from bruno_memstore.testing import DurabilitySuite, MemoryConformance
from bruno_memstore.testing.harness import ConformanceBase
from faults._redis_server import RedisServer

REDIS_URL = os.environ.get("BRUNO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = f"bruno-test-{uuid.uuid4().hex[:12]}"
DURABLE = frozenset({Capability.DURABLE})


def declared_by(url: str) -> frozenset[Capability]:
    """What ``RedisMemory`` will declare on the server at ``url``: DURABLE depends on its AOF.

    An unreachable server changes nothing here; ``make_memory`` then fails every test.
    """
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            persistent = int(client.info("persistence").get("aof_enabled", 0))
    except redis.RedisError:
        persistent = 0
    return RedisMemory.capabilities | DURABLE if persistent else RedisMemory.capabilities


async def connect(memory: RedisMemory) -> RedisMemory:
    """Connect now, failing the test (never skipping it) when Redis cannot be reached."""
    try:
        await memory.initialize()
    except BackendUnavailableError as exc:
        pytest.fail(
            f"Redis is required for these tests and is unreachable: {exc}. "
            "Start it or point BRUNO_TEST_REDIS_URL at a server.",
            pytrace=False,
        )
    return memory


_search_urls: list[str] = []  # the RediSearch server, once a test has asked for it


def search_url() -> str:
    if not _search_urls:
        _search_urls.append(engines.redis_search_url())
    return _search_urls[0]


def drop_indexes(url: str, prefix: str) -> None:
    """Drop the run's RediSearch indexes (their documents went with the run's keys)."""
    with redis.Redis.from_url(url, socket_connect_timeout=2, decode_responses=True) as client:
        for name in client.execute_command("FT._LIST"):
            if name.startswith(prefix):
                with contextlib.suppress(redis.ResponseError):  # dropped meanwhile
                    client.execute_command("FT.DROPINDEX", name)


@pytest.fixture(scope="module", autouse=True)
def _drop_the_runs_keys() -> Iterator[None]:
    """Afterwards the run's keys (and indexes) are removed from the shared servers."""
    yield
    engines.drop_redis_keys(REDIS_URL, PREFIX)
    for url in _search_urls:
        engines.drop_redis_keys(url, PREFIX)
        drop_indexes(url, PREFIX)


def private_prefix(test: ConformanceBase) -> str:
    """A prefix of the running test's own (the same for every call within the test)."""
    node = test._request.node.nodeid
    return f"{PREFIX}-{uuid.uuid5(uuid.NAMESPACE_URL, node).hex[:12]}"


class TestRedisMemory(MemoryConformance):
    """Vector search in the client (the shared server has no RediSearch)."""

    capabilities = declared_by(REDIS_URL)

    async def make_memory(self) -> MemoryBackend:
        memory = await connect(RedisMemory(REDIS_URL, prefix=PREFIX, connect_timeout=3))
        assert isinstance(memory, RedisMemory) and memory.vector_mode == "client"
        return memory

    async def make_private_memory(self) -> MemoryBackend:
        return RedisMemory(REDIS_URL, prefix=private_prefix(self), connect_timeout=3)


class TestRedisSearchMemory(MemoryConformance):
    """Vector search by RediSearch's HNSW index (the project's Redis with the module)."""

    # The script starts that server without persistence.
    capabilities = RedisMemory.capabilities

    async def make_memory(self) -> MemoryBackend:
        return await connect(self._memory(PREFIX))

    async def make_private_memory(self) -> MemoryBackend:
        return self._memory(private_prefix(self))

    def _memory(self, prefix: str) -> RedisMemory:
        return RedisMemory(
            search_url(), prefix=prefix, connect_timeout=3, vector_search="redisearch"
        )


@pytest.fixture(scope="module")
def aof_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-aof"), appendonly=True)
    server.start()
    yield server
    server.stop()


class TestRedisMemoryDurable(DurabilitySuite):
    capabilities = RedisMemory.capabilities | DURABLE

    async def make_memory(self) -> MemoryBackend:
        server: RedisServer = self._request.getfixturevalue("aof_server")
        memory = await connect(RedisMemory(server.url, prefix=PREFIX, require_durable=True))
        assert memory.supports(Capability.DURABLE)
        return memory

    async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
        server: RedisServer = self._request.getfixturevalue("aof_server")
        server.restart()  # SHUTDOWN, then the same port and append-only file
        reopened = await self.make_memory()
        reopened.search_mode = memory.search_mode  # the suite's mode, as on the first one
        return reopened
