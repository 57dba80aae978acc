"""The shared layer's choke point against fakes: lazy connect, retries, timeouts, translation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import ClassVar

import pytest
from prometheus_client import REGISTRY

from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.capabilities import REQUIRED, Capability
from bruno_memstore.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CapabilityError,
    ClosedError,
    InvalidArgumentError,
    OwnershipError,
)
from bruno_memstore.models import MessageRecord
from bruno_memstore.primitives import AppendResult
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing import make_message, new_conversation_id, new_user_id

FAST_RETRY = RetryPolicy(attempts=4, initial_backoff=0.001, max_backoff=0.002, deadline=5.0)


class Hiccup(Exception):
    """A driver error the fake declares transient."""


class FaultyMemory(InMemoryStorage):
    """``InMemoryStorage`` whose primitives fail as a test scripts them."""

    backend_name: ClassVar[str] = "faulty"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.failures: list[BaseException] = []  # raised, in order, before appends succeed
        self.append_calls = 0
        self.read_delay = 0.0
        self.read_delays: list[float] = []  # per call, overriding read_delay
        self.connects = 0
        self.closes = 0
        self.connect_error: BaseException | None = None

    async def _connect(self) -> None:
        self.connects += 1
        await asyncio.sleep(0.01)  # long enough for concurrent first calls to pile up
        if self.connect_error is not None:
            raise self.connect_error

    async def _close(self) -> None:
        self.closes += 1

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, (Hiccup, TimeoutError))

    def _redact(self, text: str) -> str:
        return text.replace("hunter2", "***")

    def describe(self) -> str:
        return "faulty://db.internal"

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        self.append_calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return await super()._append_messages(
            conversation_id, user_id, records, enforce_owner=enforce_owner
        )

    async def _read_window(self, **kwargs: object) -> list[MessageRecord]:
        delay = self.read_delays.pop(0) if self.read_delays else self.read_delay
        if delay:
            await asyncio.sleep(delay)
        return await super()._read_window(**kwargs)  # type: ignore[arg-type]


def _errors(operation: str, error: str) -> float:
    value = REGISTRY.get_sample_value(
        "bruno_memstore_operation_errors_total",
        {"backend": "faulty", "operation": operation, "error": error},
    )
    return value or 0.0


async def test_transient_failures_are_retried_until_success() -> None:
    mem = FaultyMemory(retry=FAST_RETRY)
    mem.failures = [Hiccup("blip 1"), Hiccup("blip 2"), Hiccup("blip 3")]
    uid, conv = new_user_id(), new_conversation_id()
    msg = make_message("survives three hiccups")
    await mem.store_message(msg, uid, conv)
    assert mem.append_calls == 4
    assert [m.id for m in await mem.retrieve_messages(conv)] == [msg.id]


async def test_retries_are_bounded() -> None:
    mem = FaultyMemory(retry=FAST_RETRY)
    mem.failures = [Hiccup(f"blip {i}") for i in range(10)]
    conv = new_conversation_id()
    with pytest.raises(BackendError) as info:
        await mem.store_message(make_message("never lands"), new_user_id(), conv)
    assert mem.append_calls == FAST_RETRY.attempts
    assert isinstance(info.value.cause, Hiccup)
    assert info.value.__cause__ is info.value.cause
    assert info.value.backend == "faulty"
    assert info.value.operation == "store_message"
    assert "Hiccup" in str(info.value)
    assert "faulty://db.internal" in str(info.value)
    mem.failures.clear()
    assert await mem.retrieve_messages(conv) == []


async def test_permanent_errors_are_not_retried() -> None:
    mem = FaultyMemory(retry=FAST_RETRY)
    mem.failures = [RuntimeError("constraint violated, password=hunter2")]
    before = _errors("store_message", "RuntimeError")
    with pytest.raises(BackendError) as info:
        await mem.store_message(make_message("x"), new_user_id(), new_conversation_id())
    assert mem.append_calls == 1
    assert type(info.value) is BackendError
    assert isinstance(info.value.cause, RuntimeError)
    assert "hunter2" not in str(info.value)
    assert "password=***" in str(info.value)
    assert _errors("store_message", "RuntimeError") == before + 1


async def test_a_single_attempt_policy_does_not_retry() -> None:
    mem = FaultyMemory(retry=RetryPolicy(attempts=1))
    mem.failures = [Hiccup("once")]
    with pytest.raises(BackendError):
        await mem.store_message(make_message("x"), new_user_id(), new_conversation_id())
    assert mem.append_calls == 1


async def test_connection_errors_become_unavailable() -> None:
    mem = FaultyMemory(retry=FAST_RETRY)
    mem.failures = [ConnectionResetError("peer reset")]
    with pytest.raises(BackendUnavailableError) as info:
        await mem.store_message(make_message("x"), new_user_id(), new_conversation_id())
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.cause, ConnectionResetError)


async def test_library_errors_pass_through_untranslated_and_unretried() -> None:
    mem = FaultyMemory(retry=FAST_RETRY)
    mem.failures = [OwnershipError("not yours")]
    with pytest.raises(OwnershipError):
        await mem.store_message(make_message("x"), new_user_id(), new_conversation_id())
    assert mem.append_calls == 1


async def test_slow_operations_time_out() -> None:
    mem = FaultyMemory(operation_timeout=0.05, retry=RetryPolicy(attempts=1))
    mem.read_delay = 5.0
    started = time.perf_counter()
    with pytest.raises(BackendTimeoutError) as info:
        await mem.retrieve_messages(new_conversation_id())
    assert time.perf_counter() - started < 1.0
    assert isinstance(info.value, TimeoutError)
    assert info.value.operation == "retrieve_messages"


async def test_a_timeout_the_backend_calls_transient_is_retried() -> None:
    mem = FaultyMemory(operation_timeout=0.05, retry=FAST_RETRY)
    uid, conv = new_user_id(), new_conversation_id()
    await mem.store_message(make_message("read me"), uid, conv)
    mem.read_delays = [5.0, 5.0]  # two slow attempts, then a fast one
    got = await mem.retrieve_messages(conv)
    assert [m.content for m in got] == ["read me"]
    assert mem.read_delays == []


async def test_no_timeout_by_default() -> None:
    mem = FaultyMemory()
    mem.read_delay = 0.1
    assert await mem.retrieve_messages(new_conversation_id()) == []


async def test_connects_lazily_once_under_concurrency() -> None:
    mem = FaultyMemory()
    assert not mem.connected
    uid, conv = new_user_id(), new_conversation_id()
    msgs = [make_message(f"m{i}") for i in range(30)]
    await asyncio.gather(*(mem.store_message(m, uid, conv) for m in msgs))
    assert mem.connects == 1
    assert mem.connected
    await mem.shutdown()
    assert (mem.closes, mem.connected) == (1, False)
    await mem.shutdown()  # idempotent
    assert mem.closes == 1
    with pytest.raises(ClosedError):  # closed until opened again, not reconnected
        await mem.retrieve_messages(conv)
    assert mem.connects == 1
    await mem.initialize()
    assert len(await mem.retrieve_messages(conv)) == 30
    assert mem.connects == 2


async def test_a_failed_connect_is_translated_and_tried_again() -> None:
    mem = FaultyMemory()
    mem.connect_error = OSError("connection refused by db.internal password=hunter2")
    with pytest.raises(BackendUnavailableError) as info:
        await mem.initialize()
    assert info.value.operation == "connect"
    assert "hunter2" not in str(info.value)
    assert not mem.connected
    mem.connect_error = None
    async with mem:
        assert mem.connected
    assert mem.connects == 2
    assert not mem.connected


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"context_window": 0}, "context_window"),
        ({"context_window": 1001}, "context_window"),
        ({"context_window": "20"}, "context_window"),
        ({"operation_timeout": 0}, "operation_timeout"),
        ({"operation_timeout": -1.0}, "operation_timeout"),
    ],
)
def test_constructor_validates(options: dict[str, object], argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        FaultyMemory(**options)
    assert info.value.argument == argument


class ReducedMemory(InMemoryStorage):
    capabilities: ClassVar[frozenset[Capability]] = REQUIRED


async def test_undeclared_capabilities_raise() -> None:
    mem = ReducedMemory()
    assert mem.supports(Capability.MESSAGES)
    assert not mem.supports(Capability.FULL_TEXT)
    with pytest.raises(CapabilityError) as info:
        await mem.search(new_user_id(), "anything")
    assert "full_text" in str(info.value)
    assert info.value.operation == "search"
    with pytest.raises(CapabilityError):
        await mem.forget_user(new_user_id())
