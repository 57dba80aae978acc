"""Group commit: requests pending at the same moment share one transaction and one commit.

A commit waits for the engine's log to reach disk (a few milliseconds on ordinary disks);
that wait, not the write, bounds how many single-row transactions a server takes per second.
Callers :meth:`~GroupCommitter.submit` an item and await its own outcome; while a batch is
being written, new items queue up and leave together in the next one. A lone writer pays
only for a task switch.

* A caller cancelled (a timeout) before its batch starts is dropped; one cancelled later
  does not cancel the batch (a retry by id settles whether it was stored).
* A batch that raises runs again in halves (:mod:`.apart`), so one bad item fails only its
  own caller, unless the error is the engine's, which every item of the batch then gets.
* An item whose outcome is ``None`` runs again in the next round (for instance when another
  transaction claimed what the batch's snapshot saw as free), a few rounds at most.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

from .apart import run_apart

__all__ = ["GroupCommitter"]

T = TypeVar("T")
R = TypeVar("R")

Executor = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException | None"]]]


class GroupCommitter(Generic[T, R]):
    """Runs submitted items in batches; see the module docstring.

    Args:
        execute: writes one batch in one transaction, all or nothing; returns per item, in
            order, its result, the exception to raise for it, or ``None`` to run it again.
        is_systemic: whether a batch's error is about the engine (server gone, deadlock)
            rather than about an item.
        max_batch: most items in one batch.
        max_inflight: batches written at once (each holds one connection).
        eager: start another batch whenever fewer than ``max_inflight`` run (lowest latency);
            otherwise only when a full batch waits (fewest, largest batches).
        weight: the cost of an item (its size in bytes, its rows); ``max_weight`` bounds a
            batch's total (a single heavier item still runs, alone).
        keys: what an item writes (message ids); items sharing a key with the batch wait
            for a later one, so each batch says exactly which item wrote what.
        max_rounds: how often an item is run again before ``exhausted_error()`` is its outcome.
        closed_error: the exception for items submitted to, or left in, a closed committer.
    """

    def __init__(
        self,
        execute: Executor[T, R],
        *,
        is_systemic: Callable[[BaseException], bool],
        max_batch: int = 256,
        max_inflight: int = 2,
        eager: bool = True,
        weight: Callable[[T], int] | None = None,
        max_weight: int | None = None,
        keys: Callable[[T], Iterable[Hashable]] | None = None,
        max_rounds: int = 5,
        closed_error: Callable[[], BaseException] = lambda: RuntimeError("closed"),
        exhausted_error: Callable[[], BaseException] = lambda: RuntimeError("rounds exhausted"),
    ) -> None:
        self._run = execute  # writes one batch
        self._is_systemic = is_systemic
        self._max_batch = max(1, max_batch)
        self._max_inflight = max(1, max_inflight)
        self._eager = eager
        self._weight = weight
        self._max_weight = max_weight
        self._keys = keys
        self._max_rounds = max_rounds
        self._closed_error = closed_error
        self._exhausted_error = exhausted_error
        self._closing = False
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches written, for observability and tests
        self.items = 0

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its outcome."""
        if self._closing:
            raise self._closed_error()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        running = len(self._workers)
        if running < self._max_inflight and (
            self._eager or not running or len(self._queue) > running * self._max_batch
        ):
            task = asyncio.create_task(self._work())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        return await future

    async def close(self, grace: float = 30.0) -> None:
        """Refuse new items, let the workers finish what is queued (for up to ``grace``
        seconds), then stop them; items still waiting get ``closed_error()``."""
        self._closing = True
        if self._workers:
            await asyncio.wait(list(self._workers), timeout=grace)
        for task in list(self._workers):
            task.cancel()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(self._closed_error())

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        later: list[tuple[T, asyncio.Future[R]]] = []
        seen: set[Hashable] = set()
        total = 0
        while self._queue and len(batch) < self._max_batch:
            entry = self._queue.popleft()
            if entry[1].done():  # the caller gave up before its batch started
                continue
            if self._keys is not None:
                keys = set(self._keys(entry[0]))
                if batch and not keys.isdisjoint(seen):
                    later.append(entry)
                    continue
                seen |= keys
            if self._weight is not None and self._max_weight is not None:
                w = self._weight(entry[0])
                if batch and total + w > self._max_weight:
                    self._queue.appendleft(entry)
                    break
                total += w
            batch.append(entry)
        self._queue.extendleft(reversed(later))
        return batch

    async def _work(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    await self._write(batch)
        finally:
            # Leave the set in the same step as the last look at the queue: a done-callback
            # runs later, and a submit in between would count this finished task as running.
            self._workers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        for _round in range(self._max_rounds):
            self.batches += 1
            self.items += len(batch)
            try:
                outcomes = await run_apart(
                    [item for item, _ in batch], self._run, self._is_systemic
                )
            except BaseException:  # cancelled by close(): nobody may be left waiting
                for _, future in batch:
                    _settle(future, self._closed_error())
                raise
            again = []
            for entry, outcome in zip(batch, outcomes, strict=True):
                if outcome is None:
                    again.append(entry)
                else:
                    _settle(entry[1], outcome)
            if not again:
                return
            batch = again
        for _, future in batch:
            _settle(future, self._exhausted_error())


def _settle(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
