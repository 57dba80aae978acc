"""The conformance suite against SQLiteMemory: a file database per test, and ``:memory:``."""

from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.capabilities import Capability
from bruno_memstore.testing import MemoryConformance

from . import _stores as stores


class TestSQLiteMemory(MemoryConformance):
    capabilities = SQLiteMemory.capabilities
    memory_factory = stores.sqlite_file
    private_factory = stores.sqlite_private


class TestSQLiteMemoryInMemory(MemoryConformance):
    """A private in-memory database promises everything but durability; every instance is a
    database of its own, so the main factory serves as the private one too."""

    capabilities = SQLiteMemory.capabilities - {Capability.DURABLE}
    memory_factory = stores.sqlite_in_memory
