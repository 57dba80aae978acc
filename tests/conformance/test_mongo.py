"""The conformance suite against MongoMemory on the two MongoDB wire-protocol emulators the
project's scripts start (no real ``mongod`` can be installed here), and on a real MongoDB at
``MONGODB_URL`` when one is configured (see ``tests/_engines.py``):

* SecantusDB (emulator): a single-node replica set to pymongo, so multi-document steps run
  in transactions; it builds no text index, so keyword search is the kit's index.
* nx-27017 (emulator): a standalone server, so multi-document steps run as ordered,
  idempotent single-document writes. Its ``$text`` is not MongoDB's, so the suite runs there
  with the kit's keyword index (``docs/backends/mongo.md``, emulator differences).

Without ``MONGODB_URL`` the real-server class is not collected: :func:`test_server_suite_configured`
says so in the warnings summary, and fails where ``BRUNO_REQUIRE_MONGODB=1`` declares a
server expected (an unreachable one fails every test of the class, never skips it).
"""

import os
import warnings

import pytest

import _engines as engines
from bruno_memstore.backends.mongo import MongoMemory
from bruno_memstore.testing import MemoryConformance
from bruno_memstore.testing.suite.vector_filters import VectorFilterSuite

from . import _stores as stores


class TestMongoSecantusEmulator(MemoryConformance):
    capabilities = MongoMemory.capabilities
    memory_factory = stores.mongo_secantus
    private_factory = stores.mongo_secantus_private


class TestMongoTTLMonitorMidSearch(VectorFilterSuite):
    """The vector-filter suite while MongoDB's TTL monitor deletes expired entries (run
    before every search, on SecantusDB): the suite must tell a deletion by the engine from a
    wrong answer."""

    capabilities = MongoMemory.capabilities
    memory_factory = stores.mongo_monitored


class TestMongoNxEmulator(MemoryConformance):
    capabilities = MongoMemory.capabilities
    forbidden_memory_text = ("\x00",)  # see stores.NxMongoMemory
    memory_factory = stores.mongo_nx
    private_factory = stores.mongo_nx_private


if engines.mongodb_url():

    class TestMongoDBServer(MemoryConformance):
        capabilities = MongoMemory.capabilities
        memory_factory = stores.mongodb
        private_factory = stores.mongodb_private


def test_server_suite_configured() -> None:
    """A visible warning when the real-server class did not run; a failure where one was
    expected."""
    if engines.mongodb_url():
        return
    message = (
        "MONGODB_URL is not set: the MongoDB server conformance class was not collected, so "
        "MongoMemory ran against the emulators only (SecantusDB and nx-27017)"
    )
    if os.environ.get("BRUNO_REQUIRE_MONGODB", "") == "1":
        pytest.fail(message + "; BRUNO_REQUIRE_MONGODB=1 says a server is expected")
    warnings.warn(message, UserWarning, stacklevel=1)
