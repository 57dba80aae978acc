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

    async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
        # The same configuration as the instance it replaces: suites that check full-text
        # behaviour set ``search_mode`` on the memory under test.
        again = await self.make_memory()
        again.search_mode = memory.search_mode
        return again

    async def make_private_memory(self) -> MemoryBackend:
        # Another file of the test's own: model changes must not touch make_memory's store.
        return SQLiteMemory(self.tmp_path / "private.db")


class TestSQLiteMemoryInMemory(MemoryConformance):
    # A private in-memory database promises everything but durability. Every instance is a
    # database of its own, so make_private_memory's default (make_memory) is private too.
    capabilities: ClassVar[frozenset[Capability] | None] = SQLiteMemory.capabilities - {
        Capability.DURABLE
    }

    async def make_memory(self) -> MemoryBackend:
        return SQLiteMemory(":memory:")
