"""Exact vector search in process, with the user filter inside.

For engines with no vector index of their own: process memory, and engines that keep each
record's vector as a plain value beside it (a BLOB column, a hash field).

* :class:`VectorIndex` holds one user's unit vectors in a growing matrix. Search is a
  matrix-vector product over the user's rows only, restricted *before* ranking, so a filter
  can neither leak other records in nor starve the result of ones that match. Rows may
  carry a ``kind`` and a ``conversation`` label, which filter with array operations; an
  ``allow`` predicate refines what those labels leave (keep it for the few rows that need
  it, such as memory entries).
* :func:`nearest` searches a user's message and memory-entry indexes with every filter of a
  search: conversation, and the memory filter on the entries.
* :class:`UserVectorCache` keeps users' indexes loaded from an engine while the user's
  *generation* is unchanged: a counter the engine bumps in every write that adds, changes or
  removes one of the user's vectors (same transaction), so any process's write invalidates
  every other process's copy on its next query. :class:`AppendLogIndexes` follows an
  engine's append log instead of reloading after each append, and :class:`ExactVectors`
  puts both together for a store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable
from typing import Any

import numpy as np

from ...models import MemoryRecord, SearchRequest
from .hits import Found
from .user_cache import UserCache

__all__ = [
    "AppendLogIndexes",
    "ExactVectors",
    "MemoryKey",
    "StaleLog",
    "UserVectorCache",
    "VectorIndex",
    "nearest",
    "top_k",
    "vector_from_bytes",
    "vector_to_bytes",
]

Loader = Callable[[], Awaitable[Iterable[tuple[Any, ...]]]]
Delta = Callable[[int], Awaitable[tuple[Iterable[tuple[Any, ...]], int] | None]]


def vector_to_bytes(vector: Any) -> bytes:
    """A vector as little-endian float32 bytes (what engines store)."""
    return np.asarray(vector, dtype="<f4").reshape(-1).tobytes()


def vector_from_bytes(data: bytes) -> np.ndarray:
    """The inverse of :func:`vector_to_bytes`."""
    return np.frombuffer(data, dtype="<f4")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, largest first (ties: lower index first)."""
    if k <= 0 or scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    if k < scores.size:
        # Every row scoring at least the k-th largest, so that ties at the cut are decided
        # by index, not by how the partition happened to place them.
        kth = np.partition(scores, scores.size - k)[scores.size - k]
        part = np.flatnonzero(scores >= kth)
    else:
        part = np.arange(scores.size)
    return part[np.lexsort((part, -scores[part]))][:k]


class _Labels:
    """Small integer codes for a label column (``None`` is code 0)."""

    __slots__ = ("codes", "names")

    def __init__(self) -> None:
        self.codes: dict[Hashable, int] = {None: 0}
        self.names: list[Hashable] = [None]

    def code(self, name: Hashable) -> int:
        found = self.codes.get(name)
        if found is None:
            found = self.codes[name] = len(self.names)
            self.names.append(name)
        return found

    def lookup(self, names: Iterable[Hashable]) -> list[int]:
        return [self.codes[n] for n in names if n in self.codes]


class VectorIndex:
    """Unit vectors by key, with optional kind and conversation labels; exact cosine search.

    Args:
        dimension: vector length (``None``: taken from the first vector added).
    """

    __slots__ = (
        "_conv_col",
        "_conversations",
        "_keys",
        "_kind_col",
        "_kinds",
        "_matrix",
        "_rows",
        "dimension",
    )

    def __init__(self, dimension: int | None = None) -> None:
        self.dimension = dimension
        self._keys: list[Hashable] = []
        self._rows: dict[Hashable, int] = {}
        self._matrix = np.zeros((0, dimension or 0), dtype=np.float32)
        self._kinds = _Labels()
        self._conversations = _Labels()
        self._kind_col = np.zeros(0, dtype=np.int32)
        self._conv_col = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._rows

    def put(
        self,
        key: Hashable,
        vector: Any,
        *,
        kind: Hashable = None,
        conversation: Hashable = None,
    ) -> None:
        """Add or replace the vector (and labels) of ``key``."""
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self.dimension is None:
            self.dimension = vec.size
            self._matrix = np.zeros((0, vec.size), dtype=np.float32)
        if vec.size != self.dimension:
            raise ValueError(f"vector has {vec.size} dimensions, the index {self.dimension}")
        row = self._rows.get(key)
        if row is None:
            row = len(self._keys)
            if row == self._matrix.shape[0]:
                self._grow(max(16, 2 * row))
            self._keys.append(key)
            self._rows[key] = row
        self._matrix[row] = vec
        self._kind_col[row] = self._kinds.code(kind)
        self._conv_col[row] = self._conversations.code(conversation)

    def _grow(self, capacity: int) -> None:
        n = len(self._keys)
        matrix = np.zeros((capacity, self._matrix.shape[1]), dtype=np.float32)
        matrix[:n] = self._matrix[:n]
        self._matrix = matrix
        for name in ("_kind_col", "_conv_col"):
            col = np.zeros(capacity, dtype=np.int32)
            col[:n] = getattr(self, name)[:n]
            setattr(self, name, col)

    def put_many(self, items: Iterable[tuple[Any, ...]]) -> None:
        """Add ``(key, vector)`` or ``(key, vector, kind, conversation)`` tuples.

        New keys are added in one block (one matrix copy for the lot); a key already
        present is replaced in place.
        """
        keys: list[Hashable] = []
        vectors: list[Any] = []
        kinds: list[int] = []
        conversations: list[int] = []
        pending: set[Hashable] = set()
        for item in items:
            key, vec, *labels = item
            kind, conversation = [*labels, None, None][:2]
            if key in self._rows or key in pending:
                self._add_block(keys, vectors, kinds, conversations)
                keys, vectors, kinds, conversations, pending = [], [], [], [], set()
                self.put(key, vec, kind=kind, conversation=conversation)
                continue
            keys.append(key)
            vectors.append(vec)
            kinds.append(self._kinds.code(kind))
            conversations.append(self._conversations.code(conversation))
            pending.add(key)
        self._add_block(keys, vectors, kinds, conversations)

    def _add_block(
        self, keys: list[Hashable], vectors: list[Any], kinds: list[int], convs: list[int]
    ) -> None:
        if not keys:
            return
        block = np.asarray(
            [np.asarray(v, dtype=np.float32).reshape(-1) for v in vectors], dtype=np.float32
        )
        if self.dimension is None:
            self.dimension = block.shape[1]
            self._matrix = np.zeros((0, self.dimension), dtype=np.float32)
        if block.shape[1] != self.dimension:
            raise ValueError(
                f"vectors have {block.shape[1]} dimensions, the index {self.dimension}"
            )
        start = len(self._keys)
        end = start + len(keys)
        if end > self._matrix.shape[0]:
            self._grow(max(16, 2 * start, end))
        self._matrix[start:end] = block
        self._kind_col[start:end] = kinds
        self._conv_col[start:end] = convs
        self._rows.update(zip(keys, range(start, end), strict=True))
        self._keys.extend(keys)

    def remove(self, key: Hashable) -> bool:
        """Drop ``key``'s vector; ``True`` if it was there."""
        row = self._rows.pop(key, None)
        if row is None:
            return False
        last = len(self._keys) - 1
        if row != last:
            moved = self._keys[last]
            self._keys[row] = moved
            self._rows[moved] = row
            self._matrix[row] = self._matrix[last]
            self._kind_col[row] = self._kind_col[last]
            self._conv_col[row] = self._conv_col[last]
        self._keys.pop()
        return True

    def search(
        self,
        vector: Any,
        limit: int,
        allow: Callable[[Hashable], bool] | None = None,
        *,
        kinds: Collection[Hashable] | None = None,
        conversation: Hashable = None,
    ) -> list[tuple[Hashable, float]]:
        """The ``limit`` keys nearest to ``vector`` (cosine), best first.

        Only rows labelled with one of ``kinds`` (if given), in ``conversation`` (if given)
        and, of those, for which ``allow(key)`` holds (if given) take part.
        """
        n = len(self._keys)
        if n == 0 or limit <= 0:
            return []
        mask: np.ndarray | None = None
        if kinds is not None:
            mask = np.isin(self._kind_col[:n], self._kinds.lookup(kinds))
        if conversation is not None:
            code = self._conversations.codes.get(conversation)
            same = self._conv_col[:n] == (code if code is not None else -1)
            mask = same if mask is None else mask & same
        if allow is not None:
            rows = np.arange(n) if mask is None else np.flatnonzero(mask)
            keep = [r for r in rows.tolist() if allow(self._keys[r])]
            mask = np.zeros(n, dtype=bool)
            mask[keep] = True
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        # einsum stays on this thread: a threaded BLAS matrix-vector product spins up
        # workers, and on a busy machine that is slower than one core (measured 2-4x).
        scores = np.einsum("ij,j->i", self._matrix[:n], query)
        if mask is not None:
            allowed = int(np.count_nonzero(mask))
            if allowed == 0:
                return []
            scores[~mask] = -np.inf
            limit = min(limit, allowed)
        return [(self._keys[i], float(scores[i])) for i in top_k(scores, limit)]


class MemoryKey:
    """A memory entry's key in a loaded vector index: its record (without text) for the
    filters. Identity-hashed: a loaded index holds each entry once."""

    __slots__ = ("record",)

    def __init__(self, record: MemoryRecord) -> None:
        self.record = record


def _record_of(key: Any) -> MemoryRecord:
    return key.record  # type: ignore[no-any-return]


def nearest(
    request: SearchRequest,
    vector: Any,
    *,
    messages: VectorIndex | None = None,
    memories: VectorIndex | None = None,
    conversation: Hashable = None,
    memory_of: Callable[[Any], MemoryRecord] = _record_of,
) -> list[Found]:
    """The ``request.limit`` records nearest to ``vector`` among one user's indexes, best
    first, of ``request.kinds`` and admitted by the request.

    ``messages`` is keyed by message id and labelled by conversation (``conversation``: the
    label of the request's conversation, by default its id); ``memories`` is keyed by
    anything ``memory_of`` turns into the entry (default: a :class:`MemoryKey`'s record),
    which must pass the request's memory filter. Equal scores keep messages first.
    """
    limit = request.limit
    found: list[Found] = []
    if messages is not None and "message" in request.kinds:
        if conversation is None:
            conversation = request.conversation_id
        found += [
            ("message", key, score)
            for key, score in messages.search(vector, limit, conversation=conversation)
        ]
    if memories is not None and "memory" in request.kinds:
        flt = request.memories()

        def allow(key: Any) -> bool:
            return request.admits_memory(memory_of(key), flt)

        found += [
            ("memory", memory_of(key).id, score)
            for key, score in memories.search(vector, limit, allow)
        ]
    found.sort(key=lambda near: -near[2])
    return found[:limit]


class UserVectorCache(UserCache[VectorIndex]):
    """Loaded indexes by name (a user, or a user and kind), each tagged with the engine
    generation it was loaded at.

    Args:
        max_users: indexes kept (least recently used are dropped).
    """

    def __init__(self, max_users: int = 64) -> None:
        super().__init__(max_users)

    async def get(  # type: ignore[override]
        self, user_id: str, generation: Any, load: Loader
    ) -> VectorIndex:
        """The index as of ``generation``, loading its items with ``load()`` when stale
        (``load()`` may also give the index built, e.g. on an engine's thread)."""

        async def build() -> VectorIndex:
            loaded = await load()
            if isinstance(loaded, VectorIndex):
                return loaded
            index = VectorIndex()
            index.put_many(loaded)
            return index

        return await super().get(user_id, generation, build)


class StaleLog(RuntimeError):
    """The user's vectors kept changing while an index was loaded (retries ran out)."""


class AppendLogIndexes:
    """Indexes that follow an engine's append log instead of reloading after each append.

    Engines that log which vectors each append added (MariaDB, Redis) key an index by the
    user's *epoch* (changed only by removals and replacements) and remember how far into
    the log the index reaches; a query then fetches just the vectors logged since.

    Args:
        cache: where the indexes live (entries dropped there are forgotten here too).
    """

    def __init__(self, cache: UserVectorCache) -> None:
        self.cache = cache
        self._places: OrderedDict[str, tuple[VectorIndex, int]] = OrderedDict()

    async def index(
        self,
        name: str,
        epoch: Any,
        logged: int,
        load: Loader,
        delta: Delta,
    ) -> VectorIndex:
        """The index ``name`` up to log position ``logged``.

        ``load()`` reads every vector (it sees at least the log up to ``logged``);
        ``delta(after)`` returns the vectors logged after ``after`` and the position they
        reach, or ``None`` when the log no longer covers them (the index is then reloaded).
        """
        fresh: list[int] = []

        async def loader() -> Iterable[tuple[Any, ...]]:
            fresh.append(logged)
            return await load()

        for _attempt in range(3):
            index = await self.cache.get(name, epoch, loader)
            known = self._places.get(name)
            if known is not None and known[0] is index:
                position = known[1]
            elif fresh:
                position = fresh[-1]
                self._keep(name, index, position)
            else:  # loaded by another task; its place in the log is not known: reload
                self.cache.drop(name)
                continue
            if logged > position:
                got = await delta(position)
                if got is None:
                    self.cache.drop(name)
                    fresh.clear()
                    continue
                items, upto = got
                index.put_many(items)
                known = self._places.get(name)
                if known is not None and known[0] is index and known[1] < upto:
                    self._keep(name, index, upto)
            return index
        raise StaleLog("the user's vectors kept changing while they were loaded")

    def forget(self, name: str) -> None:
        """Drop the index ``name`` and its place."""
        self._places.pop(name, None)
        self.cache.drop(name)

    def _keep(self, name: str, index: VectorIndex, position: int) -> None:
        self._places[name] = (index, position)
        self._places.move_to_end(name)
        while len(self._places) > self.cache.max_users:
            self._places.popitem(last=False)


class ExactVectors:
    """Exact vector search for a store whose engine keeps vectors as plain values.

    Each user has a message index, following the engine's append log, and a memory-entry
    index (keys: :class:`MemoryKey`), each kept while the engine's versions are unchanged.

    Args:
        max_users: users whose indexes are kept loaded.
    """

    def __init__(self, max_users: int = 64) -> None:
        self.cache = UserVectorCache(max_users=2 * max_users)  # two indexes per user
        self._logged = AppendLogIndexes(self.cache)

    async def messages(
        self, user_id: str, epoch: Any, logged: int, load: Loader, delta: Delta
    ) -> VectorIndex:
        """The user's message vectors up to log position ``logged`` of ``epoch`` (see
        :meth:`AppendLogIndexes.index`); items are ``(id, vector, None, conversation)``."""
        return await self._logged.index(f"{user_id}\0message", epoch, logged, load, delta)

    async def memories(
        self,
        user_id: str,
        generation: Any,
        load: Callable[[], Awaitable[Iterable[tuple[MemoryRecord, Any]]]],
        *,
        logged: int = 0,
        delta: Delta | None = None,
    ) -> VectorIndex:
        """The user's memory-entry vectors as of ``generation``; ``load()`` gives
        ``(entry, vector)`` pairs (the entry's text is not needed). With ``delta``,
        ``generation`` is an epoch and added entries are followed up to ``logged`` as
        messages are (``delta`` gives ``(entry, vector)`` pairs too)."""

        async def items() -> Any:
            loaded = await load()
            if isinstance(loaded, VectorIndex):  # built with MemoryKey keys
                return loaded
            return [(MemoryKey(rec), vec) for rec, vec in loaded]

        name = f"{user_id}\0memory"
        if delta is None:
            return await self.cache.get(name, generation, items)

        async def added(after: int) -> tuple[Iterable[tuple[Any, ...]], int] | None:
            got = await delta(after)
            if got is None:
                return None
            pairs, upto = got
            return [(MemoryKey(rec), vec) for rec, vec in pairs], upto

        return await self._logged.index(name, generation, logged, items, added)

    def forget(self, user_id: str) -> None:
        """Drop the user's indexes."""
        self._logged.forget(f"{user_id}\0message")
        self._logged.forget(f"{user_id}\0memory")

    def clear(self) -> None:
        """Drop every index (the engine dropped every vector)."""
        self.cache.clear()
