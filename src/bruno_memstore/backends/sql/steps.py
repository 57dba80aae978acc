"""Plans: the SQL work of one operation, written once and run by any driver.

A *plan* is a generator that yields :data:`Step` values (statements to run) and receives
each one's result; what it returns is the operation's result. It does no I/O itself, so the
same plan runs inside SQLite's writer thread (:func:`~.sync.run_plan`, a blocking driver) and
on an ``asyncpg`` or ``asyncmy`` connection (:func:`drive_async`). A statement's error is raised
inside the plan at the ``yield`` (so a plan may catch, say, a duplicate key); an uncaught
error ends the plan and reaches the caller.

Statements are written with ``?`` placeholders; an engine whose driver wants another style
(``$1``, ``%s``) rewrites them (:meth:`Dialect.sql`). A plan's code before its first
``yield`` is preparation (text analysis, vector encoding): engines may run it before they
open the transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "Commit",
    "Copy",
    "Done",
    "Execute",
    "ExecuteMany",
    "Fetch",
    "Insert",
    "Plan",
    "Step",
    "begin",
    "drive_async",
]

T = TypeVar("T")


class Fetch(NamedTuple):
    """A query; its result is the list of rows (tuples, or the driver's records).

    ``alone``: the plan runs no other statement, so an engine may skip its transaction.
    """

    sql: str
    args: Sequence[Any] = ()
    alone: bool = False


class Execute(NamedTuple):
    """A statement whose result is the number of rows it changed."""

    sql: str
    args: Sequence[Any] = ()
    alone: bool = False


class ExecuteMany(NamedTuple):
    """One statement for each argument row; no result."""

    sql: str
    rows: Sequence[Sequence[Any]]


class Insert(NamedTuple):
    """An ``INSERT`` of one row whose result is the new row's integer key (``lastrowid``),
    or ``None`` when it inserted nothing (``ON CONFLICT DO NOTHING``)."""

    sql: str
    args: Sequence[Any] = ()


class Commit(NamedTuple):
    """What the plan did so far may be committed now (long deletions go in bounded parts).

    Engines whose transaction holds more than this plan (a group commit) ignore it.
    """


class Copy(NamedTuple):
    """A bulk load of ``records`` (rows of ``columns``) into ``table`` (PostgreSQL's ``COPY``;
    only for engines whose driver has one)."""

    table: str
    columns: Sequence[str]
    records: Sequence[Sequence[Any]]


Step = Fetch | Execute | ExecuteMany | Insert | Commit | Copy | Any  # engines may add their own
Plan = Generator[Step, Any, T]


class Done:
    """A finished plan's result (what :func:`begin` returns when there is no step)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def begin(plan: Plan[T]) -> Step | Done:
    """Run the plan's preparation: its first step, or ``Done`` holding its result."""
    try:
        return next(plan)
    except StopIteration as stop:
        return Done(stop.value)


async def drive_async(
    plan: Plan[T], do: Callable[[Step], Awaitable[Any]], first: Step | Done | None = None
) -> T:
    """Run ``plan`` to its end, executing each step with the coroutine ``do``.

    ``first`` is the plan's first step when :func:`begin` already took it.
    """
    step = begin(plan) if first is None else first
    if isinstance(step, Done):
        return step.value  # type: ignore[no-any-return]
    send, throw = plan.send, plan.throw
    try:
        while True:
            try:
                result = await do(step)
            except Exception as exc:
                step = throw(exc)
            else:
                step = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
