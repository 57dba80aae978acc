"""Self-tests of the conformance suite's machinery on variants of ``InMemoryStorage``.

They exercise the paths the two embedded backends never take: a backend that declares only
the required capabilities (the refusal tests run, the others are deselected), one with
forbidden text, the durability tests' reopen factory, and the hooks a test class may set
(factories, a ``staticmethod`` factory, an overridden ``make_memory``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pytest

from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import REQUIRED, Capability
from bruno_memstore.errors import InvalidArgumentError
from bruno_memstore.models import MessageRecord
from bruno_memstore.testing import (
    BadInputSuite,
    CapabilitySuite,
    ConformanceBase,
    DurabilitySuite,
    IdentitySuite,
    MemoryConformance,
    OrderSuite,
    RoundTripSuite,
    lacks,
    requires,
)


class MinimalMemory(InMemoryStorage):
    """Declares only what every backend must."""

    capabilities: ClassVar[frozenset[Capability]] = REQUIRED


class TestMinimalCapabilities(CapabilitySuite, IdentitySuite, OrderSuite, BadInputSuite):
    capabilities = MinimalMemory.capabilities
    memory_factory = staticmethod(lambda test: MinimalMemory())


class NulRefusingMemory(InMemoryStorage):
    """Refuses NUL characters, the way an engine that cannot store them must."""

    def _check_records(self, records: Sequence[MessageRecord]) -> None:
        for rec in records:
            if "\x00" in rec.content:
                raise InvalidArgumentError("message.content", "NUL characters cannot be stored")
            if "\\u0000" in rec.metadata:
                raise InvalidArgumentError("message.metadata", "NUL characters cannot be stored")


class TestForbiddenText(RoundTripSuite):
    """A test class may still override ``make_memory`` instead of setting a factory."""

    forbidden_text: ClassVar[Sequence[str]] = ["\x00"]
    forbidden_metadata_text: ClassVar[Sequence[str]] = ["\x00"]

    async def make_memory(self) -> MemoryBackend:
        return NulRefusingMemory()


class ReopenableMemory(InMemoryStorage):
    """Keeps its data across ``shutdown()``; stands in for a durable engine here."""

    capabilities: ClassVar[frozenset[Capability]] = InMemoryStorage.capabilities | {
        Capability.DURABLE
    }


_REOPENABLE: dict[str, ReopenableMemory] = {}  # one memory per test, by test id


def reopenable(test: ConformanceBase) -> ReopenableMemory:
    # File-based engines keep their data under the test's own tmp_path.
    (test.tmp_path / "opened").touch()
    return _REOPENABLE.setdefault(test.key, ReopenableMemory())


async def reopened(test: ConformanceBase) -> ReopenableMemory:
    assert (test.tmp_path / "opened").exists()  # the same directory within one test
    memory = _REOPENABLE[test.key]
    await memory.initialize()  # the same process memory, opened again
    return memory


class TestDurabilityHarness(DurabilitySuite):
    memory_factory = reopenable
    reopen_factory = reopened


async def test_a_suite_without_a_factory_says_what_to_set() -> None:
    with pytest.raises(TypeError, match="sets no memory_factory"):
        await MemoryConformance().make_memory()


def test_capability_marks() -> None:
    @requires(Capability.FULL_TEXT)
    class Marked:
        async def test_a(self) -> None: ...

        @lacks(Capability.TTL)
        async def test_b(self) -> None: ...

        async def helper(self) -> None: ...

    assert Marked.test_a.__memstore_requires__ == {Capability.FULL_TEXT}
    assert Marked.test_b.__memstore_requires__ == {Capability.FULL_TEXT}
    assert Marked.test_b.__memstore_lacks__ == {Capability.TTL}
    assert not hasattr(Marked.helper, "__memstore_requires__")


def test_no_suite_test_shadows_another() -> None:
    # Two topic classes defining the same test name would silently lose one of them.
    names = [
        name for cls in MemoryConformance.__mro__ for name in vars(cls) if name.startswith("test_")
    ]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert duplicates == []
    assert len(names) >= 100
