"""An exact in-process vector index: one user's unit vectors in a growing matrix.

Used where the engine has no vector index of its own (process memory, and as the index
beside engines that keep vectors as plain blobs). Search is a matrix-vector product over
the user's rows only, restricted *before* ranking, so a filter can neither leak other
records in nor starve the result of ones that match. Rows may carry a ``kind`` and a
``conversation`` label, which filter with array operations; an ``allow`` predicate refines
what those labels leave (keep it for the few rows that need it, such as memory entries).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Any

import numpy as np

__all__ = ["VectorIndex", "top_k"]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, largest first (ties: lower index first)."""
    if k <= 0 or scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    return part[np.lexsort((part, -scores[part]))]


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
