"""The conformance suite against Redis (``BRUNO_TEST_REDIS_URL``, default: the local server).

An unreachable server fails every test: this engine is required, never skipped. All keys of a
run carry one fresh prefix, so runs never see each other's data.

The shared server runs without persistence, so ``RedisMemory`` does not declare ``DURABLE``
there. :class:`TestRedisMemoryDurable` runs the durability tests against a private server
with ``appendonly yes``, and "reopening" there means restarting that server.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module", autouse=True)
def _drop_the_runs_keys() -> Iterator[None]:
    """Afterwards the run's keys are removed from the shared server."""
    yield
    engines.drop_redis_keys(REDIS_URL, PREFIX)


class TestRedisMemory(MemoryConformance):
    capabilities = declared_by(REDIS_URL)

    async def make_memory(self) -> MemoryBackend:
        return await connect(RedisMemory(REDIS_URL, prefix=PREFIX, connect_timeout=3))


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
        return await self.make_memory()
