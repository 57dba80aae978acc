"""``SQLiteMemory``: one SQLite file in WAL mode, FTS5 search (see docs/backends/sqlite.md)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from ...capabilities import DATABASE, Capability
from ...errors import ConflictError, InvalidArgumentError, MemstoreError
from ...models import SearchHit, SearchRequest
from ...primitives import PendingVectors
from ...url import MemoryURL
from ..kit.settings import positive_int
from ..kit.threads import Job
from ..kit.vectors import ExactVectors
from ..sql import plans
from ..sql.steps import Fetch, Plan
from ..sql.sync import PlanJob, ThenJob
from ..sql.threaded import ThreadedSQLMemory
from ..sql.vectors import BlobVectorSearch
from .dialect import ANY_PENDING, DEFERRING, DIALECT, SQLiteDialect, index_pending
from .files import (
    MEMORY_PATH,
    Settings,
    checkpoint_wal,
    compact_search_index,
    erasing,
    is_busy,
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
    "vectors": str,
}
_SQLITE_CANTOPEN = 14  # a result code (the low byte of an extended one)


class SQLiteMemory(BlobVectorSearch, ThreadedSQLMemory, PendingVectors):
    """Memory in one SQLite file: durable, full-text and vector searchable, safe for several
    processes. Options are described in docs/backends/sqlite.md.
    """

    backend_name: ClassVar[str] = "sqlite"
    thread_name: ClassVar[str] = "bruno-memstore-sqlite"
    overlap_reads = False  # no network to wait for
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {
        Capability.VECTORS,
        Capability.PRUNING,
    }

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
        self.vector_users = positive_int("vector_users", vector_users)
        self.merge_on_delete = merge_on_delete
        self._sql = DEFERRING if self.vectors == "deferred" else DIALECT
        self._blobs = VECTORS
        self._new_vector_caches()

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> SQLiteMemory:
        """Build from ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or
        ``sqlite:///:memory:``; query options: ``synchronous``, ``busy_timeout`` (seconds),
        ``readers``, ``vector_users``, ``merge_on_delete``, ``context_window``,
        ``operation_timeout``, ``vectors``. Keyword options win over query options."""
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

    def _openers(self) -> tuple[Callable[[], Any], Callable[[], Any] | None]:
        # Plain settings, not ``self``: the threads must not keep this object alive.
        settings = Settings(self.db_path, self.busy_timeout, self.synchronous, str(self))
        # A private in-memory database lives in one connection: the writer serves reads.
        reader = None if self.in_memory else partial(open_connection, settings, writer=False)
        return partial(open_connection, settings, writer=True), reader

    def _inline_opener(self) -> Callable[[], Any] | None:
        # No busy wait on the loop: a busy database sends the read to the pool instead.
        settings = Settings(self.db_path, 0.0, self.synchronous, str(self))
        return partial(open_connection, settings, writer=False)

    async def _connect(self) -> None:
        await super()._connect()
        self._schema_version = LATEST_VERSION
        self._new_vector_caches()

    async def _close(self) -> None:
        await super()._close()
        self._new_vector_caches()

    def _new_vector_caches(self) -> None:
        # Indexes of an earlier connection may describe another database (``:memory:``).
        self._vectors = ExactVectors(max_users=self.vector_users)

    def _erasure(self, make_plan: Callable[[], Plan[Any]]) -> Job:
        """A deletion's job, merging the full-text index after it (``merge_on_delete``);
        once it is committed, the WAL is checkpointed and truncated to zero bytes, so that
        neither file keeps a copy of what was erased (see ``files``)."""
        job = super()._erasure(make_plan)
        if self.merge_on_delete:
            job = partial(erasing, job)
        return job if self.in_memory else ThenJob(job, checkpoint_wal)

    # ================================================================ errors

    def _is_transient(self, exc: BaseException) -> bool:
        return is_busy(exc)

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

    # ================================================================ search

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        # Messages stored one at a time wait for their full-text rows: the search indexes
        # them first (on the writer) whenever any wait, in this process or another.
        hits = await self._plan("scan", _search_if_indexed, request)
        if hits is None:
            await self._submit(PlanJob(index_pending))
            hits = await super()._text_search(request)
        return hits

    async def _without_vectors(
        self, kind: Literal["message"], after: int, limit: int
    ) -> list[tuple[int, str, str]]:
        return await self._plan("read", plans.without_vectors, after, limit)

    # ================================================================ whole-store operations

    async def _compact(self) -> None:
        # The index merge in a transaction; VACUUM and the checkpoint after it, outside one.
        await self._submit(ThenJob(compact_search_index, rebuild_file))


def _search_if_indexed(d: SQLiteDialect, request: SearchRequest) -> Plan[list[SearchHit] | None]:
    """The search, or ``None`` if messages wait for their full-text rows."""
    waiting = yield Fetch(ANY_PENDING)
    if waiting[0][0]:
        return None
    return (yield from plans.text_search(d, request))
