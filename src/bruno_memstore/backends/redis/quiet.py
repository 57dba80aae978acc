"""Posting entries written while the store is quiet.

A message stored on its own waits in its user's ``T:pend`` for its posting entries (see
``INDEX_BATCH`` in the backend). A :class:`QuietIndexer` writes them in the background, a
small batch at a time, once this memory has sent Redis nothing for :data:`QUIET` seconds:
between an assistant's turns (while it waits for its model), not in the middle of a burst of
stores or reads. A search indexes what still waits for its user before it runs, so none of
this changes what a search finds; a store that finds ``INDEX_BACKLOG`` documents waiting (the
task never found a quiet moment) writes a batch itself, which bounds the work a first search
can meet.

The task runs on the loop of the latest store (it moves with the memory), logs and drops a
failed batch (the documents stay waiting for the next store or search) and is stopped by
``shutdown``; documents left waiting stay in ``T:pend``, for whoever comes next.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

from ...background import abandon, running_on, stop_task

__all__ = ["QUIET", "QUIET_BATCH", "QuietIndexer"]

log = logging.getLogger("bruno_memstore.redis")

QUIET = 0.05
"""Seconds without a command to Redis before the background task writes a batch."""
QUIET_BATCH = 64
"""Documents per background batch: a call that arrives meanwhile waits for at most one
(a few milliseconds)."""

_OWN = contextvars.ContextVar("bruno_memstore_quiet_indexer", default=False)


class QuietIndexer:
    """Writes the waiting posting entries of the users it is told of, when the memory pauses."""

    def __init__(self, index: Callable[[str], Awaitable[bool]], name: Callable[[], str]) -> None:
        self._index = index  # one batch of the user's; True while more may wait
        self._name = name
        self.quiet = QUIET
        self._users: dict[str, None] = {}  # in the order they were noted
        self._last = 0.0  # time.monotonic() of the latest command but the task's own
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def touch(self) -> None:
        """Note a command to Redis (other than the task's own): the task waits for a pause."""
        if not _OWN.get():
            self._last = time.monotonic()

    def note(self, user_id: str) -> None:
        """``user_id`` has a batch waiting: write it at the next quiet moment."""
        self._users[user_id] = None
        loop = asyncio.get_running_loop()
        if not running_on(self._task, loop):
            abandon(self._task)
            self._wake = asyncio.Event()  # bound to the loop the task runs on
            self._task = loop.create_task(self._work(), name=f"indexing of {self._name()}")
        self._wake.set()

    async def stop(self) -> None:
        """Stop the task; what waits stays in ``T:pend``."""
        self._users.clear()
        task, self._task = self._task, None
        await stop_task(task)

    async def _work(self) -> None:
        _OWN.set(True)  # the task's context: its own commands leave the clock alone
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._users:
                idle = time.monotonic() - self._last
                if idle < self.quiet:  # (looked at again at least every QUIET seconds)
                    await asyncio.sleep(min(self.quiet - idle, QUIET))
                    continue
                user = next(iter(self._users))
                del self._users[user]
                try:
                    more = await self._index(user)
                except Exception as exc:  # stays waiting: the next store or search indexes it
                    log.warning("%s: indexing waiting messages failed (%s)", self._name(), exc)
                    continue
                if more:
                    self._users.setdefault(user)
