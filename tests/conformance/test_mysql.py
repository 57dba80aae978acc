"""The conformance suite against MariaDB/MySQL (``BRUNO_TEST_MYSQL_URL``, default: the local
MariaDB). An unreachable server fails every test: this engine is required, never skipped."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import ClassVar

import asyncmy
import pytest

from bruno_memstore.backends.mysql import MySQLMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.errors import BackendUnavailableError
from bruno_memstore.testing import MemoryConformance
from bruno_memstore.url import MemoryURL

MYSQL_URL = os.environ.get("BRUNO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
# Tests use fresh uuid ids, so one shared set of tables serves every run.
PREFIX = "bruno_conformance_"
# Tests that replace the store's embedding model get tables of their own (dropped after).
PRIVATE = f"bc{uuid.uuid4().hex[:8]}_"


async def connect(memory: MySQLMemory) -> MySQLMemory:
    """Connect now, failing the test (never skipping it) when the server is unreachable."""
    try:
        await memory.initialize()
    except BackendUnavailableError as exc:
        pytest.fail(
            f"MariaDB/MySQL is required for these tests and is unreachable: {exc}. "
            "Start it or point BRUNO_TEST_MYSQL_URL at a server.",
            pytrace=False,
        )
    return memory


@pytest.fixture(scope="module", autouse=True)
def _drop_private_tables() -> Iterator[None]:
    """Afterwards the private stores' tables are dropped."""
    yield
    asyncio.run(_drop_tables(PRIVATE))


async def _drop_tables(prefix: str) -> None:
    url = MemoryURL.parse(MYSQL_URL)
    conn = await asyncmy.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=url.path.lstrip("/"),
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name LIKE %s",
                (prefix.replace("_", "\\_") + "%",),
            )
            tables = [row[0] for row in await cur.fetchall()]
            if tables:
                await cur.execute("DROP TABLE " + ", ".join(f"`{t}`" for t in tables))
    finally:
        conn.close()


class TestMySQLMemory(MemoryConformance):
    capabilities = MySQLMemory.capabilities
    # utf8mb4 holds every Unicode scalar value but not a lone surrogate. Message content
    # cannot carry one (bruno-core's model refuses it); metadata values can.
    forbidden_metadata_text: ClassVar[tuple[str, ...]] = ("\udfff",)

    async def make_memory(self) -> MemoryBackend:
        return await connect(MySQLMemory(MYSQL_URL, table_prefix=PREFIX, connect_timeout=5))

    async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
        reopened = await self.make_memory()
        reopened.search_mode = memory.search_mode  # the suite's mode, as on the first one
        return reopened

    async def make_private_memory(self) -> MemoryBackend:
        # One private store per test (every call within a test reaches the same one).
        key = self._request.node.nodeid
        prefix = f"{PRIVATE}{uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:10]}_"
        return MySQLMemory(MYSQL_URL, table_prefix=prefix, connect_timeout=5)
