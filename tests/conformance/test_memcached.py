"""The conformance suite against memcached (see ``tests/_engines.py``)."""

from bruno_memstore.backends.memcached import MemcachedMemory
from bruno_memstore.testing import MemoryConformance

from . import _stores as stores


class TestMemcachedMemory(MemoryConformance):
    capabilities = MemcachedMemory.capabilities
    memory_factory = stores.memcached
