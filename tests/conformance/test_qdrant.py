"""The conformance suite against QdrantMemory: local mode (a directory per test), and a server
at ``QDRANT_URL`` (API key in ``QDRANT_API_KEY``) when one is configured.

Without ``QDRANT_URL`` the server class is not collected: :func:`test_server_suite_configured`
says so in the warnings summary, and fails where ``BRUNO_REQUIRE_QDRANT_SERVER=1`` declares a
server expected, so the server path never goes unexercised silently there.
"""

import os
import warnings

import pytest

import _engines as engines
from bruno_memstore.backends.qdrant import QdrantMemory
from bruno_memstore.testing import MemoryConformance

from . import _stores as stores


class TestQdrantLocal(MemoryConformance):
    capabilities = QdrantMemory.capabilities
    memory_factory = stores.qdrant_local
    private_factory = stores.qdrant_local_private


if engines.qdrant_url():

    class TestQdrantServer(MemoryConformance):
        capabilities = QdrantMemory.capabilities
        memory_factory = stores.qdrant_server
        private_factory = stores.qdrant_server_private


def test_server_suite_configured() -> None:
    """A visible warning when the server class did not run; a failure where one was expected."""
    if engines.qdrant_url():
        return
    message = (
        "QDRANT_URL is not set: the Qdrant server conformance class was not collected, so the "
        "server path of QdrantMemory was not exercised by this run (local mode was)"
    )
    if os.environ.get("BRUNO_REQUIRE_QDRANT_SERVER", "") == "1":
        pytest.fail(message + "; BRUNO_REQUIRE_QDRANT_SERVER=1 says a server is expected")
    warnings.warn(message, UserWarning, stacklevel=1)
