"""The conformance suite against the in-process backend (SQLite has its own module)."""

from __future__ import annotations

from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.base import MemoryBackend
from bruno_memstore.testing import MemoryConformance


class TestInMemoryStorage(MemoryConformance):
    capabilities = InMemoryStorage.capabilities

    async def make_memory(self) -> MemoryBackend:
        return InMemoryStorage()
