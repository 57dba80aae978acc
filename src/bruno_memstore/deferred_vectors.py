"""Messages acknowledged before their vectors (``vectors="deferred"``), and the task that
attaches the vectors shortly after.

A store in deferred mode writes a message without its vector; the engine marks it pending in
the same atomic write (:class:`~bruno_memstore.primitives.PendingVectors`) and the write is
acknowledged. The marks are the durable queue: they hold only the record's key, so erasing a
message leaves nothing queued, and a crash loses no work. A :class:`VectorQueue` (one per
memory, started when it connects, stopped by ``shutdown``) takes the pending messages in
batches (:data:`BATCH`) by increasing key, embeds them through the memory's embedder (so its
batching applies) and attaches them with ``_put_vectors``, which clears their marks. On
connecting it first drains what an earlier process left.

``flush()`` does the same work itself, up to the newest message this memory acknowledged
(or, if it acknowledged none, until nothing is pending), and raises the model's error if
the model fails; the background task instead retries later, backing off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from .background import abandon, running_on, stop_task
from .errors import ClosedError

__all__ = ["BATCH", "VECTOR_WRITES", "VectorQueue", "VectorWrites"]

log = logging.getLogger("bruno_memstore.deferred_vectors")

VectorWrites = Literal["inline", "deferred"]
VECTOR_WRITES: tuple[str, ...] = ("inline", "deferred")

BATCH = 16
"""Messages one batch of the queue embeds at most (fewer if the embedder's ``batch_size`` is
smaller). The default model runs texts in length groups of at most 16, and calls of 64 chat
sentences embedded no faster than calls of 16 (``docs/benchmarks.md``)."""
_FIRST_RETRY = 1.0  # seconds before the task tries again after a failure, doubling
_LAST_RETRY = 60.0

Attach = Callable[[str, int], Awaitable[tuple[int, int] | None]]
"""``attach(operation, after)``: embed and attach the oldest waiting messages after key
``after``; return the last key taken and how many were attached (``None``: none waits)."""


class VectorQueue:
    """Attaches the vectors of one memory's pending messages, in the background and on
    :meth:`flush`. The batches of both take turns, so no message is embedded twice."""

    def __init__(self, attach: Attach, name: Callable[[], str]) -> None:
        self._attach = attach
        self._name = name
        self.acknowledged = 0  # the greatest key of a message this memory acknowledged
        self.attached = 0  # vectors attached by this queue (background and flushes)
        self._open = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._turn = asyncio.Lock()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Run the background task on the running loop; it drains what is pending first."""
        self._open = True
        self._spawn(asyncio.get_running_loop())

    async def stop(self) -> None:
        """Stop the background task. Pending messages stay marked for the next open."""
        self._open = False
        task, self._task = self._task, None
        await stop_task(task)

    def _spawn(self, loop: asyncio.AbstractEventLoop) -> None:
        if running_on(self._task, loop):
            self._wake.set()
            return
        abandon(self._task)
        # Loop-bound primitives are made again for the loop the task runs on.
        self._wake, self._turn = asyncio.Event(), asyncio.Lock()
        self._wake.set()
        self._task = loop.create_task(self._work(), name=f"vectors of {self._name()}")

    def wake(self, key: int) -> None:
        """Note a message acknowledged with key ``key`` and wake the task (on the caller's
        loop, where it starts one if the memory is used from another loop now)."""
        self.acknowledged = max(self.acknowledged, key)
        if not self._open:
            return
        loop = asyncio.get_running_loop()
        if not running_on(self._task, loop):
            self._spawn(loop)
        else:
            self._wake.set()

    # ---------------------------------------------------------------- work

    async def flush(self) -> None:
        """Attach the vectors of every message acknowledged before the call (see the module
        docstring); raises the model's or the engine's error."""
        ceiling = self.acknowledged or None
        await self._drain("flush", ceiling)

    async def _work(self) -> None:
        delay = 0.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain("attach_vectors", None)
            except ClosedError:
                return
            except Exception as exc:  # the model or the engine failed: the marks stay
                delay = min(max(2 * delay, _FIRST_RETRY), _LAST_RETRY)
                log.warning(
                    "%s: waiting vectors not attached (%s); trying again in %gs",
                    self._name(),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                self._wake.set()
            else:
                delay = 0.0

    async def _drain(self, operation: str, ceiling: int | None) -> None:
        """Batch after batch by increasing key, until none is pending (up to ``ceiling``)."""
        after = 0
        while ceiling is None or after < ceiling:
            last = await self._batch(operation, after)
            if last is None:
                return
            after = last

    async def _batch(self, operation: str, after: int) -> int | None:
        """One batch after key ``after``, in turn with the others; the last key taken."""
        async with self._turn:
            done = await self._attach(operation, after)
        if done is None:
            return None
        last, count = done
        self.attached += count
        return last
