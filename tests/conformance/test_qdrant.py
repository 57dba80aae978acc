"""The conformance suite against QdrantMemory.

``TestQdrantLocal`` runs everything against qdrant-client's local mode: a fresh directory per
test, reopened for the durability tests.

``TestQdrantServer`` runs the same suite against a Qdrant server at ``QDRANT_URL`` (API key in
``QDRANT_API_KEY``), each test under a fresh collection prefix whose collections are deleted
afterwards. The class exists only when ``QDRANT_URL`` is set. Without it,
:func:`test_server_suite_configured` says so in the warnings summary of every run, and fails
where ``BRUNO_REQUIRE_QDRANT_SERVER=1`` declares that a server is expected (CI with a Qdrant
service), so the server path can never silently go unexercised there.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from typing import ClassVar

import pytest

from bruno_memstore.backends.qdrant import QdrantMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import Capability
from bruno_memstore.testing import MemoryConformance

QDRANT_URL = os.environ.get("QDRANT_URL", "")
QDRANT_API_KEY = os.environ.get("QDRANT_API_KEY") or None
SERVER_REQUIRED = os.environ.get("BRUNO_REQUIRE_QDRANT_SERVER", "") == "1"


class TestQdrantLocal(MemoryConformance):
    capabilities: ClassVar[frozenset[Capability] | None] = QdrantMemory.capabilities

    async def make_memory(self) -> MemoryBackend:
        # The same directory on every call within a test, so reopen_memory finds the data.
        return QdrantMemory(self.tmp_path / "qdrant")

    async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
        return _same_mode(await self.make_memory(), memory)

    async def make_private_memory(self) -> MemoryBackend:
        # Another directory of this test only: model changes touch no other test's data.
        return QdrantMemory(self.tmp_path / "qdrant-private")


def _same_mode(reopened: MemoryBackend, before: MemoryBackend) -> MemoryBackend:
    """A reopened memory ranks as the one it replaces did: suites that check keyword ranking
    set ``search_mode`` on the test's memory, and the reopened instance must keep it."""
    reopened.search_mode = before.search_mode
    return reopened


def test_server_suite_configured() -> None:
    """Whether the server conformance class ran: a visible warning when it did not, and a
    failure when a server was expected (``BRUNO_REQUIRE_QDRANT_SERVER=1``)."""
    if QDRANT_URL:
        assert "TestQdrantServer" in globals()
        return
    message = (
        "QDRANT_URL is not set: the Qdrant server conformance class was not collected, so the "
        "server path of QdrantMemory was not exercised by this run (local mode was)"
    )
    if SERVER_REQUIRED:
        pytest.fail(message + "; BRUNO_REQUIRE_QDRANT_SERVER=1 says a server is expected")
    warnings.warn(message, UserWarning, stacklevel=1)


if QDRANT_URL:

    def _drop_prefix(prefix: str) -> None:
        """Delete every alias and collection of a test prefix from the shared server."""
        from qdrant_client import QdrantClient
        from qdrant_client import models as qm

        with contextlib.closing(QdrantClient(url=QDRANT_URL, api_key=QDRANT_API_KEY)) as client:
            drop = [
                qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=a.alias_name))
                for a in client.get_aliases().aliases
                if a.alias_name.startswith(prefix + "_")
            ]
            if drop:
                client.update_collection_aliases(change_aliases_operations=drop)
            for coll in client.get_collections().collections:
                if coll.name.startswith(prefix + "_"):
                    client.delete_collection(coll.name)

    class TestQdrantServer(MemoryConformance):
        capabilities: ClassVar[frozenset[Capability] | None] = QdrantMemory.capabilities

        def _prefixes(self) -> tuple[str, str]:
            """This test's collection prefixes (main, private), dropped after the test."""
            node = self._request.node
            prefixes = getattr(node, "_qdrant_prefixes", None)
            if prefixes is None:
                tag = uuid.uuid4().hex[:12]
                prefixes = node._qdrant_prefixes = (f"t{tag}", f"p{tag}")
                for prefix in prefixes:
                    self._request.addfinalizer(lambda prefix=prefix: _drop_prefix(prefix))
            return prefixes

        async def make_memory(self) -> MemoryBackend:
            return QdrantMemory(url=QDRANT_URL, api_key=QDRANT_API_KEY, prefix=self._prefixes()[0])

        async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
            return _same_mode(await self.make_memory(), memory)

        async def make_private_memory(self) -> MemoryBackend:
            return QdrantMemory(url=QDRANT_URL, api_key=QDRANT_API_KEY, prefix=self._prefixes()[1])
