"""Vectors kept as float32 blobs beside their records, searched exactly in process.

For SQL engines with no vector index (SQLite here, MariaDB 10.11 and MySQL 8): each record's
vector is a BLOB written in the record's transaction, and every transaction that changes a
user's vectors moves the user's change counters. A search reads the counters, then takes the
user's indexes from the kit's :class:`~..kit.vectors.ExactVectors`: kept while a kind's
*epoch* stands (it moves when a vector is removed or replaced), brought up to date with the
vectors added up to the kind's *logged* position (loaded on their own), or loaded whole.

An engine says its statements as plans of a :class:`BlobVectors` (its counters, how to load
a user's vectors and the ones added since a position, the recorded vector space, attaching
vectors to stored records); :class:`BlobVectorSearch` implements the vector primitives once
over them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable, Sequence
from functools import partial
from typing import Any, Literal, NamedTuple

import numpy as np

from ...embeddings.adapter import VectorSpace
from ...errors import BackendError
from ...models import MemoryFilter, MemoryRecord, MessageRecord, SearchHit, SearchRequest
from ..kit.hits import ranked_hits
from ..kit.vectors import (
    ExactVectors,
    MemoryKey,
    StaleLog,
    VectorIndex,
    nearest,
    vector_from_bytes,
    vector_to_bytes,
)
from . import plans
from .dialect import Dialect
from .steps import Plan

__all__ = [
    "BlobVectorSearch",
    "BlobVectors",
    "KindState",
    "VectorState",
    "filter_columns",
    "found_records",
    "loaded_index",
    "memory_items",
    "message_items",
    "put_vectors",
]

Kind = Literal["message", "memory"]


class KindState(NamedTuple):
    """A user's vectors of one kind as the engine's counters describe them."""

    epoch: Hashable  # moves when a vector is removed or replaced (or the space replaced)
    logged: int  # the position the added vectors reach (0: additions are not followed)


class VectorState(NamedTuple):
    """A user's :class:`KindState` per kind (``None``: the user never had vectors of it)."""

    message: KindState | None
    memory: KindState | None


def filter_columns(d: Dialect) -> str:
    """The memory entries' select list without their text (the filters need the rest)."""
    empty = {d.memories.field("content"), d.memories.field("payload")}
    return ", ".join("''" if c in empty else c for c in d.memories.columns)


def message_items(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """``(id, conversation_id, blob)`` rows as index items keyed by id, labelled by
    conversation."""
    return [(r[0], vector_from_bytes(r[2]), None, r[1]) for r in rows]


def memory_items(d: Dialect, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows of :func:`filter_columns` and the blob as ``(entry, vector)`` pairs."""
    at = len(d.memories.columns)
    return [(d.memory(r), vector_from_bytes(r[at])) for r in rows]


class BlobVectors(ABC):
    """An engine's statements for vectors kept as blobs: each method is a plan whose first
    argument is the engine's dialect."""

    @abstractmethod
    def state(self, d: Dialect, user_id: str) -> Plan[VectorState | None]:
        """The user's counters (``None``: an unknown user, nothing to search)."""

    @abstractmethod
    def load(
        self, d: Dialect, kind: Kind, user_id: str, state: KindState, nbytes: int
    ) -> Plan[list[tuple[Any, ...]]]:
        """Every vector of ``kind`` the user has (at least up to ``state.logged``), of
        ``nbytes`` bytes: messages as ``(id, vector, None, conversation_id)``
        (:func:`message_items`), memory entries as ``(entry, vector)`` (:func:`memory_items`)."""

    @abstractmethod
    def added(
        self, d: Dialect, kind: Kind, user_id: str, state: KindState, after: int, nbytes: int
    ) -> Plan[list[tuple[Any, ...]] | None]:
        """The vectors added in ``(after, state.logged]`` (items as :meth:`load`), or
        ``None`` when the engine no longer knows them all (the index is then reloaded)."""

    @abstractmethod
    def space(self, d: Dialect) -> Plan[tuple[str, int] | None]:
        """The recorded ``(model, dimension)``, or ``None``."""

    @abstractmethod
    def claim(self, d: Dialect, model: str, dimension: int, replace: bool) -> Plan[tuple[str, int]]:
        """Record the space unless one is; ``replace`` drops every vector first and records
        it in any case (moving every epoch). Returns the space recorded afterwards."""

    @abstractmethod
    def put(self, d: Dialect, kind: Kind, items: Sequence[tuple[str, bytes]]) -> Plan[int]:
        """Attach or replace the vectors of stored records by id (ids not stored are
        skipped), moving their owners' counters; returns how many were written."""


def put_vectors(blobs: BlobVectors, d: Dialect, kind: Kind, items: Sequence[Any]) -> Plan[int]:
    """:meth:`BlobVectors.put` of ``(id, vector)`` pairs, encoded in the plan's preparation
    (off the event loop where the engine runs plans on a thread)."""
    pairs = [(str(rid), vector_to_bytes(vec)) for rid, vec in items]
    return (yield from blobs.put(d, kind, pairs))


def loaded_index(
    blobs: BlobVectors, d: Dialect, kind: Kind, user_id: str, state: KindState, nbytes: int
) -> Plan[VectorIndex]:
    """:meth:`BlobVectors.load` as a built index (memory entries keyed by
    :class:`~..kit.vectors.MemoryKey`), built where the engine runs the plan."""
    items = yield from blobs.load(d, kind, user_id, state, nbytes)
    index = VectorIndex()
    index.put_many(items if kind == "message" else [(MemoryKey(r), v) for r, v in items])
    return index


def found_records(
    d: Dialect, user_id: str, found: Sequence[Any]
) -> Plan[tuple[list[MessageRecord], list[MemoryRecord]]]:
    """The messages and memory entries of a search answer, read in one plan."""
    msg_ids = [rid for kind, rid, _ in found if kind == "message"]
    mem_ids = [rid for kind, rid, _ in found if kind == "memory"]
    messages = (yield from plans.get_messages(d, msg_ids)) if msg_ids else []
    by_id = MemoryFilter(user_id, include_expired=True, limit=len(mem_ids), ids=tuple(mem_ids))
    memories = (yield from plans.query_memories(d, by_id)) if mem_ids else []
    return messages, memories


class BlobVectorSearch:
    """The vector primitives of an SQL engine that keeps vectors as blobs.

    Mixed into an :class:`~.backend.SQLMemory` subclass (before it), which sets
    ``_blobs`` (its :class:`BlobVectors`) and ``_vectors`` (an ``ExactVectors``).
    """

    _blobs: BlobVectors
    _vectors: ExactVectors
    backend_name: str
    _plan: Callable[..., Awaitable[Any]]  # SQLMemory's

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        blobs = self._blobs
        if space is None or not replace:
            recorded = await self._plan("read", blobs.space)
            if space is None or recorded is not None:  # a read: no write lock when it is there
                return None if recorded is None else VectorSpace(*recorded)
        model, dimension = await self._plan(
            "write", blobs.claim, space.model, space.dimension, replace
        )
        if replace:
            self._vectors.clear()  # every epoch moved: the copies would never be used again
        return VectorSpace(model, dimension)

    async def _put_vectors(self, kind: Kind, items: Sequence[Any]) -> None:
        if items:
            await self._plan("write", partial(put_vectors, self._blobs), kind, items)

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        user_id = request.user_id
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        nbytes = 4 * query.size
        state = await self._plan("read", self._blobs.state, user_id)
        if state is None:
            self._vectors.forget(user_id)
            return []
        try:
            messages = memories = None
            if "message" in request.kinds and state.message is not None:
                messages = await self._index("message", user_id, state.message, nbytes)
            if "memory" in request.kinds and state.memory is not None:
                memories = await self._index("memory", user_id, state.memory, nbytes)
        except StaleLog as exc:  # pragma: no cover - only under a storm of deletions
            raise BackendError(
                str(exc), backend=self.backend_name, operation="vector_search"
            ) from exc
        found = nearest(request, query, messages=messages, memories=memories)
        return await self._vector_hits(request, found)

    async def _index(self, kind: Kind, user_id: str, state: KindState, nbytes: int) -> Any:
        """The user's index of ``kind`` as of ``state``: the one kept for its epoch, with
        the vectors added since it was brought up to date, or a new one loaded whole."""
        blobs = self._blobs

        def load() -> Any:
            return self._plan("scan", partial(loaded_index, blobs), kind, user_id, state, nbytes)

        async def delta(after: int) -> tuple[list[tuple[Any, ...]], int] | None:
            # Usually a few rows: a quick read, not a scan.
            items = await self._plan("read", blobs.added, kind, user_id, state, after, nbytes)
            return None if items is None else (items, state.logged)

        if kind == "message":
            return await self._vectors.messages(user_id, state.epoch, state.logged, load, delta)
        return await self._vectors.memories(
            user_id, state.epoch, load, logged=state.logged, delta=delta
        )

    async def _vector_hits(self, request: SearchRequest, found: list[Any]) -> list[SearchHit]:
        """The records of ``found``, in its order; a record deleted since the counters were
        read is left out, and the owner is checked again on the rows themselves."""
        if not found:
            return []
        messages, memories = await self._plan("read", found_records, request.user_id, found)
        return ranked_hits(
            found,
            {r.id: r for r in messages},
            {r.id: r for r in memories},
            user_id=request.user_id,
        )

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        counts: dict[str, int] = await super()._forget_user(user_id)  # type: ignore[misc]
        self._vectors.forget(user_id)  # other processes drop theirs at their next query
        return counts
