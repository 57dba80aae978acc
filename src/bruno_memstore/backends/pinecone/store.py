"""One Pinecone index as ``PineconeMemory`` uses it: the SDK's calls, and read-your-writes.

**Read-your-writes.** Pinecone is eventually consistent: a write is acknowledged before
fetch, list and query show it. This process keeps a *journal* of its own writes per
namespace (shared by every memory of the process on the same index) and merges it into
what fetch and list return: a record it wrote reads back as written, a record it deleted
reads as gone, at once. An entry is retired once Pinecone shows the write, which it says
with log sequence numbers (LSN, per namespace): a write's response reports the LSN it got
(``x-pinecone-request-lsn``), a query's response how far the namespace is indexed
(``x-pinecone-max-indexed-lsn``). Deletes report none through the SDK, so each delete is
followed by an upsert of the namespace's marker record ``~``, whose LSN covers the delete.
A vector query cannot be merged, so it first waits (bounded by ``visibility_timeout``) until
the namespace is indexed up to this process's last write there.

Writes of other processes are not in the journal: they show when Pinecone shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pinecone import AsyncIndex
from pinecone.errors.exceptions import NotFoundError

from ...errors import BackendTimeoutError
from ..kit.batches import chunks
from .layout import metadata_bytes

__all__ = ["Journal", "PineconeStore", "Record", "shared_state"]

Record = dict[str, Any]  # {"values": [...], "metadata": {...}}
MARKER = "~"
FETCH_BATCH = 100  # ids per fetch: they travel in the URL
LIST_PAGE = 100  # Pinecone's largest list page
UPSERT_BATCH = 100
UPSERT_BYTES = 1_500_000  # under Pinecone's 2 MB per upsert request
PROBE_EVERY = 1.0  # seconds between two freshness probes of one namespace
SWEEP_EVERY = 5.0  # seconds between two probes of every namespace with pending writes
UNCONFIRMED_TTL = 60.0  # seconds a write without an LSN stays merged


@dataclass
class Journal:
    """One namespace's writes by this process that Pinecone may not show yet."""

    records: dict[str, Record | None] = field(default_factory=dict)  # None: deleted
    lsn: dict[str, tuple[int | None, float]] = field(default_factory=dict)
    dropped: bool = False  # the namespace was deleted: what Pinecone returns is stale
    reconciled: int = 0
    probed: float = 0.0

    def note(self, ids: Iterable[str], records: Sequence[Record | None], lsn: int | None) -> None:
        now = time.monotonic()
        for rid, rec in zip(ids, records, strict=True):
            self.records[rid] = rec
            self.lsn[rid] = (lsn, now)

    def retire(self, reconciled: int | None) -> None:
        if reconciled is not None:
            self.reconciled = max(self.reconciled, reconciled)
        if self.dropped:
            return
        old = time.monotonic() - UNCONFIRMED_TTL
        for rid, (lsn, at) in list(self.lsn.items()):
            if (lsn is not None and lsn <= self.reconciled) or (lsn is None and at < old):
                del self.lsn[rid], self.records[rid]

    def target(self) -> int | None:
        known = [lsn for lsn, _at in self.lsn.values() if lsn is not None]
        return max(known) if known else None


class SharedState:
    """What every memory of this process on one index shares."""

    def __init__(self) -> None:
        self.journals: dict[str, Journal] = {}
        self.seq = 0
        self.users: set[str] = set()  # namespaces known to be registered in the store
        self.swept = time.monotonic()
        self._locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()

    def journal(self, namespace: str) -> Journal:
        return self.journals.setdefault(namespace, Journal())

    def lock(self) -> asyncio.Lock:
        """The write lock of this index in the running event loop."""
        loop = asyncio.get_running_loop()
        found = self._locks.get(loop)
        if found is None:
            found = self._locks[loop] = asyncio.Lock()
        return found

    def next_seq(self) -> int:
        """Arrival numbers: increasing in the process, and with the clock across restarts."""
        self.seq = max(self.seq + 1, time.time_ns() // 1000)
        return self.seq


_SHARED: dict[str, SharedState] = {}


def shared_state(host: str) -> SharedState:
    return _SHARED.setdefault(host, SharedState())


def _size(rec: tuple[str, list[float], dict[str, Any]]) -> int:
    """A record's bytes in an upsert request, over-estimated (22 bytes a float in JSON)."""
    return 60 + len(rec[0]) + 22 * len(rec[1]) + metadata_bytes(rec[2])


class PineconeStore:
    """The calls ``PineconeMemory`` makes, each merged with the journal."""

    def __init__(
        self, index: AsyncIndex, shared: SharedState, dimension: int, visibility_timeout: float
    ) -> None:
        self.index = index
        self.shared = shared
        self.dimension = dimension
        self.visibility_timeout = visibility_timeout
        self.placeholder = [0.0] * (dimension - 1) + [1.0]

    # ---------------------------------------------------------------- reads

    async def fetch(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        """The records with these ids (missing ones left out)."""
        journal = await self._settled(namespace)
        wanted = list(dict.fromkeys(ids))
        # A snapshot: entries retired while Pinecone answers are in its answer.
        mine = {i: journal.records[i] for i in wanted if i in journal.records}
        remote = [] if journal.dropped else [i for i in wanted if i not in mine]
        out: dict[str, Record] = {}
        for batch in chunks(remote, FETCH_BATCH):
            found = await self.index.fetch(ids=batch, namespace=namespace)
            for rid, vec in found.vectors.items():
                out[rid] = {"values": list(vec.values), "metadata": dict(vec.metadata or {})}
        out.update((rid, rec) for rid, rec in mine.items() if rec is not None)
        return out

    async def list_ids(self, namespace: str, prefix: str) -> list[str]:
        """Every id under ``prefix``, sorted."""
        journal = await self._settled(namespace)
        mine = [(rid, rec) for rid, rec in journal.records.items() if rid.startswith(prefix)]
        ids: set[str] = set()
        token: str | None = None
        while not journal.dropped:
            page = await self.index.list_paginated(
                prefix=prefix, limit=LIST_PAGE, pagination_token=token, namespace=namespace
            )
            ids.update(item.id for item in page.vectors if item.id is not None)
            token = page.pagination.next if page.pagination is not None else None
            if not token:
                break
        for rid, rec in mine:
            (ids.add if rec is not None else ids.discard)(rid)
        return sorted(ids)

    async def query(
        self, namespace: str, vector: list[float], top_k: int, flt: dict[str, Any]
    ) -> list[tuple[str, float]]:
        """``(id, score)`` of the nearest records passing ``flt``, once the namespace shows
        this process's writes."""
        await self.catch_up(namespace)
        found = await self.index.query(
            vector=vector, top_k=top_k, filter=flt, namespace=namespace, include_metadata=False
        )
        self.shared.journal(namespace).retire(_reconciled(found))
        return [(m.id, float(m.score)) for m in found.matches]

    async def stats(self) -> Any:
        return await self.index.describe_index_stats()

    # ---------------------------------------------------------------- writes

    async def upsert(
        self, namespace: str, records: Sequence[tuple[str, list[float], dict[str, Any]]]
    ) -> None:
        """Create or replace records, in order: a batch is sent after the one before it."""
        journal = self.shared.journal(namespace)
        batch: list[tuple[str, list[float], dict[str, Any]]] = []
        size = 0
        for rec in records:
            if batch and (len(batch) >= UPSERT_BATCH or size + _size(rec) > UPSERT_BYTES):
                await self._upsert(namespace, journal, batch)
                batch, size = [], 0
            batch.append(rec)
            size += _size(rec)
        if batch:
            await self._upsert(namespace, journal, batch)
        await self._sweep()

    async def _upsert(
        self, namespace: str, journal: Journal, batch: list[tuple[str, list[float], dict[str, Any]]]
    ) -> int | None:
        vectors = [{"id": rid, "values": values, "metadata": meta} for rid, values, meta in batch]
        done = await self.index.upsert(vectors=vectors, namespace=namespace)
        lsn = done.response_info.lsn_committed if done.response_info is not None else None
        journal.note(
            (rid for rid, _v, _m in batch),
            [{"values": v, "metadata": m} for _rid, v, m in batch],
            lsn,
        )
        return lsn

    async def delete(self, namespace: str, ids: Sequence[str]) -> None:
        """Delete records (missing ones are fine)."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return
        journal = self.shared.journal(namespace)
        for batch in chunks(ids, 1000):
            with contextlib.suppress(NotFoundError):  # the namespace does not exist (any more)
                await self.index.delete(ids=batch, namespace=namespace)
        journal.note(ids, [None] * len(ids), None)
        # The delete's LSN is not reported: the marker's, written after it, covers it.
        lsn = await self._upsert(namespace, journal, [(MARKER, self.placeholder, {})])
        if lsn is not None:
            journal.note(ids, [None] * len(ids), lsn)

    async def drop(self, namespace: str) -> None:
        """Delete a namespace with everything in it, and wait (bounded) until Pinecone no
        longer lists it, so that no later write of this process lands before the deletion.

        First wait until this process's writes there are indexed: a namespace whose first
        records are not yet visible would look deleted already.
        """
        await self.catch_up(namespace)
        journal = self.shared.journal(namespace)
        with contextlib.suppress(NotFoundError):
            await self.index.delete_namespace(name=namespace)
        journal.records.clear()
        journal.lsn.clear()
        journal.dropped = True
        await self._wait(namespace, lambda: self._gone(namespace), "the deletion of a namespace")

    # ---------------------------------------------------------------- freshness

    async def catch_up(self, namespace: str) -> None:
        """Wait until queries of ``namespace`` show this process's writes there."""
        journal = self.shared.journal(namespace)
        target = journal.target()
        if target is None or journal.reconciled >= target:
            return
        await self._wait(namespace, lambda: self._probe(namespace, target), "this process's writes")

    async def _probe(self, namespace: str, target: int) -> bool:
        journal = self.shared.journal(namespace)
        found = await self.index.query(vector=self.placeholder, top_k=1, namespace=namespace)
        journal.probed = time.monotonic()
        reconciled = _reconciled(found)
        journal.retire(reconciled)
        return reconciled is None or journal.reconciled >= target  # None: cannot tell

    async def _gone(self, namespace: str) -> bool:
        """Whether Pinecone no longer lists a deleted namespace (then reads of it are no
        longer ignored)."""
        stats = await self.index.describe_index_stats()
        journal = self.shared.journal(namespace)
        journal.probed = time.monotonic()
        if namespace in (stats.namespaces or {}):
            return False
        journal.dropped = False
        return True

    async def _wait(self, namespace: str, check: Any, what: str) -> None:
        deadline = time.monotonic() + self.visibility_timeout
        pause = 0.02
        while not await check():
            if time.monotonic() + pause > deadline:
                raise BackendTimeoutError(
                    f"Pinecone did not show {what} in namespace {namespace!r} within "
                    f"{self.visibility_timeout:g}s (visibility_timeout)",
                    backend="pinecone",
                    operation="wait for visibility",
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _sweep(self) -> None:
        """Retire what Pinecone shows in every namespace, every few seconds: a namespace
        written and not read again (an import, say) would otherwise keep its writes in the
        journal."""
        now = time.monotonic()
        if now - self.shared.swept < SWEEP_EVERY:
            return
        self.shared.swept = now
        for namespace, journal in list(self.shared.journals.items()):
            if journal.lsn or journal.dropped:
                await self._settled(namespace)

    async def _settled(self, namespace: str) -> Journal:
        """The namespace's journal, after retiring what Pinecone shows (probed at most once a
        second, and only while the journal holds something)."""
        journal = self.shared.journal(namespace)
        if (journal.lsn or journal.dropped) and time.monotonic() - journal.probed > PROBE_EVERY:
            if journal.dropped:
                await self._gone(namespace)
            else:
                target = journal.target()
                if target is not None and journal.reconciled < target:
                    await self._probe(namespace, target)
                else:
                    journal.retire(None)
        return journal


def _reconciled(response: Any) -> int | None:
    info = getattr(response, "response_info", None)
    return info.lsn_reconciled if info is not None else None
