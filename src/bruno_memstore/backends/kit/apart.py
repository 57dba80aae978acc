"""Isolating the writer that broke a group commit, so the others are still stored.

A group commit runs many callers' writes in one transaction: when it fails, the failure may
be about one write's data (a row the engine refuses, a value the driver cannot send) or about
the engine itself (the server is gone, a deadlock). The first kind must fail only its own
caller; the second reaches every caller as it is, since running the writes again would only
repeat it (and a transient one is retried by the caller's retry policy).

:func:`run_apart` retries a failed group in halves, each in a transaction of its own, until
the failing writes stand alone: one bad write among ``n`` costs about ``2 log2 n`` extra
transactions, and the good ones are committed and acknowledged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["run_apart"]

T = TypeVar("T")
R = TypeVar("R")


async def run_apart(
    items: Sequence[T],
    run: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
    is_systemic: Callable[[BaseException], bool],
) -> list[R | Exception]:
    """``run(items)`` (one outcome per item, in order); if it raises, the outcome of each item.

    Args:
        run: writes a group in one transaction, all or nothing, returning per-item outcomes.
        is_systemic: whether an error is about the engine rather than the data; such an
            error becomes every item's outcome without splitting the group.

    Cancellation propagates; a part of the group committed before it stays committed.
    """
    try:
        return list(await run(items))
    except Exception as exc:
        if len(items) == 1 or is_systemic(exc):
            return [exc] * len(items)
    half = len(items) // 2
    first = await run_apart(items[:half], run, is_systemic)
    return first + await run_apart(items[half:], run, is_systemic)
