"""Waiting for progress instead of for time: fault tests wait until their load has done
enough work, however loaded the machine is, rather than for a fixed while."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["until"]


async def until(condition: Callable[[], bool], what: str, within: float = 120.0) -> None:
    """Return once ``condition()`` holds; fail the test (naming ``what``) after ``within`` s."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
