"""``ChromaMemory``: ChromaDB, embedded (``PersistentClient``) or against a ``chroma run`` server.

Each user's messages and memory entries live in collections of their own, with their
embedding vectors, so vector search is Chroma's own HNSW index over the user's records only,
with every other filter in its ``where`` clause. Conversations, sessions and bookkeeping
have shared collections (``layout``). Chroma does not rank text, so full-text
search is the kit's keyword index over the user's documents, loaded from Chroma and kept in
process (``search``).

The Chroma client blocks, so its calls run on threads: one writer per store (the kit's
thread runner), which also groups concurrent message appends into one Chroma call, and a few
readers. Chroma has no transactions across calls; what each write does in which order, and
what a crash between two calls can leave, is described in ``ops`` and in
``docs/backends/chroma.md``.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlencode

import chromadb
import httpx
from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings

from ...base import MemoryBackend
from ...capabilities import DATABASE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import InvalidArgumentError
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
)
from ...primitives import AppendResult, ExportKind, MessagePruning, VectorPrimitives
from ...semantic import DEFAULT_MODEL
from ...url import MemoryURL, check_header_secret, hide_secrets
from ..kit.batches import EXPORT_BATCH, batches, chunks
from . import ops as ops
from . import search as search
from .layout import check_prefix
from .store import (
    HNSW,
    HNSW_KEYS,
    SCHEMA_VERSION,
    ChromaStore,
    acquire,
    not_found,
    release,
)

__all__ = ["ChromaMemory"]

DEFAULT_DIRECTORY = "./chroma_db"
DEFAULT_PREFIX = "bruno"
_URL_OPTIONS: dict[str, type] = {
    "prefix": str,
    "tenant": str,
    "database": str,
    "readers": int,
    "hnsw_ef_construction": int,
    "hnsw_ef_search": int,
    "hnsw_max_neighbors": int,
    "context_window": int,
    "operation_timeout": float,
}
_HNSW_OPTIONS = ("hnsw_ef_construction", "hnsw_ef_search", "hnsw_max_neighbors")


def _check_hnsw(hnsw: Mapping[str, int] | None) -> dict[str, int]:
    if hnsw is None:
        return dict(HNSW)
    if not isinstance(hnsw, Mapping):
        raise InvalidArgumentError("hnsw", "expected a mapping of index settings")
    unknown = sorted(set(hnsw) - HNSW_KEYS)
    if unknown:
        raise InvalidArgumentError(
            "hnsw",
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(HNSW_KEYS))}",
        )
    for name, value in hnsw.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 10_000:
            raise InvalidArgumentError(f"hnsw.{name}", "expected an int from 2 to 10000")
    return {**HNSW, **hnsw}


class ChromaMemory(MemoryBackend, VectorPrimitives, MessagePruning):
    """Memory in ChromaDB: vector search by Chroma's index, BM25 full text, durable.

    Args:
        embedding_model: see :class:`~bruno_memstore.base.MemoryBackend` (the light local
            model by default; ``None`` for keyword search only). Chroma never embeds.
        persist_directory: the embedded store's directory (created if missing). Ignored
            when ``host`` is given.
        host: a Chroma server (``chroma run``) to use instead of an embedded store.
        port: the server's port.
        ssl: talk HTTPS to the server.
        token: sent as ``Authorization: Bearer <token>`` (servers with token auth).
        headers: more HTTP headers for the server.
        tenant: the server's tenant.
        database: the server's database.
        prefix: start of every collection name, so several stores share one database.
        readers: threads for reads.
        hnsw: index settings for new record collections: ``ef_construction``,
            ``ef_search``, ``max_neighbors`` (defaults 200, 200, 32; Chroma's own are
            100, 100, 16, which find fewer of the true nearest neighbours).
        **options: see :class:`~bruno_memstore.base.MemoryBackend`.

    An embedded directory must be used by one process at a time (Chroma's own rule);
    within a process any number of instances may share it. A server takes any number of
    processes (see ``docs/backends/chroma.md`` for what is then guaranteed).

    Example:
        >>> memory = ChromaMemory("default", "./chroma_db")
        >>> # or: open_memory("chroma+http://127.0.0.1:8000?prefix=assistant")
    """

    backend_name: ClassVar[str] = "chroma"
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {
        Capability.VECTORS,
        Capability.PRUNING,
    }

    def __init__(
        self,
        embedding_model: Any = DEFAULT_MODEL,
        persist_directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
        *,
        host: str | None = None,
        port: int = 8000,
        ssl: bool = False,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        tenant: str = DEFAULT_TENANT,
        database: str = DEFAULT_DATABASE,
        prefix: str = DEFAULT_PREFIX,
        readers: int = 2,
        hnsw: Mapping[str, int] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(embedding_model=embedding_model, **options)
        self.prefix = check_prefix(prefix)
        if isinstance(readers, bool) or not isinstance(readers, int) or not 1 <= readers <= 32:
            raise InvalidArgumentError("readers", "expected an int from 1 to 32")
        self.readers = readers
        self.hnsw = _check_hnsw(hnsw)
        self.host = host
        if host is None:
            if not isinstance(persist_directory, (str, os.PathLike)) or not os.fspath(
                persist_directory
            ):
                raise InvalidArgumentError("persist_directory", "expected a directory path")
            self.persist_directory: str | None = os.path.abspath(
                os.path.expanduser(os.fspath(persist_directory))
            )
        else:
            if not isinstance(host, str) or not host:
                raise InvalidArgumentError("host", "expected a host name")
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise InvalidArgumentError("port", "expected a TCP port")
            self.persist_directory = None
        for name, value in (("tenant", tenant), ("database", database)):
            if not isinstance(value, str) or not value:
                raise InvalidArgumentError(name, "expected a non-empty string")
        self.port = port
        self.ssl = bool(ssl)
        self.tenant = tenant
        self.database = database
        self._token = check_header_secret("token", token)
        self._headers = dict(headers or {})
        self._store: ChromaStore | None = None

    @property
    def embedded(self) -> bool:
        """Whether the store is a local directory (not a server)."""
        return self.host is None

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> ChromaMemory:
        """Build from ``chroma:///relative/dir`` or ``chroma:////absolute/dir`` (embedded) or
        ``chroma+http://[:token@]host:port`` / ``chroma+https://...`` (a server). Query
        options: ``prefix``, ``tenant``, ``database``, ``readers``, ``hnsw_ef_construction``,
        ``hnsw_ef_search``, ``hnsw_max_neighbors``, ``context_window``,
        ``operation_timeout``. Keyword options win over query options."""
        options = url.apply_options(options, _URL_OPTIONS)
        hnsw = {name[5:]: options.pop(name) for name in _HNSW_OPTIONS if name in url.query}
        if hnsw:
            options.setdefault("hnsw", hnsw)
        if url.driver is None:
            options.setdefault(
                "persist_directory",
                url.local_path(
                    remote="an embedded chroma URL has no host: chroma:///relative/dir or "
                    "chroma:////absolute/dir (or chroma+http://host:port for a server)",
                    missing="an embedded chroma URL needs a directory: chroma:///relative/dir",
                ),
            )
            return cls(**options)
        if url.driver not in ("http", "https"):
            raise InvalidArgumentError(
                "url", f"chroma takes the drivers http and https (got {url.driver!r})"
            )
        if not url.host:
            raise InvalidArgumentError("url", "a chroma server URL needs a host")
        if url.path not in ("", "/"):
            raise InvalidArgumentError(
                "url", "a chroma server URL has no path; use ?tenant=...&database=..."
            )
        if url.username and url.password is None:
            raise InvalidArgumentError("url", "put the server's token after a colon: :token@")
        options.setdefault("host", url.host)
        options.setdefault("port", url.port or 8000)
        options.setdefault("ssl", url.driver == "https")
        if url.password:
            options.setdefault("token", url.password)
        return cls(**options)

    def describe(self) -> str:
        query: dict[str, str] = {}
        if self.prefix != DEFAULT_PREFIX:
            query["prefix"] = self.prefix
        if self.host is None:
            assert self.persist_directory is not None
            where = f"chroma:///{quote(self.persist_directory, safe='/:')}"
        else:
            if self.tenant != DEFAULT_TENANT:
                query["tenant"] = self.tenant
            if self.database != DEFAULT_DATABASE:
                query["database"] = self.database
            host = f"[{self.host}]" if ":" in self.host else self.host
            where = f"chroma+{'https' if self.ssl else 'http'}://{host}:{self.port}"
        return f"{where}?{urlencode(query)}" if query else where

    # ================================================================ lifecycle

    def _key(self) -> tuple[Any, ...]:
        if self.host is None:
            return ("embedded", self.persist_directory, self.prefix)
        return (
            "server",
            self.host,
            self.port,
            self.ssl,
            self.tenant,
            self.database,
            self._token,
            tuple(sorted(self._headers.items())),
            self.prefix,
        )

    def _client(self) -> Any:
        settings = Settings(anonymized_telemetry=False)
        if self.host is None:
            assert self.persist_directory is not None
            return chromadb.PersistentClient(path=self.persist_directory, settings=settings)
        headers = dict(self._headers)
        if self._token:
            headers.setdefault("Authorization", f"Bearer {self._token}")
        try:
            return chromadb.HttpClient(
                host=self.host,
                port=self.port,
                ssl=self.ssl,
                headers=headers or None,
                settings=settings,
                tenant=self.tenant,
                database=self.database,
            )
        except ValueError as exc:
            if "connect" in str(exc).lower():  # the client's own wording for "unreachable"
                raise ConnectionError(str(exc)) from exc
            raise

    def _build(self) -> ChromaStore:
        return ChromaStore(
            self._key(),
            self._client,
            self.prefix,
            shared=self.host is not None,
            readers=self.readers,
            run_writes=ops.run_writes,
            directory=self.persist_directory,
            hnsw=self.hnsw,
        )

    async def _connect(self) -> None:
        store = await asyncio.to_thread(acquire, self._key(), self._build)
        await store.start()
        self._store = store
        self._schema_version = SCHEMA_VERSION

    async def _close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await asyncio.to_thread(release, store)

    def _live(self) -> ChromaStore:
        store = self._store
        assert store is not None, "not connected"
        return store

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        store = self._live()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(store.readers, functools.partial(fn, store, *args))
        except Exception as exc:
            await self._after_error(store, exc)
            raise

    async def _write(self, job: Any) -> Any:
        store = self._live()
        assert store.writer is not None
        try:
            return await store.writer.submit(job)
        except Exception as exc:
            await self._after_error(store, exc)
            raise

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A writer job calling ``fn(store, *args)``."""
        return await self._write(lambda store: fn(store, *args))

    @staticmethod
    async def _after_error(store: ChromaStore, exc: BaseException) -> None:
        """A collection gone missing (deleted by another process, or a space change there)
        invalidates the cached handles; the shared layer then retries the call."""
        if not_found(exc):
            await asyncio.to_thread(store.refresh)

    # ================================================================ errors

    def _is_transient(self, exc: BaseException) -> bool:
        return not_found(exc) or isinstance(exc, httpx.TransportError)

    def _is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, (TimeoutError, httpx.TimeoutException))

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, (ConnectionError, OSError, httpx.TransportError))

    def _redact(self, text: str) -> str:
        return hide_secrets(text, self._token)

    # ================================================================ primitives

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        return await self._read(ops.conversation_owner, conversation_id)

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        return await self._write(ops.Append(conversation_id, user_id, records, enforce_owner))

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        return await self._read(ops.get_messages, list(ids))

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        return await self._read(ops.read_window, conversation_id, user_id, limit)

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        return await self._call(ops.delete_messages, conversation_id, keep_roles)

    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        return await self._call(ops.delete_message_ids, conversation_id, list(ids))

    async def _put_memory(self, record: MemoryRecord) -> None:
        await self._call(ops.put_memory, record)

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        return await self._read(ops.get_memory, memory_id)

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        return await self._read(ops.query_memories, flt)

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        return await self._call(ops.delete_memory, memory_id, user_id)

    async def _purge_expired(self, now_us: int) -> int:
        return await self._call(ops.purge_expired, now_us)

    async def _put_session(self, record: SessionRecord) -> None:
        await self._call(ops.put_session, record)

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        return await self._read(ops.get_session, session_id)

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        return await self._read(ops.latest_session, user_id, conversation_id, active_only)

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        user_id = request.user_id
        return await self._live().text.search(
            request,
            await self._read(ChromaStore.read_token, user_id),
            lambda: self._read(search.load_text, user_id),
            lambda found: self._read(search.records_of, user_id, found),
        )

    async def _statistics(self, user_id: str) -> dict[str, object]:
        return await self._read(ops.statistics, user_id)

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        return await self._call(ops.forget_user, user_id)

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        async for batch in batches(self._records(kind, user_id)):
            yield batch

    async def _records(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[object]:
        """Every record of ``kind`` (the user's, if given), read a piece at a time."""
        if kind in ("conversations", "messages"):
            pairs: list[tuple[str, str]] = await self._read(ops.conversation_pairs, user_id)
            for pair in pairs:
                if kind == "conversations":
                    yield pair
                    continue
                for rec in await self._read(ops.conversation_messages, pair[0]):
                    yield rec
        elif kind == "sessions":
            ids: list[str] = await self._read(ops.session_ids, user_id)
            for part in chunks(ids, EXPORT_BATCH):
                for rec in await self._read(ops.sessions_by_id, part):
                    yield rec
        else:
            for user in await self._read(ops.memory_users, user_id):
                for rec in await self._read(ops.memories_of, user):
                    yield rec

    # ================================================================ vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is None:
            stored = await self._read(lambda store: store.stored_space())
            return stored.space if stored is not None else None
        return await self._call(lambda store: store.claim_space(space, replace=replace))

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        await self._call(ops.put_vectors, kind, list(items))

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        return await self._read(search.vector_search, request, vector)
