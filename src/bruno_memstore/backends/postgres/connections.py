"""Pooled ``asyncpg`` connections, the last ones used kept at hand between operations."""

from __future__ import annotations

from functools import partial
from types import TracebackType
from typing import Any

from asyncpg.exceptions import InterfaceError

from ..sql.aio import Run, connection_step
from ..sql.dialect import Dialect

__all__ = ["Connections", "Steps"]


class Connections:
    """An ``asyncpg`` pool whose connections, after an operation that ended well, wait in a
    list of their own for the next one, rather than going back to the pool.

    Taking a connection from the list and putting it back costs no await; the pool's own
    round (a lock, a task shielding each release, an inactivity timer) costs two turns of the
    event loop and about 60 µs of CPU per operation. The list never starves the pool: a
    connection is kept only while the pool has one to give (so nobody waits on it), and
    every caller looks at the list first. A connection in a transaction, closed, or used by
    an operation that failed goes back to the pool, which rolls back or discards it; one
    whose server went away while it was kept is left out when next taken.
    """

    __slots__ = ("_keep", "_kept", "pool")

    def __init__(self, pool: Any, keep: int) -> None:
        """``keep``: how many connections wait in the list at most (0: none)."""
        self.pool = pool
        self._keep = keep
        self._kept: list[Any] = []

    async def take(self) -> Any:
        """A connection for one operation."""
        while self._kept:
            conn = self._kept.pop()
            try:
                if not conn.is_closed():
                    return conn
                await self.pool.release(conn)  # it ended while kept
            except InterfaceError:
                pass  # it ended while kept, and the pool took it back already
        return await self.pool.acquire()

    async def give_back(self, conn: Any, ok: bool) -> None:
        """Return ``conn``; ``ok``: the operation that used it ended without an error."""
        pool = self.pool
        if (
            ok
            and len(self._kept) < self._keep
            # the pool has a connection to give: some never connected, or one idle
            and (pool.get_size() < pool.get_max_size() or pool.get_idle_size() > 0)
            and not conn.is_closed()
            and not conn.is_in_transaction()
        ):
            self._kept.append(conn)
        else:
            await pool.release(conn)

    async def release_kept(self) -> None:
        """Hand every kept connection back to the pool (before it closes)."""
        kept, self._kept = self._kept, []
        for conn in kept:
            await self.pool.release(conn)


class Steps:
    """One plan's step runner on a connection of :class:`Connections`, in a transaction
    unless ``transaction`` is false (an ``async with`` block; a class rather than a
    generator-based context manager, which costs more on every operation)."""

    __slots__ = ("_conn", "_connections", "_dialect", "_transaction", "_xact")

    def __init__(self, connections: Connections, dialect: Dialect, transaction: bool) -> None:
        self._connections = connections
        self._dialect = dialect
        self._transaction = transaction
        self._conn: Any = None
        self._xact: Any = None

    async def __aenter__(self) -> Run:
        conn = self._conn = await self._connections.take()
        if self._transaction:
            xact = conn.transaction()
            try:
                await xact.start()
            except BaseException:
                await self._connections.give_back(conn, False)
                raise
            self._xact = xact
        return partial(connection_step, conn, self._dialect)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, xact = self._conn, self._xact
        try:
            if xact is not None:
                await (xact.commit() if kind is None else xact.rollback())
        except BaseException:
            await self._connections.give_back(conn, False)
            raise
        await self._connections.give_back(conn, kind is None)
