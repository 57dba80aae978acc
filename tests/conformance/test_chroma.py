"""The conformance suite against ChromaMemory (see ``tests/_engines.py``): embedded (a
directory per test), the shared server (collections of each test's own), and a private server
whose restart is what reopening means for the durability tests."""

from _engines import ChromaServer, host_port  # noqa: F401 - for tests/backends/test_chroma.py
from _engines import drop_chroma_collections as drop_collections  # noqa: F401 - the same
from bruno_memstore.backends.chroma import ChromaMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.testing import DurabilitySuite, MemoryConformance

from . import _stores as stores


class TestChromaEmbedded(MemoryConformance):
    capabilities = ChromaMemory.capabilities
    forbidden_metadata_text = stores.SURROGATE
    memory_factory = stores.chroma_embedded
    private_factory = stores.chroma_embedded_private


class TestChromaServer(MemoryConformance):
    capabilities = ChromaMemory.capabilities
    forbidden_metadata_text = stores.SURROGATE
    memory_factory = stores.chroma_server
    private_factory = stores.chroma_server_private

    async def teardown_memory(self, memory: MemoryBackend) -> None:
        await stores.chroma_server_teardown(self, memory)


class TestChromaServerRestart(DurabilitySuite):
    capabilities = ChromaMemory.capabilities
    memory_factory = stores.chroma_restartable
    reopen_factory = stores.chroma_restarted
