"""Threads that own SQLite connections, so the event loop never waits on the engine.

* :class:`Writer` — one thread, one connection. It takes every write waiting in its queue,
  runs them in one ``BEGIN IMMEDIATE`` transaction (each inside its own ``SAVEPOINT``, so a
  failing write leaves the others intact), commits once, and only then resolves each
  caller's future. Concurrent writers thus share one commit, and one ``fsync``. Should the
  engine roll the whole group back (a job's error that ends the transaction, a failed
  ``COMMIT``), each job runs again in a transaction of its own: only the one at fault fails.
* :class:`ReaderPool` — a few threads, each with its own connection, taking reads from one
  queue. In WAL mode they read a committed snapshot and never wait for the writer.

Results go back with ``loop.call_soon_threadsafe``; a job carries its own loop, so one store
serves callers on any event loop. A job whose caller gave up (cancelled future) is skipped
if it has not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Job", "ReaderPool", "ThenJob", "Writer"]

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
Opener = Callable[[], sqlite3.Connection]

_MAX_GROUP = 256  # writes sharing one commit, at most (bounds a group's latency)


class _Stop:
    """Queue sentinel: finish the jobs queued before it, close the connection, say so."""

    __slots__ = ("done",)

    def __init__(self, done: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None):
        self.done = done


_Item = tuple[Job, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _settle(fut: asyncio.Future[Any], exc: BaseException | None, value: Any) -> None:
    if fut.done():  # the caller was cancelled or timed out meanwhile
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
    for fut, exc, value in outcomes:
        _settle(fut, exc, value)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    # A closed loop means nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


class _Worker(ABC):
    """A daemon thread running jobs from a queue against the connection it opened."""

    def __init__(self, name: str, opener: Opener, jobs: queue.SimpleQueue[Any]) -> None:
        self._opener = opener
        self._jobs = jobs
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def start(self) -> asyncio.Future[None]:
        """Start the thread; the future resolves once its connection is open (or failed)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._started = (loop, fut)
        self._thread.start()
        return fut

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()

    def _main(self) -> None:
        assert self._started is not None
        loop, started = self._started
        self._started = None
        try:
            conn = self._opener()
        except BaseException as exc:
            _post(loop, _settle, started, exc, None)
            return
        _post(loop, _settle, started, None, None)
        stop: _Stop | None = None
        try:
            stop = self._serve(conn)
        except BaseException as exc:
            # A bug, not an engine error (those are the jobs' outcomes): nobody may be left
            # waiting on a thread that is gone.
            self._abandon(exc)
            raise
        finally:
            conn.close()
            if stop is not None and stop.done is not None:
                done_loop, done = stop.done
                _post(done_loop, _settle, done, None, None)

    def _abandon(self, exc: BaseException) -> None:
        error = RuntimeError(f"the SQLite worker thread stopped: {exc!r}")
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Stop):
                if item.done is not None:
                    _post(item.done[0], _settle, item.done[1], None, None)
            else:
                _post(item[1], _settle, item[2], error, None)

    @abstractmethod
    def _serve(self, conn: sqlite3.Connection) -> _Stop:
        """Run jobs until a stop arrives; return it."""


class _ReaderThread(_Worker):
    def _serve(self, conn: sqlite3.Connection) -> _Stop:
        jobs = self._jobs
        while True:
            item = jobs.get()
            if isinstance(item, _Stop):
                return item
            job, loop, fut = item
            if fut.cancelled():
                continue
            try:
                value = job(conn)
            except Exception as exc:
                _post(loop, _settle, fut, exc, None)
            else:
                _post(loop, _settle, fut, None, value)


class ReaderPool:
    """Threads sharing one queue of reads, each with its own connection."""

    def __init__(self, name: str, opener: Opener, size: int) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [_ReaderThread(f"{name}-{i}", opener, self._jobs) for i in range(size)]

    async def start(self) -> None:
        """Open every connection; on a failure, stop the threads that did start, then raise."""
        results = await asyncio.gather(*(t.start() for t in self._threads), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue a read; the future resolves with ``job(connection)``."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._jobs.put((job, loop, fut))
        return fut

    async def stop(self) -> None:
        """Finish the queued reads, close every connection and end the threads."""
        await _stop_all(self._threads, self._jobs)

    def stop_nowait(self) -> None:
        """Ask the threads to end (for finalizers, where nobody can wait)."""
        for _ in self._threads:
            self._jobs.put(_Stop(None))


class Writer(_Worker):
    """The one thread that writes, grouping concurrent writes into one transaction."""

    def __init__(self, name: str, opener: Opener) -> None:
        super().__init__(name, opener, queue.SimpleQueue())

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue a write; the future resolves with ``job(connection)`` once it is committed."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._jobs.put((job, loop, fut))
        return fut

    def submit_prepared(self, prepare: Callable[[], Job]) -> asyncio.Future[Any]:
        """Queue a write whose ``prepare()`` runs on this thread first, outside the transaction.

        Slow pure-Python work (text analysis) goes there: off the event loop, and not
        holding the database's write lock, which other processes may be waiting for.
        """
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._jobs.put((_Prepared(prepare), loop, fut))
        return fut

    async def stop(self) -> None:
        """Commit the queued writes, close the connection and end the thread."""
        await _stop_all([self], self._jobs)

    def stop_nowait(self) -> None:
        """Ask the thread to end (for finalizers, where nobody can wait)."""
        self._jobs.put(_Stop(None))

    def _serve(self, conn: sqlite3.Connection) -> _Stop:
        jobs = self._jobs
        while True:
            item = jobs.get()
            if isinstance(item, _Stop):
                return item
            group: list[_Item] = [item]
            stop: _Stop | None = None
            while len(group) < _MAX_GROUP:
                try:
                    item = jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Stop):
                    stop = item
                    break
                group.append(item)
            live = _prepare([entry for entry in group if not entry[2].cancelled()])
            if live:
                _deliver(_run_group(conn, live))
            if stop is not None:
                return stop


class ThenJob:
    """A write job with a step to run after its group commits, outside any transaction.

    ``then(connection)`` runs on the writer thread before the caller hears of the commit
    (once per group for equal steps); its result replaces nothing and its failure is the
    caller's failure, though the job itself stays committed. Erasures use it to checkpoint
    the WAL, which SQLite allows only outside a transaction.
    """

    __slots__ = ("job", "then")

    def __init__(self, job: Job, then: Job) -> None:
        self.job = job
        self.then = then

    def __call__(self, conn: sqlite3.Connection) -> Any:
        return self.job(conn)


class _Prepared:
    """A write job still to be built by ``factory()``, outside the transaction."""

    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[], Job]) -> None:
        self.factory = factory


def _prepare(group: list[_Item]) -> list[_Item]:
    """Build the prepared jobs of a group; those whose preparation failed are answered now."""
    if not any(isinstance(entry[0], _Prepared) for entry in group):
        return group
    ready: list[_Item] = []
    for job, loop, fut in group:
        if isinstance(job, _Prepared):
            try:
                job = job.factory()
            except Exception as exc:
                _post(loop, _settle, fut, exc, None)
                continue
        ready.append((job, loop, fut))
    return ready


def _run_group(
    conn: sqlite3.Connection, group: list[_Item]
) -> list[tuple[_Item, BaseException | None, Any]]:
    """Run the jobs in one transaction; return each job's outcome once it is committed."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except Exception as exc:  # busy past the timeout, I/O error: every job failed
        return [(entry, exc, None) for entry in group]
    outcomes: list[tuple[_Item, BaseException | None, Any]] = []
    try:
        if len(group) == 1:
            # One job: the transaction itself is its unit, no savepoint needed.
            outcomes.append((group[0], None, group[0][0](conn)))
        else:
            for entry in group:
                conn.execute("SAVEPOINT job")
                try:
                    value = entry[0](conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        raise  # the engine rolled everything back (disk full, I/O error)
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((entry, exc, None))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((entry, None, value))
        conn.execute("COMMIT")
    except Exception as exc:
        # Nothing of this group is committed. A lone job's own error lands here too, and is
        # its outcome; a group runs again job by job, so that the error reaches only the
        # job that causes it (an error of the engine's then reaches each job on its own).
        _rollback(conn)
        if len(group) == 1:
            return [(group[0], exc, None)]
        return [outcome for entry in group for outcome in _run_group(conn, [entry])]
    return _after_commit(conn, outcomes)


def _after_commit(
    conn: sqlite3.Connection, outcomes: list[tuple[_Item, BaseException | None, Any]]
) -> list[tuple[_Item, BaseException | None, Any]]:
    """Run the ``then`` steps of the committed :class:`ThenJob` jobs, each step once."""
    steps: dict[Job, BaseException | None] = {}
    for (job, _loop, _fut), exc, _value in outcomes:
        if exc is None and isinstance(job, ThenJob) and job.then not in steps:
            try:
                job.then(conn)
            except Exception as failure:
                _rollback(conn)
                steps[job.then] = failure
            else:
                steps[job.then] = None
    if not steps:
        return outcomes
    done: list[tuple[_Item, BaseException | None, Any]] = []
    for entry, exc, value in outcomes:
        job = entry[0]
        failure = steps.get(job.then) if exc is None and isinstance(job, ThenJob) else None
        done.append((entry, failure, None) if failure is not None else (entry, exc, value))
    return done


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        # If even this fails the connection is unusable, and the next BEGIN reports it.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _deliver(outcomes: list[tuple[_Item, BaseException | None, Any]]) -> None:
    """Resolve the futures, one thread-safe call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for (_job, loop, fut), exc, value in outcomes:
        by_loop.setdefault(loop, []).append((fut, exc, value))
    for loop, items in by_loop.items():
        _post(loop, _settle_all, items)


async def _stop_all(workers: list[Any], jobs: queue.SimpleQueue[Any]) -> None:
    loop = asyncio.get_running_loop()
    waits: list[asyncio.Future[None]] = []
    for worker in workers:
        if worker.alive:
            done: asyncio.Future[None] = loop.create_future()
            jobs.put(_Stop((loop, done)))
            waits.append(done)
    if waits:
        await asyncio.gather(*waits)
    for worker in workers:
        worker.join()
