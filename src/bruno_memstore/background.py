"""Stopping the background tasks a memory runs (sweeper, vector queue, indexers)."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["stop_task"]


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task``: on the running loop, wait until it has ended; on another loop that
    is still open, cancel it there (its loop ends it)."""
    if task is None or task.done():
        return
    if task.get_loop() is asyncio.get_running_loop():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    elif not task.get_loop().is_closed():
        task.get_loop().call_soon_threadsafe(task.cancel)
