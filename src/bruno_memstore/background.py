"""Stopping the background tasks a memory runs (sweeper, vector queue, indexers)."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["abandon", "running_on", "stop_task"]


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task``: on the running loop, wait until it has ended; on another loop that
    is still open, cancel it there (its loop ends it)."""
    if task is None or task.done():
        return
    if task.get_loop() is asyncio.get_running_loop():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    else:
        abandon(task)


def running_on(task: asyncio.Task[None] | None, loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``task`` is still running, on ``loop``."""
    return task is not None and not task.done() and task.get_loop() is loop


def abandon(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` from any thread, where its loop is still open (a memory used from
    another loop now starts its task again there)."""
    if task is not None and not task.done() and not task.get_loop().is_closed():
        task.get_loop().call_soon_threadsafe(task.cancel)
