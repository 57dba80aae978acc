"""Isolating the writer that broke a group commit, so the others are still stored.

A group commit runs many callers' writes in one transaction: when it fails, the failure may
be about one write's data (a row the engine refuses, a value the driver cannot send) or about
the engine itself (the server is gone, a deadlock). The first kind must fail only its own
caller; the second reaches every caller as it is, since running the writes again would only
repeat it (and a transient one is retried by the caller's retry policy).

A failed group is run again in halves, each in a transaction of its own, until the failing
writes stand alone: one bad write among ``n`` costs about ``2 log2 n`` extra transactions,
and the good ones are committed and acknowledged. The splitting is written once
(:func:`splitting`, which does no I/O); :func:`run_apart` drives it with a coroutine,
:func:`run_apart_sync` with a plain function (a writer thread's transactions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import TypeVar

__all__ = ["run_apart", "run_apart_sync", "splitting"]

T = TypeVar("T")
R = TypeVar("R")

Splitting = Generator[Sequence[T], "Sequence[R] | Exception", list["R | Exception"]]


def splitting(items: Sequence[T], is_systemic: Callable[[BaseException], bool]) -> Splitting:
    """Yield each group to run in one transaction; receive its outcomes (one per item, in
    order) or the exception it raised; return the outcome of every item."""
    got = yield items
    if not isinstance(got, Exception):
        return list(got)
    if len(items) == 1 or is_systemic(got):
        return [got] * len(items)
    half = len(items) // 2
    first = yield from splitting(items[:half], is_systemic)
    return first + (yield from splitting(items[half:], is_systemic))


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
    steps = splitting(items, is_systemic)
    group = next(steps)
    while True:
        try:
            got: Sequence[R] | Exception = await run(group)
        except Exception as exc:
            got = exc
        try:
            group = steps.send(got)
        except StopIteration as done:
            return done.value


def run_apart_sync(
    items: Sequence[T],
    run: Callable[[Sequence[T]], Sequence[R]],
    is_systemic: Callable[[BaseException], bool],
) -> list[R | Exception]:
    """:func:`run_apart` for a ``run`` that blocks (on the thread that owns the connection)."""
    steps = splitting(items, is_systemic)
    group = next(steps)
    while True:
        try:
            got: Sequence[R] | Exception = run(group)
        except Exception as exc:
            got = exc
        try:
            group = steps.send(got)
        except StopIteration as done:
            return done.value
