"""The conformance suite against PostgreSQL (``BRUNO_TEST_POSTGRES_URL``, default: the local
server). An unreachable server fails every test: this engine is required, never skipped."""

from __future__ import annotations

import os
from typing import ClassVar

import pytest

from bruno_memstore.backends.postgres import PostgresMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.errors import BackendUnavailableError
from bruno_memstore.testing import MemoryConformance

POSTGRES_URL = os.environ.get(
    "BRUNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# Tests use fresh uuid ids, so one shared schema serves every run.
SCHEMA = "bruno_memstore_conformance"


class TestPostgresMemory(MemoryConformance):
    capabilities = PostgresMemory.capabilities
    forbidden_text: ClassVar[tuple[str, ...]] = ("\x00",)
    forbidden_metadata_text: ClassVar[tuple[str, ...]] = ("\x00",)

    async def make_memory(self) -> MemoryBackend:
        memory = PostgresMemory(POSTGRES_URL, schema=SCHEMA, connect_timeout=5)
        try:
            await memory.initialize()
        except BackendUnavailableError as exc:
            pytest.fail(
                f"PostgreSQL is required for these tests and is unreachable: {exc}. "
                "Start it or point BRUNO_TEST_POSTGRES_URL at a server.",
                pytrace=False,
            )
        return memory
