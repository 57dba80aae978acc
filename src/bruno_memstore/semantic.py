"""The semantic half of :class:`~bruno_memstore.base.MemoryBackend`: embeddings and ranking.

A backend that declares ``Capability.VECTORS`` gets an :class:`Embedder` (the light local
default unless told otherwise). By default (``vectors="inline"``) every stored message and
memory entry is embedded before the write, so its vector lands in the same atomic write as
the record. With ``vectors="deferred"`` messages are written and acknowledged first and get
their vectors shortly after (:mod:`.deferred_vectors`); memory entries stay inline.

The store records which model and dimension made its vectors; opening it with another model
leaves keyword search and reads working but refuses vector work with
:class:`EmbeddingMismatchError` until :meth:`SemanticSearch.reindex` (``bruno-memstore
reindex URL``) re-embeds everything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal

from .capabilities import Capability
from .deferred_vectors import BATCH, VECTOR_WRITES, VectorQueue, VectorWrites
from .embeddings.adapter import Embedder, VectorSpace
from .errors import (
    BackendError,
    CapabilityError,
    EmbeddingMismatchError,
    InvalidArgumentError,
    MemstoreError,
)
from .models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    check_text,
)
from .primitives import PendingVectors
from .ranking import (
    SearchMode,
    asks_when,
    candidate_count,
    fuse,
    keyword_scores,
    query_dates,
    vector_scores,
)
from .search import bounded_query, clipped_query

__all__ = ["DEFAULT_MODEL", "SearchMode", "SemanticSearch", "make_embedder"]

log = logging.getLogger("bruno_memstore.semantic")

DEFAULT_MODEL = "default"
"""``embedding_model`` value meaning the shared light local model (see ``docs/embeddings.md``)."""

_MODES: tuple[str, ...] = ("keyword", "vector", "hybrid")
_STAY_WAITING = "the messages stay stored, waiting for their vectors"


@functools.cache
def _shared_default() -> Embedder:
    from .embeddings.local import default_embedder

    return Embedder(default_embedder())


def make_embedder(model: Any) -> Embedder | None:
    """An :class:`Embedder` for ``model``: ``"default"``, ``None`` (no vectors), an
    ``Embedder``, a local model name (``"minilm"``, ...) or any embedding model object."""
    if model is None:
        return None
    if isinstance(model, Embedder):
        return model
    if isinstance(model, str):
        if model == DEFAULT_MODEL:
            return _shared_default()
        from .embeddings.local import local_embedder

        return Embedder(local_embedder(model))
    return Embedder(model)


def _checked(space: VectorSpace) -> VectorSpace:
    """``space``, if its model name can be recorded (it is text: no lone surrogate)."""
    check_text(space.model, "embedding_model")
    return space


class SemanticSearch:
    """Mixed into ``MemoryBackend``, whose members below it uses (declared here, defined
    there or by the backend's primitives), so that neither module imports the other."""

    backend_name: str
    capabilities: frozenset[Capability]
    connected: bool
    describe: Callable[[], str]
    require: Callable[[Capability, str], None]
    export_batches: Callable[[str], AsyncIterator[list[Any]]]
    _ensure_connected: Callable[[], Awaitable[None]]
    _run: Callable[[str, Callable[[], Any]], Awaitable[Any]]
    _search_mode_for: Callable[[SearchMode | None, str], SearchMode]
    _text_search: Callable[[SearchRequest], Awaitable[list[SearchHit]]]
    # The vector primitives (on backends that declare ``Capability.VECTORS``).
    _claim_vector_space: Callable[..., Awaitable[VectorSpace | None]]
    _put_vectors: Callable[[str, Sequence[Any]], Awaitable[None]]
    _vector_search: Callable[[SearchRequest, Any], Awaitable[list[SearchHit]]]
    # The durable queue of deferred vectors (on backends that are ``PendingVectors``).
    _without_vectors: Callable[[str, int, int], Awaitable[list[tuple[int, str, str]]]]

    embedder: Embedder | None
    search_mode: SearchMode
    vector_weight: float
    vectors: VectorWrites
    _vector_queue: VectorQueue
    _space: VectorSpace | None
    _space_error: EmbeddingMismatchError | None

    def _init_semantic(
        self,
        embedding_model: Any,
        search_mode: SearchMode | None,
        vector_weight: float,
        vector_writes: VectorWrites = "inline",
    ) -> None:
        vectors = Capability.VECTORS in self.capabilities
        if not vectors and embedding_model not in (None, DEFAULT_MODEL):
            raise CapabilityError(
                f"{type(self).__name__} stores no vectors; use a backend with vector search "
                "or leave embedding_model unset",
                backend=self.backend_name,
                operation="configure",
            )
        self.embedder = make_embedder(embedding_model) if vectors else None
        self._mode_given = search_mode is not None
        if search_mode is None:
            search_mode = "hybrid" if self.embedder is not None else "keyword"
        if search_mode not in _MODES:
            raise InvalidArgumentError("search_mode", f"expected one of {', '.join(_MODES)}")
        if search_mode != "keyword" and self.embedder is None:
            raise InvalidArgumentError("search_mode", f"{search_mode!r} needs an embedding model")
        if not 0.0 <= vector_weight <= 1.0:
            raise InvalidArgumentError("vector_weight", "must be between 0 and 1")
        self.search_mode = search_mode
        self.vector_weight = vector_weight
        self._space = None
        self._space_error = None
        self._init_vector_writes(vector_writes)

    def _init_vector_writes(self, vector_writes: VectorWrites) -> None:
        if vector_writes not in VECTOR_WRITES:
            raise InvalidArgumentError("vectors", f"expected one of {', '.join(VECTOR_WRITES)}")
        if vector_writes == "deferred":
            if not isinstance(self, PendingVectors):
                raise CapabilityError(
                    f"{type(self).__name__} keeps no durable queue of messages waiting for "
                    "their vectors, so it cannot acknowledge a message before its vector; "
                    "use vectors='inline' here (SQLiteMemory, MySQLMemory and InMemoryStorage "
                    "offer 'deferred')",
                    backend=self.backend_name,
                    operation="configure",
                )
            if self.embedder is None:
                raise InvalidArgumentError("vectors", "'deferred' needs an embedding model")
        self.vectors = vector_writes
        self._vector_queue = VectorQueue(self._attach_waiting, self.__repr__)

    def set_embedding_model(self, embedding_model: Any) -> None:
        """Use another embedding model (before the first operation only)."""
        if self.connected:
            raise InvalidArgumentError(
                "embedding_model", "can only be changed before the memory connects"
            )
        self.require(Capability.VECTORS, "set_embedding_model")
        if embedding_model is None and self.vectors == "deferred":
            raise InvalidArgumentError("embedding_model", "vectors='deferred' needs a model")
        self.embedder = make_embedder(embedding_model)
        if self.embedder is None:
            self.search_mode = "keyword"

    @property
    def vector_space(self) -> VectorSpace | None:
        """The model and dimension of this store's vectors (known after connecting)."""
        return self._space

    # ---------------------------------------------------------------- connect

    async def _check_vector_space(self) -> None:
        """Record this store's vector space, or note that it differs from the embedder's."""
        self._space_error = None
        if self.embedder is not None and Capability.VECTORS not in self.capabilities:
            # The engine turned out to have no vector support (e.g. PostgreSQL without
            # pgvector): keyword search only, said once in the log.
            log.warning("%s has no vector search here; using keyword search", self.describe())
            self.embedder = None
            if self._mode_given and self.search_mode != "keyword":
                raise CapabilityError(
                    f"search_mode={self.search_mode!r} needs vector search, which "
                    f"{self.describe() or type(self).__name__} does not offer",
                    backend=self.backend_name,
                    operation="connect",
                )
            self.search_mode = "keyword"
        if self.embedder is None:
            return
        mine = _checked(await self.embedder.space())
        stored = await self._claim_vector_space(mine, replace=False)
        self._space = stored
        if stored != mine:
            self._space_error = EmbeddingMismatchError(
                f"this store's vectors were made by {stored.model!r} ({stored.dimension} "
                f"dimensions) but the configured embedding model is {mine.model!r} "
                f"({mine.dimension} dimensions). Keyword search and reads still work. To switch "
                f"models run: bruno-memstore reindex {self.describe() or 'URL'} "
                f"--model {mine.model}  (or configure {stored.model!r} again)",
                backend=self.backend_name,
                operation="connect",
            )
            log.warning("%s", self._space_error)

    def _vectors_usable(self, operation: str) -> Embedder:
        if self.embedder is None:
            raise CapabilityError(
                f"{type(self).__name__} has no embedding model configured, so no vector search",
                backend=self.backend_name,
                operation=operation,
            )
        if self._space_error is not None:
            raise self._space_error
        return self.embedder

    # ---------------------------------------------------------------- writes

    async def _embed_records(
        self, operation: str, records: Sequence[MessageRecord | MemoryRecord]
    ) -> None:
        """Set ``vector`` on each message or memory record (no-op without a model)."""
        if self.embedder is None or not records:
            return
        await self._ensure_connected()  # the engine may turn out to keep no vectors
        if self.embedder is None:
            return
        embedder = self._vectors_usable(operation)
        vectors = await self._embedding(operation, embedder, [r.content for r in records])
        for rec, vec in zip(records, vectors, strict=True):
            rec.vector = vec

    async def _deferred(
        self, operation: str, records: Sequence[MessageRecord | MemoryRecord]
    ) -> bool:
        """Prepare the vectors of messages to store: embedded now (``False``), or, in
        deferred mode, left to the store's :class:`VectorQueue` (``True``) once it is known
        that this model may make them (a store of another model refuses writes alike)."""
        if self.vectors == "deferred" and self.embedder is not None and records:
            await self._ensure_connected()
            self._vectors_usable(operation)
            return True
        await self._embed_records(operation, records)
        return False

    async def flush(self) -> None:
        """Wait until every message acknowledged before the call has its vector.

        Only stores with ``vectors="deferred"`` have messages waiting for their vectors; on
        others this returns at once. The waiting messages are embedded and attached by this
        call if the background task has not done it yet; messages acknowledged by this
        memory are waited for, or, if it acknowledged none yet, every message pending in
        the store (such as those another process left).

        Raises:
            BackendError: the embedding model failed (its exception is the ``cause``); the
                messages stay stored and waiting, and a later call tries again.
        """
        if self.vectors != "deferred" or self.embedder is None:
            return
        await self._ensure_connected()
        await self._vector_queue.flush()

    async def _attach_waiting(self, operation: str, after: int) -> tuple[int, int] | None:
        """Embed the oldest messages waiting for their vectors after key ``after`` (a
        :data:`~.deferred_vectors.BATCH`) and attach the vectors; the last key taken and how
        many (``None``: none waits)."""
        embedder = self.embedder
        if embedder is None:
            return None
        size = min(BATCH, embedder.batch_size)
        items = await self._run(operation, lambda: self._without_vectors("message", after, size))
        if not items:
            return None
        usable = self._vectors_usable(operation)
        texts = [text for _key, _id, text in items]
        vectors = await self._embedding(operation, usable, texts, _STAY_WAITING)
        pairs = [(rid, vec) for (_key, rid, _text), vec in zip(items, vectors, strict=True)]
        await self._run(operation, lambda: self._put_vectors("message", pairs))
        return int(items[-1][0]), len(pairs)

    async def _embedding(
        self,
        operation: str,
        embedder: Embedder,
        texts: list[str],
        outcome: str = "nothing was written",
    ) -> Any:
        try:
            return await embedder.embed(texts)
        except MemstoreError:
            raise
        except Exception as exc:
            err = BackendError(
                f"the embedding model {embedder.model_name!r} failed: "
                f"{type(exc).__name__}: {exc}; {outcome}",
                backend=self.backend_name,
                operation=operation,
            )
            err.cause = exc
            raise err from exc

    # ---------------------------------------------------------------- queries

    def _resolve_mode(self, mode: SearchMode | None, operation: str) -> SearchMode:
        if mode is None:
            return self.search_mode
        if mode not in _MODES:
            raise InvalidArgumentError("mode", f"expected one of {', '.join(_MODES)}")
        if mode != "keyword":
            self.require(Capability.VECTORS, operation)
            self._vectors_usable(operation)
        return mode

    async def _ranked(
        self,
        operation: str,
        user_id: str,
        query: str,
        *,
        mode: SearchMode | None,
        kinds: frozenset[str],
        conversation_id: str | None,
        limit: int,
        memory_filter: MemoryFilter | None,
    ) -> list[SearchHit]:
        """The best ``limit`` records for ``query``, scores in [0, 1] (see :mod:`ranking`).

        ``mode`` ``None`` is the store's default, resolved once connected. The engines get
        the query bounded (:func:`~bruno_memstore.search.bounded_query`; the embedding
        model :func:`~bruno_memstore.search.clipped_query`), whatever its length.
        """
        await self._ensure_connected()  # connecting checks the store's vector space
        mode = self._search_mode_for(mode, operation)
        request = SearchRequest(
            user_id=user_id,
            query=bounded_query(query) if mode != "vector" else "",
            kinds=kinds,
            conversation_id=conversation_id,
            limit=limit,
            memory_filter=memory_filter,
        )
        if mode == "keyword":
            return keyword_scores(await self._run(operation, lambda: self._text_search(request)))
        embedder = self._vectors_usable(operation)
        vector = (await self._embedding(operation, embedder, [clipped_query(query)]))[0]
        wide = request.with_limit(limit if mode == "vector" else candidate_count(limit))

        def near() -> Any:
            return self._vector_search(wide, vector)

        if mode == "vector":
            return vector_scores(await self._run(operation, near))
        text_hits, vector_hits = await asyncio.gather(
            self._run(operation, lambda: self._text_search(wide)), self._run(operation, near)
        )
        return fuse(
            text_hits,
            vector_hits,
            vector_weight=self.vector_weight,
            dates=query_dates(query),
            asks_time=asks_when(query),
            limit=limit,
        )

    # ---------------------------------------------------------------- maintenance

    async def reindex(
        self,
        *,
        batch_size: int = 256,
        progress: Callable[[Literal["message", "memory"], int], None] | None = None,
    ) -> dict[str, int]:
        """Drop every stored vector and re-embed all messages and memory entries with the
        configured model, recording it as the store's model. Returns counts by kind.

        Stop writers that use the old model first. An interrupted run leaves the store
        marked with the new model and partly embedded; running it again completes it.
        """
        self.require(Capability.VECTORS, "reindex")
        self.require(Capability.LISTING, "reindex")
        embedder = self.embedder
        if embedder is None:
            raise CapabilityError(
                "reindex needs an embedding model", backend=self.backend_name, operation="reindex"
            )
        await self._ensure_connected()
        space = _checked(await embedder.space())
        await self._run(
            "reindex",
            lambda: self._claim_vector_space(space, replace=True),
        )
        self._space, self._space_error = space, None
        counts = {"message": 0, "memory": 0}
        for export_kind, kind in (("messages", "message"), ("memories", "memory")):
            async for batch in self.export_batches(export_kind):
                for start in range(0, len(batch), batch_size):
                    part: list[Any] = batch[start : start + batch_size]
                    vecs = await self._embedding("reindex", embedder, [r.content for r in part])
                    pairs = [(r.id, v) for r, v in zip(part, vecs, strict=True)]
                    await self._run(
                        "reindex",
                        lambda pairs=pairs, kind=kind: self._put_vectors(kind, pairs),
                    )
                    counts[kind] += len(pairs)
                    if progress is not None:
                        progress(kind, len(pairs))  # type: ignore[arg-type]
        return counts
