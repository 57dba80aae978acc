"""DynamoDBMemory on the DynamoDB emulators (``scripts/services/dynamodb.sh``): the URL,
what the server supports, the table option, error classes, expiry, the write order without
transactions, and a server that is down at start.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from bruno_core.models.memory import MemoryQuery

import _engines as engines
from bruno_memstore.backends.dynamodb import DynamoDBMemory
from bruno_memstore.backends.dynamodb.layout import guard_key, message_sk
from bruno_memstore.errors import BackendError, BackendUnavailableError, InvalidArgumentError
from bruno_memstore.models import to_us
from bruno_memstore.testing.builders import (
    at,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from bruno_memstore.url import MemoryURL
from faults._ports import free_port


def _memory(endpoint: str, table: str | None = None, **options: object) -> DynamoDBMemory:
    name = f"{engines.DYNAMODB_PREFIX}{table or uuid.uuid4().hex[:12]}"
    return DynamoDBMemory(
        name, endpoint_url=endpoint, region="us-east-1", **engines.DYNAMODB_KEYS, **options
    )


def _throttled(code: str, status: int = 400) -> ClientError:
    reply = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(reply, "PutItem")  # type: ignore[arg-type]


def test_url_options() -> None:
    memory = DynamoDBMemory.from_url(
        MemoryURL.parse(
            "dynamodb://my_table?region=eu-west-1&endpoint=http://127.0.0.1:8000"
            "&create_table=false&transactions=true"
        )
    )
    assert isinstance(memory, DynamoDBMemory)
    assert (memory.table_name, memory.region) == ("my_table", "eu-west-1")
    assert memory.endpoint_url == "http://127.0.0.1:8000"
    assert memory.create_table is False and memory.transactions is True
    with pytest.raises(InvalidArgumentError):
        DynamoDBMemory.from_url(MemoryURL.parse("dynamodb://key:secret@my_table"))
    with pytest.raises(InvalidArgumentError):
        DynamoDBMemory.from_url(MemoryURL.parse("dynamodb://my_table?colour=blue"))


def test_throttling_is_transient_and_validation_is_not() -> None:
    memory = DynamoDBMemory("some_table")
    assert memory._is_transient(_throttled("ThrottlingException"))
    assert memory._is_transient(_throttled("ProvisionedThroughputExceededException"))
    assert memory._is_transient(_throttled("InternalServerError", 500))
    assert not memory._is_transient(_throttled("ValidationException"))
    assert not memory._is_transient(_throttled("ConditionalCheckFailedException"))


async def test_transactions_are_detected(dynamodb_url: str, dynalite_url: str) -> None:
    moto, dynalite = _memory(dynamodb_url), _memory(dynalite_url)
    async with moto, dynalite:
        await moto.initialize()
        await dynalite.initialize()
        assert (moto.transactions, moto.ttl_enabled) == (True, True)
        assert (dynalite.transactions, dynalite.ttl_enabled) == (False, False)


async def test_ttl_attribute_set_and_expired_entries_never_read(dynamodb_url: str) -> None:
    uid = new_user_id()
    async with _memory(dynamodb_url) as memory:
        gone = make_memory_entry(uid, "expired", expires_at=datetime.now(UTC) - timedelta(1))
        kept = make_memory_entry(uid, "kept", expires_at=datetime.now(UTC) + timedelta(1))
        await memory.store_memory(gone)
        await memory.store_memory(kept)
        item = await memory.table.get({"pk": {"S": f"E#{gone.id}"}, "sk": {"S": "#"}})
        assert item is not None and int(item["ttl"]["N"]) < datetime.now(UTC).timestamp()
        found = await memory.retrieve_memories(MemoryQuery(user_id=uid))
        assert [str(m.id) for m in found] == [str(kept.id)]
        assert await memory.purge_expired() == 1


async def test_missing_table_without_create_fails(dynalite_url: str) -> None:
    memory = _memory(dynalite_url, create_table=False)
    with pytest.raises(BackendError, match="ResourceNotFoundException"):
        await memory.initialize()
    await memory.shutdown()


@pytest.mark.parametrize("transactions", [True, False])
async def test_guard_without_its_message_is_completed_once(
    dynamodb_url: str, transactions: bool
) -> None:
    """A writer that died between guard and message: readers ignore the guard, and the retry
    stores the message once, where the guard says."""
    uid, conv = new_user_id(), new_conversation_id()
    msg = make_message("hello", timestamp=at(1))
    async with _memory(dynamodb_url, transactions=transactions) as memory:
        await memory.store_message(make_message("first", timestamp=at(0)), uid, conv)
        orphan = {
            **guard_key(str(msg.id)),
            "c": {"S": conv},
            "k": {"S": message_sk(to_us(msg.timestamp), 7)},
        }
        await memory.table.put(orphan)
        # The guard alone is no message: the id reads as not stored.
        assert [m.content for m in await memory.retrieve_messages(conv)] == ["first"]
        await memory.store_message(msg, uid, conv)
        await memory.store_message(msg, uid, conv)
        window = await memory.retrieve_context(uid, conversation_id=conv, limit=10)
        assert [m.content for m in window] == ["first", "hello"]


async def test_server_down_at_start_is_a_clear_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    memory = _memory(endpoint, connect_timeout=1)
    with pytest.raises(BackendUnavailableError) as raised:
        await memory.initialize()
    assert "cannot reach DynamoDB" in str(raised.value)
    assert endpoint in str(raised.value)
    await memory.shutdown()


async def test_table_is_on_demand(dynalite_url: str) -> None:
    async with _memory(dynalite_url) as memory:
        await memory.initialize()
        async with get_session().create_client(
            "dynamodb", region_name="us-east-1", endpoint_url=dynalite_url, **engines.DYNAMODB_KEYS
        ) as client:
            table = (await client.describe_table(TableName=memory.table_name))["Table"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["by_owner"]


class _CountingClient:
    """The memory's client, with the name of every request it sends recorded."""

    def __init__(self, client: object) -> None:
        self.client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.calls.append(name)
        return getattr(self.client, name)


async def test_a_users_window_is_one_query_beside_its_archive_markers(dynalite_url: str) -> None:
    """The newest messages of a user and the archive markers of their conversations come in
    one index ``Query``; with more markers than fit beside them, archived conversations still
    leave the window."""
    uid = new_user_id()
    async with _memory(dynalite_url) as memory:
        await memory.initialize()
        for c in range(8):
            await memory.store_messages(
                [make_message(f"c{c} m{i}", timestamp=at(c * 10 + i)) for i in range(3)],
                conversation_id=f"conv-{c}",
                user_id=uid,
            )
        counting = _CountingClient(memory.table.client)
        memory.table.client = counting
        window = await memory.retrieve_context(uid, limit=4)
        assert [m.content for m in window] == ["c6 m2", "c7 m0", "c7 m1", "c7 m2"]
        assert counting.calls == ["query"]
        await memory.archive_conversation(uid, "conv-0")
        counting.calls.clear()
        window = await memory.retrieve_context(uid, limit=4)
        assert [m.content for m in window] == ["c6 m2", "c7 m0", "c7 m1", "c7 m2"]
        assert counting.calls == ["query"]
        await memory.archive_conversation(uid, "conv-7")
        window = await memory.retrieve_context(uid, limit=4)
        assert [m.content for m in window] == ["c5 m2", "c6 m0", "c6 m1", "c6 m2"]
        for c in range(2, 7):  # seven markers: more than the room beside the window
            await memory.archive_conversation(uid, f"conv-{c}")
        window = await memory.retrieve_context(uid, limit=4)
        assert [m.content for m in window] == ["c1 m0", "c1 m1", "c1 m2"]
        await memory.restore_conversation(uid, "conv-7")
        window = await memory.retrieve_context(uid, limit=4)
        assert [m.content for m in window] == ["c1 m2", "c7 m0", "c7 m1", "c7 m2"]
        sessions = await memory._collect("sessions", uid)
        assert len(sessions) == 7  # the markers are listed with the user's sessions
