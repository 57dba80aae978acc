"""Threads that own a blocking client's connection, so the event loop never waits on it.

* :class:`Writer` — one thread, one connection. It takes every job waiting in its queue (up
  to ``max_group``) and hands them to ``run_group`` together: an engine with transactions
  runs them in one and commits once, so concurrent writers share one commit. Without
  ``run_group`` the jobs run one by one, in arrival order.
* :class:`ReaderPool` — a few threads, each with its own connection, taking jobs from one
  queue.

A job is a function of the connection: ``job(conn)``'s result (or exception) resolves the
caller's future. Results go back with ``loop.call_soon_threadsafe`` and a job carries its own
loop, so one store serves callers on any event loop. A job whose caller gave up (cancelled
future) is skipped if it has not started. Nothing here knows the engine: the ``opener``
makes the connection on its thread, the ``closer`` closes it there.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["GroupRunner", "Job", "Outcome", "ReaderPool", "Writer", "run_alone"]

log = logging.getLogger("bruno_memstore.threads")

C = TypeVar("C")
Job = Callable[[Any], Any]
Outcome = tuple[BaseException | None, Any]  # (error, value): one of them is set
GroupRunner = Callable[[Any, list[Job]], list[Outcome]]
"""Runs a group of jobs against the connection; one outcome per job, in order."""

_MAX_GROUP = 256  # jobs handed to one group, at most (bounds a group's latency)
_JOIN_TIMEOUT = 30.0  # seconds a stopping thread gets to end once its connection is closed
_Item = tuple[Any, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class _Stop:
    """Queue sentinel: finish the jobs queued before it, close the connection, say so."""

    __slots__ = ("done",)

    def __init__(self, done: _Waiter | None) -> None:
        self.done = done


class _Prepared:
    """A job still to be built by ``factory()``, on the thread, before its group runs."""

    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[], Job]) -> None:
        self.factory = factory


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
    # Not ``contextlib.suppress``: a ``try`` costs nothing when no exception is raised.
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # a closed loop: nobody is waiting any more
        return


def _close(conn: Any) -> None:
    close = getattr(conn, "close", None)
    if close is not None:
        close()


def run_alone(conn: Any, jobs: list[Job]) -> list[Outcome]:
    """Each job on ``conn`` by itself: its result, or the exception it raised."""
    outcomes: list[Outcome] = []
    for job in jobs:
        try:
            outcomes.append((None, job(conn)))
        except Exception as exc:
            outcomes.append((exc, None))
    return outcomes


class _Worker(Generic[C]):
    """A daemon thread running jobs from a queue against the connection it opened."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], C],
        jobs: queue.SimpleQueue[Any],
        closer: Callable[[C], None],
    ) -> None:
        self._opener = opener
        self._closer = closer
        self._jobs = jobs
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started: _Waiter | None = None

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

    @property
    def name(self) -> str:
        return self._thread.name

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

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
            self._closer(conn)
            if stop is not None and stop.done is not None:
                _post(stop.done[0], _settle, stop.done[1], None, None)

    def _abandon(self, exc: BaseException) -> None:
        error = RuntimeError(f"the worker thread stopped: {exc!r}")
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

    def _serve(self, conn: C) -> _Stop:
        """Run jobs one by one until a stop arrives; return it."""
        while True:
            item = self._jobs.get()
            if isinstance(item, _Stop):
                return item
            job, loop, fut = item
            if fut.cancelled():
                continue
            ((exc, value),) = run_alone(conn, [job])
            _post(loop, _settle, fut, exc, value)


def _submit(jobs: queue.SimpleQueue[Any], job: Any) -> asyncio.Future[Any]:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    jobs.put((job, loop, fut))
    return fut


async def _stop_all(workers: list[_Worker[Any]], jobs: queue.SimpleQueue[Any]) -> None:
    loop = asyncio.get_running_loop()
    waits: list[asyncio.Future[None]] = []
    for worker in workers:
        if worker.alive:
            done: asyncio.Future[None] = loop.create_future()
            jobs.put(_Stop((loop, done)))
            waits.append(done)
    if waits:
        await asyncio.gather(*waits)
    # Each thread has closed its connection and said so; what is left is the interpreter
    # retiring it, which may run finalizers that need this loop: wait off the loop.
    for worker in workers:
        await asyncio.to_thread(worker.join, _JOIN_TIMEOUT)
        if worker.alive:
            log.warning("thread %s did not end within %s s of closing", worker.name, _JOIN_TIMEOUT)


class ReaderPool(Generic[C]):
    """``size`` threads sharing one queue of jobs, each with its own connection."""

    def __init__(
        self, name: str, opener: Callable[[], C], size: int, closer: Callable[[C], None] = _close
    ) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [_Worker(f"{name}-{i}", opener, self._jobs, closer) for i in range(size)]

    async def start(self) -> None:
        """Open every connection; on a failure, stop the threads that did start, then raise."""
        results = await asyncio.gather(*(t.start() for t in self._threads), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue a job; the future resolves with ``job(connection)``."""
        return _submit(self._jobs, job)

    async def stop(self) -> None:
        """Finish the queued jobs, close every connection and end the threads."""
        await _stop_all(self._threads, self._jobs)  # type: ignore[arg-type]

    def stop_nowait(self) -> None:
        """Ask the threads to end (for finalizers, where nobody can wait)."""
        for _ in self._threads:
            self._jobs.put(_Stop(None))


class Writer(_Worker[C]):
    """The one thread that writes, handing the jobs waiting together to ``run_group``.

    Args:
        name: the thread's name.
        opener: makes the connection (on the thread).
        run_group: runs a group of jobs (say, in one transaction); default: one by one.
        closer: closes the connection (on the thread).
        max_group: jobs in one group, at most.
    """

    def __init__(
        self,
        name: str,
        opener: Callable[[], C],
        *,
        run_group: GroupRunner | None = None,
        closer: Callable[[C], None] = _close,
        max_group: int = _MAX_GROUP,
    ) -> None:
        super().__init__(name, opener, queue.SimpleQueue(), closer)
        self._run_group = run_group or run_alone
        self._max_group = max_group

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue a job; the future resolves with ``job(connection)`` once its group is done."""
        return _submit(self._jobs, job)

    def submit_prepared(self, prepare: Callable[[], Job]) -> asyncio.Future[Any]:
        """Queue a job whose ``prepare()`` runs on this thread first, before its group.

        Slow pure-Python work goes there: off the event loop, and outside the group's
        transaction (not holding a lock other processes may be waiting for).
        """
        return _submit(self._jobs, _Prepared(prepare))

    async def stop(self) -> None:
        """Run the queued jobs, close the connection and end the thread."""
        await _stop_all([self], self._jobs)

    def stop_nowait(self) -> None:
        """Ask the thread to end (for finalizers, where nobody can wait)."""
        self._jobs.put(_Stop(None))

    def _serve(self, conn: C) -> _Stop:
        jobs = self._jobs
        while True:
            item = jobs.get()
            if isinstance(item, _Stop):
                return item
            if jobs.empty():  # a lone job: the common case of one caller at a time
                for job, loop, fut in _prepare([item]):
                    ((exc, value),) = self._run_group(conn, [job])
                    _post(loop, _settle, fut, exc, value)
                continue
            group: list[_Item] = [item]
            stop: _Stop | None = None
            # This thread alone takes from the queue: what it holds now it can take.
            while len(group) < self._max_group and not jobs.empty():
                item = jobs.get_nowait()
                if isinstance(item, _Stop):
                    stop = item
                    break
                group.append(item)
            live = _prepare(group)
            if live:
                outcomes = self._run_group(conn, [job for job, _, _ in live])
                _deliver(live, outcomes)
            if stop is not None:
                return stop


def _prepare(group: list[_Item]) -> list[_Item]:
    """The group's jobs still wanted (their callers not cancelled), prepared ones built;
    those whose preparation failed are answered now."""
    ready: list[_Item] = []
    for job, loop, fut in group:
        if fut.cancelled():
            continue
        if isinstance(job, _Prepared):
            try:
                job = job.factory()
            except Exception as exc:
                _post(loop, _settle, fut, exc, None)
                continue
        ready.append((job, loop, fut))
    return ready


def _deliver(group: list[_Item], outcomes: list[Outcome]) -> None:
    """Resolve the futures, one thread-safe call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for (_job, loop, fut), (exc, value) in zip(group, outcomes, strict=True):
        by_loop.setdefault(loop, []).append((fut, exc, value))
    for loop, items in by_loop.items():
        _post(loop, _settle_all, items)
