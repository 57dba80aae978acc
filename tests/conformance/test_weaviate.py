"""The conformance suite against WeaviateMemory: the fake Weaviate of ``tests/fakes/weaviate``
(Weaviate's REST and gRPC APIs, driven by the official client), and a real server at
``WEAVIATE_URL`` (API key in ``WEAVIATE_API_KEY``) when one is configured.

Without ``WEAVIATE_URL`` the server class is not collected: :func:`test_server_suite_configured`
says so in the warnings summary, and fails where ``BRUNO_REQUIRE_WEAVIATE=1`` declares a
server expected, so the real engine never goes unexercised silently there.
"""

import os
import warnings

import pytest

import _engines as engines
from bruno_memstore.backends.weaviate import WeaviateMemory
from bruno_memstore.testing import MemoryConformance

from . import _stores as stores


class TestWeaviateFake(MemoryConformance):
    capabilities = WeaviateMemory.capabilities
    memory_factory = stores.weaviate_fake
    private_factory = stores.weaviate_fake_private


if engines.weaviate_url():

    class TestWeaviateServer(MemoryConformance):
        capabilities = WeaviateMemory.capabilities
        memory_factory = stores.weaviate_server
        private_factory = stores.weaviate_server_private


def test_server_suite_configured() -> None:
    """A visible warning when the real-server class did not run; a failure where one was
    expected."""
    if engines.weaviate_url():
        return
    message = (
        "WEAVIATE_URL is not set: the real Weaviate conformance class was not collected, so "
        "WeaviateMemory ran against the fake Weaviate only (tests/fakes/weaviate), not the engine"
    )
    if os.environ.get("BRUNO_REQUIRE_WEAVIATE", "") == "1":
        pytest.fail(message + "; BRUNO_REQUIRE_WEAVIATE=1 says a server is expected")
    warnings.warn(message, UserWarning, stacklevel=1)
