"""The conformance suite against HybridMemory, over three pairs of tiers:

* ``InMemoryStorage`` in front of a SQLite file;
* memcached (``BRUNO_TEST_MEMCACHED_URL``, default: the one ``scripts/services/memcached.sh``
  starts, started here if needed) in front of a SQLite file;
* Redis (``BRUNO_TEST_REDIS_URL``) in front of PostgreSQL (``BRUNO_TEST_POSTGRES_URL``).

A hybrid declares its persistent tier's capabilities. Reopening builds new tier instances on
the same storage (the same file, key prefix and schema). An unreachable engine fails every
test of its class: these engines are required, never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest

import _engines as engines
from bruno_memstore.backends.hybrid import HybridMemory
from bruno_memstore.backends.memcached import MemcachedMemory
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.postgres import PostgresMemory
from bruno_memstore.backends.redis import RedisMemory
from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import Capability
from bruno_memstore.errors import BackendUnavailableError
from bruno_memstore.testing import MemoryConformance

REDIS_URL = os.environ.get("BRUNO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "BRUNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# Tests use fresh uuid ids: one schema serves every run, one key prefix serves a run.
SCHEMA = "bruno_memstore_hybrid_conformance"
PREFIX = f"bruno-hybrid-{uuid.uuid4().hex[:12]}"
MEMCACHED_TTL = 3600  # what a run leaves in the shared memcached goes away by itself


async def connected(tier: MemoryBackend, engine: str, hint: str) -> MemoryBackend:
    """Connect a tier now, failing the test (never skipping it) when it cannot be reached."""
    try:
        await tier.initialize()
    except BackendUnavailableError as exc:
        pytest.fail(
            f"{engine} is required for these tests and is unreachable: {exc}. {hint}",
            pytrace=False,
        )
    return tier


@pytest.fixture(scope="module")
def memcached_url() -> str:
    """The memcached under test (see ``tests/_engines.py``)."""
    return engines.memcached_url()


@pytest.fixture(scope="module", autouse=True)
def _drop_the_runs_redis_keys() -> Iterator[None]:
    """Afterwards the run's keys are removed from the shared server."""
    yield
    engines.drop_redis_keys(REDIS_URL, PREFIX)


class TestHybridMemoryOverSQLite(MemoryConformance):
    capabilities = SQLiteMemory.capabilities

    async def make_memory(self) -> MemoryBackend:
        memory = HybridMemory(InMemoryStorage(), SQLiteMemory(self.tmp_path / "memory.db"))
        await memory.initialize()
        return memory

    async def make_private_memory(self) -> MemoryBackend:
        # Not connected, so that a test may choose its embedding model first.
        return HybridMemory(InMemoryStorage(), SQLiteMemory(self.tmp_path / "private.db"))


class TestHybridMemoryMemcachedOverSQLite(MemoryConformance):
    capabilities = SQLiteMemory.capabilities

    async def make_memory(self) -> MemoryBackend:
        url = self._request.getfixturevalue("memcached_url")
        cache = MemcachedMemory(url, prefix=PREFIX, ttl=MEMCACHED_TTL, connect_timeout=5)
        await connected(
            cache, "memcached", "Run scripts/services/memcached.sh or set BRUNO_TEST_MEMCACHED_URL."
        )
        memory = HybridMemory(cache, SQLiteMemory(self.tmp_path / "memory.db"))
        await memory.initialize()
        return memory

    async def make_private_memory(self) -> MemoryBackend:
        url = self._request.getfixturevalue("memcached_url")
        cache = MemcachedMemory(url, prefix=PREFIX, ttl=MEMCACHED_TTL, connect_timeout=5)
        return HybridMemory(cache, SQLiteMemory(self.tmp_path / "private.db"))


class TestHybridMemoryRedisOverPostgres(MemoryConformance):
    # The shared PostgreSQL 15 has no pgvector: keyword search only.
    capabilities = PostgresMemory.capabilities - {Capability.VECTORS}
    forbidden_text: ClassVar[tuple[str, ...]] = ("\x00",)
    forbidden_metadata_text: ClassVar[tuple[str, ...]] = ("\x00",)

    async def make_memory(self) -> MemoryBackend:
        cache = RedisMemory(REDIS_URL, prefix=PREFIX, connect_timeout=3)
        await connected(cache, "Redis", "Start it or point BRUNO_TEST_REDIS_URL at a server.")
        persistent = PostgresMemory(POSTGRES_URL, schema=SCHEMA, connect_timeout=5)
        await connected(
            persistent, "PostgreSQL", "Start it or point BRUNO_TEST_POSTGRES_URL at a server."
        )
        memory = HybridMemory(cache, persistent)
        await memory.initialize()
        return memory
