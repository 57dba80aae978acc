"""The base of every conformance test class: how a backend says how to build its memory,
fixtures, selection.

A backend opts in by subclassing :class:`~bruno_memstore.testing.MemoryConformance` and setting
:attr:`ConformanceBase.memory_factory`, a function that takes the running test and returns
(or awaits) a memory. Tests run against what it returns, selected by the capabilities that
memory declares: a test marked ``@requires(Capability.FULL_TEXT)`` is skipped ("backend does
not declare FULL_TEXT") on a backend without it, and a test marked ``@lacks(...)`` runs only
where the capability is missing (it checks the refusal).

Tests never clean up: each one uses fresh uuid-based user and conversation ids, so server
backends can run the suite against a shared database, concurrently and repeatedly.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
import pytest_asyncio

from ..base import MemoryBackend
from ..capabilities import Capability

__all__ = [
    "ConformanceBase",
    "MemoryFactory",
    "applies_when",
    "inapplicable_reason",
    "lacks",
    "requires",
]

F = TypeVar("F")

_REQUIRES = "__memstore_requires__"
_LACKS = "__memstore_lacks__"
_WHEN = "__memstore_when__"

MemoryFactory = Callable[["ConformanceBase"], "MemoryBackend | Awaitable[MemoryBackend]"]
"""Builds a memory for the running test, which it receives (for :attr:`ConformanceBase.tmp_path`,
:attr:`ConformanceBase.key` and :meth:`ConformanceBase.fixture`); may be ``async``."""


def _mark(attr: str, caps: tuple[Capability, ...]) -> Callable[[F], F]:
    def apply(target: F) -> F:
        if isinstance(target, type):
            # A class decorator marks every test the class itself defines.
            for name, value in vars(target).items():
                if name.startswith("test") and callable(value):
                    _add(value, attr, caps)
        else:
            _add(target, attr, caps)
        return target

    return apply


def _add(func: Any, attr: str, caps: tuple[Capability, ...]) -> None:
    # Hypothesis wraps the test; the wrapper is what pytest hands back as request.function.
    current = getattr(func, attr, frozenset())
    setattr(func, attr, frozenset(current) | frozenset(caps))


def requires(*caps: Capability) -> Callable[[F], F]:
    """Run the test (or every test of the class) only on backends declaring all of ``caps``."""
    return _mark(_REQUIRES, caps)


def lacks(*caps: Capability) -> Callable[[F], F]:
    """Run the test only on backends declaring none of ``caps`` (it checks the refusal)."""
    return _mark(_LACKS, caps)


def applies_when(predicate: Callable[[type], bool], reason: str) -> Callable[[F], F]:
    """Run the test only for test classes where ``predicate(cls)`` holds (``reason`` if not)."""

    def apply(func: F) -> F:
        setattr(func, _WHEN, (predicate, reason))
        return func

    return apply


def inapplicable_reason(
    cls: type, func: Any, declared: frozenset[Capability] | None = None
) -> str | None:
    """Why ``func`` does not apply to the backend of test class ``cls``, or ``None`` if it does.

    ``declared`` defaults to the class's ``capabilities`` attribute; with neither, only the
    class-level conditions are checked.
    """
    if declared is None:
        declared = getattr(cls, "capabilities", None)
    if declared is not None:
        missing = sorted(c.name for c in getattr(func, _REQUIRES, ()) if c not in declared)
        if missing:
            return f"backend does not declare {', '.join(missing)}"
        present = sorted(c.name for c in getattr(func, _LACKS, ()) if c in declared)
        if present:
            return f"backend declares {', '.join(present)} (the test checks its absence)"
    when = getattr(func, _WHEN, None)
    if when is not None and not when[0](cls):
        return when[1]
    return None


class ConformanceBase:
    """Hooks and fixtures shared by every suite class.

    Subclasses set :attr:`memory_factory` (or override :meth:`make_memory`), and optionally
    the other class attributes below.

    Attributes:
        memory_factory: builds a new memory for one test, connected or not. It is called with
            the running test; within one test, durable backends return an instance on the same
            storage on every call, so that a reopened memory finds what the first one wrote
            (use :attr:`tmp_path` or :attr:`key` for that).
        reopen_factory: builds a new instance on the storage of the test's memory (already
            shut down), e.g. after restarting a server. Called only for backends declaring
            ``DURABLE``. Defaults to :attr:`memory_factory`.
        private_factory: builds an unconnected memory on storage no other test uses, for the
            tests that change a store's embedding model (``VectorSpaceSuite``). Defaults to
            :attr:`memory_factory`; set it when that one shares a schema, key prefix or
            collection between tests.
        capabilities: what the backend under test declares, known before it is built
            (usually ``MyMemory.capabilities``). When set, tests that do not apply are
            deselected at collection, and the suite fails if the built memory declares
            something else. When ``None``, they are skipped at run time instead.
        forbidden_text: strings the engine cannot hold in message content (PostgreSQL: NUL).
            Generated text avoids them, and the suite checks that storing them raises
            ``InvalidArgumentError`` and writes nothing.
        forbidden_metadata_text: the same for string keys and values inside metadata.
        forbidden_memory_text: the same for the text fields of memory entries (content,
            category, tags, source, custom fields); ``None`` means both lists above.
        concurrent_writers: tasks writing into one conversation at once.

    Example:
        >>> def my_memory(test):
        ...     return MyMemory(test.tmp_path / "data")
        >>> class TestMyMemory(MemoryConformance):
        ...     capabilities = MyMemory.capabilities
        ...     memory_factory = my_memory

    A factory is never bound to the test class: a plain function (or a ``staticmethod``)
    receives the running test as its one argument.
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]
    __memstore_conformance__: ClassVar[bool] = True

    memory_factory: ClassVar[MemoryFactory | None] = None
    reopen_factory: ClassVar[MemoryFactory | None] = None
    private_factory: ClassVar[MemoryFactory | None] = None
    capabilities: ClassVar[frozenset[Capability] | None] = None

    forbidden_text: ClassVar[Sequence[str]] = ()
    forbidden_metadata_text: ClassVar[Sequence[str]] = ()
    forbidden_memory_text: ClassVar[Sequence[str] | None] = None
    concurrent_writers: ClassVar[int] = 200

    _request: pytest.FixtureRequest
    _opened: list[MemoryBackend]

    # ---------------------------------------------------------------- hooks

    async def make_memory(self) -> MemoryBackend:
        """A new memory for one test: what :attr:`memory_factory` builds."""
        return await self._build("memory_factory")

    async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
        """A new instance on the storage ``memory`` used (already shut down): what
        :attr:`reopen_factory` builds, else :meth:`make_memory`."""
        if self._factory("reopen_factory") is not None:
            return await self._build("reopen_factory")
        return await self.make_memory()

    async def make_private_memory(self) -> MemoryBackend:
        """An unconnected memory on storage no other test uses: what :attr:`private_factory`
        builds, else :meth:`make_memory`."""
        if self._factory("private_factory") is not None:
            return await self._build("private_factory")
        return await self.make_memory()

    async def teardown_memory(self, memory: MemoryBackend) -> None:
        """Release ``memory`` after a test. Defaults to ``shutdown()``."""
        await memory.shutdown()

    # ---------------------------------------------------------------- for factories

    @property
    def tmp_path(self) -> Path:
        """A directory private to the running test (pytest's ``tmp_path``)."""
        return self._request.getfixturevalue("tmp_path")

    @property
    def key(self) -> str:
        """12 hex digits naming the running test, the same on every call within it (for a
        schema, key prefix or collection of its own)."""
        return uuid.uuid5(uuid.NAMESPACE_URL, self._request.node.nodeid).hex[:12]

    def fixture(self, name: str) -> Any:
        """The value of pytest fixture ``name`` for the running test (a server's URL, say)."""
        return self._request.getfixturevalue(name)

    # ---------------------------------------------------------------- fixtures

    @pytest_asyncio.fixture
    async def memory(self, request: pytest.FixtureRequest) -> AsyncIterator[MemoryBackend]:
        """The memory under test: ``make_memory()``, then ``teardown_memory()``."""
        self._request = request
        self._opened = []
        mem = await self.open_memory()
        try:
            yield mem
        finally:
            for opened in reversed(self._opened):
                await self.teardown_memory(opened)

    @pytest.fixture(autouse=True)
    def _capability_gate(self, request: pytest.FixtureRequest, memory: MemoryBackend) -> None:
        declared = type(self).capabilities
        if declared is not None and frozenset(declared) != memory.capabilities:
            pytest.fail(
                f"{type(self).__name__}.capabilities declares "
                f"{sorted(c.name for c in declared)} but the memory declares "
                f"{sorted(c.name for c in memory.capabilities)}",
                pytrace=False,
            )
        reason = inapplicable_reason(type(self), request.function, memory.capabilities)
        if reason is not None:
            pytest.skip(reason)

    @pytest.fixture(autouse=True)
    def _suite_search_mode(self, request: pytest.FixtureRequest, memory: MemoryBackend) -> None:
        """Apply the ``suite_search_mode`` of the suite class that defines the running test.

        Suites about full-text behaviour (stemming, stop words, exact match sets) declare
        ``"keyword"``, so they check the same thing on backends with and without vectors;
        :class:`VectorSearchSuite` covers vector and hybrid ranking.
        """
        name = request.function.__name__
        for klass in type(self).__mro__:
            if name in vars(klass):
                mode = vars(klass).get("suite_search_mode")
                if mode is not None:
                    memory.search_mode = mode
                return

    # ---------------------------------------------------------------- helpers for tests

    def memory_forbidden_text(self) -> list[str]:
        """What the engine refuses in memory entries (see ``forbidden_memory_text``)."""
        if self.forbidden_memory_text is not None:
            return list(self.forbidden_memory_text)
        return list(dict.fromkeys([*self.forbidden_text, *self.forbidden_metadata_text]))

    async def open_memory(self) -> MemoryBackend:
        """``make_memory()``, checked, and torn down with the test."""
        return self._track(await self.make_memory(), "make_memory")

    async def reopen(self, memory: MemoryBackend) -> MemoryBackend:
        """Shut ``memory`` down and return a new instance on the same storage."""
        await memory.shutdown()
        reopened = self._track(await self.reopen_memory(memory), "reopen_memory")
        reopened.search_mode = memory.search_mode  # a test's chosen ranking carries over
        return reopened

    def _factory(self, attribute: str) -> MemoryFactory | None:
        """The factory set on the class, as written (never bound to the test)."""
        found = inspect.getattr_static(type(self), attribute, None)
        return found.__func__ if isinstance(found, staticmethod) else found

    async def _build(self, attribute: str) -> MemoryBackend:
        factory = self._factory(attribute)
        if factory is None:
            raise TypeError(
                f"{type(self).__name__} sets no {attribute}: set it to a function of the "
                "running test that returns a memory (or override make_memory)"
            )
        made = factory(self)
        return await made if inspect.isawaitable(made) else made

    def _track(self, mem: object, hook: str) -> MemoryBackend:
        if not isinstance(mem, MemoryBackend):
            raise TypeError(f"{hook}() returned {type(mem).__name__}, not a MemoryBackend")
        self._opened.append(mem)
        return mem
