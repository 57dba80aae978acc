"""Time limits for many short calls, at the cost of a dictionary entry each.

``asyncio.timeout`` arms a timer for every call and disarms it after: a few microseconds of
CPU on a call to a local server that takes a hundred, paid by every store and read. A
:class:`TimeLimits` keeps the calls under way with their deadlines and arms one timer per
event loop, for the earliest of them. When it fires it cancels the calls past their
deadline, each of which then raises ``TimeoutError`` as under ``asyncio.timeout`` (a
cancellation from elsewhere stays a cancellation), and arms itself for the next deadline.
With a steady stream of calls the timer fires about once per time limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["TimeLimits"]

T = TypeVar("T")


class _Call:
    __slots__ = ("cancelling", "deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.expired = False


class TimeLimits:
    """Runs awaitables under time limits with one timer per event loop (see the module)."""

    __slots__ = ("_at", "_calls", "_loop", "_timer")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: dict[_Call, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0  # when the timer fires

    async def within(self, seconds: float, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, cancelled after ``seconds``.

        Raises:
            TimeoutError: the time ran out (the awaitable was cancelled).
        """
        task = asyncio.current_task()
        assert task is not None, "TimeLimits.within runs in a task"
        loop = task.get_loop()
        if loop is not self._loop:
            # A new loop (the old one's calls went with it).
            self._loop, self._calls, self._timer = loop, {}, None
        call = _Call(task, loop.time() + seconds)
        self._calls[call] = None
        if self._timer is None or call.deadline < self._at:
            self._arm(loop, call.deadline)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if call.expired:
                call.expired = False
                if task.uncancel() <= call.cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._calls.pop(call, None)
            if call.expired:  # cancelled here, but the awaitable ended some other way
                task.uncancel()

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = loop.call_at(at, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # armed on a loop this object has left
        self._timer = None
        now = loop.time()
        nxt: float | None = None
        for call in self._calls:
            if call.expired:
                continue
            if call.deadline <= now:
                call.expired = True
                call.task.cancel()
            elif nxt is None or call.deadline < nxt:
                nxt = call.deadline
        if nxt is not None:
            self._arm(loop, nxt)
