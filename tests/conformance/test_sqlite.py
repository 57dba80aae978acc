"""The conformance suite against SQLiteMemory: a file database per test, and ``:memory:``."""

from __future__ import annotations

from typing import ClassVar

from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import Capability
from bruno_memstore.testing import MemoryConformance


class TestSQLiteMemory(MemoryConformance):
    capabilities: ClassVar[frozenset[Capability] | None] = SQLiteMemory.capabilities

    async def make_memory(self) -> MemoryBackend:
        # The same file on every call within a test, so reopen_memory finds the data.
        return SQLiteMemory(self.tmp_path / "memory.db")


class TestSQLiteMemoryInMemory(MemoryConformance):
    # A private in-memory database promises everything but durability.
    capabilities: ClassVar[frozenset[Capability] | None] = SQLiteMemory.capabilities - {
        Capability.DURABLE
    }

    async def make_memory(self) -> MemoryBackend:
        return SQLiteMemory(":memory:")
