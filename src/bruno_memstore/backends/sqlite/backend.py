"""``SQLiteMemory``: the embedded default, one SQLite file in WAL mode with an FTS5 index.

Every primitive is a plan of the SQL family (:mod:`..sql`) over SQLite's dialect
(``dialect``). All engine work runs on threads that own their connections
(:mod:`..kit.threads`), each plan whole on one thread: one writer that commits concurrent
writes together, a small pool of readers that read committed
snapshots without waiting for it, a pool of the same size for the reads whose time grows
with a user's data (full-text search, statistics, export pages), so that slow searches never
hold up a window read. The event loop only queues work and collects results.

Vectors are float32 BLOBs beside their records, written in the records' transactions. The
``sqlite3`` module cannot load extensions here, so search is exact cosine over one user's
vectors held in process, checked against the user's change counters at every query
(:mod:`..sql.vectors`, with SQLite's statements in ``vectors``).

Durability: a write is acknowledged after its transaction commits. With the default
``synchronous="full"`` the commit reaches the disk first (``fsync`` of the WAL), so an
acknowledged write survives a killed process and a power loss; ``"normal"`` skips that
``fsync`` (WAL mode still survives a killed process, but a power loss may drop the last
commits). Concurrent writers share one commit, so ``"full"`` costs little under load.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from ...capabilities import DATABASE, Capability
from ...errors import ConflictError, InvalidArgumentError, MemstoreError
from ...url import MemoryURL
from ..kit.threads import Job, ReaderPool, Writer
from ..kit.vectors import ExactVectors
from ..sql.append import Append, Outcome
from ..sql.backend import Mode, SQLMemory
from ..sql.steps import Plan
from ..sql.sync import AppendJob, PlanJob, ThenJob, run_group, run_plan
from ..sql.vectors import BlobVectorSearch
from .dialect import DIALECT
from .files import (
    MEMORY_PATH,
    Settings,
    checkpoint_wal,
    compact_search_index,
    erasing,
    open_connection,
    rebuild_file,
)
from .schema import LATEST_VERSION
from .vectors import VECTORS

__all__ = ["SQLiteMemory", "Synchronous"]

Synchronous = Literal["normal", "full", "extra"]
_SYNCHRONOUS = ("normal", "full", "extra")
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


class SQLiteMemory(BlobVectorSearch, SQLMemory):
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
        self.in_memory = path == MEMORY_PATH
        self.db_path = path if self.in_memory else os.path.abspath(os.path.expanduser(path))
        self.synchronous: str = sync
        self.busy_timeout = float(busy_timeout)
        self.readers = readers
        if self.in_memory:
            # Instance-level: a private in-memory database promises no durability.
            self.capabilities = type(self).capabilities - {Capability.DURABLE}  # type: ignore[misc]
        self.vector_users = vector_users
        self.merge_on_delete = merge_on_delete
        self._sql = DIALECT
        self._writer: Writer[sqlite3.Connection] | None = None
        self._reader_pool: ReaderPool[sqlite3.Connection] | None = None
        self._search_pool: ReaderPool[sqlite3.Connection] | None = None
        self._finalizer: weakref.finalize | None = None
        self._blobs = VECTORS
        self._new_vector_caches()

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> SQLiteMemory:
        """Build from ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or
        ``sqlite:///:memory:``; query options: ``synchronous``, ``busy_timeout`` (seconds),
        ``readers``, ``vector_users``, ``merge_on_delete``, ``context_window``,
        ``operation_timeout``. Keyword options win over query options."""
        if url.driver is not None:
            raise InvalidArgumentError("url", f"sqlite takes no driver (got {url.driver!r})")
        path = url.local_path(
            remote="a sqlite URL has no host: use sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:",
            missing="a sqlite URL needs a path: sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:",
        )
        return cls(path, **url.apply_options(options, _URL_OPTIONS))

    def describe(self) -> str:
        # A URL that open_memory() turns back into this file ("?", "#", "%" escaped).
        return f"sqlite:///{quote(self.db_path, safe='/:')}"

    # ================================================================ lifecycle

    async def _connect(self) -> None:
        # The openers get plain settings, not ``self``: the threads must not keep this
        # object alive (see the finalizer below).
        settings = Settings(self.db_path, self.busy_timeout, self.synchronous, str(self))
        writer: Writer[sqlite3.Connection] = Writer(
            "bruno-memstore-sqlite-writer",
            partial(open_connection, settings, writer=True),
            run_group=run_group,
        )
        await writer.start()  # the schema is migrated to the latest version first
        self._schema_version = LATEST_VERSION
        pools: list[ReaderPool[sqlite3.Connection]] = []
        if not self.in_memory:
            # A private in-memory database lives in one connection: the writer serves reads.
            reader = partial(open_connection, settings, writer=False)
            pools = [
                ReaderPool("bruno-memstore-sqlite-reader", reader, self.readers),
                ReaderPool("bruno-memstore-sqlite-search", reader, self.readers),
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
        self._reader_pool, self._search_pool = pools or (None, None)
        self._new_vector_caches()
        # Threads hold no reference to this object; if it is dropped without shutdown(),
        # the finalizer still ends them.
        self._finalizer = weakref.finalize(self, _stop_nowait, writer, pools)

    async def _close(self) -> None:
        writer = self._writer
        pools = [self._reader_pool, self._search_pool]
        self._writer = self._reader_pool = self._search_pool = None
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
        # Indexes of an earlier connection may describe another database (``:memory:``).
        self._vectors = ExactVectors(max_users=self.vector_users)

    # ================================================================ where plans run

    async def _perform(self, mode: Mode, make_plan: Callable[[], Plan[Any]]) -> Any:
        if mode == "read":
            return await self._read(partial(run_plan, make_plan=make_plan))
        if mode == "scan":
            return await self._long_read(partial(_in_snapshot, make_plan))
        if mode == "write":
            return await self._prepared_write(partial(PlanJob, make_plan))
        return await self._prepared_write(partial(self._erasure, make_plan))

    async def _write_appends(self, appends: Sequence[Append]) -> list[Outcome]:
        # The writer runs the appends waiting together as one plan (see ``sql.sync``).
        return await self._write(AppendJob(self._sql, appends))

    def _erasure(self, make_plan: Callable[[], Plan[Any]]) -> Job:
        """A deletion's job, merging the full-text index after it (``merge_on_delete``);
        once it is committed, the WAL is checkpointed and truncated to zero bytes, so that
        neither file keeps a copy of what was erased (see ``files``)."""
        job: Job = PlanJob(make_plan)
        if self.merge_on_delete:
            job = partial(erasing, job)
        return job if self.in_memory else ThenJob(job, checkpoint_wal)

    def _write(self, job: Job) -> Any:
        assert self._writer is not None, "not connected"
        return self._writer.submit(job)

    def _prepared_write(self, prepare: Callable[[], Job]) -> Any:
        assert self._writer is not None, "not connected"
        return self._writer.submit_prepared(prepare)

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

    # ================================================================ whole-store operations

    async def _compact(self) -> None:
        # The index merge in a transaction; VACUUM and the checkpoint after it, outside one.
        await self._write(ThenJob(compact_search_index, rebuild_file))


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Run several reads against one consistent snapshot (a read transaction); inside a
    transaction already (reads served by the writer, for ``:memory:``), that one is it."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _in_snapshot(make_plan: Callable[[], Plan[Any]], conn: sqlite3.Connection) -> Any:
    with _snapshot(conn):
        return run_plan(conn, make_plan)


def _stop_nowait(writer: Writer[Any], pools: list[ReaderPool[Any]]) -> None:
    writer.stop_nowait()
    for pool in pools:
        pool.stop_nowait()
