"""Plans on an async driver: one ``_perform`` for pooled engines, and the step runners.

PostgreSQL (``asyncpg``) and MySQL (``asyncmy``) run each plan on the event loop, on one
pooled connection; they differ only in how a connection is taken and how a step runs on it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from .backend import Mode, SQLMemory
from .dialect import Dialect
from .steps import (
    Commit,
    Copy,
    Done,
    Execute,
    ExecuteMany,
    Fetch,
    Insert,
    Plan,
    Step,
    begin,
    drive_async,
)

__all__ = ["AsyncSQLMemory", "Run", "connection_step", "cursor_step", "pooled", "transaction"]

Run = Callable[[Step], Awaitable[Any]]
"""Runs one step on the connection a plan holds."""


class AsyncSQLMemory(SQLMemory):
    """An SQL engine with an async driver: a plan's preparation and steps run on the loop."""

    async def _perform(self, mode: Mode, make_plan: Callable[[], Plan[Any]]) -> Any:
        plan = make_plan()
        first = begin(plan)  # the plan's preparation, on the event loop
        if isinstance(first, Done):
            return first.value
        async with self._steps(mode, first) as run:
            return await drive_async(plan, run, first)

    @abstractmethod
    def _steps(self, mode: Mode, first: Step) -> AbstractAsyncContextManager[Run]:
        """A step runner on a pooled connection for one plan whose first step is ``first``:
        in a transaction, committed at the end, unless ``mode`` reads or the step is alone."""


async def cursor_step(cur: Any, d: Dialect, step: Step) -> Any:
    """Run one step on an async DB-API cursor (``asyncmy``)."""
    kind = step.__class__
    if kind is Fetch:
        await cur.execute(d.sql(step.sql), step.args)
        return list(await cur.fetchall())
    if kind is Execute:
        return int(await cur.execute(d.sql(step.sql), step.args))
    if kind is ExecuteMany:
        await cur.executemany(d.sql(step.sql), step.rows)
        return None
    if kind is Insert:
        await cur.execute(d.sql(step.sql), step.args)
        return cur.lastrowid
    if kind is Commit:
        if not cur.connection.get_autocommit():
            await cur.connection.commit()
        return None
    raise TypeError(f"not a step: {step!r}")


async def connection_step(conn: Any, d: Dialect, step: Step) -> Any:
    """Run one step on an ``asyncpg`` connection."""
    kind = step.__class__
    if kind is Fetch:
        return await conn.fetch(d.sql(step.sql), *step.args)
    if kind is Execute:
        return _count(await conn.execute(d.sql(step.sql), *step.args))
    if kind is ExecuteMany:
        await conn.executemany(d.sql(step.sql), step.rows)
        return None
    if kind is Copy:
        await conn.copy_records_to_table(step.table, columns=step.columns, records=step.records)
        return None
    if kind is Commit:
        return None
    raise TypeError(f"not a step: {step!r}")


def _count(status: str) -> int:
    """Rows affected, from a command status such as ``DELETE 3`` (0 for ``BEGIN``)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


@asynccontextmanager
async def pooled(
    pool: Any, in_step: Callable[[BaseException], bool], lost: Callable[[BaseException], bool]
) -> AsyncIterator[Any]:
    """A connection of a DB-API pool, back in the pool only if it is known to be in step.

    A use that ends in an exception returns the connection only when ``in_step(exc)`` (the
    server itself reported the error); any other end may leave bytes of a reply unread, so
    the connection is closed, and when ``lost(exc)`` (the server went away) the idle
    connections are dropped too.
    """
    conn = await pool.acquire()
    try:
        yield conn
    except BaseException as exc:
        if not in_step(exc):
            conn.close()
            if lost(exc):
                await pool.clear()
        raise
    finally:
        pool.release(conn)  # a closed connection leaves the pool here


@asynccontextmanager
async def transaction(conn: Any, in_step: Callable[[BaseException], bool]) -> AsyncIterator[Any]:
    """A cursor of a connection with autocommit off, committed at the end, rolled back on an
    error that left the connection in step (any other: the connection is closed, and the
    server rolls back)."""
    async with conn.cursor() as cur:
        try:
            yield cur
        except BaseException as exc:
            if conn.connected and in_step(exc):
                try:
                    await conn.rollback()
                except Exception:
                    conn.close()
            raise
        # conn.commit(), not a COMMIT statement: only it refreshes the driver's view of
        # the transaction status, and the pool discards a connection it thinks is mid-
        # transaction (which would cost a new connection per write).
        await conn.commit()
