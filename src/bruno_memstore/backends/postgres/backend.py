"""``PostgresMemory``: PostgreSQL 12+ through an ``asyncpg`` connection pool.

One table per record kind in a schema of its own (``bruno_memstore`` unless told
otherwise), JSONB metadata, a stored ``tsvector`` column with a GIN index ranked by
``ts_rank_cd``, and a ``seq`` identity column for arrival order. The schema is created and
migrated on first use, once, even when several processes start together. The primitives are
the SQL family's plans (:mod:`..sql`) over PostgreSQL's dialect (``statements``), each run on
one pooled connection; concurrent small appends share one statement and one commit (a
group commit of the kit), large ones go through ``COPY``.

Where the server has pgvector, a new schema keeps vectors as well: an ``embedding`` column
beside each message and memory entry, written by the same statement, searched through an
HNSW index with every filter inside the query. Elsewhere the store is full-text only, and
says so (:attr:`PostgresMemory.vector_support`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
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
from ..sql.append import Append, Outcome
from ..sql.backend import Mode, SQLMemory
from ..sql.schema import Migration, migrate
from ..sql.steps import Commit, Done, Execute, ExecuteMany, Fetch, Plan, Step, begin, drive_async
from .statements import (
    HNSW_MAX_DIMENSIONS,
    LATEST_VERSION,
    MEMSTORE_ANALYSIS,
    Copy,
    Statements,
    analysis_label,
    check_language,
    check_schema,
    filter_args,
    lock_key,
    migrations,
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
    {
        "host",
        "port",
        "user",
        "dbname",
        "database",
        "passfile",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "application_name",
        "krbsrvname",
        "gsslib",
        "service",
        "servicefile",
    }
)
_DEFAULT_SCHEMA = "bruno_memstore"
_DEFAULT_LANGUAGE = MEMSTORE_ANALYSIS
_COPY_THRESHOLD = 1000  # batches at least this large go through COPY
_GROUP_MAX_ROWS = 200  # larger appends run on their own instead of joining a group
# A user (or conversation) is searched exactly, through the B-tree on user_id, when it has
# fewer rows n than max(_EXACT_SCAN_ROWS, sqrt(_EXACT_SCAN_FACTOR * limit * N)) in a table
# of N: an exact scan costs about n row reads; an HNSW walk filtered to the user visits about
# limit * N / n rows, each far more costly (measured: 35 times with the user's rows stored
# together, fewer when they are scattered). See docs/backends/postgres.md.
_EXACT_SCAN_ROWS = 1000
_EXACT_SCAN_FACTOR = 16.0
# Recall@10 measured on 100,000 LoCoMo-like vectors: 0.43 at pgvector's default of 40, 0.73
# at 200, for about a millisecond more per query (docs/backends/postgres.md).
_DEFAULT_EF_SEARCH = 200
_MAX_EF_SEARCH = 1000  # pgvector's limit
_EXTENSION_LOCK = "bruno_memstore:extension vector"  # serialises CREATE EXTENSION
_MIGRATION_2 = "store metadata; embedding columns when the server has pgvector"
_FIRST_HNSW = (0, 5, 0)
_FIRST_ITERATIVE = (0, 8, 0)
_EXTENSION = """SELECT e.extversion, n.nspname FROM pg_extension e
    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"""


class PostgresMemory(DriverURLBackend, SQLMemory):
    """Durable, searchable memory in PostgreSQL, with vector search where pgvector is.

    Args:
        dsn: ``postgresql://user:password@host:port/database?option=value``; ``None`` uses
            the ``PG*`` environment variables. Query options: ``schema``, ``language``,
            ``min_size``, ``max_size``, ``connect_timeout``, ``command_timeout``,
            ``statement_cache_size``, ``group_commit``, ``ef_search``, and the libpq connection
            parameters asyncpg accepts (``sslmode``, ``application_name``, ...).
        connection_string: the same as ``dsn`` (the name bruno-core's guide uses).
        schema: PostgreSQL schema holding the tables (created if missing).
        language: text analysis for search: ``"memstore"`` (default) is the library's own,
            identical on every backend; a PostgreSQL text-search configuration name
            (``"english"``, ``"german"``, ...) lets the server analyse instead.
        min_size: connections the pool keeps open.
        max_size: connections the pool opens at most.
        connect_timeout: seconds to open a connection before the server counts as down.
        command_timeout: seconds any single statement may run (``None``: no limit).
        statement_cache_size: prepared statements cached per connection (0 behind
            PgBouncer in transaction mode).
        group_commit: let concurrent small appends share one commit.
        ef_search: candidates an HNSW search keeps (pgvector's ``hnsw.ef_search``, 1 to
            1000; at least the number of results asked for): higher finds more of the true
            nearest neighbours, a little more slowly.
        **options: see :class:`~bruno_memstore.base.MemoryBackend`.

    Keyword arguments override the same option given in the URL.

    Vector search (``Capability.VECTORS``) needs the pgvector extension in the database (it
    is created if the server has it and the role may) and the ``pgvector`` package; the
    first connection to a schema records whether it keeps vectors. Without them the memory
    connects with full-text search only (:attr:`vector_support` says which).

    Raises:
        InvalidArgumentError: an option is unknown or out of range.
    """

    backend_name: ClassVar[str] = "postgres"
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {Capability.VECTORS}
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
        given = {
            "schema": schema,
            "language": language,
            "min_size": min_size,
            "max_size": max_size,
            "connect_timeout": connect_timeout,
            "command_timeout": command_timeout,
            "statement_cache_size": statement_cache_size,
            "group_commit": group_commit,
            "ef_search": ef_search,
        }
        opt = url.apply_options(
            {k: v for k, v in given.items() if v is not None}, _OPTION_KINDS, also=_DRIVER_OPTIONS
        )
        self._url = url
        self._dsn = _driver_dsn(url)
        self.schema = setting(opt, "schema", str, _DEFAULT_SCHEMA)
        self.language = setting(opt, "language", str, _DEFAULT_LANGUAGE)
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
        try:
            quoted_schema = check_schema(self.schema)
        except ValueError as exc:
            raise InvalidArgumentError("schema", str(exc)) from None
        try:
            regconfig = check_language(self.language)
        except ValueError as exc:
            raise InvalidArgumentError("language", str(exc)) from None
        self._sql: Statements = Statements(quoted_schema, regconfig)
        self._pool: Any = None
        self._vector_support: str | None = None
        self._vector_reason = ""
        self._pgvector_version: str | None = None
        self._codec_schema: str | None = None  # where register_vector finds the type
        self._iterative_scan = False
        self._exact_rows = _EXACT_SCAN_ROWS
        self._exact_factor = _EXACT_SCAN_FACTOR

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
                    server_settings=_server_settings(self._url),
                    init=self._init_connection,
                )
        except TimeoutError as exc:
            raise self._unavailable(
                f"no answer within connect_timeout={self.connect_timeout:g}s", exc
            ) from exc
        except Exception as exc:
            if self._is_unavailable(exc):
                raise self._unavailable(f"{type(exc).__name__}: {exc}", exc) from exc
            raise
        try:
            async with pool.acquire() as conn:
                await self._check_language(conn)
                plan = migrate(self._sql, self._migrations())
                before, after = await drive_async(plan, partial(_run, conn, self._sql))
                if before != after:
                    log.info("schema %s migrated from version %d to %d", self.schema, before, after)
                self._schema_version = LATEST_VERSION
                await self._check_recorded_analysis(conn)
                await self._open_vectors(conn)
            if self._codec_schema is not None:
                # Connections opened before the vector type was known reconnect on their
                # next use, through _init_connection, which registers its codec.
                await pool.expire_connections()
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool
        if self.group_commit:
            # Half the pool at most writes groups; the rest serves reads and large batches.
            self._committer = self._new_committer(
                is_systemic=self._is_transient,
                max_batch=64,
                max_weight=2000,
                max_inflight=max(1, self.max_size // 2),
                eager=False,
                closed_error=_interrupted,
            )

    async def _close(self) -> None:
        pool, committer = self._pool, self._committer
        self._pool = self._committer = None
        if committer is not None:
            await committer.close(grace=self.connect_timeout)
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self.connect_timeout)
            except Exception:
                pool.terminate()

    async def _init_connection(self, conn: Any) -> None:
        if self._codec_schema is not None:
            await register_vector(conn, schema=self._codec_schema)

    def _unavailable(self, detail: str, exc: BaseException) -> BackendUnavailableError:
        err = BackendUnavailableError(
            f"cannot reach PostgreSQL at {self.describe()}: {self._redact(detail)}",
            backend=self.backend_name,
            operation="connect",
        )
        err.cause = exc
        return err

    async def _check_language(self, conn: Any) -> None:
        if self._sql.regconfig is None:
            return
        try:
            await conn.fetchval(f"SELECT {self._sql.regconfig}::oid")
        except pg_errors.UndefinedObjectError:
            names = await conn.fetch("SELECT cfgname FROM pg_ts_config ORDER BY cfgname")
            raise InvalidArgumentError(
                "language",
                f"no text search configuration {self.language!r} on this server; "
                f"available: {', '.join(r[0] for r in names)}",
            ) from None

    def _migrations(self) -> list[Migration]:
        """The migrations, with the store's vector mode decided by migration 2 (once)."""
        first = migrations(self._sql.schema, self.language)[0]
        return [first, Migration(2, _MIGRATION_2, [self._vector_mode])]

    def _vector_mode(self) -> Plan[None]:
        """Migration 2: the store keeps vectors if the server has pgvector (created here if
        the role may), recorded in ``meta`` with the reason."""
        d = self._sql
        # Stores in other schemas may be migrating at the same moment.
        yield Execute("SELECT pg_advisory_xact_lock(?)", (lock_key(_EXTENSION_LOCK),))
        found = yield Fetch(_EXTENSION)
        vector_schema, reason = None, "the server has no pgvector extension"
        if not found:
            available = yield Fetch(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            )
            if available:
                yield Execute("SAVEPOINT extension")  # a refusal keeps the migration
                try:
                    yield Execute("CREATE EXTENSION IF NOT EXISTS vector")
                except pg_errors.PostgresError as exc:
                    yield Execute("ROLLBACK TO SAVEPOINT extension")
                    reason = f"CREATE EXTENSION vector was refused: {exc}"
                else:
                    yield Execute("RELEASE SAVEPOINT extension")
                    found = yield Fetch(_EXTENSION)
        if found:
            version, namespace = found[0]
            if _version(version) < _FIRST_HNSW:
                reason = f"pgvector {version} has no HNSW index (0.5.0 or later is needed)"
            else:
                vector_schema = _quote(namespace)
                reason = f"pgvector {version} was available when the store was created"
        for statement in migrations(d.schema, self.language, vector_schema)[1].steps:
            yield Execute(statement)
        yield Execute(d.write_meta, ("vector_mode_reason", reason))

    async def _check_recorded_analysis(self, conn: Any) -> None:
        recorded = await conn.fetchval(self._sql.recorded_analysis, f"{self._sql.schema}.messages")
        if recorded is not None and recorded != analysis_label(self.language):
            stored = recorded.rsplit(": ", 1)[-1]
            raise SchemaError(
                f"schema {self.schema!r} was indexed with language={stored}, not "
                f"language={self.language}; open it with language={stored}, or use another "
                "schema",
                backend=self.backend_name,
                operation="connect",
            )

    async def _open_vectors(self, conn: Any) -> None:
        """Read the store's vector mode; set ``capabilities`` and statements to match."""
        meta = dict(await conn.fetch(self._sql.read_meta))
        self._codec_schema = self._pgvector_version = None
        self._iterative_scan = False
        vectors = False
        if meta.get("vector_mode") == "pgvector":
            row = await conn.fetchrow(_EXTENSION)
            if row is None:
                raise SchemaError(
                    f"schema {self.schema!r} keeps vectors but the pgvector extension is "
                    "missing from this database; run CREATE EXTENSION vector",
                    backend=self.backend_name,
                    operation="connect",
                )
            version, namespace = row
            self._pgvector_version = version
            self._sql = self._sql.with_vectors(_quote(namespace))
            self._iterative_scan = _version(version) >= _FIRST_ITERATIVE
            space = _recorded_space(meta)
            self._exact_rows = (
                2**62
                if space is not None and space.dimension > HNSW_MAX_DIMENSIONS
                else _EXACT_SCAN_ROWS
            )
            if register_vector is None:
                reason = (
                    f"the store keeps vectors (pgvector {version}) but the pgvector package "
                    "is not installed: pip install 'bruno-memstore[pgvector]'"
                )
            else:
                self._codec_schema = namespace
                self._sql = self._sql.with_vectors(_quote(namespace), Vector)
                vectors = True
                scans = "iterative index scans" if self._iterative_scan else "exact fallback"
                reason = f"pgvector {version}, HNSW (cosine), {scans}"
        else:
            self._sql = self._sql.with_vectors(None)
            reason = meta.get("vector_mode_reason") or "the store was created without vectors"
        self._vector_support = "pgvector" if vectors else "none"
        self._vector_reason = reason
        self.capabilities = type(self).capabilities if vectors else DATABASE
        log.info(
            "%s (schema %s): %s; %s",
            self.describe(),
            self.schema,
            "vector and full-text search" if vectors else "full-text search only",
            reason,
        )

    # ---------------------------------------------------------------- where plans run

    async def _perform(self, mode: Mode, make_plan: Callable[[], Plan[Any]]) -> Any:
        plan = make_plan()
        first = begin(plan)  # the plan's preparation, on the event loop
        if isinstance(first, Done):
            return first.value
        async with self._pool.acquire() as conn:
            run = partial(_run, conn, self._sql)
            if mode in ("read", "scan") or getattr(first, "alone", False):
                return await drive_async(plan, run, first)
            async with conn.transaction():
                return await drive_async(plan, run, first)

    # ---------------------------------------------------------------- errors

    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(
            exc,
            (
                OSError,
                pg_errors.PostgresConnectionError,  # includes connection lost mid-operation
                pg_errors.TooManyConnectionsError,
                pg_errors.SerializationError,
                pg_errors.DeadlockDetectedError,
                pg_errors.AdminShutdownError,
                pg_errors.CrashShutdownError,
                pg_errors.CannotConnectNowError,
                # A conversation deleted while an append to it was running: the retry
                # claims it again.
                pg_errors.ForeignKeyViolationError,
                # Another process resized the vector columns under a cached statement.
                pg_errors.InvalidCachedStatementError,
            ),
        ):
            return True
        return isinstance(exc, pg_errors.InterfaceError) and "closed" in str(exc)

    def _is_unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, OSError):
            return True
        return isinstance(
            exc,
            (
                pg_errors.PostgresConnectionError,
                pg_errors.TooManyConnectionsError,
                pg_errors.AdminShutdownError,
                pg_errors.CrashShutdownError,
                pg_errors.CannotConnectNowError,
            ),
        ) or (isinstance(exc, pg_errors.InterfaceError) and "closed" in str(exc))

    # ---------------------------------------------------------------- messages

    def _joins_group(self, request: Append) -> bool:
        # Larger appends run on their own instead of joining a group.
        return len(request.records) <= _GROUP_MAX_ROWS

    async def _write_appends(self, appends: Sequence[Append]) -> list[Outcome]:
        return await self._plan("write", Statements.append_group, appends)

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
            return await self._plan("write", Statements.append_copied, request)
        return await super()._append_messages(
            conversation_id, user_id, records, enforce_owner=enforce_owner
        )

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        return await self._plan("erase", Statements.delete_messages, conversation_id, keep_roles)

    # ---------------------------------------------------------------- one statement each

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        return await self._plan("erase", Statements.delete_owned_memory, memory_id, user_id)

    async def _purge_expired(self, now_us: int) -> int:
        return await self._plan("erase", Statements.purge, now_us)

    async def _put_session(self, record: SessionRecord) -> None:
        await self._plan("write", Statements.save_session, record)

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        return await self._plan("erase", Statements.forget, user_id)

    # ---------------------------------------------------------------- search

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        return await self._plan("scan", Statements.text_search, request)

    # ---------------------------------------------------------------- vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is None:
            return _recorded_space(dict(await self._pool.fetch(self._sql.read_meta)))
        sql = self._sql
        earlier = False
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(self.schema))
            recorded = _recorded_space(dict(await conn.fetch(sql.read_meta)))
            if recorded is not None and not replace:
                return recorded
            if not replace:
                earlier = await conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {sql.schema}.messages) "
                    f"OR EXISTS (SELECT 1 FROM {sql.schema}.memories)"
                )
            for statement in sql.size_vectors(space.dimension):
                await conn.execute(statement)
            await conn.execute(sql.write_meta, "vector_model", space.model)
            await conn.execute(sql.write_meta, "vector_dimension", str(space.dimension))
        self._exact_rows = 2**62 if space.dimension > HNSW_MAX_DIMENSIONS else _EXACT_SCAN_ROWS
        log.info(
            "schema %s: vectors of %r, %d dimensions%s",
            self.schema,
            space.model,
            space.dimension,
            "" if space.dimension <= HNSW_MAX_DIMENSIONS else " (too many for HNSW: exact)",
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
            self._sql.put_vectors(table),
            [rid for rid, _ in items],
            [self._sql.vector_value(vec) for _, vec in items],
        )

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        kinds, limit = request.kinds, request.limit
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            # Settings for this transaction only: how wide the HNSW search starts, and
            # (pgvector 0.8+) to keep scanning past rows the filters reject.
            await conn.execute(
                _SCAN_SETTINGS if self._iterative_scan else _PLAN_SETTINGS,
                str(min(_MAX_EF_SEARCH, max(self.ef_search, limit))),
            )
            rows = await conn.fetch(
                self._sql.vector_search,
                request.user_id,
                Vector(vector),
                limit,
                "message" in kinds,
                "memory" in kinds,
                request.conversation_id,
                *filter_args(request.memories()),
                self._exact_rows,
                self._exact_factor,
            )
        return self._sql.hits(rows)

    # ---------------------------------------------------------------- whole-store operations

    async def _compact(self) -> None:
        # Outside a transaction (VACUUM refuses to run in one); takes each table's
        # ACCESS EXCLUSIVE lock while rewriting it.
        await self._pool.execute(self._sql.compact)


# ==================================================================== helpers


def _driver_dsn(url: MemoryURL) -> str:
    """The URL asyncpg gets: plain ``postgresql://`` scheme, our own options removed."""
    parts = urlsplit(url.raw)
    query = {k: v for k, v in url.query.items() if k in _DRIVER_OPTIONS}
    query.pop("application_name", None)  # passed as a server setting instead
    return parts._replace(scheme="postgresql", query=urlencode(query)).geturl()


def _server_settings(url: MemoryURL) -> dict[str, str]:
    return {"application_name": url.query.get("application_name", "bruno-memstore")}


def _interrupted() -> BackendUnavailableError:
    return BackendUnavailableError(
        "the write was interrupted while the backend was shutting down",
        backend="postgres",
        operation="store_message",
    )


async def _run(conn: Any, d: Statements, step: Step) -> Any:
    """Run one step on an ``asyncpg`` connection."""
    kind = step.__class__
    if kind is Fetch:
        return await conn.fetch(d.sql(step.sql), *step.args)
    if kind is Execute:
        return _count(await conn.execute(d.sql(step.sql), *step.args))
    if kind is ExecuteMany:
        await conn.executemany(d.sql(step.sql), step.rows)
        return None
    if kind is Copy:
        await conn.copy_records_to_table(step.table, columns=step.columns, records=step.records)
        return None
    if kind is Commit:
        return None
    raise TypeError(f"not a step: {step!r}")


def _count(status: str) -> int:
    """Rows affected, from a command status such as ``DELETE 3`` (0 for ``BEGIN``)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


# Settings of one vector search's transaction. ``enable_sort = off`` leaves the planner one
# way to order the index plan's rows, the HNSW index (the exact plan sorts regardless, and
# chooses it with one-time filters, not costs); no parallel workers start for a plan that
# its one-time filter may skip.
_PLAN_SETTINGS = (
    "SELECT set_config('hnsw.ef_search', $1, true), "
    "set_config('enable_sort', 'off', true), "
    "set_config('max_parallel_workers_per_gather', '0', true)"
)
_SCAN_SETTINGS = f"{_PLAN_SETTINGS}, set_config('hnsw.iterative_scan', 'relaxed_order', true)"


def _recorded_space(meta: dict[str, str]) -> VectorSpace | None:
    model, dimension = meta.get("vector_model"), meta.get("vector_dimension")
    if model is None or dimension is None:
        return None
    return VectorSpace(model, int(dimension))


def _version(text: str) -> tuple[int, ...]:
    """``"0.8.1"`` as ``(0, 8, 1)`` (non-numeric parts count as 0)."""
    return tuple(int(part) if part.isdigit() else 0 for part in text.split(".")[:3])


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
