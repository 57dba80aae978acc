"""The conformance suite against memcached (``BRUNO_TEST_MEMCACHED_URL``, default: the one
``scripts/services/memcached.sh`` starts on 127.0.0.1:21211, started here if needed). An
unreachable server fails every test: this engine is required, never skipped."""

from __future__ import annotations

import pytest

import _engines as engines
from bruno_memstore.backends.memcached import MemcachedMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.errors import BackendUnavailableError
from bruno_memstore.testing import MemoryConformance

# Tests use fresh uuid ids, so one shared namespace serves every run.
PREFIX = "bruno-conformance"


@pytest.fixture(scope="module", autouse=True)
def memcached_url() -> str:
    """The memcached under test (see ``tests/_engines.py``)."""
    return engines.memcached_url()


class TestMemcachedMemory(MemoryConformance):
    capabilities = MemcachedMemory.capabilities

    async def make_memory(self) -> MemoryBackend:
        url = self._request.getfixturevalue("memcached_url")
        memory = MemcachedMemory(url, prefix=PREFIX, connect_timeout=5)
        try:
            await memory.initialize()
        except BackendUnavailableError as exc:
            pytest.fail(
                f"memcached is required for these tests and is unreachable: {exc}. "
                "Run scripts/services/memcached.sh or set BRUNO_TEST_MEMCACHED_URL.",
                pytrace=False,
            )
        return memory
