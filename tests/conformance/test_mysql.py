"""The conformance suite against MariaDB/MySQL (``BRUNO_TEST_MYSQL_URL``, default: the local
MariaDB). An unreachable server fails every test: this engine is required, never skipped."""

from __future__ import annotations

import os
from typing import ClassVar

import pytest

from bruno_memstore.backends.mysql import MySQLMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.errors import BackendUnavailableError
from bruno_memstore.testing import MemoryConformance

MYSQL_URL = os.environ.get("BRUNO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
# Tests use fresh uuid ids, so one shared set of tables serves every run.
PREFIX = "bruno_conformance_"


class TestMySQLMemory(MemoryConformance):
    capabilities = MySQLMemory.capabilities
    # utf8mb4 holds every Unicode scalar value but not a lone surrogate. Message content
    # cannot carry one (bruno-core's model refuses it); metadata values can.
    forbidden_metadata_text: ClassVar[tuple[str, ...]] = ("\udfff",)

    async def make_memory(self) -> MemoryBackend:
        memory = MySQLMemory(MYSQL_URL, table_prefix=PREFIX, connect_timeout=5)
        try:
            await memory.initialize()
        except BackendUnavailableError as exc:
            pytest.fail(
                f"MariaDB/MySQL is required for these tests and is unreachable: {exc}. "
                "Start it or point BRUNO_TEST_MYSQL_URL at a server.",
                pytrace=False,
            )
        return memory
