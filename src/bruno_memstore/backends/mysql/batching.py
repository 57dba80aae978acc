"""Group commit: concurrent requests are coalesced into batches run by a few workers.

A server round trip and a log flush cost the same for one row as for fifty. Callers
``submit`` an item and await its own result; while a worker executes one batch, new items
queue up and leave together in the next. A caller that is cancelled (a timeout) before its
batch starts is simply dropped; one cancelled later does not cancel the batch. A batch that
fails is run again in parts (see :mod:`..kit.apart`), so one bad item fails only its own caller.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from ..kit.apart import run_apart

__all__ = ["GroupCommitter"]

T = TypeVar("T")
R = TypeVar("R")

Executor = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException"]]]


class GroupCommitter(Generic[T, R]):
    """Run submitted items in batches of at most ``max_batch`` items or ``max_weight`` units.

    Args:
        execute: runs one batch, all or nothing; returns one result or exception per item,
            in order. If it raises, the batch is run again in halves until the items that
            fail stand alone, unless ``is_systemic`` says the error is the engine's, which
            every item of the batch then gets.
        is_systemic: whether an error is about the engine (server gone, deadlock) rather
            than about an item.
        max_batch: most items in one batch.
        max_inflight: batches executing at once (each on its own connection).
        weight: the cost of an item (for instance its size in bytes).
        max_weight: a batch stops growing at this total weight (a single heavier item
            still runs, alone).
        closed_error: the exception for items submitted to, or left in, a closed committer.
    """

    def __init__(
        self,
        execute: Executor[T, R],
        *,
        is_systemic: Callable[[BaseException], bool],
        max_batch: int = 256,
        max_inflight: int = 2,
        weight: Callable[[T], int] | None = None,
        max_weight: int | None = None,
        closed_error: Callable[[], BaseException] = lambda: RuntimeError("closed"),
    ) -> None:
        self._execute = execute
        self._is_systemic = is_systemic
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._weight = weight
        self._max_weight = max_weight
        self._closed_error = closed_error
        self._closing = False
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self.batches = 0  # executed batches, for observability and tests
        self.items = 0

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result (or its exception)."""
        if self._closing:
            raise self._closed_error()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if len(self._workers) < self._max_inflight:
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
        total = 0
        while self._queue and len(batch) < self._max_batch:
            item, future = self._queue[0]
            if future.done():  # the caller gave up before the batch started
                self._queue.popleft()
                continue
            if self._weight is not None and self._max_weight is not None:
                w = self._weight(item)
                if batch and total + w > self._max_weight:
                    break
                total += w
            batch.append(self._queue.popleft())
        return batch

    async def _work(self) -> None:
        try:
            await self._drain()
        finally:
            # Leave the set in the same step as the last look at the queue: a done-callback
            # runs later, and a submit in between would see a full set and start no worker.
            self._workers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _drain(self) -> None:
        while self._queue:
            batch = self._take()
            if not batch:
                continue
            self.batches += 1
            self.items += len(batch)
            try:
                results = await run_apart(
                    [item for item, _ in batch], self._execute, self._is_systemic
                )
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
