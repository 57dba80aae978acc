"""The conformance suite against the in-process backend (SQLite has its own module)."""

from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.testing import MemoryConformance

from . import _stores as stores


class TestInMemoryStorage(MemoryConformance):
    capabilities = InMemoryStorage.capabilities
    memory_factory = stores.in_process
