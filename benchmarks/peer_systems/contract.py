"""What the worker needs from a measured system: :class:`PeerSystem`.

A subclass wraps one library on one engine. The worker calls :meth:`PeerSystem.native`
before any timing, then times :meth:`~PeerSystem.store`, :meth:`~PeerSystem.last` and
:meth:`~PeerSystem.search` one call at a time; everything else (emptying, bulk loading,
reading back, counting) is untimed. Standard library only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from .data import ChatMessage


def remove_sqlite_files(path: str) -> None:
    """Delete a SQLite database and its journal, WAL and shared-memory files."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


Row = tuple[str, str, int | None]
"""A message as the checks compare it: (role, content, metadata turn)."""


class PeerSystem(ABC):
    """One library on one engine, driven through its public API."""

    packages: ClassVar[tuple[str, ...]] = ()
    """Distributions whose versions the report names."""
    search_scope: ClassVar[str | None] = "user"
    """``"user"``: search limited to one user; ``"all"``: the API has no user filter (the
    whole store is searched); ``None``: no search API."""
    concurrent: ClassVar[bool] = True
    """Whether several ``store`` calls may be in flight at once."""

    def __init__(self, target: dict[str, Any]) -> None:
        """``target``: where the system keeps its data (``path``, ``dsn`` or ``url``)."""
        self.target = target
        self.notes: list[str] = []

    async def open(self) -> None:  # noqa: B027
        """Connect; called once, before the first :meth:`empty`."""

    @abstractmethod
    async def empty(self) -> None:
        """Leave an empty store, ready to use."""

    async def prepare(self, firsts: Sequence[ChatMessage]) -> None:  # noqa: B027
        """After :meth:`empty`, untimed: the first message of every conversation to come."""

    async def settle(self) -> None:  # noqa: B027
        """After a load, before reads: e.g. ``VACUUM ANALYZE``."""

    async def close(self) -> None:  # noqa: B027
        """Release connections."""

    def native(self, m: ChatMessage) -> Any:
        """The library's own message object for ``m`` (built before timing)."""
        return m

    @abstractmethod
    async def store(self, native: Any, m: ChatMessage) -> None:
        """Store one message; return once the library says it is stored."""

    async def load(self, natives: Sequence[Any], msgs: Sequence[ChatMessage]) -> None:
        """Store many messages, untimed; by default one :meth:`store` after another."""
        for native, m in zip(natives, msgs, strict=True):
            await self.store(native, m)

    @abstractmethod
    async def last(self, first: ChatMessage, n: int) -> Any:
        """The newest ``n`` messages of ``first``'s conversation, oldest first."""

    @abstractmethod
    async def everything(self, first: ChatMessage) -> Any:
        """Every message of ``first``'s conversation, oldest first."""

    async def search(self, user: str, word: str, limit: int) -> Any:
        """Messages holding ``word`` (of ``user`` where the API allows); see ``search_scope``."""
        raise LookupError(f"{type(self).__name__} has no search")

    @abstractmethod
    def rows(self, result: Any) -> list[Row]:
        """A read or search result as :data:`Row` tuples."""

    async def count(self) -> int | None:
        """Messages in the store, counted directly (a check); ``None`` if not known."""
        return None
