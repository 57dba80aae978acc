"""An exact in-process vector index: one user's unit vectors in a growing matrix.

Used where the engine has no vector index of its own (process memory, and as the index
beside engines that keep vectors as plain blobs). Search is a matrix-vector product over
the user's rows only, restricted *before* ranking by an optional predicate, so a filter can
neither leak other records in nor starve the result of ones that match.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

__all__ = ["VectorIndex", "top_k"]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, largest first (ties: lower index first)."""
    if k <= 0 or scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    return part[np.lexsort((part, -scores[part]))]


class VectorIndex:
    """Unit vectors by key; exact cosine search.

    Args:
        dimension: vector length (``None``: taken from the first vector added).
    """

    __slots__ = ("_keys", "_matrix", "_rows", "dimension")

    def __init__(self, dimension: int | None = None) -> None:
        self.dimension = dimension
        self._keys: list[Hashable] = []
        self._rows: dict[Hashable, int] = {}
        self._matrix = np.zeros((0, dimension or 0), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._rows

    def put(self, key: Hashable, vector: Any) -> None:
        """Add or replace the vector of ``key``."""
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
                grown = np.zeros((max(16, 2 * row), self.dimension), dtype=np.float32)
                grown[:row] = self._matrix[:row]
                self._matrix = grown
            self._keys.append(key)
            self._rows[key] = row
        self._matrix[row] = vec

    def put_many(self, items: Iterable[tuple[Hashable, Any]]) -> None:
        for key, vec in items:
            self.put(key, vec)

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
        self._keys.pop()
        return True

    def search(
        self, vector: Any, limit: int, allow: Callable[[Hashable], bool] | None = None
    ) -> list[tuple[Hashable, float]]:
        """The ``limit`` keys nearest to ``vector`` (cosine), best first, among ``allow``ed."""
        n = len(self._keys)
        if n == 0 or limit <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        scores = self._matrix[:n] @ query
        if allow is not None:
            mask = np.fromiter((allow(k) for k in self._keys), dtype=bool, count=n)
            scores = np.where(mask, scores, -np.inf)
            limit = min(limit, int(mask.sum()))
        return [(self._keys[i], float(scores[i])) for i in top_k(scores, limit)]
