"""``SQLiteMemory``: the embedded default, one SQLite file in WAL mode with an FTS5 index.

All engine work runs on threads that own their connections (``threads``): one writer
that commits concurrent writes together, a small pool of readers that read committed
snapshots without waiting for it, a pool of the same size for the reads whose time grows
with a user's data (full-text search, statistics, export pages), so that slow searches never
hold up a window read, and one reader for vector search, which owns the in-process vector
indexes. The event loop only queues work and collects results.

Vectors are float32 BLOBs beside their records, written in the records' transactions. The
``sqlite3`` module cannot load extensions here, so search is exact cosine over one user's
vectors held in process (:class:`~bruno_memstore.backends.kit.vectors.UserVectorCache`), checked
against the user's change counters at every query (see ``schema``).

Durability: a write is acknowledged after its transaction commits. With the default
``synchronous="full"`` the commit reaches the disk first (``fsync`` of the WAL), so an
acknowledged write survives a killed process and a power loss; ``"normal"`` skips that
``fsync`` (WAL mode still survives a killed process, but a power loss may drop the last
commits). Concurrent writers share one commit, so ``"full"`` costs little under load.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any, ClassVar, Literal, NamedTuple
from urllib.parse import quote

from ...base import MemoryBackend
from ...capabilities import DATABASE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import ConflictError, InvalidArgumentError, MemstoreError
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
)
from ...primitives import AppendResult, ExportKind, VectorPrimitives
from ...url import MemoryURL
from ..kit.vectors import UserVectorCache, vector_to_bytes
from . import ops as ops
from .schema import (
    LATEST_VERSION,
    migrate,
    rebuild_search_index,
    search_index_is_current,
)
from .threads import Job, ReaderPool, ThenJob, Writer

__all__ = ["SQLiteMemory", "Synchronous"]

log = logging.getLogger(__name__)

Synchronous = Literal["normal", "full", "extra"]
_SYNCHRONOUS = ("normal", "full", "extra")
_MEMORY_PATH = ":memory:"
_EXPORT_PAGE = 500
_CACHE_KIB = 8192  # page cache per connection
_WAL_LIMIT = 64 * 1024 * 1024  # the WAL is truncated back to this after a checkpoint
_URL_OPTIONS: dict[str, type] = {
    "synchronous": str,
    "busy_timeout": float,
    "readers": int,
    "vector_users": int,
    "merge_on_delete": bool,
    "context_window": int,
    "operation_timeout": float,
}
# SQLite result codes (the primary code is the low byte of an extended one).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CANTOPEN = 5, 6, 14


class SQLiteMemory(MemoryBackend, VectorPrimitives):
    """Memory in one SQLite file: durable, full-text and vector searchable, safe for several
    processes.

    Args:
        db_path: the database file (created if missing; its directory must exist), or
            ``":memory:"`` for a private in-process database that is not durable.
        synchronous: ``"full"`` (default: an acknowledged write survives a power loss),
            ``"normal"`` (survives a killed process, not a power loss; faster commits) or
            ``"extra"``.
        busy_timeout: seconds a connection waits for another process's lock before failing
            with a transient error (retried by the shared layer).
        readers: reader threads (each with its own connection) for quick reads, and as many
            again for searches, statistics and export pages.
        vector_users: users whose vectors are kept in process for vector search (the least
            recently searched are dropped; each holds ``4 x dimension`` bytes per record).
        merge_on_delete: merge the full-text index after every deletion, so the erased
            words leave the file at once (the default). Its cost grows with the index (about
            0.3 s at 50,000 messages); ``False`` leaves them in the index's old segments,
            unreachable by search, until :meth:`compact`.
        **options: see :class:`~bruno_memstore.base.MemoryBackend`.

    Example:
        >>> memory = SQLiteMemory("assistant.db")
        >>> # or: open_memory("sqlite:///assistant.db?synchronous=normal")
    """

    backend_name: ClassVar[str] = "sqlite"
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {Capability.VECTORS}

    def __init__(
        self,
        db_path: str | os.PathLike[str] = "bruno_memory.db",
        *,
        synchronous: Synchronous = "full",
        busy_timeout: float = 5.0,
        readers: int = 2,
        vector_users: int = 64,
        merge_on_delete: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(db_path, (str, os.PathLike)):
            raise InvalidArgumentError("db_path", "expected a path")
        path = os.fspath(db_path)
        if not path:
            raise InvalidArgumentError("db_path", "must not be empty")
        sync = synchronous.lower() if isinstance(synchronous, str) else synchronous
        if sync not in _SYNCHRONOUS:
            raise InvalidArgumentError("synchronous", f"expected one of {', '.join(_SYNCHRONOUS)}")
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise InvalidArgumentError("busy_timeout", "expected seconds as a number")
        if busy_timeout < 0:
            raise InvalidArgumentError("busy_timeout", "must not be negative")
        if isinstance(readers, bool) or not isinstance(readers, int) or not 1 <= readers <= 32:
            raise InvalidArgumentError("readers", "expected an int from 1 to 32")
        if isinstance(vector_users, bool) or not isinstance(vector_users, int) or vector_users < 1:
            raise InvalidArgumentError("vector_users", "expected a positive int")
        if not isinstance(merge_on_delete, bool):
            raise InvalidArgumentError("merge_on_delete", "expected a bool")
        self.in_memory = path == _MEMORY_PATH
        self.db_path = path if self.in_memory else os.path.abspath(os.path.expanduser(path))
        self.synchronous: str = sync
        self.busy_timeout = float(busy_timeout)
        self.readers = readers
        if self.in_memory:
            # Instance-level: a private in-memory database promises no durability.
            self.capabilities = type(self).capabilities - {Capability.DURABLE}  # type: ignore[misc]
        self.vector_users = vector_users
        self.merge_on_delete = merge_on_delete
        self._writer: Writer | None = None
        self._reader_pool: ReaderPool | None = None
        self._search_pool: ReaderPool | None = None
        self._vector_reader: ReaderPool | None = None
        self._finalizer: weakref.finalize | None = None
        self._new_vector_caches()

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> SQLiteMemory:
        """Build from ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or
        ``sqlite:///:memory:``; query options: ``synchronous``, ``busy_timeout`` (seconds),
        ``readers``, ``vector_users``, ``merge_on_delete``, ``context_window``,
        ``operation_timeout``. Keyword options win over query options."""
        if url.driver is not None:
            raise InvalidArgumentError("url", f"sqlite takes no driver (got {url.driver!r})")
        if url.host or url.username or url.password is not None or url.port:
            raise InvalidArgumentError(
                "url",
                "a sqlite URL has no host: use sqlite:///relative/path.db, "
                "sqlite:////absolute/path.db or sqlite:///:memory:",
            )
        # urlsplit keeps the slash after the empty host: '/rel.db' or '//abs.db'.
        path = url.path[1:] if url.path.startswith("/") else url.path
        if not path:
            raise InvalidArgumentError(
                "url",
                "a sqlite URL needs a path: sqlite:///relative/path.db, "
                "sqlite:////absolute/path.db or sqlite:///:memory:",
            )
        url.check_options(set(_URL_OPTIONS))
        for name, kind in _URL_OPTIONS.items():
            if name in url.query:
                options.setdefault(name, url.option(name, kind))
        return cls(path, **options)

    def describe(self) -> str:
        # A URL that open_memory() turns back into this file ("?", "#", "%" escaped).
        return f"sqlite:///{quote(self.db_path, safe='/:')}"

    # ================================================================ lifecycle

    async def _connect(self) -> None:
        # The openers get plain settings, not ``self``: the threads must not keep this
        # object alive (see the finalizer below).
        settings = _Settings(self.db_path, self.busy_timeout, self.synchronous, str(self))
        writer = Writer("bruno-memstore-sqlite-writer", partial(_open, settings, writer=True))
        await writer.start()  # the schema is migrated to the latest version first
        self._schema_version = LATEST_VERSION
        pools: list[ReaderPool] = []
        if not self.in_memory:
            # A private in-memory database lives in one connection: the writer serves reads.
            reader = partial(_open, settings, writer=False)
            pools = [
                ReaderPool("bruno-memstore-sqlite-reader", reader, self.readers),
                ReaderPool("bruno-memstore-sqlite-search", reader, self.readers),
                ReaderPool("bruno-memstore-sqlite-vectors", reader, 1),
            ]
            try:
                for pool in pools:
                    await pool.start()
            except BaseException:
                for pool in pools:
                    await pool.stop()
                await writer.stop()
                raise
        self._writer = writer
        self._reader_pool, self._search_pool, self._vector_reader = pools or (None, None, None)
        # Indexes of an earlier connection may describe another database (``:memory:``).
        self._new_vector_caches()
        # Threads hold no reference to this object; if it is dropped without shutdown(),
        # the finalizer still ends them.
        self._finalizer = weakref.finalize(self, _stop_nowait, writer, pools)

    async def _close(self) -> None:
        writer = self._writer
        pools = [self._reader_pool, self._search_pool, self._vector_reader]
        self._writer = self._reader_pool = self._search_pool = self._vector_reader = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        for pool in pools:
            if pool is not None:
                await pool.stop()
        if writer is not None:
            await writer.stop()
        self._new_vector_caches()

    def _new_vector_caches(self) -> None:
        self._vector_caches = {kind: UserVectorCache(self.vector_users) for kind in ops.KINDS}
        # Touched only by jobs on the vector thread (or the writer, for ``:memory:``).
        self._vector_loads = ops.LoadedIndexes(len(ops.KINDS) * self.vector_users)

    def _write(self, job: Job) -> Any:
        assert self._writer is not None, "not connected"
        return self._writer.submit(job)

    def _prepared_write(self, prepare: Callable[[], Job]) -> Any:
        assert self._writer is not None, "not connected"
        return self._writer.submit_prepared(prepare)

    def _erase(self, job: Job) -> Any:
        """Run a deletion, merging the full-text index after it (``merge_on_delete``); once
        it is committed, checkpoint the WAL and truncate it to zero bytes, so neither file
        keeps a copy of what was erased (see ``ops``)."""
        if self.merge_on_delete:
            job = partial(ops.erasing, delete=job)
        if self.in_memory:
            return self._write(job)
        return self._write(ThenJob(job, ops.checkpoint_wal))

    def _read(self, job: Job) -> Any:
        if self._reader_pool is None:
            return self._write(job)
        return self._reader_pool.submit(job)

    def _long_read(self, job: Job) -> Any:
        # Reads whose time grows with a user's data have threads of their own: two slow
        # searches must not leave a window read queued behind them.
        if self._search_pool is None:
            return self._write(job)
        return self._search_pool.submit(job)

    def _vector_read(self, job: Job) -> Any:
        # One thread runs every job that touches the cached indexes, so they need no lock.
        if self._vector_reader is None:
            return self._write(job)
        return self._vector_reader.submit(job)

    # ================================================================ errors

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and (
            getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
            or "locked" in str(exc)
            or "busy" in str(exc)
        )

    def _is_unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, sqlite3.Error):
            return getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_CANTOPEN
        return super()._is_unavailable(exc)

    def _translate(self, operation: str, exc: BaseException) -> MemstoreError:
        if isinstance(exc, UnicodeEncodeError):
            # Lone surrogates cannot be stored as UTF-8; the transaction was rolled back.
            err: MemstoreError = InvalidArgumentError(
                "text", "contains unpaired surrogate characters, which SQLite cannot store"
            )
        elif isinstance(exc, sqlite3.IntegrityError):
            err = ConflictError(
                f"the write conflicts with stored data ({exc}); nothing was written",
                backend=self.backend_name,
                operation=operation,
            )
        else:
            return super()._translate(operation, exc)
        self._meter.error(operation, exc)
        err.cause = exc
        return err

    # ================================================================ primitives

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        return await self._read(partial(ops.conversation_owner, conversation_id=conversation_id))

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        def prepare() -> Job:
            return partial(
                ops.append_messages,
                conversation_id=conversation_id,
                user_id=user_id,
                records=records,
                enforce_owner=enforce_owner,
                bodies=ops.search_bodies([r.content for r in records]),
                vectors=[_blob(r.vector) for r in records],
            )

        return await self._prepared_write(prepare)

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        return await self._read(partial(ops.get_messages, ids=ids))

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        return await self._read(
            partial(ops.read_window, conversation_id=conversation_id, user_id=user_id, limit=limit)
        )

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        return await self._erase(
            partial(ops.delete_messages, conversation_id=conversation_id, keep_roles=keep_roles)
        )

    async def _put_memory(self, record: MemoryRecord) -> None:
        def prepare() -> Job:
            return partial(
                ops.put_memory,
                rec=record,
                body=ops.search_bodies([record.content])[0],
                vector=_blob(record.vector),
            )

        await self._prepared_write(prepare)

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        return await self._read(partial(ops.get_memory, memory_id=memory_id))

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        return await self._read(partial(ops.query_memories, flt=flt))

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        return await self._erase(partial(ops.delete_memory, memory_id=memory_id, user_id=user_id))

    async def _purge_expired(self, now_us: int) -> int:
        return await self._erase(partial(ops.purge_expired, now_us=now_us))

    async def _put_session(self, record: SessionRecord) -> None:
        await self._write(partial(ops.put_session, rec=record, operation=""))

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        return await self._read(partial(ops.get_session, session_id=session_id))

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        return await self._read(
            partial(
                ops.latest_session,
                user_id=user_id,
                conversation_id=conversation_id,
                active_only=active_only,
            )
        )

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        user_id, query, kinds = request.user_id, request.query, request.kinds
        conversation_id, limit = request.conversation_id, request.limit
        memory_filter = request.memory_filter
        return await self._long_read(
            partial(
                ops.text_search,
                user_id=user_id,
                query=query,
                kinds=kinds,
                conversation_id=conversation_id,
                limit=limit,
                flt=memory_filter,
            )
        )

    # ---------------------------------------------------------------- vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is None:
            recorded = await self._read(ops.vector_space)
            return None if recorded is None else VectorSpace(*recorded)
        if not replace:
            # A read: no write lock when it is there.
            recorded = await self._claim_vector_space(None)
            if recorded is not None:
                return recorded
        job = partial(
            ops.claim_vector_space, model=space.model, dimension=space.dimension, replace=replace
        )
        model, dimension = await self._write(job)
        if replace:
            for cache in self._vector_caches.values():
                cache.clear()  # every epoch moved: the copies would never be used again
        return VectorSpace(model, dimension)

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        def prepare() -> Job:
            blobs = [(rid, vector_to_bytes(vec)) for rid, vec in items]
            return partial(ops.put_vectors, kind=kind, items=blobs)

        await self._prepared_write(prepare)

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        user_id, kinds, limit = request.user_id, request.kinds, request.limit
        conversation_id, memory_filter = request.conversation_id, request.memory_filter
        counters = await self._read(partial(ops.vector_counters, user_id=user_id))
        if counters is None:
            self._drop_vectors(user_id)
            return []
        uid = counters[0]
        indexes: dict[str, ops.CachedIndex] = {}
        for kind in ops.KINDS:
            generation, epoch = ops.counters_of(counters, kind)
            if kind in kinds and generation:  # generation 0: the user never had such vectors
                index = await self._vector_caches[kind].get(user_id, (uid, epoch), _load_later)
                indexes[kind] = ((uid, epoch), index)
        if not indexes:
            return []
        return await self._vector_read(
            partial(
                ops.vector_search,
                user_id=user_id,
                vector=vector,
                conversation_id=conversation_id,
                limit=limit,
                flt=memory_filter,
                indexes=indexes,
                loaded=self._vector_loads,
            )
        )

    def _drop_vectors(self, user_id: str) -> None:
        for cache in self._vector_caches.values():
            cache.drop(user_id)

    async def _statistics(self, user_id: str) -> dict[str, object]:
        return await self._long_read(partial(ops.statistics, user_id=user_id))

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        counts = await self._erase(partial(ops.forget_user, user_id=user_id))
        self._drop_vectors(user_id)  # other instances drop theirs at their next query
        return counts

    async def _compact(self) -> None:
        # The index merge in a transaction; VACUUM and the checkpoint after it, outside one.
        await self._write(ThenJob(ops.compact_search_index, ops.rebuild_file))

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        after: Any = None
        while True:
            try:
                page, after = await self._long_read(
                    partial(
                        ops.export_page, kind=kind, user_id=user_id, after=after, size=_EXPORT_PAGE
                    )
                )
            except MemstoreError:
                raise
            except Exception as exc:
                raise self._translate("export", exc) from exc
            if not page:
                return
            yield page


class _Settings(NamedTuple):
    path: str
    busy_timeout: float
    synchronous: str
    label: str  # for log lines

    @property
    def in_memory(self) -> bool:
        return self.path == _MEMORY_PATH


def _open(settings: _Settings, *, writer: bool) -> sqlite3.Connection:
    """A connection set up for the store (runs on the thread that will own it)."""
    conn = sqlite3.connect(
        settings.path,
        timeout=settings.busy_timeout,
        isolation_level=None,  # transactions are explicit
        cached_statements=256,
    )
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows are overwritten with zeros, in their pages and in freed pages.
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        conn.execute("PRAGMA temp_store = MEMORY")
        if writer:
            _prepare(conn, settings)
        else:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, wait: float) -> str:
    """Switch to WAL, waiting up to ``wait`` seconds for other processes.

    Changing the journal mode needs a moment alone with the file, and SQLite reports "locked"
    at once instead of calling the busy handler when processes open a new file together.
    """
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0])
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _prepare(conn: sqlite3.Connection, settings: _Settings) -> None:
    """Journal mode, durability and schema: the writer does it once per connect."""
    if not settings.in_memory:
        mode = _enable_wal(conn, settings.busy_timeout)
        if str(mode).lower() != "wal":
            # Some file systems (network shares) cannot hold WAL's shared memory: still
            # correct, but readers and the writer then wait for each other.
            log.warning(
                "SQLite could not enable WAL for %s (journal_mode=%s)", settings.label, mode
            )
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
    conn.execute(f"PRAGMA synchronous = {settings.synchronous.upper()}")
    before, after = migrate(conn)
    if before != after:
        log.info("migrated %s from schema version %d to %d", settings.label, before, after)
    if not search_index_is_current(conn):
        # The text analysis changed since the index was built: rebuild it, once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not search_index_is_current(conn):
                log.info("rebuilding the full-text index of %s", settings.label)
                rebuild_search_index(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _stop_nowait(writer: Writer, pools: list[ReaderPool]) -> None:
    writer.stop_nowait()
    for pool in pools:
        pool.stop_nowait()


def _blob(vector: Any) -> bytes | None:
    return None if vector is None else vector_to_bytes(vector)


async def _load_later() -> tuple[()]:
    """The loader given to ``UserVectorCache``: the index starts empty and the vector thread
    fills it (``ops.LoadedIndexes``), so the event loop never builds an index."""
    return ()
