"""The conformance suite against the embedded backends (always available)."""

from __future__ import annotations

from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.testing import MemoryConformance


class TestInMemoryStorage(MemoryConformance):
    capabilities = InMemoryStorage.capabilities

    async def make_memory(self) -> MemoryBackend:
        return InMemoryStorage()


class TestSQLiteMemory(MemoryConformance):
    """A database file in the test's own directory; reopening finds the same file."""

    async def make_memory(self) -> MemoryBackend:
        return SQLiteMemory(self.tmp_path / "memory.db")
