"""Plans on DB-API connections owned by threads (SQLite): one writer, two reader pools.

Every plan runs whole on one thread: writes on the writer, which commits the writes waiting
together in one transaction (:func:`.sync.run_group`); quick reads on a reader pool; reads
whose time grows with a user's data (``scan``) on a pool of their own, each in one
snapshot, so that slow searches never hold up a window read.

Point reads (an owner, a session, a short window: tens of microseconds on a warm cache) run
on the event loop's own connection, where the engine offers one: a hop to a thread and back
costs more than the read, and far more when the cores are busy. A point read that takes
longer than :attr:`ThreadedSQLMemory.inline_budget` (a cold cache, a slow disk), or that
finds the database busy, sends point reads to the reader pool for
:attr:`ThreadedSQLMemory.inline_pause` seconds, so the loop is never held up twice in a row;
where the system counts them per thread, one that was only preempted (its core given to
another process meanwhile, having neither waited nor used the CPU that long) does not.
Callers on loops of other threads use the pool.
"""

from __future__ import annotations

import threading
import time
import weakref
from abc import abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar

from ..kit.threads import Job, ReaderPool, Writer
from .append import Append, Outcome
from .backend import Mode, SQLMemory
from .steps import Plan
from .sync import AppendJob, PlanJob, run_group, run_plan

try:
    from resource import RUSAGE_THREAD as _RUSAGE_THREAD
    from resource import getrusage
except ImportError:  # not Linux: wall time alone judges a point read
    _RUSAGE_THREAD = None

__all__ = ["ThreadedSQLMemory"]


class ThreadedSQLMemory(SQLMemory):
    """An SQL engine whose blocking connections belong to threads (see the module docstring).

    A subclass gives :attr:`thread_name`, :attr:`readers` (threads per pool) and
    :meth:`_openers`, and may wrap a deletion's job (:meth:`_erasure`).
    """

    thread_name: ClassVar[str] = "bruno-memstore-sql"
    readers: int = 2
    inline_budget: ClassVar[float] = 0.005
    inline_pause: ClassVar[float] = 0.5

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._writer: Writer[Any] | None = None
        self._reader_pool: ReaderPool[Any] | None = None
        self._search_pool: ReaderPool[Any] | None = None
        self._finalizer: weakref.finalize | None = None
        self._inline: Any = None  # the loop's connection for point reads
        self._inline_thread = 0  # the thread that opened it, the only one to use it
        self._inline_paused_until = 0.0

    @abstractmethod
    def _openers(self) -> tuple[Callable[[], Any], Callable[[], Any] | None]:
        """The writer's connection opener, and the readers' (``None``: the writer serves
        reads too). They run on the threads and must not hold ``self``."""

    def _inline_opener(self) -> Callable[[], Any] | None:
        """The opener of the loop's own connection for point reads, which must fail at once
        when the database is busy rather than wait; ``None`` (the default): none."""
        return None

    async def _connect(self) -> None:
        open_writer, open_reader = self._openers()
        writer: Writer[Any] = Writer(f"{self.thread_name}-writer", open_writer, run_group=run_group)
        await writer.start()  # the writer's opener migrates the schema first
        pools: list[ReaderPool[Any]] = []
        if open_reader is not None:
            pools = [
                ReaderPool(f"{self.thread_name}-reader", open_reader, self.readers),
                ReaderPool(f"{self.thread_name}-search", open_reader, self.readers),
            ]
            try:
                for pool in pools:
                    await pool.start()
            except BaseException:
                for pool in pools:
                    await pool.stop()
                await writer.stop()
                raise
        self._writer = writer
        self._reader_pool, self._search_pool = pools or (None, None)
        open_inline = self._inline_opener() if pools else None
        self._inline = open_inline() if open_inline is not None else None
        self._inline_thread = threading.get_ident()
        # Threads hold no reference to this object; if it is dropped without shutdown(),
        # the finalizer still ends them.
        self._finalizer = weakref.finalize(self, _stop_nowait, writer, pools)

    async def _close(self) -> None:
        writer = self._writer
        pools = [self._reader_pool, self._search_pool]
        self._writer = self._reader_pool = self._search_pool = None
        inline, self._inline = self._inline, None
        if inline is not None and threading.get_ident() == self._inline_thread:
            inline.close()
        # (Opened by another thread, which alone may close it: it closes when collected.)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        for pool in pools:
            if pool is not None:
                await pool.stop()
        if writer is not None:
            await writer.stop()

    async def _perform(self, mode: Mode, make_plan: Callable[[], Plan[Any]]) -> Any:
        if mode == "point":
            inline = self._inline
            if (
                inline is not None
                and time.monotonic() >= self._inline_paused_until
                and threading.get_ident() == self._inline_thread
            ):
                usage = thread_usage()
                started = time.perf_counter()
                try:
                    return run_plan(inline, make_plan)
                except Exception as exc:
                    if not self._is_transient(exc):
                        raise
                    self._inline_paused_until = time.monotonic() + self.inline_pause
                finally:
                    budget = self.inline_budget
                    if time.perf_counter() - started > budget and _slow_itself(usage, budget):
                        self._inline_paused_until = time.monotonic() + self.inline_pause
            mode = "read"
        if mode == "read":
            return await self._submit(partial(run_plan, make_plan=make_plan), self._reader_pool)
        if mode == "scan":
            return await self._submit(partial(_in_snapshot, make_plan), self._search_pool)
        assert self._writer is not None, "not connected"
        if mode == "write":
            return await self._writer.submit_prepared(partial(PlanJob, make_plan))
        return await self._writer.submit_prepared(partial(self._erasure, make_plan))

    async def _write_appends(self, appends: Sequence[Append]) -> list[Outcome]:
        # The writer runs the appends waiting together as one plan (see ``sync``).
        return await self._submit(AppendJob(self._sql, appends))

    def _erasure(self, make_plan: Callable[[], Plan[Any]]) -> Job:
        """A deletion's job (an engine may add cleaning after it)."""
        return PlanJob(make_plan)

    def _submit(self, job: Job, pool: ReaderPool[Any] | None = None) -> Any:
        """``job`` on ``pool``, or on the writer (no pool: a write, or no readers)."""
        if pool is not None:
            return pool.submit(job)
        assert self._writer is not None, "not connected"
        return self._writer.submit(job)


def thread_usage() -> tuple[float, int, int] | None:
    """The calling thread's CPU seconds, voluntary and involuntary context switches so far;
    ``None`` where the system does not count them per thread."""
    if _RUSAGE_THREAD is None:
        return None
    usage = getrusage(_RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw, usage.ru_nivcsw


def _slow_itself(before: tuple[float, int, int] | None, budget: float) -> bool:
    """Whether a point read past its budget was slow itself: it waited (for the disk, for a
    lock) or used the CPU that long. One only preempted meanwhile (the system gave the core
    to another process: a busy machine, not a slow read) was not."""
    after = thread_usage()
    if before is None or after is None:
        return True
    cpu, waits, preemptions = (a - b for a, b in zip(after, before, strict=True))
    return waits > 0 or preemptions == 0 or cpu > budget


def _in_snapshot(make_plan: Callable[[], Plan[Any]], conn: Any) -> Any:
    """Run a plan's reads against one consistent snapshot (a read transaction); inside a
    transaction already (reads served by the writer), that one is it."""
    if conn.in_transaction:
        return run_plan(conn, make_plan)
    conn.execute("BEGIN")
    try:
        return run_plan(conn, make_plan)
    finally:
        conn.execute("COMMIT")


def _stop_nowait(writer: Writer[Any], pools: list[ReaderPool[Any]]) -> None:
    writer.stop_nowait()
    for pool in pools:
        pool.stop_nowait()
