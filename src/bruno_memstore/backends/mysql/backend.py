"""``MySQLMemory``: MariaDB or MySQL through an ``asyncmy`` pool (see docs/backends/mysql.md)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, ClassVar, Literal

import asyncmy
import numpy as np

from ...capabilities import DATABASE, Capability
from ...errors import BackendUnavailableError, InvalidArgumentError
from ...limits import Limits, Record
from ...models import MemoryRecord, MessageRecord
from ...primitives import AppendResult, PendingVectors
from ...url import MemoryURL
from ..kit.driver_url import DriverURLBackend
from ..kit.settings import setting
from ..kit.vectors import ExactVectors
from ..sql import plans
from ..sql.aio import AsyncSQLMemory, Run, cursor_step, pooled, transaction
from ..sql.append import Append, Outcome
from ..sql.backend import READS, Mode
from ..sql.schema import migrate, refresh_analysis, reindex_terms, stored_setting
from ..sql.steps import Execute, Plan, Step, drive_async
from ..sql.vectors import BlobVectorSearch
from .dialect import MySQLDialect, TermRewriter, error_code, row_size
from .schema import migrations_for, server_kind
from .vectors import VECTORS

__all__ = ["MySQLMemory"]

_DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"
_PREFIX = re.compile(r"[A-Za-z0-9_]{0,48}")

# Driver errors meaning "the server cannot be reached": lost/failed connections, too many
# connections, server shutting down, connection killed; with deadlocks and lock wait
# timeouts, those worth retrying.
_UNAVAILABLE_CODES = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055})
_TRANSIENT_CODES = _UNAVAILABLE_CODES | {1205, 1213}
_ANALYSIS_SETTING = "analysis_version"  # the settings row: what built the search terms
_REINDEX_BATCH = 500


def _in_step(exc: BaseException) -> bool:
    """Whether a connection is still in step with its server after ``exc``: only when the
    server answered with an error packet (server codes; 2000-2999 are the client's own)."""
    code = error_code(exc)
    return (
        code is not None
        and code >= 1000
        and not 2000 <= code < 3000
        and code not in _UNAVAILABLE_CODES
    )


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the server went away (the idle connections are dead too)."""
    return error_code(exc) in _UNAVAILABLE_CODES


def _packet_limits(max_packet: int) -> Limits:
    """A server's largest packet as the limit on one record's statement (with room to spare)."""
    return Limits(
        max_record_bytes=max_packet - 4096,
        size_limit=f"this server's max_allowed_packet ({max_packet} bytes)",
    )


class MySQLMemory(DriverURLBackend, BlobVectorSearch, AsyncSQLMemory, PendingVectors):
    """Memory in MariaDB 10.11+ or MySQL 8 (InnoDB, FULLTEXT), through an ``asyncmy`` pool.

    ``url``: ``mysql://user[:password]@host[:port]/database[?option=value...]``; the options
    (URL query or keyword, keywords win) are described in docs/backends/mysql.md.
    """

    backend_name: ClassVar[str] = "mysql"
    loop_bound = True  # asyncmy's pool
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {
        Capability.VECTORS,
        Capability.PRUNING,
    }
    dialect_type: ClassVar[type[MySQLDialect]] = MySQLDialect
    """The dialect the store's statements come from (a subclass may say more)."""
    _URL_OPTIONS: ClassVar[dict[str, type]] = {
        "pool_size": int,
        "pool_min_size": int,
        "connect_timeout": float,
        "pool_recycle": int,
        "table_prefix": str,
        "write_batching": bool,
        "max_batch": int,
        "vector_cache_users": int,
        "operation_timeout": float,
        "context_window": int,
        "vectors": str,
    }

    def __init__(self, url: str = _DEFAULT_URL, **options: Any) -> None:
        parsed = MemoryURL.parse(url)
        if parsed.scheme not in ("mysql", "mariadb"):
            raise InvalidArgumentError("url", f"expected mysql:// or mariadb://, got {parsed}")
        opt = parsed.apply_options(options, self._URL_OPTIONS)
        own = {name: opt.pop(name, None) for name in list(self._URL_OPTIONS)[:8]}
        opt.setdefault("operation_timeout", 30.0)
        super().__init__(**opt)
        database = parsed.path.lstrip("/")
        if not database or "/" in database:
            raise InvalidArgumentError("url", f"must name one database, e.g. {_DEFAULT_URL}")
        self._pool_size = setting(own, "pool_size", int, 10, low=1)
        self._pool_min = setting(own, "pool_min_size", int, 1, low=0)
        if self._pool_min > self._pool_size:
            raise InvalidArgumentError("pool_min_size", "must be an int in [0, pool_size]")
        self._prefix = setting(own, "table_prefix", str, "bruno_")
        if not _PREFIX.fullmatch(self._prefix):
            raise InvalidArgumentError("table_prefix", "at most 48 letters, digits or underscores")
        self._url = parsed
        self._database = database
        self._pool_recycle = setting(own, "pool_recycle", int, 3600)
        self._connect_timeout = setting(own, "connect_timeout", float, 10.0, low=0.001)
        self._batching = setting(own, "write_batching", bool, True)
        self._max_batch = setting(own, "max_batch", int, 256, low=1)
        self._pool: Any = None
        self._write_pool: Any = None
        self._server: str | None = None
        self._max_packet = 16 * 1024 * 1024
        self.limits = _packet_limits(self._max_packet)
        self._sql: MySQLDialect = self.dialect_type(database, self._prefix)
        self._sql.defer_vectors = self.vectors == "deferred"
        self._blobs = VECTORS
        # Two indexes per user: messages (following the append log) and memory entries.
        self._vectors = ExactVectors(max_users=setting(own, "vector_cache_users", int, 64, low=1))

    @property
    def table_prefix(self) -> str:
        """The prefix of this store's table names."""
        return self._prefix

    @property
    def dialect(self) -> str | None:
        """``"mariadb"`` or ``"mysql"`` once connected."""
        return self._server

    # ================================================================ errors

    def _is_transient(self, exc: BaseException) -> bool:
        if (code := error_code(exc)) is not None:
            return code in _TRANSIENT_CODES
        return super()._is_unavailable(exc) and not isinstance(exc, TimeoutError)

    def _is_unavailable(self, exc: BaseException) -> bool:
        if (code := error_code(exc)) is not None:
            return code in _UNAVAILABLE_CODES
        return super()._is_unavailable(exc)

    # ================================================================ lifecycle

    def _connect_kwargs(self) -> dict[str, Any]:
        url = self._url
        return {
            "host": url.host or "127.0.0.1",
            "port": url.port or 3306,
            "user": url.username or "root",
            # UTF-8, as the server hashed it (the driver would encode a str as latin-1).
            "password": (url.password or "").encode(),
            "database": self._database,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": self._connect_timeout,
            # Strict mode makes an impossible value an error instead of a silent truncation.
            "sql_mode": "'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
            # No gap locks: concurrent inserters never deadlock on each other's new ids.
            "init_command": "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        }

    async def _connect(self) -> None:
        kwargs = self._connect_kwargs()
        try:
            # The driver's connect_timeout covers the TCP connect only; a server that
            # accepts and then says nothing must not hang us either.
            async with asyncio.timeout(self._connect_timeout):
                conn = await asyncmy.connect(**kwargs)
        except Exception as exc:
            code = error_code(exc)
            if code is None or code in _UNAVAILABLE_CODES:
                reason = self._redact(str(exc)) or type(exc).__name__
                raise BackendUnavailableError(
                    f"cannot connect to {self.describe()} within {self._connect_timeout:g}s: "
                    f"{reason}",
                    backend=self.backend_name,
                    operation="connect",
                    cause=exc,
                ) from exc
            raise
        try:
            self._server = server_kind(conn.get_server_info())
            async with conn.cursor() as cur:
                run = partial(cursor_step, cur, self._sql)
                await drive_async(migrate(self._sql, migrations_for(self._sql, self._server)), run)
                await cur.execute(
                    "SELECT @@max_allowed_packet, @@innodb_ft_min_token_size, "
                    "@@innodb_ft_max_token_size"
                )
                packet, low, high = await cur.fetchone()
                self._max_packet = int(packet)
                self.limits = _packet_limits(self._max_packet)
                self._sql = self.dialect_type(
                    self._database, self._prefix, TermRewriter(int(low), int(high)), int(packet)
                )
                self._sql.defer_vectors = self.vectors == "deferred"
                # Stored terms are rebuilt if the shared text analysis or the server's token
                # limits changed since they were made.
                await drive_async(
                    refresh_analysis(self._sql, self._analysis_current, self._reindex),
                    partial(cursor_step, cur, self._sql),
                )
        finally:
            await conn.ensure_closed()
        # Writes get connections of their own with autocommit off, so a transaction opens
        # with its first statement instead of costing a START TRANSACTION round trip.
        writers = max(1, min(4, self._pool_size // 3))
        self._pool = await asyncmy.create_pool(
            minsize=min(self._pool_min, max(1, self._pool_size - writers)),
            maxsize=max(1, self._pool_size - writers),
            pool_recycle=self._pool_recycle,
            **kwargs,
        )
        self._write_pool = await asyncmy.create_pool(
            minsize=0,
            maxsize=writers,
            pool_recycle=self._pool_recycle,
            **{**kwargs, "autocommit": False},
        )
        if self._batching:
            self._committer = self._new_committer(
                # A group failed for the engine's sake, not one append's.
                is_systemic=lambda e: self._is_transient(e) or self._is_unavailable(e),
                max_batch=self._max_batch,
                max_inflight=min(2, writers),
                weight=lambda a: sum(row_size(r) for r in a.records),
                max_weight=self._max_packet // 2,
            )

    async def _close(self) -> None:
        await self._stop_committer()
        pools, self._pool, self._write_pool = (self._pool, self._write_pool), None, None
        for pool in pools:
            if pool is not None:
                pool.close()
                await pool.wait_closed()

    def _analysis_current(self) -> Plan[bool]:
        recorded = yield from stored_setting(self._sql, _ANALYSIS_SETTING)
        return recorded == self._sql.terms.signature

    def _reindex(self) -> Plan[None]:
        """Rebuild the stored terms (if any were made by another analysis), then record the
        analysis; each part is committed on its own."""
        d = self._sql
        if (yield from stored_setting(d, _ANALYSIS_SETTING)) is not None:
            tables = (("messages", "seq", 0), ("memories", "id", ""))
            yield from reindex_terms(d, d.terms.index, tables, _REINDEX_BATCH)
        yield Execute(
            f"INSERT INTO {d.table('settings')} (name, value) VALUES (?, ?) "
            "ON DUPLICATE KEY UPDATE value = ?",
            (_ANALYSIS_SETTING, d.terms.signature, d.terms.signature),
        )

    async def schema_version(self) -> int:
        """The newest migration applied to this store's tables."""
        return await self._perform("read", self._sql.schema_version)

    # ================================================================ connections

    def _connection(self, *, write: bool = False) -> AbstractAsyncContextManager[Any]:
        """A pooled connection (see :func:`..sql.aio.pooled`); ``write`` connections have
        autocommit off: every use must end in COMMIT/ROLLBACK."""
        pool = self._write_pool if write else self._pool
        if pool is None:
            raise BackendUnavailableError(
                "the memory is shut down", backend=self.backend_name, operation="connect"
            )
        return pooled(pool, _in_step, _lost)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A cursor in a write transaction (see :func:`..sql.aio.transaction`)."""
        async with self._connection(write=True) as conn, transaction(conn, _in_step) as cur:
            yield cur

    @asynccontextmanager
    async def _steps(self, mode: Mode, first: Step) -> AsyncIterator[Run]:
        if mode in READS or getattr(first, "alone", False):
            # Reads, and a write of one statement: an autocommit connection.
            async with self._connection() as conn, conn.cursor() as cur:
                yield partial(cursor_step, cur, self._sql)
        else:
            async with self._transaction() as cur:
                yield partial(cursor_step, cur, self._sql)

    # ================================================================ messages

    async def _write_appends(self, appends: Sequence[Append]) -> list[Outcome]:
        # The common case, one message of its owner into a stored conversation, in one
        # round trip; anything else (and whatever that one statement did not write) in the
        # shared append's transaction.
        item = appends[0]
        if (
            len(appends) == 1
            and item.enforce_owner
            and len(item.records) == 1
            and item.records[0].vector is None
            and not self._sql.defer_vectors  # a deferred vector is marked in a transaction
            and await self._plan("write", MySQLDialect.insert_alone, item)
        ):
            return [AppendResult(item.user_id, frozenset())]
        return await super()._write_appends(appends)

    def _record_size(self, record: Record) -> int:
        # The size of the statement that writes the record: the server answers one larger
        # than its packet limit with error 1153 (see ``_packet_limits``).
        if isinstance(record, MessageRecord):
            return row_size(record)
        if not isinstance(record, MemoryRecord):
            # Sent twice (insert, or update on a duplicate key), escaped (up to twice the text).
            return 4 * len(record.payload.encode("utf-8")) + 1024
        # Content, its search terms and the payload (which holds the content again), each
        # escaped; the upsert sends every value twice (insert, or update on a duplicate key).
        text = len(record.content.encode("utf-8"))
        payload = len(record.payload.encode("utf-8"))
        tags = sum(len(t.encode("utf-8")) + 4 for t in record.tags)
        vector = 0 if record.vector is None else 2 * 4 * int(np.size(record.vector))
        return 2 * (2 * (2 * text + payload + tags) + vector) + 1024

    async def _without_vectors(
        self, kind: Literal["message"], after: int, limit: int
    ) -> list[tuple[int, str, str]]:
        return await self._plan("read", plans.without_vectors, after, limit)

    # ================================================================ whole-store operations

    async def _compact(self) -> None:
        # InnoDB keeps deleted rows' bytes in their pages, and FULLTEXT keeps their words in
        # its auxiliary tables (only their ids go to a DELETED list) until the index is
        # optimised. Rebuilding a table writes new files from the live rows (auxiliary
        # tables included) and drops the old ones. Writes to a table wait for its rebuild.
        async with self._connection(write=True) as conn, conn.cursor() as cur:
            # The rebuilt FULLTEXT indexes must use our empty stop list, as at creation.
            await cur.execute(
                "SET SESSION innodb_ft_user_stopword_table = %s",
                (f"{self._database}/{self._prefix}ft_stopwords",),
            )
            try:
                for name in ("conversations", "messages", "memories", "memory_tags", "sessions"):
                    await cur.execute(f"ALTER TABLE {self._sql.table(name)} FORCE")
            finally:
                await cur.execute("SET SESSION innodb_ft_user_stopword_table = DEFAULT")
                await conn.commit()
