"""``PostgresMemory``: PostgreSQL through an ``asyncpg`` pool (see docs/backends/postgres.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode, urlsplit

import asyncpg
import asyncpg.exceptions as pg_errors

from ...capabilities import DATABASE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import BackendUnavailableError, InvalidArgumentError, SchemaError
from ...limits import Limits
from ...models import MessageRecord, SearchHit, SearchRequest, SessionRecord
from ...primitives import AppendResult
from ...url import MemoryURL
from ..kit.driver_url import DriverURLBackend
from ..kit.settings import setting
from ..sql.aio import AsyncSQLMemory, connection_step
from ..sql.append import Append, Outcome
from ..sql.backend import READS, Mode
from ..sql.schema import migrate
from ..sql.steps import Step, drive_async
from ..sql.where import search_values
from . import vectors
from .bulk import append_copied
from .connections import Connections, Steps
from .dialect import PostgresDialect
from .schema import (
    EXTENSION,
    LATEST_VERSION,
    MEMSTORE_ANALYSIS,
    check_analysis,
    check_configuration,
    check_language,
    check_schema,
    compact,
    lock_key,
    migrations,
    quote,
    read_meta,
    version_of,
    write_meta,
)

try:  # the pgvector extra: binary transfer of vectors
    from pgvector import Vector
    from pgvector.asyncpg import register_vector
except ImportError:
    Vector = None  # type: ignore[assignment,misc]
    register_vector = None  # type: ignore[assignment]

__all__ = ["PostgresMemory"]

log = logging.getLogger(__name__)

# Our own URL options, with their types; every other query option must be one asyncpg
# understands as a connection parameter, or is refused.
_OPTION_KINDS: dict[str, type] = {
    "schema": str,
    "language": str,
    "min_size": int,
    "max_size": int,
    "connect_timeout": float,
    "command_timeout": float,
    "statement_cache_size": int,
    "group_commit": bool,
    "ef_search": int,
}
_DRIVER_OPTIONS = frozenset(
    """host port user dbname database passfile sslmode sslrootcert sslcert sslkey sslcrl
    ssl_min_protocol_version ssl_max_protocol_version target_session_attrs application_name
    krbsrvname gsslib service servicefile""".split()
)
_COPY_THRESHOLD = 1000  # batches at least this large go through COPY
_GROUP_MAX_ROWS = 200  # larger appends run on their own instead of joining a group
# Recall@10 measured on 100,000 LoCoMo-like vectors: 0.43 at pgvector's default of 40, 0.73
# at 200, for about a millisecond more per query (docs/backends/postgres.md).
_DEFAULT_EF_SEARCH = 200
_MAX_EF_SEARCH = 1000  # pgvector's limit
_FIRST_ITERATIVE = (0, 8, 0)
# Errors of a server that is down, starting or stopping, or out of connections.
_UNAVAILABLE = (
    OSError,
    pg_errors.PostgresConnectionError,  # includes connection lost mid-operation
    pg_errors.TooManyConnectionsError,
    pg_errors.AdminShutdownError,
    pg_errors.CrashShutdownError,
    pg_errors.CannotConnectNowError,
)
_TRANSIENT = (
    *_UNAVAILABLE,
    pg_errors.SerializationError,
    pg_errors.DeadlockDetectedError,
    # A conversation deleted while an append to it was running: the retry claims it again.
    pg_errors.ForeignKeyViolationError,
    # Another process resized the vector columns under a cached statement.
    pg_errors.InvalidCachedStatementError,
)


class PostgresMemory(DriverURLBackend, AsyncSQLMemory):
    """Durable, searchable memory in PostgreSQL, with vector search where pgvector is.

    Options (URL query or keyword, keywords win) are described in docs/backends/postgres.md.
    """

    backend_name: ClassVar[str] = "postgres"
    loop_bound = True  # asyncpg's pool
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {
        Capability.VECTORS,
        Capability.PRUNING,
    }
    limits = Limits(nul_in_text=False, nul_in_json=False, nul_holder="PostgreSQL text")

    def __init__(
        self,
        dsn: str | None = None,
        *,
        connection_string: str | None = None,
        schema: str | None = None,
        language: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        connect_timeout: float | None = None,
        command_timeout: float | None = None,
        statement_cache_size: int | None = None,
        group_commit: bool | None = None,
        ef_search: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if dsn is not None and connection_string is not None:
            raise InvalidArgumentError("connection_string", "give either dsn or connection_string")
        raw = dsn if dsn is not None else connection_string
        if raw is None:
            raw = "postgresql://"
        if not isinstance(raw, str):
            raise InvalidArgumentError("dsn", f"expected a string, got {type(raw).__name__}")
        url = MemoryURL.parse(raw)
        if url.scheme not in ("postgresql", "postgres"):
            raise InvalidArgumentError("dsn", f"expected a postgresql:// URL, got {url}")
        if url.driver not in (None, "asyncpg"):
            raise InvalidArgumentError("dsn", f"unsupported driver {url.driver!r}; use asyncpg")
        given = {k: v for k, v in locals().items() if k in _OPTION_KINDS and v is not None}
        opt = url.apply_options(given, _OPTION_KINDS, also=_DRIVER_OPTIONS)
        self._url = url
        self._dsn = _driver_dsn(url)
        self._application = url.query.get("application_name", "bruno-memstore")
        self.schema = setting(opt, "schema", str, "bruno_memstore")
        self.language = setting(opt, "language", str, MEMSTORE_ANALYSIS)
        self.min_size = setting(opt, "min_size", int, 1, low=0)
        self.max_size = setting(opt, "max_size", int, 10, low=1)
        self.connect_timeout = setting(opt, "connect_timeout", float, 10.0, low=0.001)
        self.command_timeout: float | None = setting(opt, "command_timeout", float, None, low=0.001)
        self.statement_cache_size = setting(opt, "statement_cache_size", int, 100, low=0)
        self.group_commit = setting(opt, "group_commit", bool, True)
        self.ef_search = setting(opt, "ef_search", int, _DEFAULT_EF_SEARCH, low=1)
        if self.ef_search > _MAX_EF_SEARCH:
            raise InvalidArgumentError("ef_search", f"at most {_MAX_EF_SEARCH}")
        if self.min_size > self.max_size:
            raise InvalidArgumentError("min_size", f"larger than max_size ({self.max_size})")
        regconfig = check_language(self.language)
        self._sql: PostgresDialect = PostgresDialect(check_schema(self.schema), regconfig)
        self._pool: Any = None
        self._connections: Connections
        self._vector_support: str | None = None
        self._vector_reason = ""
        self._pgvector_version: str | None = None
        self._codec_schema: str | None = None  # where register_vector finds the type
        self._iterative_scan = False
        self._exact_rows = vectors.EXACT_SCAN_ROWS
        self._exact_factor = vectors.EXACT_SCAN_FACTOR

    @property
    def vector_support(self) -> str | None:
        """``"pgvector"`` when this memory stores and searches vectors, ``"none"`` when it
        runs with full-text search only, ``None`` before it connects."""
        return self._vector_support

    @property
    def vector_support_reason(self) -> str:
        """Why :attr:`vector_support` is what it is (empty before connecting)."""
        return self._vector_reason

    @property
    def pgvector_version(self) -> str | None:
        """The pgvector extension's version in this database, when the store keeps vectors."""
        return self._pgvector_version

    # ---------------------------------------------------------------- lifecycle

    async def _connect(self) -> None:
        self._codec_schema = None  # known again once the store's vector mode is read
        try:
            async with asyncio.timeout(self.connect_timeout):
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.connect_timeout,
                    command_timeout=self.command_timeout,
                    statement_cache_size=self.statement_cache_size,
                    server_settings={"application_name": self._application},
                    init=self._init_connection,
                    reset=_keep_session,
                )
        except Exception as exc:
            if not self._is_unavailable(exc):  # a timeout is an OSError
                raise
            detail = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TimeoutError):
                detail = f"no answer within connect_timeout={self.connect_timeout:g}s"
            err = BackendUnavailableError(
                f"cannot reach PostgreSQL at {self.describe()}: {self._redact(detail)}",
                backend=self.backend_name,
                operation="connect",
            )
            err.cause = exc
            raise err from exc
        try:
            async with pool.acquire() as conn:
                run = partial(connection_step, conn, self._sql)
                sql = self._sql
                await drive_async(check_configuration(sql.regconfig, self.language), run)
                plan = migrate(sql, migrations(sql.schema, self.language))
                before, after = await drive_async(plan, run)
                if before != after:
                    log.info("schema %s migrated from version %d to %d", self.schema, before, after)
                self._schema_version = LATEST_VERSION
                await drive_async(check_analysis(sql.schema, self.language), run)
                await self._open_vectors(conn)
            if self._codec_schema is not None:
                # Connections opened before the vector type was known reconnect on their
                # next use, through _init_connection, which registers its codec.
                await pool.expire_connections()
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool
        # As many kept at hand as the pool keeps open when idle: no more stay open.
        self._connections = Connections(pool, self.min_size)
        if self.group_commit:
            # Half the pool at most writes groups; the rest serves reads and large batches.
            self._committer = self._new_committer(
                is_systemic=self._is_transient,
                max_batch=64,
                max_weight=2000,
                max_inflight=max(1, self.max_size // 2),
                eager=False,
            )

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        await self._stop_committer(self.connect_timeout)
        if pool is not None:
            await self._connections.release_kept()
            try:
                await asyncio.wait_for(pool.close(), timeout=self.connect_timeout)
            except Exception:
                pool.terminate()

    async def _init_connection(self, conn: Any) -> None:
        if self._codec_schema is not None:
            await register_vector(conn, schema=self._codec_schema)

    async def _open_vectors(self, conn: Any) -> None:
        """Read the store's vector mode; set ``capabilities`` and statements to match."""
        meta = dict(await conn.fetch(read_meta(self._sql.schema)))
        self._codec_schema = self._pgvector_version = None
        self._iterative_scan = False
        searchable = False
        if meta.get("vector_mode") == "pgvector":
            row = await conn.fetchrow(EXTENSION)
            if row is None:
                raise SchemaError(
                    f"schema {self.schema!r} keeps vectors but the pgvector extension is "
                    "missing from this database; run CREATE EXTENSION vector",
                    backend=self.backend_name,
                    operation="connect",
                )
            version, namespace = row
            self._pgvector_version = version
            codec = Vector if register_vector is not None else None  # without it, none
            self._sql = self._sql.with_vectors(quote(namespace), codec)
            self._iterative_scan = version_of(version) >= _FIRST_ITERATIVE
            space = vectors.recorded_space(meta)
            self._exact_rows = vectors.exact_rows(space.dimension if space else 0)
            if register_vector is None:
                reason = (
                    f"the store keeps vectors (pgvector {version}) but the pgvector package "
                    "is not installed: pip install 'bruno-memstore[pgvector]'"
                )
            else:
                self._codec_schema = namespace
                searchable = True
                scans = "iterative index scans" if self._iterative_scan else "exact fallback"
                reason = f"pgvector {version}, HNSW (cosine), {scans}"
        else:
            self._sql = self._sql.with_vectors(None)
            reason = meta.get("vector_mode_reason") or "the store was created without vectors"
        self._vector_support = "pgvector" if searchable else "none"
        self._vector_reason = reason
        self.capabilities = (
            type(self).capabilities if searchable else DATABASE | {Capability.PRUNING}
        )
        log.info(
            "%s (schema %s): %s; %s",
            self.describe(),
            self.schema,
            "vector and full-text search" if searchable else "full-text search only",
            reason,
        )

    # ---------------------------------------------------------------- where plans run

    def _steps(self, mode: Mode, first: Step) -> Steps:
        alone = mode in READS or getattr(first, "alone", False)
        return Steps(self._connections, self._sql, not alone)

    # ---------------------------------------------------------------- errors

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, _TRANSIENT) or _closed(exc)

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, _UNAVAILABLE) or _closed(exc)

    # ---------------------------------------------------------------- messages

    def _joins_group(self, request: Append) -> bool:
        # Larger appends run on their own instead of joining a group.
        return len(request.records) <= _GROUP_MAX_ROWS

    async def _write_appends(self, appends: Sequence[Append]) -> list[Outcome]:
        return await self._plan("write", PostgresDialect.append_group, appends)

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        if len(records) >= _COPY_THRESHOLD and (not self._sql.vectors or self._codec_schema):
            request = Append(conversation_id, user_id, records, enforce_owner)
            return await self._plan("write", append_copied, request)
        return await super()._append_messages(
            conversation_id, user_id, records, enforce_owner=enforce_owner
        )

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        return await self._plan(
            "erase", PostgresDialect.delete_messages, conversation_id, keep_roles
        )

    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        return await self._plan("erase", PostgresDialect.delete_message_ids, conversation_id, ids)

    # ---------------------------------------------------------------- one statement each

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        return await self._plan("erase", PostgresDialect.delete_owned_memory, memory_id, user_id)

    async def _put_session(self, record: SessionRecord) -> None:
        await self._plan("write", PostgresDialect.save_session, record)

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        return await self._plan("erase", PostgresDialect.forget, user_id)

    # ---------------------------------------------------------------- search

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        return await self._plan("scan", PostgresDialect.text_search, request)

    # ---------------------------------------------------------------- vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is None:
            return vectors.recorded_space(dict(await self._pool.fetch(read_meta(self._sql.schema))))
        sql = self._sql
        earlier = False
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(self.schema))
            recorded = vectors.recorded_space(dict(await conn.fetch(read_meta(sql.schema))))
            if recorded is not None and not replace:
                return recorded
            if not replace:
                earlier = await conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {sql.schema}.messages) "
                    f"OR EXISTS (SELECT 1 FROM {sql.schema}.memories)"
                )
            for statement in vectors.size_vectors(sql, space.dimension):
                await conn.execute(statement)
            await conn.execute(write_meta(sql.schema), "vector_model", space.model)
            await conn.execute(write_meta(sql.schema), "vector_dimension", str(space.dimension))
        self._exact_rows = vectors.exact_rows(space.dimension)
        log.info(
            "schema %s: vectors of %r, %d dimensions%s",
            self.schema,
            space.model,
            space.dimension,
            "" if space.dimension <= vectors.HNSW_MAX_DIMENSIONS else " (too many for HNSW: exact)",
        )
        if earlier:
            log.warning(
                "schema %s holds records stored before it kept vectors; vector search finds "
                "them after: bruno-memstore reindex %s",
                self.schema,
                self.describe(),
            )
        return space

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        table = "messages" if kind == "message" else "memories"
        await self._pool.execute(
            vectors.put_vectors(self._sql, table),
            [rid for rid, _ in items],
            [self._sql.vector_value(vec) for _, vec in items],
        )

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            # Settings for this transaction only: how wide the HNSW search starts, and
            # (pgvector 0.8+) to keep scanning past rows the filters reject.
            await conn.execute(
                vectors.search_settings(self._iterative_scan),
                str(min(_MAX_EF_SEARCH, max(self.ef_search, request.limit))),
            )
            args = search_values(request, Vector(vector))
            rows = await conn.fetch(
                vectors.vector_search(self._sql), *args, self._exact_rows, self._exact_factor
            )
        return self._sql.hits(rows)

    # ---------------------------------------------------------------- whole-store operations

    async def _compact(self) -> None:
        # Outside a transaction (VACUUM refuses to run in one); takes each table's
        # ACCESS EXCLUSIVE lock while rewriting it.
        await self._pool.execute(compact(self._sql.schema))


# ==================================================================== helpers


def _driver_dsn(url: MemoryURL) -> str:
    """The URL asyncpg gets: plain ``postgresql://`` scheme, our own options removed."""
    parts = urlsplit(url.raw)
    query = {k: v for k, v in url.query.items() if k in _DRIVER_OPTIONS}
    query.pop("application_name", None)  # passed as a server setting instead
    return parts._replace(scheme="postgresql", query=urlencode(query)).geturl()


async def _keep_session(conn: Any) -> None:
    """A connection's reset on its way back to the pool: nothing beyond asyncpg's own
    rollback of a transaction left open. Every setting the backend changes is local to a
    transaction (``set_config(..., true)``), every advisory lock a transaction's, and it
    opens no cursor outside one nor listens; the ``COPY`` staging table is meant to stay.
    The default reset (``RESET ALL``, ``CLOSE ALL``, ``UNLISTEN *``, unlocking advisory
    locks) would cost a round trip after every operation."""


def _closed(exc: BaseException) -> bool:
    return isinstance(exc, pg_errors.InterfaceError) and "closed" in str(exc)
