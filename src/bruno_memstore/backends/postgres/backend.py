"""``PostgresMemory``: PostgreSQL 12+ through an ``asyncpg`` connection pool.

One table per record kind in a schema of its own (``bruno_memstore`` unless told
otherwise), JSONB metadata, a stored ``tsvector`` column with a GIN index ranked by
``ts_rank_cd``, and a ``seq`` identity column for arrival order. The schema is created and
migrated on first use, once, even when several processes start together. Concurrent small
appends share one statement and one commit (see ``writer``).

Where the server has pgvector, a new schema keeps vectors as well: an ``embedding`` column
beside each message and memory entry, written by the same statement, searched through an
HNSW index with every filter inside the query. Elsewhere the store is full-text only, and
says so (:attr:`PostgresMemory.vector_support`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode, urlsplit

from ...base import MemoryBackend
from ...capabilities import DATABASE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import (
    BackendError,
    BackendUnavailableError,
    InvalidArgumentError,
    MissingDependencyError,
    OwnershipError,
    SchemaError,
)
from ...limits import Limits
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
)
from ...primitives import (
    AppendResult,
    ExportKind,
    VectorPrimitives,
    memory_taken,
    session_taken,
)
from ...search import MAX_QUERY_TERMS, index_text, query_words, terms
from ...url import MemoryURL, redact_url
from .statements import (
    HNSW_MAX_DIMENSIONS,
    INDEXED_PREFIX,
    LATEST_VERSION,
    MEMSTORE_ANALYSIS,
    MESSAGE_COLUMNS,
    Statements,
    analysis_label,
    check_language,
    check_schema,
    migrations,
)
from .writer import Append, GroupWriter

try:
    import asyncpg
    import asyncpg.exceptions as pg_errors
except ImportError:  # the class still imports, so entry-point discovery works without the extra
    asyncpg = None  # type: ignore[assignment]
    pg_errors = None  # type: ignore[assignment]

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
_EXPORT_PAGE = 500
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
_FIRST_HNSW = (0, 5, 0)
_FIRST_ITERATIVE = (0, 8, 0)
_EXTENSION = """SELECT e.extversion, n.nspname FROM pg_extension e
    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"""


class PostgresMemory(MemoryBackend, VectorPrimitives):
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
        MissingDependencyError: ``asyncpg`` is not installed.
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
        if asyncpg is None:
            raise MissingDependencyError("postgres", "asyncpg")
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
        url.check_options(set(_OPTION_KINDS) | _DRIVER_OPTIONS)
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
        opt = {
            name: given[name] if given[name] is not None else url.option(name, kind)
            for name, kind in _OPTION_KINDS.items()
        }
        self._url = url
        self._dsn = _driver_dsn(url)
        self.schema = _check(opt, "schema", str, _DEFAULT_SCHEMA)
        self.language = _check(opt, "language", str, _DEFAULT_LANGUAGE)
        self.min_size = _check(opt, "min_size", int, 1, low=0)
        self.max_size = _check(opt, "max_size", int, 10, low=1)
        self.connect_timeout = _check(opt, "connect_timeout", float, 10.0, low=0.001)
        self.command_timeout: float | None = _check(opt, "command_timeout", float, None, low=0.001)
        self.statement_cache_size = _check(opt, "statement_cache_size", int, 100, low=0)
        self.group_commit = _check(opt, "group_commit", bool, True)
        self.ef_search = _check(opt, "ef_search", int, _DEFAULT_EF_SEARCH, low=1)
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
        self._sql = Statements(quoted_schema, regconfig)
        self._pool: Any = None
        self._writer: GroupWriter | None = None
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

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> PostgresMemory:
        """Build from ``postgresql://`` or ``postgres://`` (options in the query string)."""
        return cls(url.raw, **options)

    def describe(self) -> str:
        return redact_url(self._url.raw)

    def _redact(self, text: str) -> str:
        return self._url.redact(text)

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
                await self._migrate(conn)
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
            # Half the pool at most flushes groups; the rest serves reads and large batches.
            self._writer = GroupWriter(
                self._run_appends, self._is_transient, max_flushers=max(1, self.max_size // 2)
            )

    async def _close(self) -> None:
        pool, writer = self._pool, self._writer
        self._pool = self._writer = None
        if writer is not None:
            await writer.close(grace=self.connect_timeout)
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

    async def _migrate(self, conn: Any) -> None:
        sql = self._sql
        table = f"{sql.schema}.schema_version"
        if await conn.fetchval(sql.version_table_exists, table):
            version = await conn.fetchval(sql.current_version)
            if version == LATEST_VERSION:
                return
            self._check_version(version)
        async with conn.transaction():
            # Concurrent first connects queue here; the first migrates, the others find
            # the schema current.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(self.schema))
            if await conn.fetchval("SELECT to_regnamespace($1) IS NULL", sql.schema):
                await conn.execute(sql.create_schema)
            await conn.execute(sql.create_version_table)
            version = await conn.fetchval(sql.current_version)
            self._check_version(version)
            vector_schema, reason = None, ""
            if version < 2:  # the store's vector mode is decided here, once
                vector_schema, reason = await self._pgvector_for_new_store(conn)
            for number, description, statements in migrations(
                sql.schema, self.language, vector_schema
            ):
                if number <= version:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                if number == 2:
                    await conn.execute(sql.write_meta, "vector_mode_reason", reason)
                await conn.execute(sql.record_version, number, description)
                log.info("schema %s migrated to version %d: %s", self.schema, number, description)

    async def _pgvector_for_new_store(self, conn: Any) -> tuple[str | None, str]:
        """The quoted schema of pgvector if a store created now can keep vectors (creating
        the extension if the server has it), else ``None``; and why."""
        # Stores in other schemas may be migrating at the same moment.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(_EXTENSION_LOCK))
        row = await conn.fetchrow(_EXTENSION)
        if row is None:
            available = await conn.fetchval(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            )
            if available is None:
                return None, "the server has no pgvector extension"
            try:
                async with conn.transaction():  # a savepoint: a refusal keeps the migration
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except pg_errors.PostgresError as exc:
                return None, f"CREATE EXTENSION vector was refused: {exc}"
            row = await conn.fetchrow(_EXTENSION)
        version, namespace = row
        if _version(version) < _FIRST_HNSW:
            return None, f"pgvector {version} has no HNSW index (0.5.0 or later is needed)"
        return _quote(namespace), f"pgvector {version} was available when the store was created"

    def _check_version(self, version: int) -> None:
        if version > LATEST_VERSION:
            raise SchemaError(
                f"schema {self.schema!r} is at version {version}, newer than this library "
                f"supports ({LATEST_VERSION}); upgrade bruno-memstore",
                backend=self.backend_name,
                operation="connect",
            )

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
            self._sql = dataclasses.replace(self._sql, vector_schema=_quote(namespace))
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
                vectors = True
                scans = "iterative index scans" if self._iterative_scan else "exact fallback"
                reason = f"pgvector {version}, HNSW (cosine), {scans}"
        else:
            self._sql = dataclasses.replace(self._sql, vector_schema=None)
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

    # ---------------------------------------------------------------- error classification

    def _is_transient(self, exc: BaseException) -> bool:
        if pg_errors is None:
            return False
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
        if pg_errors is None:
            return False
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

    # ---------------------------------------------------------------- conversations

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        return await self._pool.fetchval(self._sql.conversation_owner, conversation_id)

    # ---------------------------------------------------------------- messages

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        if len(records) >= _COPY_THRESHOLD and (not self._sql.vectors or self._codec_schema):
            return await self._append_copy(conversation_id, user_id, records, enforce_owner)
        if self._writer is not None and len(records) <= _GROUP_MAX_ROWS:
            return await self._writer.submit(conversation_id, user_id, records, enforce_owner)
        item = Append(conversation_id, user_id, records, enforce_owner)
        for _ in range(5):
            (outcome,) = await self._run_appends([item])
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                return outcome
        raise BackendError("the conversation's owner could not be determined")

    async def _run_appends(
        self, batch: Sequence[Append]
    ) -> list[AppendResult | BaseException | None]:
        """Run appends in one statement; see ``Statements.append`` and ``GroupWriter``."""
        conv, users, enforce = [], [], []
        cols: list[Any] = [[] for _ in range(11)]
        app, ids, roles, types, contents, ts_iso, ts_us, metas, parents, analysed, vecs = cols
        analyse = self._sql.client_analysis
        vectors = self._sql.vectors
        for number, item in enumerate(batch, 1):
            conv.append(item.conversation_id)
            users.append(item.user_id)
            enforce.append(item.enforce_owner)
            for r in item.records:
                app.append(number)
                ids.append(r.id)
                roles.append(r.role)
                types.append(r.message_type)
                contents.append(r.content)
                ts_iso.append(r.timestamp)
                ts_us.append(r.ts_us)
                metas.append(r.metadata)
                parents.append(r.parent_id)
                if analyse:
                    analysed.append(_analysed(r.content))
                if vectors:
                    vecs.append(self._vector_value(r.vector))
        if not vectors:
            cols.pop()
        elif not any(v is not None for v in vecs):
            cols[-1] = None  # one NULL array: needs no vector codec
        if not analyse:
            cols.pop(9)
        try:
            rows = await self._pool.fetch(self._sql.append, conv, users, enforce, *cols)
        except pg_errors.UniqueViolationError:
            # A conversation claimed by another transaction after the snapshot: nothing
            # was written; run every append again.
            return [None] * len(batch)
        owners: dict[str, str] = {}
        claimants: dict[str, str] = {}
        inserted: set[str] = set()
        for conversation_id, owner, message_id, owned in rows:
            if message_id is not None:
                inserted.add(message_id)
            elif owned:
                owners[conversation_id] = owner
            else:
                claimants[conversation_id] = owner
        outcomes: list[AppendResult | BaseException | None] = []
        for item in batch:
            owner = owners.get(item.conversation_id)
            if owner is None:
                if item.conversation_id in claimants:
                    # Expected to claim it, yet nothing went in (an id stored meanwhile), or
                    # refused for that claim: the next snapshot decides.
                    outcomes.append(None)
                else:
                    # A new conversation, every id of the append stored: nothing written.
                    outcomes.append(
                        AppendResult(item.user_id, frozenset(r.id for r in item.records))
                    )
            elif item.enforce_owner and owner != item.user_id:
                outcomes.append(self._not_owner(item.conversation_id))
            else:
                existing = frozenset(r.id for r in item.records if r.id not in inserted)
                outcomes.append(AppendResult(owner, existing))
        return outcomes

    async def _append_copy(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        enforce_owner: bool,
    ) -> AppendResult:
        sql = self._sql
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql.claim_conversation, conversation_id, user_id)
            if row is None:  # claimed by a transaction that committed after our snapshot
                row = (await conn.fetchval(sql.conversation_owner, conversation_id), False)
            owner, created = row
            if enforce_owner and owner != user_id:
                raise self._not_owner(conversation_id)
            await conn.execute(sql.create_staging)
            analyse = sql.client_analysis
            vector = (self._vector_value,) if sql.vectors else ()
            await conn.copy_records_to_table(
                sql.staging_table,
                columns=sql.staging_columns,
                records=[
                    (
                        n,
                        r.id,
                        r.role,
                        r.message_type,
                        r.content,
                        r.timestamp,
                        r.ts_us,
                        r.metadata,
                        r.parent_id,
                        _analysed(r.content) if analyse else None,
                        *(f(r.vector) for f in vector),
                    )
                    for n, r in enumerate(records)
                ],
            )
            rows = await conn.fetch(sql.insert_staged, conversation_id, owner)
            if created and not rows:
                # Every id was stored: the write claims nothing either.
                await conn.execute(sql.drop_conversation_row, conversation_id)
        inserted = {row[0] for row in rows}
        return AppendResult(owner, frozenset(r.id for r in records if r.id not in inserted))

    def _not_owner(self, conversation_id: str) -> OwnershipError:
        return OwnershipError(
            f"conversation {conversation_id!r} belongs to another user",
            backend=self.backend_name,
            operation="store_message",
        )

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        rows = await self._pool.fetch(self._sql.get_messages, list(ids))
        return [_message(r) for r in rows]

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        args: list[Any] = [a for a in (conversation_id, user_id) if a is not None]
        if limit is not None:
            args.append(limit)
        statement = self._sql.window(
            by_conversation=conversation_id is not None,
            by_user=user_id is not None,
            limited=limit is not None,
        )
        rows = await self._pool.fetch(statement, *args)
        return [_message(r) for r in reversed(rows)]

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        if keep_roles:
            status = await self._pool.execute(
                self._sql.delete_messages_keeping, conversation_id, sorted(keep_roles)
            )
            return _count(status)
        # The conversation row goes too; its sessions follow by cascade.
        row = await self._pool.fetchrow(self._sql.delete_conversation, conversation_id)
        return int(row[0])

    # ---------------------------------------------------------------- memories

    async def _put_memory(self, record: MemoryRecord) -> None:
        analysed = [_analysed(record.content)] if self._sql.client_analysis else []
        if self._sql.vectors:
            analysed.append(self._vector_value(record.vector))
        written = await self._pool.fetchval(
            self._sql.put_memory,
            record.id,
            record.user_id,
            record.content,
            record.memory_type,
            record.category,
            list(record.tags),
            record.confidence,
            record.importance,
            record.created_us,
            record.expires_us,
            record.conversation_id,
            record.payload,
            *analysed,
        )
        if written is None:
            raise memory_taken(record.id)

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        row = await self._pool.fetchrow(self._sql.get_memory, memory_id)
        return _memory(row) if row is not None else None

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        rows = await self._pool.fetch(self._sql.query_memories, *_filter_args(flt), flt.limit)
        return [_memory(r) for r in rows]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        gone, owner = await self._pool.fetchrow(self._sql.delete_memory, memory_id, user_id)
        if not gone and owner is not None and owner != user_id:
            raise memory_taken(memory_id)
        return bool(gone)

    async def _purge_expired(self, now_us: int) -> int:
        return _count(await self._pool.execute(self._sql.purge_expired, now_us))

    # ---------------------------------------------------------------- sessions

    async def _put_session(self, record: SessionRecord) -> None:
        args = (
            record.session_id,
            record.user_id,
            record.conversation_id,
            record.is_active,
            record.started_us,
            record.payload,
        )
        # One transaction: a session id held by another user is found only by the upsert,
        # after the statement may have claimed a new conversation, which must not stay.
        async with self._pool.acquire() as conn, conn.transaction():
            for _ in range(5):
                owner, saved = await conn.fetchrow(self._sql.put_session, *args)
                if owner is None:  # claimed concurrently after this statement's snapshot
                    continue
                if owner != record.user_id:
                    raise OwnershipError(
                        f"conversation {record.conversation_id!r} belongs to another user",
                        backend=self.backend_name,
                        operation="create_session",
                    )
                if not saved:
                    raise session_taken(record.session_id)
                return
        raise BackendError("the conversation's owner could not be determined")

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._pool.fetchrow(self._sql.get_session, session_id)
        return _session(row) if row is not None else None

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        args: list[Any] = [user_id, active_only]
        if conversation_id is not None:
            args.append(conversation_id)
        statement = self._sql.latest_session(by_conversation=conversation_id is not None)
        row = await self._pool.fetchrow(statement, *args)
        return _session(row) if row is not None else None

    # ---------------------------------------------------------------- search and statistics

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        user_id, query, kinds = request.user_id, request.query, request.kinds
        conversation_id, limit = request.conversation_id, request.limit
        memory_filter = request.memory_filter
        words = terms(query) if self._sql.client_analysis else query_words(query)
        # The shared layer bounds the query's terms; its distinct words (another
        # configuration's input) may still be more.
        words = list(dict.fromkeys(words))[:MAX_QUERY_TERMS]
        if not words:
            return []
        flt = memory_filter or MemoryFilter(user_id=user_id)
        rows = await self._pool.fetch(
            self._sql.search(len(words)),
            user_id,
            words,
            limit,
            "message" in kinds,
            "memory" in kinds,
            conversation_id,
            *_filter_args(flt),
        )
        return _hits(rows)

    async def _statistics(self, user_id: str) -> dict[str, object]:
        row = await self._pool.fetchrow(self._sql.statistics, user_id)
        convs, sessions, active, memories, roles, first, last = row
        by_role = {role: int(n) for role, n in json.loads(roles).items()}
        return {
            "messages": sum(by_role.values()),
            "conversations": int(convs),
            "sessions": int(sessions),
            "active_sessions": int(active),
            "memories": int(memories),
            "messages_by_role": by_role,
            "first_message_us": first,
            "last_message_us": last,
        }

    # ---------------------------------------------------------------- vectors

    def _vector_value(self, vector: Any) -> Any:
        """A vector as a query argument (``None`` without the pgvector codec)."""
        if vector is None or self._codec_schema is None:
            return None
        return Vector(vector)

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is None:
            return _recorded_space(dict(await self._pool.fetch(self._sql.read_meta)))
        sql = self._sql
        earlier = False
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(self.schema))
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
            [self._vector_value(vec) for _, vec in items],
        )

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        user_id, kinds, limit = request.user_id, request.kinds, request.limit
        conversation_id, memory_filter = request.conversation_id, request.memory_filter
        flt = memory_filter or MemoryFilter(user_id=user_id)
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            # Settings for this transaction only: how wide the HNSW search starts, and
            # (pgvector 0.8+) to keep scanning past rows the filters reject.
            await conn.execute(
                _SCAN_SETTINGS if self._iterative_scan else _PLAN_SETTINGS,
                str(min(_MAX_EF_SEARCH, max(self.ef_search, limit))),
            )
            rows = await conn.fetch(
                self._sql.vector_search,
                user_id,
                Vector(vector),
                limit,
                "message" in kinds,
                "memory" in kinds,
                conversation_id,
                *_filter_args(flt),
                self._exact_rows,
                self._exact_factor,
            )
        return _hits(rows)

    # ---------------------------------------------------------------- whole-store operations

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        row = await self._pool.fetchrow(self._sql.forget_user, user_id)
        messages, conversations, sessions, memories = (int(v) for v in row)
        return {
            "messages": messages,
            "conversations": conversations,
            "sessions": sessions,
            "memories": memories,
        }

    async def _compact(self) -> None:
        # Outside a transaction (VACUUM refuses to run in one); takes each table's
        # ACCESS EXCLUSIVE lock while rewriting it.
        await self._pool.execute(self._sql.compact)

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        by_user = user_id is not None
        user_args: list[Any] = [user_id] if by_user else []
        if kind == "messages":
            async for convs in self._export("conversations", user_id):
                for conversation_id, _owner in convs:  # type: ignore[misc]
                    after: tuple[int, int] = (-(2**63), -(2**63))
                    while True:
                        rows = await self._pool.fetch(
                            self._sql.export_messages, conversation_id, *after, _EXPORT_PAGE
                        )
                        if not rows:
                            break
                        yield [_message(r) for r in rows]
                        after = (rows[-1]["ts_us"], rows[-1]["seq"])
            return
        statement = self._sql.export(kind, by_user=by_user)
        key = ""
        while True:
            rows = await self._pool.fetch(statement, key, *user_args, _EXPORT_PAGE)
            if not rows:
                return
            if kind == "conversations":
                yield [(r[0], r[1]) for r in rows]
            elif kind == "memories":
                yield [_memory(r) for r in rows]
            else:
                yield [_session(r) for r in rows]
            key = rows[-1][0]


# ==================================================================== helpers


def _check(opt: dict[str, Any], name: str, kind: type, default: Any, low: float | None = None):
    value = opt.get(name)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidArgumentError(name, f"expected {kind.__name__}, got {type(value).__name__}")
    if low is not None and value < low:
        raise InvalidArgumentError(name, f"must be at least {low:g}, got {value!r}")
    return value


def _driver_dsn(url: MemoryURL) -> str:
    """The URL asyncpg gets: plain ``postgresql://`` scheme, our own options removed."""
    parts = urlsplit(url.raw)
    query = {k: v for k, v in url.query.items() if k in _DRIVER_OPTIONS}
    query.pop("application_name", None)  # passed as a server setting instead
    return parts._replace(scheme="postgresql", query=urlencode(query)).geturl()


def _server_settings(url: MemoryURL) -> dict[str, str]:
    return {"application_name": url.query.get("application_name", "bruno-memstore")}


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"bruno_memstore:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _count(status: str) -> int:
    """Rows affected, from a command status such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _filter_args(flt: MemoryFilter) -> list[Any]:
    return [
        flt.user_id,
        list(flt.memory_types),
        list(flt.categories),
        list(flt.tags),
        flt.min_confidence,
        flt.min_importance,
        flt.include_expired,
        flt.now_us,
    ]


_MESSAGE_FIELDS = MESSAGE_COLUMNS.split(",")

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


def _hits(rows: Sequence[Any]) -> list[SearchHit]:
    """Search rows ``(kind, score, message columns..., memory columns...)`` as hits."""
    width = len(_MESSAGE_FIELDS)
    hits: list[SearchHit] = []
    for row in rows:
        kind, score = row[0], float(row[1])
        if kind == "message":
            hits.append(SearchHit("message", score, message=_message(row, 2)))
        else:
            hits.append(SearchHit("memory", score, memory=_memory(row, 2 + width)))
    return hits


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


def _analysed(content: str) -> str:
    """The library's analysis of what is searchable in ``content``."""
    return index_text(content[:INDEXED_PREFIX])


def _message(row: Any, offset: int = 0) -> MessageRecord:
    o = offset
    return MessageRecord(
        id=row[o],
        conversation_id=row[o + 1],
        user_id=row[o + 2],
        role=row[o + 3],
        message_type=row[o + 4],
        content=row[o + 5],
        timestamp=row[o + 6],
        ts_us=row[o + 7],
        metadata=row[o + 8],
        parent_id=row[o + 9],
        seq=row[o + 10],
    )


def _memory(row: Any, offset: int = 0) -> MemoryRecord:
    o = offset
    return MemoryRecord(
        id=row[o],
        user_id=row[o + 1],
        content=row[o + 2],
        memory_type=row[o + 3],
        category=row[o + 4],
        tags=list(row[o + 5]),
        confidence=row[o + 6],
        importance=row[o + 7],
        created_us=row[o + 8],
        expires_us=row[o + 9],
        conversation_id=row[o + 10],
        payload=row[o + 11],
    )


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        session_id=row[0],
        user_id=row[1],
        conversation_id=row[2],
        is_active=row[3],
        started_us=row[4],
        payload=row[5],
    )
