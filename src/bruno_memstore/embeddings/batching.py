"""Concurrent embedding requests merged into shared model calls.

An :class:`Embedder` sends every model call through one :class:`CallBatcher` per event loop.
A request that finds the model idle is run at once, alone (no timer, no added wait). Requests
that arrive while a call is running queue; when it ends, the queued requests are taken in
arrival order, up to ``max_texts`` texts together (a larger request goes alone), and run as
one call. Each caller gets its own rows back; if the call raises, every caller in it gets
that exception and the callers of other calls are untouched.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["CallBatcher"]

RunTexts = Callable[[list[str]], Awaitable[np.ndarray]]


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


@dataclass
class _LoopQueue:
    """The requests waiting on one event loop, and whether a call is running there."""

    waiting: deque[_Request] = field(default_factory=deque)
    busy: bool = False
    task: asyncio.Task[None] | None = None  # the merged call running (kept referenced)


class CallBatcher:
    """Runs ``run(texts)`` for concurrent callers, one call at a time, merging the waiting.

    Args:
        run: computes one row per text (the model call, with its own checks).
        max_texts: texts merged into one call at most.
    """

    def __init__(self, run: RunTexts, *, max_texts: int) -> None:
        if max_texts < 1:
            raise InvalidArgumentError("max_texts", "must be at least 1")
        self._run = run
        self.max_texts = max_texts
        self.calls = 0  # model calls made
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            weakref.WeakKeyDictionary()
        )

    def waiting(self) -> int:
        """Requests queued behind the running call on the current event loop."""
        queue = self._queues.get(asyncio.get_running_loop())
        return 0 if queue is None else sum(not r.future.done() for r in queue.waiting)

    async def run(self, texts: list[str]) -> np.ndarray:
        """Rows for ``texts``, computed alone or in one call with other waiting requests."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue()
        if not queue.busy:
            queue.busy = True
            try:
                self.calls += 1
                return await self._run(texts)
            finally:
                self._next(queue)
        request = _Request(texts, loop.create_future())
        queue.waiting.append(request)
        return await request.future

    def _take(self, queue: _LoopQueue) -> list[_Request]:
        """The oldest waiting requests (not cancelled) whose texts fit one call."""
        taken: list[_Request] = []
        count = 0
        while queue.waiting:
            request = queue.waiting[0]
            if request.future.done():  # its caller was cancelled
                queue.waiting.popleft()
                continue
            if taken and count + len(request.texts) > self.max_texts:
                break
            taken.append(queue.waiting.popleft())
            count += len(request.texts)
        return taken

    def _next(self, queue: _LoopQueue) -> None:
        """Start the next merged call if requests wait, else mark the model idle."""
        taken = self._take(queue)
        if not taken:
            queue.busy, queue.task = False, None
            return
        queue.task = asyncio.get_running_loop().create_task(self._merged(queue, taken))

    async def _merged(self, queue: _LoopQueue, taken: list[_Request]) -> None:
        try:
            self.calls += 1
            texts = [t for r in taken for t in r.texts]
            try:
                rows = await self._run(texts)
            except Exception as exc:
                for request in taken:
                    if not request.future.done():
                        request.future.set_exception(exc)
                return
            except BaseException:  # cancelled (the loop is closing)
                for request in taken:
                    request.future.cancel()
                raise
            start = 0
            for request in taken:
                end = start + len(request.texts)
                if not request.future.done():
                    request.future.set_result(rows[start:end])
                start = end
        finally:
            self._next(queue)
