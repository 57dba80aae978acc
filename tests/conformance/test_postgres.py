"""The conformance suite against PostgreSQL, on two servers; an unreachable one fails its
tests (these engines are required, never skipped).

* ``BRUNO_TEST_POSTGRES_URL`` (default: the machine's PostgreSQL 15, which has no pgvector):
  ``PostgresMemory`` declares no ``VECTORS`` there and searches full text only.
* The project's PostgreSQL 18 with pgvector (``_engines.pgvector_url()``): vectors in the
  record rows, HNSW search, hybrid ranking with the default embedding model.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import ClassVar

import asyncpg
import pytest

import _engines as engines
from bruno_memstore.backends.postgres import PostgresMemory
from bruno_memstore.backends.postgres.statements import check_schema
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import DATABASE, Capability
from bruno_memstore.errors import BackendUnavailableError
from bruno_memstore.testing import MemoryConformance

POSTGRES_URL = os.environ.get(
    "BRUNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# Tests use fresh uuid ids, so one shared schema per server serves every run.
SCHEMA = "bruno_memstore_conformance"
# Stores of single tests (model changes replace a whole store's vectors) carry the run's
# prefix and are dropped when the module ends.
PRIVATE = f"t_pgv_{uuid.uuid4().hex[:8]}_"

_pgvector_urls: list[str] = []  # the pgvector server, once a test has asked for it


def pgvector_url() -> str:
    if not _pgvector_urls:
        _pgvector_urls.append(engines.pgvector_url())
    return _pgvector_urls[0]


async def connect(memory: PostgresMemory) -> PostgresMemory:
    """Connect now, failing the test (never skipping it) when the server cannot be reached."""
    try:
        await memory.initialize()
    except BackendUnavailableError as exc:
        pytest.fail(
            f"PostgreSQL is required for these tests and is unreachable: {exc}. "
            "Start it or point BRUNO_TEST_POSTGRES_URL / BRUNO_TEST_PGVECTOR_URL at a server.",
            pytrace=False,
        )
    return memory


async def drop_private_schemas(url: str) -> None:
    conn = await asyncpg.connect(PostgresMemory(url)._dsn, timeout=5)
    try:
        names = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", PRIVATE
        )
        for (name,) in names:
            await conn.execute(f"DROP SCHEMA IF EXISTS {check_schema(name)} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="module", autouse=True)
def _drop_the_runs_schemas() -> Iterator[None]:
    yield
    for url in _pgvector_urls:
        asyncio.run(drop_private_schemas(url))


class TestPostgresMemory(MemoryConformance):
    """PostgreSQL 15 without pgvector: full-text search only, declared as such."""

    capabilities = DATABASE
    forbidden_text: ClassVar[tuple[str, ...]] = ("\x00",)
    forbidden_metadata_text: ClassVar[tuple[str, ...]] = ("\x00",)

    async def make_memory(self) -> MemoryBackend:
        memory = await connect(PostgresMemory(POSTGRES_URL, schema=SCHEMA, connect_timeout=5))
        assert memory.vector_support == "none", memory.vector_support_reason
        return memory


class TestPostgresVectorMemory(MemoryConformance):
    """PostgreSQL 18 with pgvector: vectors beside the rows, HNSW search, hybrid ranking."""

    capabilities = PostgresMemory.capabilities
    forbidden_text: ClassVar[tuple[str, ...]] = ("\x00",)
    forbidden_metadata_text: ClassVar[tuple[str, ...]] = ("\x00",)

    async def make_memory(self) -> MemoryBackend:
        memory = await connect(PostgresMemory(pgvector_url(), schema=SCHEMA, connect_timeout=5))
        assert memory.supports(Capability.VECTORS) and memory.vector_support == "pgvector"
        return memory

    async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
        reopened = await self.make_memory()
        reopened.search_mode = memory.search_mode  # the suite's mode, as on the first one
        return reopened

    async def make_private_memory(self) -> MemoryBackend:
        # One schema per test (every call within the test reaches the same one). Not
        # connected yet: the tests choose its embedding model first.
        node = uuid.uuid5(uuid.NAMESPACE_URL, self._request.node.nodeid).hex[:12]
        return PostgresMemory(pgvector_url(), schema=f"{PRIVATE}{node}", connect_timeout=5)
