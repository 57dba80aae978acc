"""The threads a Chroma store runs its blocking client calls on.

* :class:`Writer` — one thread for every write of the store, in arrival order, so that
  read-modify-write sequences (ownership claims, id checks, arrival numbers) cannot
  interleave within the process. Message appends waiting in its queue together are handed
  to the store as one group, which writes their records in one Chroma call: concurrent
  writers share that call's cost.
* Reads go to a small ``ThreadPoolExecutor`` and never wait for the writer.

Results go back with ``loop.call_soon_threadsafe``, so callers on any event loop can share
a store. A job whose caller gave up before it started is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Writer"]

_MAX_GROUP = 256  # jobs taken from the queue at once


Outcome = tuple[BaseException | None, Any]
GroupRunner = Callable[[list[Any]], list[Outcome]]
_Item = tuple[Any, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class _Stop:
    __slots__ = ()


def _settle(fut: asyncio.Future[Any], exc: BaseException | None, value: Any) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


def _post(item: _Item, outcome: Outcome) -> None:
    _job, loop, fut = item
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, fut, *outcome)


class Writer:
    """One daemon thread running write jobs in order.

    Args:
        name: the thread's name.
        group_type: jobs of this type are collected into lists for ``run_group``; any other
            job is a callable run alone.
        run_group: runs consecutive grouped jobs, returning one outcome per job.
    """

    def __init__(self, name: str, group_type: type, run_group: GroupRunner) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._group_type = group_type
        self._run_group = run_group
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Any) -> asyncio.Future[Any]:
        """Queue a job; the future resolves with its result."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._jobs.put((job, loop, fut))
        return fut

    def stop(self) -> None:
        """Finish the queued jobs and end the thread (blocking)."""
        if self._thread.is_alive():
            self._jobs.put(_Stop())
            self._thread.join()

    def _main(self) -> None:
        while True:
            item = self._jobs.get()
            if isinstance(item, _Stop):
                return
            batch: list[_Item] = [item]
            stop = False
            while len(batch) < _MAX_GROUP:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Stop):
                    stop = True
                    break
                batch.append(item)
            self._run_batch([entry for entry in batch if not entry[2].cancelled()])
            if stop:
                return

    def _run_batch(self, batch: list[_Item]) -> None:
        i = 0
        while i < len(batch):
            if isinstance(batch[i][0], self._group_type):
                j = i
                while j < len(batch) and isinstance(batch[j][0], self._group_type):
                    j += 1
                group = batch[i:j]
                try:
                    outcomes = self._run_group([entry[0] for entry in group])
                except BaseException as exc:  # nobody may be left waiting
                    outcomes = [(exc, None)] * len(group)
                for entry, outcome in zip(group, outcomes, strict=True):
                    _post(entry, outcome)
                i = j
                continue
            entry = batch[i]
            try:
                outcome: Outcome = (None, entry[0]())
            except BaseException as exc:  # nobody may be left waiting
                outcome = (exc, None)
            _post(entry, outcome)
            i += 1
