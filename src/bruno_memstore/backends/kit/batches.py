"""Work cut into pieces an engine takes at once, and records regrouped into export batches."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from typing import TypeVar

__all__ = ["EXPORT_BATCH", "batches", "chunks"]

T = TypeVar("T")

EXPORT_BATCH = 500
"""Records per batch that ``_export`` yields."""


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (ids per ``IN (…)``, points per
    call, …)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def batches(
    records: Iterable[T] | AsyncIterable[T], size: int = EXPORT_BATCH
) -> AsyncIterator[list[T]]:
    """``records`` regrouped into lists of ``size`` (the last one shorter; none empty), in
    order: what ``_export`` yields, from records read in whatever pieces the engine gives."""
    source = records if isinstance(records, AsyncIterable) else _each(records)
    batch: list[T] = []
    async for record in source:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _each(records: Iterable[T]) -> AsyncIterator[T]:
    for record in records:
        yield record
