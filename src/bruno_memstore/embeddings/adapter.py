"""One async, batched, cached face over any embedding model.

Accepted models, tried in this order:

* a local model (``embed_batch(texts) -> array``, synchronous): run on the embedder's own
  worker thread, never on the event loop;
* a bruno-core ``EmbeddingInterface``: batched through ``embed_texts`` (in chunks of its
  ``get_max_batch_size()``), else ``embed_text`` one by one;
* any object with an ``embed`` method, async (awaited) or synchronous (worker thread), taking
  one text, or an ``encode`` method taking a list (sentence-transformers' shape).

Vectors are float32 and L2-normalised, so cosine similarity is a dot product. Results are
cached by a hash of the text, so storing, re-storing or copying the same content embeds it once.
Concurrent requests share model calls (:mod:`.batching`): one call runs at a time, and the
requests that arrive meanwhile go together in the next.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .batching import CallBatcher

__all__ = ["Embedder", "VectorSpace", "normalise_rows"]


class VectorSpace(tuple[str, int]):
    """The model name and dimension a store's vectors were made with."""

    __slots__ = ()

    def __new__(cls, model: str, dimension: int) -> VectorSpace:
        return super().__new__(cls, (model, int(dimension)))

    @property
    def model(self) -> str:
        return self[0]

    @property
    def dimension(self) -> int:
        return self[1]

    def __repr__(self) -> str:
        return f"VectorSpace(model={self.model!r}, dimension={self.dimension})"


def normalise_rows(matrix: Any) -> np.ndarray:
    """``matrix`` as a 2-D float32 array whose non-zero rows have unit length."""
    arr = np.asarray(matrix, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return arr / norms


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Embedder:
    """Wraps ``model`` (see the module docstring) for use by every backend.

    Args:
        model: the embedding model.
        batch_size: texts per call to a batching model, and at most merged into one call
            from concurrent requests.
        cache_size: vectors kept, by content hash (0 disables the cache).
        model_name: overrides the name read from the model (recorded in stores).
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = 64,
        cache_size: int = 50_000,
        model_name: str | None = None,
    ) -> None:
        if isinstance(model, Embedder):
            raise InvalidArgumentError("embedding_model", "already wrapped in an Embedder")
        if not any(hasattr(model, m) for m in ("embed_batch", "embed_texts", "embed", "encode")):
            raise InvalidArgumentError(
                "embedding_model",
                f"{type(model).__name__} has no embed_batch, embed_texts, embed or encode method",
            )
        self.model = model
        self.batcher = CallBatcher(self._compute, max_texts=1)
        self.batch_size = batch_size  # checked by the setter
        self.cache_size = cache_size
        self.model_name = model_name or _name_of(model)
        self._dimension: int | None = _dimension_of(model)
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None
        self.computed = 0  # texts actually sent to the model (cache misses)

    def __repr__(self) -> str:
        return f"Embedder({self.model_name!r}, dimension={self._dimension})"

    @property
    def batch_size(self) -> int:
        """Texts per model call, and at most merged into one from concurrent requests."""
        return self.batcher.max_texts

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if value < 1:
            raise InvalidArgumentError("batch_size", "must be at least 1")
        self.batcher.max_texts = value

    @property
    def dimension(self) -> int | None:
        """The vector length, once known (from the model, or from its first answer)."""
        return self._dimension

    async def space(self) -> VectorSpace:
        """The model name and dimension (embeds a probe text if the model does not say)."""
        if self._dimension is None:
            await self.embed(["dimension probe"])
        assert self._dimension is not None
        return VectorSpace(self.model_name, self._dimension)

    async def embed_one(self, text: str) -> np.ndarray:
        """The unit vector of one text."""
        return (await self.embed([text]))[0]

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts``, one row each, in order."""
        keys = [_digest(t) for t in texts]
        rows: dict[bytes, np.ndarray] = {}
        todo: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                rows[key] = hit
            else:
                todo.setdefault(key, text)
        if todo:
            fresh = await self.batcher.run(list(todo.values()))
            self.computed += len(todo)
            for key, row in zip(todo, fresh, strict=True):
                rows[key] = row
                self._remember(key, row)
        if not keys:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        return np.stack([rows[k] for k in keys])

    def _remember(self, key: bytes, row: np.ndarray) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = row
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _compute(self, texts: list[str]) -> np.ndarray:
        parts = [
            await self._compute_batch(texts[i : i + self.batch_size])
            for i in range(0, len(texts), self.batch_size)
        ]
        out = normalise_rows(np.concatenate(parts)) if parts else np.zeros((0, 0), np.float32)
        if out.shape[0] != len(texts):
            raise InvalidArgumentError(
                "embedding_model", f"returned {out.shape[0]} vectors for {len(texts)} texts"
            )
        dim = int(out.shape[1])
        if self._dimension is None:
            self._dimension = dim
        elif dim != self._dimension:
            raise InvalidArgumentError(
                "embedding_model", f"returned {dim}-d vectors, expected {self._dimension}"
            )
        return out

    async def _compute_batch(self, batch: list[str]) -> Any:
        model = self.model
        if hasattr(model, "embed_batch"):
            return await self._in_thread(model.embed_batch, batch)
        if hasattr(model, "embed_texts"):
            return await _maybe_await(model.embed_texts(batch))
        if hasattr(model, "embed"):
            if inspect.iscoroutinefunction(model.embed):
                return list(await asyncio.gather(*(model.embed(t) for t in batch)))
            return await self._in_thread(lambda: [model.embed(t) for t in batch])
        return await self._in_thread(model.encode, batch)

    async def _in_thread(self, func: Any, *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="bruno-embed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, *args)

    def close(self) -> None:
        """Stop the worker thread (a later call starts a new one)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _name_of(model: Any) -> str:
    getter = getattr(model, "get_model_name", None)
    if callable(getter):
        try:
            name = getter()
        except NotImplementedError:
            name = None
        if isinstance(name, str) and name:
            return name
    for attr in ("model_name", "name"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return f"{type(model).__module__}.{type(model).__qualname__}"


def _dimension_of(model: Any) -> int | None:
    getter = getattr(model, "get_dimension", None)
    if callable(getter):
        try:
            value = getter()
        except NotImplementedError:
            value = None
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(model, "dimension", None)
    return value if isinstance(value, int) and value > 0 else None
