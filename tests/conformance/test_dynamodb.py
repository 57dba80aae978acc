"""The conformance suite against DynamoDBMemory on two DynamoDB emulators the project's
scripts start (``scripts/services/dynamodb.sh``): moto's server (transactions, TTL API), also
with transactions turned off, and dynalite (neither). A class runs it against the endpoint
``DYNAMODB_ENDPOINT`` names (DynamoDB Local, or ``aws`` for DynamoDB itself, with the
environment's credentials) when it is set.

Without ``DYNAMODB_ENDPOINT`` that class is not collected: :func:`test_service_suite_configured`
says so in the warnings summary, and fails where ``BRUNO_REQUIRE_DYNAMODB=1`` declares the
service expected; an endpoint that does not answer fails every test of the class.
"""

import os
import warnings

import pytest

from bruno_memstore.backends.dynamodb import DynamoDBMemory
from bruno_memstore.testing import MemoryConformance

from . import _stores as stores


class TestDynamoDBMotoEmulator(MemoryConformance):
    capabilities = DynamoDBMemory.capabilities
    memory_factory = stores.dynamodb_moto
    private_factory = stores.dynamodb_moto_private


class TestDynamoDBMotoEmulatorOrderedWrites(MemoryConformance):
    capabilities = DynamoDBMemory.capabilities
    memory_factory = stores.dynamodb_moto_ordered
    private_factory = stores.dynamodb_moto_private


class TestDynamoDBDynaliteEmulator(MemoryConformance):
    capabilities = DynamoDBMemory.capabilities
    memory_factory = stores.dynamodb_dynalite
    private_factory = stores.dynamodb_dynalite_private


if os.environ.get("DYNAMODB_ENDPOINT"):

    class TestDynamoDBService(MemoryConformance):
        capabilities = DynamoDBMemory.capabilities
        memory_factory = stores.dynamodb_service
        private_factory = stores.dynamodb_service_private


def test_service_suite_configured() -> None:
    """A visible warning when the service class did not run; a failure where one was expected."""
    if os.environ.get("DYNAMODB_ENDPOINT"):
        return
    message = (
        "DYNAMODB_ENDPOINT is not set: the conformance class against DynamoDB (or DynamoDB "
        "Local) was not collected; only the emulators (moto, dynalite) were exercised"
    )
    if os.environ.get("BRUNO_REQUIRE_DYNAMODB", "") == "1":
        pytest.fail(message + "; BRUNO_REQUIRE_DYNAMODB=1 says the service is expected")
    warnings.warn(message, UserWarning, stacklevel=1)
