"""Group commit: appends pending at the same moment share one statement and one commit.

A PostgreSQL commit waits for the write-ahead log to reach disk (a few milliseconds on
ordinary disks); that wait, not the insert, bounds how many messages per second single-row
transactions can store. When several appends are pending together, one of up to
``max_flushers`` background flushes takes them all and runs them as one statement: each
append keeps its own ownership check and result, and all of them are durable when the one
commit returns. A lone writer pays only for a task switch. A batch the engine refuses is run
again in parts (see :mod:`..kit.apart`), so only the append at fault fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ...errors import MemstoreError
from ...models import MessageRecord
from ...primitives import AppendResult
from ..kit.apart import run_apart

__all__ = ["Append", "GroupWriter"]

# An append finds no owner row only when another transaction claimed its conversation
# after the statement's snapshot; the next statement sees it, so a few rounds always do.
_MAX_ROUNDS = 5


@dataclass(slots=True, eq=False)
class Append:
    """One ``_append_messages`` call waiting for its batch."""

    conversation_id: str
    user_id: str
    records: Sequence[MessageRecord]
    enforce_owner: bool
    future: asyncio.Future[AppendResult] | None = field(default=None, repr=False)


# Runs a batch; returns, in order, each append's result or the error to raise for it, and
# ``None`` for an append that must be run again (its conversation was claimed concurrently).
BatchRunner = Callable[[Sequence[Append]], Awaitable[list[AppendResult | BaseException | None]]]


class GroupWriter:
    """Batches concurrently pending appends; see the module docstring.

    Args:
        run_batch: executes a batch in one statement (one transaction).
        is_transient: whether a batch failure is the engine's (connection lost, deadlock),
            which every append of the batch then gets; any other failure is narrowed down
            to the appends that cause it.
        max_flushers: batches in flight at once (each holds one pooled connection).
        max_appends: appends per batch at most; more pending appends are split among
            several flushes, whose commits then overlap.
        max_rows: messages per batch at most.
    """

    __slots__ = (
        "_flushers",
        "_is_transient",
        "_max_appends",
        "_max_flushers",
        "_max_rows",
        "_pending",
        "_run",
    )

    def __init__(
        self,
        run_batch: BatchRunner,
        is_transient: Callable[[BaseException], bool],
        *,
        max_flushers: int,
        max_appends: int = 64,
        max_rows: int = 2000,
    ) -> None:
        self._run = run_batch
        self._is_transient = is_transient
        self._max_flushers = max(1, max_flushers)
        self._max_appends = max_appends
        self._max_rows = max_rows
        self._pending: list[Append] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def submit(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        enforce_owner: bool,
    ) -> AppendResult:
        """Queue one append and wait for its batch's outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        # Mark a failure as seen even when its caller already gave up waiting.
        future.add_done_callback(_consume)
        item = Append(conversation_id, user_id, records, enforce_owner, future)
        self._pending.append(item)
        # One more flusher per full batch waiting, up to the limit.
        wanted = -(-len(self._pending) // self._max_appends)
        if len(self._flushers) < min(self._max_flushers, wanted) or not self._flushers:
            task = loop.create_task(self._flush_loop())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        # A cancelled caller (its timeout expired) leaves the flush running: the append may
        # or may not be stored, which a retry by id resolves either way.
        return await asyncio.shield(future)

    async def close(self, grace: float) -> None:
        """Flush what is queued, waiting at most ``grace`` seconds; then give up on the
        rest (its callers get an error; a retry by id settles whether it was stored)."""
        try:
            async with asyncio.timeout(grace):
                while self._flushers:
                    await asyncio.gather(*list(self._flushers), return_exceptions=True)
        except TimeoutError:
            for task in list(self._flushers):
                task.cancel()
            await asyncio.gather(*list(self._flushers), return_exceptions=True)
        for item in self._pending:
            _settle(item, _cancelled())
        self._pending = []

    def _take_batch(self) -> list[Append]:
        batch: list[Append] = []
        seen: set[str] = set()
        rows = 0
        rest: list[Append] = []
        for item in self._pending:
            ids = {r.id for r in item.records}
            # Two appends of the same message id wait for separate batches, so each batch
            # reports exactly which append inserted which id.
            full = len(batch) >= self._max_appends or rows + len(item.records) > self._max_rows
            if batch and (full or not ids.isdisjoint(seen)):
                rest.append(item)
                continue
            batch.append(item)
            seen |= ids
            rows += len(item.records)
        self._pending = rest
        return batch

    async def _flush_loop(self) -> None:
        try:
            while self._pending:
                batch = self._take_batch()
                await self._flush(batch)
        finally:
            # Leave the set in the same step as the last look at ``_pending``: a done-callback
            # runs later, and a submit in between would count this finished task as a flusher
            # and wait for ever.
            self._flushers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _flush(self, batch: list[Append]) -> None:
        for _ in range(_MAX_ROUNDS):
            if not batch:
                return
            try:
                outcomes = await run_apart(batch, self._run, self._is_transient)
            except BaseException as exc:  # cancellation: fail the waiters, then propagate
                for item in batch:
                    _settle(item, exc if isinstance(exc, Exception) else _cancelled())
                raise
            retry: list[Append] = []
            for item, outcome in zip(batch, outcomes, strict=True):
                if outcome is None:
                    retry.append(item)
                else:
                    _settle(item, outcome)
            batch = retry
        for item in batch:
            _settle(item, MemstoreError("the conversation's owner could not be determined"))


def _consume(future: asyncio.Future[AppendResult]) -> None:
    if not future.cancelled():
        future.exception()


def _cancelled() -> MemstoreError:
    return MemstoreError("the write was interrupted while the backend was shutting down")


def _settle(item: Append, outcome: AppendResult | BaseException) -> None:
    future = item.future
    if future is None or future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
