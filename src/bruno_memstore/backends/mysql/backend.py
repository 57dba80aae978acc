"""``MySQLMemory``: MariaDB 10.11+ or MySQL 8 through ``asyncmy``, with a connection pool.

* InnoDB tables, ``utf8mb4`` end to end; ids use a binary NO PAD collation so they compare
  exactly (``'a'`` and ``'a '`` are different ids).
* Text and JSON metadata are stored as the exact text they were given (``LONGTEXT``), so
  key order and formatting survive; MariaDB's ``JSON`` is ``LONGTEXT`` anyway.
* Full-text search uses an InnoDB ``FULLTEXT`` index over a column of analysed terms (the
  library's shared analysis: Snowball stems, our stop list), queried with ``MATCH ... AGAINST``
  in natural language mode. Terms are rewritten so that InnoDB's limits do not lose them:
  short terms are padded past ``innodb_ft_min_token_size``, non-ASCII and overlong terms
  are replaced by a hash token, and the index is built with an empty stop list.
* Concurrent message writes are group-committed: one transaction and one log flush for
  every writer waiting at that moment (see :mod:`.batching`).
* The schema is migrated on first use, once, under ``GET_LOCK`` (several processes may
  start together).
* Vectors are float32 BLOBs in the records' own rows, written by the record's statement.
  MariaDB 10.11 and MySQL 8 have no vector index, so search is exact and in process: a
  user's vectors are loaded into a :class:`~bruno_memstore.backends.kit.vectors.UserVectorCache`
  and kept while the user's generation (bumped in every transaction that changes them)
  stays the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

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
from ...limits import Limits, Record
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
from ...search import ANALYSIS_VERSION, terms
from ...url import MemoryURL, redact_url
from ..kit.vectors import (
    AppendLogIndexes,
    StaleLog,
    UserVectorCache,
    vector_from_bytes,
    vector_to_bytes,
)
from .batching import GroupCommitter
from .schema import MIGRATIONS, AddColumn, Dialect, lock_name, render

try:
    import asyncmy
    from asyncmy.errors import MySQLError
except ImportError:  # pragma: no cover - exercised only without the extra
    asyncmy = None
    MySQLError = None

__all__ = ["INDEXED_CHARS", "MySQLMemory", "TermRewriter", "query_terms", "search_terms"]

_DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"
_PREFIX = re.compile(r"[A-Za-z0-9_]{0,48}")
_EXPORT_BATCH = 500
_IN_CHUNK = 500  # ids per IN (...) list
_LOG_TRIM = 256  # every this many appends of a user, its append log is trimmed ...
_LOG_KEEP = 1024  # ... to this many entries
_LOCK_TIMEOUT = 60  # seconds a process waits for another one's migration

# Driver errors worth retrying: lost/failed connections, deadlock, lock wait timeout,
# too many connections, server shutting down, connection killed.
_TRANSIENT_CODES = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055})
# Of those, the ones meaning "the server cannot be reached".
_UNAVAILABLE_CODES = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055})
_DUPLICATE_KEY = 1062
_NO_SUCH_TABLE = 1146

_MSG_COLS = (
    "id, conversation_id, user_id, role, message_type, ts_us, ts_text, parent_id, "
    "content, metadata, seq"
)
_MEM_COLS = (
    "id, user_id, content, memory_type, category, tags, confidence, importance, "
    "created_us, expires_us, conversation_id, payload"
)
_SES_COLS = "session_id, user_id, conversation_id, is_active, started_us, payload"

# InnoDB's tokenizer keeps words of innodb_ft_min_token_size..innodb_ft_max_token_size
# characters (3..84 by default) made of letters, digits and "_" of its own character
# tables. Terms outside that are rewritten, identically when indexing and querying, so every
# term the shared analysis produces stays searchable.
INDEXED_CHARS = 100_000


@dataclass(frozen=True, slots=True)
class TermRewriter:
    """Turns the shared analysis' terms into tokens InnoDB's full-text index keeps.

    Short ASCII terms are padded with ``_`` up to ``min_len``; other terms (non-ASCII, or
    longer than ``max_len``) become ``u`` and a hex BLAKE2b digest of the term.
    """

    min_len: int = 3
    max_len: int = 84

    def token(self, term: str) -> str:
        """The index token for one term."""
        if term.isascii():
            if len(term) < self.min_len:
                return term.ljust(self.min_len, "_")
            if len(term) <= self.max_len:
                return term
        size = max(self.min_len, min(21, self.max_len)) - 1
        digest = hashlib.blake2b(term.encode("utf-8", "surrogatepass"), digest_size=16)
        return "u" + digest.hexdigest()[:size]

    def index(self, text: str) -> str:
        """The full-text column's value for ``text`` (its first ``INDEXED_CHARS`` characters:
        analysing megabytes on every write costs more than a match deep inside is worth)."""
        return " ".join(self.token(t) for t in terms(text[:INDEXED_CHARS]))

    def query(self, query: str) -> str:
        """The ``AGAINST`` argument for a user query: its distinct terms, rewritten alike."""
        return " ".join(dict.fromkeys(self.token(t) for t in terms(query)))

    @property
    def signature(self) -> str:
        """What the stored tokens depend on; a change means re-indexing."""
        return f"{ANALYSIS_VERSION}:{self.min_len}:{self.max_len}"


_DEFAULT_REWRITER = TermRewriter()


def search_terms(text: str) -> str:
    """The full-text column's value for ``text`` on a server with InnoDB's default limits."""
    return _DEFAULT_REWRITER.index(text)


def query_terms(query: str) -> str:
    """The ``AGAINST`` argument for ``query`` on a server with InnoDB's default limits."""
    return _DEFAULT_REWRITER.query(query)


def _tag_hash(tag: str) -> bytes:
    return hashlib.sha256(tag.encode("utf-8", "surrogatepass")).digest()


def _user_hash(user_id: str) -> bytes:
    """The key of a user's vector generation row."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).digest()


def _vector_bytes(rec: MessageRecord | MemoryRecord) -> bytes | None:
    return None if rec.vector is None else vector_to_bytes(rec.vector)


class _Entry:
    """A memory entry's key in a cached vector index: its record without text, for the
    filters (identity-hashed; a loaded index holds each entry once)."""

    __slots__ = ("record",)

    def __init__(self, record: MemoryRecord) -> None:
        self.record = record


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def _placeholders(n: int) -> str:
    return ",".join(["%s"] * n)


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(slots=True)
class _Append:
    """One caller's ``_append_messages`` request, as queued for group commit."""

    conversation_id: str
    user_id: str
    records: Sequence[MessageRecord]
    enforce_owner: bool
    size: int


def _error_code(exc: BaseException) -> int | None:
    if MySQLError is not None and isinstance(exc, MySQLError) and exc.args:
        code = exc.args[0]
        return code if isinstance(code, int) else None
    return None


def _in_step(exc: BaseException) -> bool:
    """Whether a connection is still in step with its server after ``exc``: only when the
    server answered with an error packet (server codes; 2000-2999 are the client's own)."""
    code = _error_code(exc)
    return (
        code is not None
        and code >= 1000
        and not 2000 <= code < 3000
        and code not in _UNAVAILABLE_CODES
    )


def _packet_limits(max_packet: int) -> Limits:
    """A server's largest packet as the limit on one record's statement (with room to spare)."""
    return Limits(
        max_record_bytes=max_packet - 4096,
        size_limit=f"this server's max_allowed_packet ({max_packet} bytes)",
    )


class MySQLMemory(MemoryBackend, VectorPrimitives):
    """Memory in MariaDB 10.11+ or MySQL 8 (InnoDB, FULLTEXT), through an ``asyncmy`` pool.

    Args:
        url: ``mysql://user[:password]@host[:port]/database[?option=value...]``
            (``mariadb://`` is the same). URL options are those below; keyword
            arguments win over URL options.
        pool_size: connections in all; a third of them (at most 4) are kept for writes.
        pool_min_size: read connections kept open when idle.
        connect_timeout: seconds to wait for a connection and the server's handshake.
        pool_recycle: seconds after which an idle connection is replaced (-1: never).
        table_prefix: prefix of every table name (letters, digits, ``_``), to keep several
            stores in one database.
        write_batching: group-commit concurrent message writes (one transaction per batch).
        max_batch: most message writes in one group commit.
        vector_cache_users: users whose vectors are kept loaded in this process.
        **options: see :class:`~bruno_memstore.base.MemoryBackend` (``context_window``,
            ``operation_timeout``, default 30 seconds, and ``retry``).

    Raises:
        MissingDependencyError: ``asyncmy`` is not installed.
        InvalidArgumentError: a malformed URL or option.
    """

    backend_name: ClassVar[str] = "mysql"
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {Capability.VECTORS}
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
    }

    def __init__(self, url: str = _DEFAULT_URL, **options: Any) -> None:
        if asyncmy is None:
            raise MissingDependencyError("mysql", "asyncmy")
        parsed = MemoryURL.parse(url)
        if parsed.scheme not in ("mysql", "mariadb"):
            raise InvalidArgumentError("url", f"expected mysql:// or mariadb://, got {parsed}")
        parsed.check_options(set(self._URL_OPTIONS))
        merged: dict[str, Any] = {
            name: parsed.option(name, kind) for name, kind in self._URL_OPTIONS.items()
        }
        merged = {k: v for k, v in merged.items() if v is not None}
        merged.update(options)
        pool_size = merged.pop("pool_size", 10)
        pool_min = merged.pop("pool_min_size", 1)
        connect_timeout = merged.pop("connect_timeout", 10.0)
        pool_recycle = merged.pop("pool_recycle", 3600)
        prefix = merged.pop("table_prefix", "bruno_")
        batching = merged.pop("write_batching", True)
        max_batch = merged.pop("max_batch", 256)
        cache_users = merged.pop("vector_cache_users", 64)
        merged.setdefault("operation_timeout", 30.0)
        super().__init__(**merged)

        database = parsed.path.lstrip("/")
        if not database or "/" in database:
            raise InvalidArgumentError("url", f"must name one database, e.g. {_DEFAULT_URL}")
        for name, value in (
            ("pool_size", pool_size),
            ("max_batch", max_batch),
            ("vector_cache_users", cache_users),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(name, "must be a positive int")
        if (
            isinstance(pool_min, bool)
            or not isinstance(pool_min, int)
            or not (0 <= pool_min <= pool_size)
        ):
            raise InvalidArgumentError("pool_min_size", "must be an int in [0, pool_size]")
        if not isinstance(connect_timeout, (int, float)) or connect_timeout <= 0:
            raise InvalidArgumentError("connect_timeout", "must be a positive number")
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise InvalidArgumentError("table_prefix", "at most 48 letters, digits or underscores")
        self._url = parsed
        self._database = database
        self._prefix = prefix
        self._pool_size = pool_size
        self._pool_min = pool_min
        self._pool_recycle = int(pool_recycle)
        self._connect_timeout = float(connect_timeout)
        self._batching = bool(batching)
        self._max_batch = max_batch
        self._pool: Any = None
        self._write_pool: Any = None
        self._dialect: Dialect | None = None
        self._max_packet = 16 * 1024 * 1024
        self.limits = _packet_limits(self._max_packet)
        self._committer: GroupCommitter[_Append, AppendResult] | None = None
        self._terms = _DEFAULT_REWRITER
        self._t = {
            name: f"`{prefix}{name}`"
            for name in (
                "conversations",
                "messages",
                "memories",
                "memory_tags",
                "sessions",
                "vector_generations",
                "vector_space",
                "vector_log",
            )
        }
        # Two indexes per user: messages (searched unfiltered, or by conversation) and
        # memory entries (searched through the memory filter).
        self._vector_cache = UserVectorCache(max_users=2 * cache_users)
        # Message indexes follow the append log (the generation each holds).
        self._logged = AppendLogIndexes(self._vector_cache)

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> MySQLMemory:
        """Build from a parsed ``mysql://`` or ``mariadb://`` URL."""
        return cls(url.raw, **options)

    def describe(self) -> str:
        return redact_url(self._url.raw)

    def _redact(self, text: str) -> str:
        return self._url.redact(text)

    @property
    def table_prefix(self) -> str:
        """The prefix of this store's table names."""
        return self._prefix

    @property
    def dialect(self) -> str | None:
        """``"mariadb"`` or ``"mysql"`` once connected."""
        return self._dialect.name if self._dialect else None

    # ================================================================ errors

    def _is_transient(self, exc: BaseException) -> bool:
        code = _error_code(exc)
        if code is not None:
            return code in _TRANSIENT_CODES
        return isinstance(exc, (ConnectionError, OSError)) and not isinstance(exc, TimeoutError)

    def _is_unavailable(self, exc: BaseException) -> bool:
        code = _error_code(exc)
        if code is not None:
            return code in _UNAVAILABLE_CODES
        return isinstance(exc, (ConnectionError, OSError))

    def _is_systemic(self, exc: BaseException) -> bool:
        """Whether a failed group commit failed for the engine's sake, not one append's."""
        return self._is_transient(exc) or self._is_unavailable(exc)

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
            code = _error_code(exc)
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
            self._dialect = Dialect.detect(conn.get_server_info())
            async with conn.cursor() as cur:
                await self._migrate(cur)
                await cur.execute("SELECT @@max_allowed_packet")
                (packet,) = await cur.fetchone()
                self._max_packet = int(packet)
                self.limits = _packet_limits(self._max_packet)
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
            self._committer = GroupCommitter(
                self._write_transaction,
                is_systemic=self._is_systemic,
                max_batch=self._max_batch,
                max_inflight=min(2, writers),
                weight=lambda a: a.size,
                max_weight=self._max_packet // 2,
                closed_error=lambda: BackendUnavailableError(
                    "the memory was shut down", backend=self.backend_name, operation="store"
                ),
            )

    async def _close(self) -> None:
        committer, self._committer = self._committer, None
        if committer is not None:
            await committer.close()
        for name in ("_pool", "_write_pool"):
            pool = getattr(self, name)
            setattr(self, name, None)
            if pool is not None:
                pool.close()
                await pool.wait_closed()

    async def _migrate(self, cur: Any) -> None:
        assert self._dialect is not None
        p = self._prefix
        name = lock_name(self._database, p)
        await cur.execute("SELECT GET_LOCK(%s, %s)", (name, _LOCK_TIMEOUT))
        (got,) = await cur.fetchone()
        if got != 1:
            raise SchemaError(
                f"another process held the migration lock for {_LOCK_TIMEOUT}s",
                backend=self.backend_name,
                operation="connect",
            )
        try:
            try:
                await cur.execute(f"SELECT version FROM `{p}schema_version`")
                applied = {row[0] for row in await cur.fetchall()}
            except Exception as exc:
                if _error_code(exc) != _NO_SUCH_TABLE:
                    raise
                await cur.execute(
                    f"CREATE TABLE `{p}schema_version` ("
                    "version INT NOT NULL PRIMARY KEY, name VARCHAR(200) NOT NULL, "
                    "applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
                    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                )
                applied = set()
            latest = MIGRATIONS[-1].version
            if applied and max(applied) > latest:
                raise SchemaError(
                    f"the tables with prefix {p!r} are at schema version {max(applied)}, "
                    f"newer than this library's {latest}; upgrade bruno-memstore",
                    backend=self.backend_name,
                    operation="connect",
                )
            for migration in MIGRATIONS:
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    if isinstance(statement, AddColumn):
                        await self._add_column(cur, statement)
                        continue
                    await cur.execute(render(statement, p, self._dialect))
                    if "ft_stopwords" in statement and "CREATE TABLE" in statement:
                        # FULLTEXT indexes built from here on use our empty stop list.
                        await cur.execute(
                            "SET SESSION innodb_ft_user_stopword_table = %s",
                            (f"{self._database}/{p}ft_stopwords",),
                        )
                await cur.execute(
                    f"INSERT INTO `{p}schema_version` (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            await self._check_analysis(cur)
        finally:
            await cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
            await cur.fetchall()

    async def _add_column(self, cur: Any, step: AddColumn) -> None:
        table = f"{self._prefix}{step.table}"
        await cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND table_name = %s AND column_name = %s",
            (table, step.column),
        )
        if not await cur.fetchall():
            await cur.execute(f"ALTER TABLE `{table}` ADD COLUMN {step.column} {step.definition}")

    async def _check_analysis(self, cur: Any) -> None:
        """Re-index stored terms if the shared text analysis or the server's token limits
        changed since they were built."""
        await cur.execute("SELECT @@innodb_ft_min_token_size, @@innodb_ft_max_token_size")
        low, high = await cur.fetchone()
        self._terms = TermRewriter(int(low), int(high))
        table = f"`{self._prefix}settings`"
        await cur.execute(f"SELECT value FROM {table} WHERE name = 'analysis_version'")
        row = await cur.fetchone()
        signature = self._terms.signature
        if row is not None and row[0] == signature:
            return
        if row is not None:
            await self._reindex(cur, self._t["messages"], "seq")
            await self._reindex(cur, self._t["memories"], "id")
        await cur.execute(
            f"INSERT INTO {table} (name, value) VALUES ('analysis_version', %s) "
            "ON DUPLICATE KEY UPDATE value = %s",
            (signature, signature),
        )

    async def _reindex(self, cur: Any, table: str, key: str) -> None:
        after: Any = 0 if key == "seq" else ""
        while True:
            await cur.execute(
                f"SELECT {key}, content FROM {table} WHERE {key} > %s ORDER BY {key} LIMIT 500",
                (after,),
            )
            rows = await cur.fetchall()
            if not rows:
                return
            await cur.execute("START TRANSACTION")
            for k, content in rows:
                await cur.execute(
                    f"UPDATE {table} SET search_terms = %s WHERE {key} = %s",
                    (self._terms.index(content), k),
                )
            await cur.execute("COMMIT")
            after = rows[-1][0]

    async def schema_version(self) -> int:
        """The newest migration applied to this store's tables."""
        rows = await self._fetch(f"SELECT MAX(version) FROM `{self._prefix}schema_version`")
        return int(rows[0][0] or 0)

    # ================================================================ connections

    @asynccontextmanager
    async def _connection(self, *, write: bool = False) -> AsyncIterator[Any]:
        """A pooled connection, back in the pool only if it is known to be in step.

        A use that ends in an exception returns the connection only when the server itself
        reported the error (its error packet ends the reply). Any other end (cancelled, timed
        out, a driver or client-side error, a lost server) may leave bytes of a reply unread,
        which the next command would take for its own: such a connection is closed.
        ``write`` connections have autocommit off: every use must end in COMMIT/ROLLBACK.
        """
        pool = self._write_pool if write else self._pool
        if pool is None:
            raise BackendUnavailableError(
                "the memory is shut down", backend=self.backend_name, operation="connect"
            )
        conn = await pool.acquire()
        try:
            yield conn
        except BaseException as exc:
            if not _in_step(exc):
                conn.close()
                if _error_code(exc) in _UNAVAILABLE_CODES:
                    # The server went away: the idle connections are dead too.
                    await pool.clear()
            raise
        finally:
            pool.release(conn)  # a closed connection leaves the pool here

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A cursor in a transaction (opened by its first statement), committed at the end
        and rolled back on error."""
        async with self._connection(write=True) as conn, conn.cursor() as cur:
            try:
                yield cur
            except BaseException as exc:
                # Only a connection in step can be told to roll back; any other is closed
                # (by _connection), and the server rolls its transaction back.
                if conn.connected and _in_step(exc):
                    try:
                        await conn.rollback()
                    except Exception:
                        conn.close()
                raise
            # conn.commit(), not a COMMIT statement: only it refreshes the driver's view of
            # the transaction status, and the pool discards a connection it thinks is mid-
            # transaction (which would cost a new connection per write).
            await conn.commit()

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._connection() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)
            return list(await cur.fetchall())

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self._connection() as conn, conn.cursor() as cur:
            return int(await cur.execute(sql, args))

    # ================================================================ conversations

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        rows = await self._fetch(
            f"SELECT user_id FROM {self._t['conversations']} WHERE conversation_id = %s",
            (conversation_id,),
        )
        return rows[0][0] if rows else None

    async def _claim(
        self, cur: Any, claims: dict[str, str], created: set[str] | None = None
    ) -> dict[str, str]:
        """Create missing conversations for their claimant (adding them to ``created``);
        return every owner.

        Every returned row is locked in share mode until the transaction ends, so the
        conversation cannot be deleted under a writer. No gap locks are taken (READ
        COMMITTED), and new rows are inserted in sorted order, so writers never deadlock.
        """
        table = self._t["conversations"]
        convs = sorted(claims)
        for _attempt in range(8):
            await cur.execute(
                f"SELECT conversation_id, user_id FROM {table} "
                f"WHERE conversation_id IN ({_placeholders(len(convs))}) LOCK IN SHARE MODE",
                convs,
            )
            owners = {row[0]: row[1] for row in await cur.fetchall()}
            missing = [c for c in convs if c not in owners]
            if not missing:
                return owners
            now = int(time.time() * 1_000_000)
            flat: list[Any] = []
            for conv in missing:
                flat += (conv, claims[conv], now)
            try:
                await cur.execute(
                    f"INSERT INTO {table} (conversation_id, user_id, created_us) VALUES "
                    + ",".join(["(%s,%s,%s)"] * len(missing)),
                    flat,
                )
            except Exception as exc:
                if _error_code(exc) != _DUPLICATE_KEY:
                    raise
                continue  # claimed concurrently: read the winner
            owners.update((conv, claims[conv]) for conv in missing)
            if created is not None:
                created.update(missing)
            return owners
        raise AssertionError("conversation claims kept colliding")  # pragma: no cover

    # ================================================================ messages

    def _record_size(self, record: Record) -> int:
        # The size of the statement that writes the record: the server answers one larger
        # than its packet limit with error 1153 (see ``_packet_limits``).
        if isinstance(record, MessageRecord):
            return self._row_size(record)
        if isinstance(record, MemoryRecord):
            return self._memory_size(record)
        # Sent twice (insert, or update on a duplicate key), escaped (up to twice the text).
        return 4 * len(record.payload.encode("utf-8")) + 1024

    @staticmethod
    def _memory_size(rec: MemoryRecord) -> int:
        # Content, its search terms and the payload (which holds the content again), each
        # escaped; the upsert sends every value twice (insert, or update on a duplicate key).
        text = len(rec.content.encode("utf-8"))
        payload = len(rec.payload.encode("utf-8"))
        tags = sum(len(t.encode("utf-8")) + 4 for t in rec.tags)
        vector = 0 if rec.vector is None else 2 * 4 * int(np.size(rec.vector))
        return 2 * (2 * (2 * text + payload + tags) + vector) + 1024

    @staticmethod
    def _row_size(rec: MessageRecord) -> int:
        # Escaping can double a string; the search terms are about the content's size.
        content = len(rec.content.encode("utf-8"))
        vector = 0 if rec.vector is None else 2 * 4 * int(np.size(rec.vector))
        return 2 * (2 * content + len(rec.metadata.encode("utf-8"))) + vector + 1024

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        request = _Append(
            conversation_id,
            user_id,
            records,
            enforce_owner,
            sum(self._row_size(r) for r in records),
        )
        if self._committer is not None:
            return await self._committer.submit(request)
        (result,) = await self._write_transaction([request])
        if isinstance(result, BaseException):
            raise result
        return result

    async def _write_transaction(
        self, requests: Sequence[_Append]
    ) -> list[AppendResult | BaseException]:
        """Write several appends in one transaction (all or nothing); an append refused by
        the ownership rule gets its error as its result."""
        claims: dict[str, str] = {}
        for req in requests:
            claims.setdefault(req.conversation_id, req.user_id)
        created: set[str] = set()
        async with self._transaction() as cur:
            owners = await self._claim(cur, claims, created)
            results: list[AppendResult | BaseException | None] = [None] * len(requests)
            wanted: list[tuple[int, MessageRecord, str]] = []
            for i, req in enumerate(requests):
                owner = owners[req.conversation_id]
                if req.enforce_owner and owner != req.user_id:
                    results[i] = OwnershipError(
                        f"conversation {req.conversation_id!r} belongs to another user",
                        backend=self.backend_name,
                        operation="store_message",
                    )
                    continue
                wanted.extend((i, rec, owner) for rec in req.records)
            inserted_by = await self._insert_new(cur, wanted)
            # A conversation created here that nothing went into is taken back: a write
            # whose ids were all stored writes nothing (an append of no records keeps it).
            used = {
                req.conversation_id
                for i, req in enumerate(requests)
                if results[i] is None
                and (not req.records or any(inserted_by.get(r.id) == i for r in req.records))
            }
            unclaimed = created - used
            await self._unclaim(cur, sorted(unclaimed))
            appended: dict[str, list[str]] = {}
            for i, rec, owner in wanted:
                if rec.vector is not None and inserted_by.get(rec.id) == i:
                    appended.setdefault(owner, []).append(rec.id)
            await self._messages_appended(cur, appended)
        for i, req in enumerate(requests):
            if results[i] is None:
                owner = owners[req.conversation_id]
                existing = frozenset(r.id for r in req.records if inserted_by.get(r.id) != i)
                results[i] = AppendResult(owner, existing)
            elif requests[i].conversation_id in unclaimed:
                # Refused for a claim that was taken back: it may claim the conversation now.
                (results[i],) = await self._write_transaction([req])
        return results  # type: ignore[return-value]

    async def _unclaim(self, cur: Any, conversation_ids: list[str]) -> None:
        """Delete conversations this transaction created (they hold nothing)."""
        if conversation_ids:
            await cur.execute(
                f"DELETE FROM {self._t['conversations']} "
                f"WHERE conversation_id IN ({_placeholders(len(conversation_ids))})",
                conversation_ids,
            )

    async def _insert_new(
        self, cur: Any, wanted: list[tuple[int, MessageRecord, str]]
    ) -> dict[str, int]:
        """Insert the records whose id is not stored yet; return ``id -> request index``.

        New ids are the rule, so the rows are inserted at once; only when that hits a
        stored id (a retry) are the stored ids looked up and the rest inserted.
        """
        inserted_by: dict[str, int] = {}
        if not wanted:
            return inserted_by
        table = self._t["messages"]
        found: set[str] = set()
        for _attempt in range(8):
            rows: list[tuple[int, MessageRecord, str]] = []
            taken: set[str] = set(inserted_by)
            for i, rec, owner in wanted:
                if rec.id in found or rec.id in taken:
                    continue
                taken.add(rec.id)
                rows.append((i, rec, owner))
            try:
                for chunk in self._packets(rows):
                    await self._insert_rows(cur, chunk)
                    inserted_by.update((rec.id, i) for i, rec, _ in chunk)
            except Exception as exc:
                # A stored id (or one committed meanwhile by another connection): only the
                # statement was rolled back, so look the ids up and insert the rest.
                if _error_code(exc) != _DUPLICATE_KEY:
                    raise
                ids = list(dict.fromkeys(r.id for _, r, _ in wanted if r.id not in inserted_by))
                for chunk in _chunks(ids):
                    await cur.execute(
                        f"SELECT id FROM {table} WHERE id IN ({_placeholders(len(chunk))})",
                        chunk,
                    )
                    found.update(row[0] for row in await cur.fetchall())
                continue
            return inserted_by
        raise AssertionError("ids kept colliding with concurrent writers")  # pragma: no cover

    def _packets(
        self, rows: list[tuple[int, MessageRecord, str]]
    ) -> Iterable[list[tuple[int, MessageRecord, str]]]:
        budget = self._max_packet // 2
        chunk: list[tuple[int, MessageRecord, str]] = []
        size = 0
        for row in rows:
            row_size = self._row_size(row[1])
            if chunk and size + row_size > budget:
                yield chunk
                chunk, size = [], 0
            chunk.append(row)
            size += row_size
        if chunk:
            yield chunk

    async def _insert_rows(self, cur: Any, rows: list[tuple[int, MessageRecord, str]]) -> None:
        flat: list[Any] = []
        for _, rec, owner in rows:
            flat += (
                rec.id,
                rec.conversation_id,
                owner,
                rec.role,
                rec.message_type,
                rec.ts_us,
                rec.timestamp,
                rec.parent_id,
                rec.content,
                rec.metadata,
                self._terms.index(rec.content),
                _vector_bytes(rec),
            )
        await cur.execute(
            f"INSERT INTO {self._t['messages']} (id, conversation_id, user_id, role, "
            "message_type, ts_us, ts_text, parent_id, content, metadata, search_terms, vector) "
            "VALUES " + ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * len(rows)),
            flat,
        )

    @staticmethod
    def _message(row: Sequence[Any]) -> MessageRecord:
        return MessageRecord(
            id=row[0],
            conversation_id=row[1],
            user_id=row[2],
            role=row[3],
            message_type=row[4],
            ts_us=int(row[5]),
            timestamp=row[6],
            parent_id=row[7],
            content=row[8],
            metadata=row[9],
            seq=int(row[10]),
        )

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        out: list[MessageRecord] = []
        for chunk in _chunks(list(dict.fromkeys(ids))):
            rows = await self._fetch(
                f"SELECT {_MSG_COLS} FROM {self._t['messages']} "
                f"WHERE id IN ({_placeholders(len(chunk))})",
                chunk,
            )
            out.extend(self._message(r) for r in rows)
        return out

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        where: list[str] = []
        args: list[Any] = []
        if conversation_id is not None:
            where.append("conversation_id = %s")
            args.append(conversation_id)
        if user_id is not None:
            where.append("user_id = %s")
            args.append(user_id)
        sql = f"SELECT {_MSG_COLS} FROM {self._t['messages']} WHERE {' AND '.join(where)}"
        if limit is None:
            rows = await self._fetch(sql + " ORDER BY ts_us, seq", args)
            return [self._message(r) for r in rows]
        rows = await self._fetch(sql + " ORDER BY ts_us DESC, seq DESC LIMIT %s", [*args, limit])
        return [self._message(r) for r in reversed(rows)]

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        t = self._t
        if keep_roles:
            roles = sorted(keep_roles)
            async with self._transaction() as cur:
                await cur.execute(
                    f"SELECT user_id FROM {t['conversations']} WHERE conversation_id = %s",
                    (conversation_id,),
                )
                owners = [row[0] for row in await cur.fetchall()]
                deleted = await cur.execute(
                    f"DELETE FROM {t['messages']} WHERE conversation_id = %s "
                    f"AND role NOT IN ({_placeholders(len(roles))})",
                    [conversation_id, *roles],
                )
                if deleted:
                    await self._messages_changed(cur, owners)
            return int(deleted)
        async with self._transaction() as cur:
            # The exclusive row lock waits for appends in flight (they hold it shared).
            await cur.execute(
                f"SELECT user_id FROM {t['conversations']} WHERE conversation_id = %s FOR UPDATE",
                (conversation_id,),
            )
            owners = [row[0] for row in await cur.fetchall()]
            deleted = await cur.execute(
                f"DELETE FROM {t['messages']} WHERE conversation_id = %s", (conversation_id,)
            )
            await cur.execute(
                f"DELETE FROM {t['sessions']} WHERE conversation_id = %s", (conversation_id,)
            )
            await cur.execute(
                f"DELETE FROM {t['conversations']} WHERE conversation_id = %s",
                (conversation_id,),
            )
            if deleted:
                await self._messages_changed(cur, owners)
        return int(deleted)

    # ================================================================ memories

    @staticmethod
    def _memory(row: Sequence[Any]) -> MemoryRecord:
        return MemoryRecord(
            id=row[0],
            user_id=row[1],
            content=row[2],
            memory_type=row[3],
            category=row[4],
            tags=json.loads(row[5]),
            confidence=float(row[6]),
            importance=float(row[7]),
            created_us=int(row[8]),
            expires_us=int(row[9]) if row[9] is not None else None,
            conversation_id=row[10],
            payload=row[11],
        )

    async def _put_memory(self, record: MemoryRecord) -> None:
        t = self._t
        cols = (
            "id, user_id, content, memory_type, category, tags, confidence, importance, "
            "created_us, expires_us, conversation_id, payload, search_terms, vector"
        )
        names = cols.split(", ")
        values = (
            record.id,
            record.user_id,
            record.content,
            record.memory_type,
            record.category,
            json.dumps(record.tags, ensure_ascii=False),
            record.confidence,
            record.importance,
            record.created_us,
            record.expires_us,
            record.conversation_id,
            record.payload,
            self._terms.index(record.content),
            _vector_bytes(record),
        )
        async with self._transaction() as cur:
            affected = await self._upsert_owned(cur, t["memories"], names, values)
            if affected is None:
                raise memory_taken(record.id)
            await cur.execute(f"DELETE FROM {t['memory_tags']} WHERE memory_id = %s", (record.id,))
            hashes = list(dict.fromkeys(_tag_hash(tag) for tag in record.tags))
            if hashes:
                flat: list[Any] = []
                for h in hashes:
                    flat += (record.id, record.user_id, h)
                await cur.execute(
                    f"INSERT INTO {t['memory_tags']} (memory_id, user_id, tag_hash) VALUES "
                    + ",".join(["(%s,%s,%s)"] * len(hashes)),
                    flat,
                )
            if record.vector is not None or affected != 1:
                # A replaced entry's old vector went with the old row (and its filter
                # columns, which loaded indexes keep, changed).
                await self._memories_changed(cur, [record.user_id])

    @staticmethod
    async def _upsert_owned(
        cur: Any, table: str, names: Sequence[str], values: Sequence[Any]
    ) -> int | None:
        """Insert a row keyed by ``names[0]``, or update the stored row if its ``user_id``
        (``names[1]``) is the same; ``None`` if it is another user's (left unchanged).

        One statement decides: the update sets each column only where the stored owner is
        the writer's, and locks the row either way. Returns the affected rows: 1 for a new
        row, 2 for a changed one, 0 for one found unchanged.
        """
        # ``col = %s`` rather than ``VALUES(col)``, which MySQL 8.0.20+ deprecates with a
        # warning on every statement.
        updates = ", ".join(f"{c} = IF(user_id = %s, %s, {c})" for c in names[2:])
        user = values[1]
        affected = int(
            await cur.execute(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({_placeholders(len(names))}) "
                f"ON DUPLICATE KEY UPDATE {updates}",
                (*values, *(x for v in values[2:] for x in (user, v))),
            )
        )
        if affected == 0:  # unchanged, or another user's: the row is locked, read its owner
            await cur.execute(f"SELECT user_id FROM {table} WHERE {names[0]} = %s", values[:1])
            (owner,) = await cur.fetchone()
            if owner != user:
                return None
        return affected

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        rows = await self._fetch(
            f"SELECT {_MEM_COLS} FROM {self._t['memories']} WHERE id = %s", (memory_id,)
        )
        return self._memory(rows[0]) if rows else None

    def _memory_where(self, flt: MemoryFilter, alias: str = "m") -> tuple[str, list[Any]]:
        """SQL conditions (beyond ``user_id``) for every filter of ``flt``."""
        sql: list[str] = []
        args: list[Any] = []
        if flt.memory_types:
            sql.append(f"{alias}.memory_type IN ({_placeholders(len(flt.memory_types))})")
            args += flt.memory_types
        if flt.categories:
            sql.append(f"{alias}.category IN ({_placeholders(len(flt.categories))})")
            args += flt.categories
        if flt.min_confidence > 0:
            sql.append(f"{alias}.confidence >= %s")
            args.append(flt.min_confidence)
        if flt.min_importance > 0:
            sql.append(f"{alias}.importance >= %s")
            args.append(flt.min_importance)
        if not flt.include_expired:
            sql.append(f"({alias}.expires_us IS NULL OR {alias}.expires_us > %s)")
            args.append(flt.now_us)
        if flt.tags:
            hashes = list(dict.fromkeys(_tag_hash(tag) for tag in flt.tags))
            sql.append(
                f"EXISTS (SELECT 1 FROM {self._t['memory_tags']} g WHERE g.user_id = "
                f"{alias}.user_id AND g.memory_id = {alias}.id "
                f"AND g.tag_hash IN ({_placeholders(len(hashes))}))"
            )
            args += hashes
        return "".join(f" AND {s}" for s in sql), args

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        where, args = self._memory_where(flt)
        rows = await self._fetch(
            f"SELECT {', '.join('m.' + c for c in _MEM_COLS.split(', '))} "
            f"FROM {self._t['memories']} m WHERE m.user_id = %s{where} "
            "ORDER BY m.importance DESC, m.created_us DESC, m.id LIMIT %s",
            [flt.user_id, *args, flt.limit],
        )
        return [self._memory(r) for r in rows]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        async with self._transaction() as cur:
            await cur.execute(
                f"SELECT user_id FROM {self._t['memories']} WHERE id = %s FOR UPDATE",
                (memory_id,),
            )
            owners = [row[0] for row in await cur.fetchall()]
            if user_id is not None and owners and owners[0] != user_id:
                raise memory_taken(memory_id)  # the locked row stays as it is
            await cur.execute(
                f"DELETE FROM {self._t['memory_tags']} WHERE memory_id = %s", (memory_id,)
            )
            deleted = await cur.execute(
                f"DELETE FROM {self._t['memories']} WHERE id = %s", (memory_id,)
            )
            if deleted:
                await self._memories_changed(cur, owners)
        return bool(deleted)

    async def _purge_expired(self, now_us: int) -> int:
        total = 0
        while True:
            rows = await self._fetch(
                f"SELECT id, user_id FROM {self._t['memories']} WHERE expires_us <= %s LIMIT 1000",
                (now_us,),
            )
            if not rows:
                return total
            ids = [r[0] for r in rows]
            async with self._transaction() as cur:
                ph = _placeholders(len(ids))
                await cur.execute(
                    f"DELETE FROM {self._t['memory_tags']} WHERE memory_id IN ({ph})", ids
                )
                deleted = int(
                    await cur.execute(
                        f"DELETE FROM {self._t['memories']} WHERE id IN ({ph}) "
                        "AND expires_us <= %s",
                        [*ids, now_us],
                    )
                )
                if deleted:
                    await self._memories_changed(cur, {r[1] for r in rows})
                total += deleted

    # ================================================================ sessions

    @staticmethod
    def _session(row: Sequence[Any]) -> SessionRecord:
        return SessionRecord(
            session_id=row[0],
            user_id=row[1],
            conversation_id=row[2],
            is_active=bool(row[3]),
            started_us=int(row[4]),
            payload=row[5],
        )

    async def _put_session(self, record: SessionRecord) -> None:
        async with self._transaction() as cur:
            owners = await self._claim(cur, {record.conversation_id: record.user_id})
            if owners[record.conversation_id] != record.user_id:
                raise OwnershipError(
                    f"conversation {record.conversation_id!r} belongs to another user",
                    backend=self.backend_name,
                    operation="create_session",
                )
            values = (
                record.session_id,
                record.user_id,
                record.conversation_id,
                int(record.is_active),
                record.started_us,
                record.payload,
            )
            # Refused: the transaction rolls back, with the claim it may have made.
            names = _SES_COLS.split(", ")
            if await self._upsert_owned(cur, self._t["sessions"], names, values) is None:
                raise session_taken(record.session_id)

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        rows = await self._fetch(
            f"SELECT {_SES_COLS} FROM {self._t['sessions']} WHERE session_id = %s", (session_id,)
        )
        return self._session(rows[0]) if rows else None

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        sql = f"SELECT {_SES_COLS} FROM {self._t['sessions']} WHERE user_id = %s"
        args: list[Any] = [user_id]
        if conversation_id is not None:
            sql += " AND conversation_id = %s"
            args.append(conversation_id)
        if active_only:
            sql += " AND is_active = 1"
        rows = await self._fetch(sql + " ORDER BY started_us DESC, session_id DESC LIMIT 1", args)
        return self._session(rows[0]) if rows else None

    # ================================================================ search and statistics

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        user_id, query, kinds = request.user_id, request.query, request.kinds
        conversation_id, limit = request.conversation_id, request.limit
        memory_filter = request.memory_filter
        q = self._terms.query(query)
        if not q:
            return []
        match = "MATCH({a}.search_terms) AGAINST(%s IN NATURAL LANGUAGE MODE)"
        hits: list[SearchHit] = []
        if "message" in kinds:
            sql = (
                f"SELECT {', '.join('x.' + c for c in _MSG_COLS.split(', '))}, "
                f"{match.format(a='x')} AS score FROM {self._t['messages']} x "
                f"WHERE {match.format(a='x')} AND x.user_id = %s"
            )
            args: list[Any] = [q, q, user_id]
            if conversation_id is not None:
                sql += " AND x.conversation_id = %s"
                args.append(conversation_id)
            sql += " ORDER BY score DESC, x.ts_us DESC, x.id LIMIT %s"
            rows = await self._fetch(sql, [*args, limit])
            hits += [SearchHit("message", float(r[-1]), message=self._message(r)) for r in rows]
        if "memory" in kinds:
            flt = memory_filter or MemoryFilter(user_id=user_id, now_us=int(time.time() * 1e6))
            where, fargs = self._memory_where(flt)
            sql = (
                f"SELECT {', '.join('m.' + c for c in _MEM_COLS.split(', '))}, "
                f"{match.format(a='m')} AS score FROM {self._t['memories']} m "
                f"WHERE {match.format(a='m')} AND m.user_id = %s{where}"
            )
            args = [q, q, user_id, *fargs]
            if conversation_id is not None:
                sql += " AND m.conversation_id = %s"
                args.append(conversation_id)
            sql += " ORDER BY score DESC, m.created_us DESC, m.id LIMIT %s"
            rows = await self._fetch(sql, [*args, limit])
            hits += [SearchHit("memory", float(r[-1]), memory=self._memory(r)) for r in rows]
        hits.sort(key=lambda h: -h.score)
        return hits[:limit]

    async def _statistics(self, user_id: str) -> dict[str, object]:
        t = self._t
        rows = await self._fetch(
            f"SELECT role, COUNT(*), MIN(ts_us), MAX(ts_us) FROM {t['messages']} "
            "WHERE user_id = %s GROUP BY role",
            (user_id,),
        )
        counts = await self._fetch(
            f"SELECT (SELECT COUNT(*) FROM {t['conversations']} WHERE user_id = %s) AS c, "
            f"(SELECT COUNT(*) FROM {t['sessions']} WHERE user_id = %s) AS s, "
            f"(SELECT COUNT(*) FROM {t['sessions']} WHERE user_id = %s AND is_active = 1) AS a, "
            f"(SELECT COUNT(*) FROM {t['memories']} WHERE user_id = %s) AS m",
            (user_id,) * 4,
        )
        convs, sessions, active, memories = (int(v) for v in counts[0])
        return {
            "messages": sum(int(r[1]) for r in rows),
            "conversations": convs,
            "sessions": sessions,
            "active_sessions": active,
            "memories": memories,
            "messages_by_role": {r[0]: int(r[1]) for r in rows},
            "first_message_us": min((int(r[2]) for r in rows), default=None),
            "last_message_us": max((int(r[3]) for r in rows), default=None),
        }

    # ================================================================ vectors

    # Every counter update below is the last statement of its transaction: the generation
    # rows stay locked until it commits, taken in one (sorted) order everywhere, so writers
    # never deadlock on them, and a user's generations commit in the order they were given.

    async def _count(self, cur: Any, users: Iterable[str], update: str, fresh: str) -> list[bytes]:
        hashes = sorted({_user_hash(u) for u in users})
        if hashes:
            await cur.execute(
                f"INSERT INTO {self._t['vector_generations']} "
                "(user_hash, generation, message_epoch, memory_generation) VALUES "
                + ",".join([f"(%s,{fresh})"] * len(hashes))
                + f" ON DUPLICATE KEY UPDATE {update}",
                hashes,
            )
        return hashes

    async def _messages_appended(self, cur: Any, appended: dict[str, list[str]]) -> None:
        """Log the ids of message vectors just appended, under each owner's next generation."""
        hashes = await self._count(cur, appended, "generation = generation + 1", "1,0,0")
        if not hashes:
            return
        t = self._t
        await cur.execute(
            f"SELECT user_hash, generation FROM {t['vector_generations']} "
            f"WHERE user_hash IN ({_placeholders(len(hashes))})",
            hashes,
        )
        generations = dict(await cur.fetchall())
        flat: list[Any] = []
        for owner, ids in appended.items():
            h = _user_hash(owner)
            flat += (h, generations[h], "\0".join(ids))
        await cur.execute(
            f"INSERT INTO {t['vector_log']} (user_hash, generation, ids) VALUES "
            + ",".join(["(%s,%s,%s)"] * len(appended)),
            flat,
        )
        for h in hashes:  # keep the last _LOG_KEEP appends (a reader further behind reloads)
            if generations[h] % _LOG_TRIM == 0:
                await cur.execute(
                    f"DELETE FROM {t['vector_log']} WHERE user_hash = %s AND generation <= %s",
                    (h, generations[h] - _LOG_KEEP),
                )

    async def _messages_changed(self, cur: Any, users: Iterable[str]) -> None:
        """A message vector of these users was removed or replaced: a new message epoch."""
        # Assignments apply left to right: the epoch takes the new generation.
        hashes = await self._count(
            cur, users, "generation = generation + 1, message_epoch = generation", "1,1,0"
        )
        if hashes:
            await cur.execute(
                f"DELETE FROM {self._t['vector_log']} "
                f"WHERE user_hash IN ({_placeholders(len(hashes))})",
                hashes,
            )

    async def _memories_changed(self, cur: Any, users: Iterable[str]) -> None:
        """A memory-entry vector of these users was added, replaced or removed."""
        await self._count(cur, users, "memory_generation = memory_generation + 1", "0,0,1")

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is None:
            rows = await self._fetch(
                f"SELECT model, dimension FROM {self._t['vector_space']} WHERE id = 1"
            )
            return VectorSpace(rows[0][0], int(rows[0][1])) if rows else None
        table = self._t["vector_space"]
        if not replace:
            await self._execute(
                f"INSERT INTO {table} (id, model, dimension, epoch) VALUES (1, %s, %s, 1) "
                "ON DUPLICATE KEY UPDATE id = id",
                (space.model, space.dimension),
            )
            recorded = await self._claim_vector_space(None)
            assert recorded is not None
            return recorded
        # Vectors first: an interrupted run leaves the old model recorded over fewer
        # vectors (searches stay right), never the new one over old vectors.
        await self._drop_vectors()
        await self._execute(
            f"INSERT INTO {table} (id, model, dimension, epoch) VALUES (1, %s, %s, 1) "
            "ON DUPLICATE KEY UPDATE model = %s, dimension = %s, epoch = epoch + 1",
            (space.model, space.dimension, space.model, space.dimension),
        )
        self._vector_cache.clear()
        return space

    async def _drop_vectors(self) -> None:
        """Set every vector to NULL, in bounded statements (by primary key ranges)."""
        t = self._t
        ((low, high),) = await self._fetch(f"SELECT MIN(seq), MAX(seq) FROM {t['messages']}")
        if high is not None:
            for start in range(int(low), int(high) + 1, 5000):
                await self._execute(
                    f"UPDATE {t['messages']} SET vector = NULL "
                    "WHERE seq >= %s AND seq < %s AND vector IS NOT NULL",
                    (start, start + 5000),
                )
        after = ""
        while True:
            rows = await self._fetch(
                f"SELECT id FROM {t['memories']} WHERE id > %s ORDER BY id LIMIT 1000", (after,)
            )
            if not rows:
                return
            ids = [r[0] for r in rows]
            await self._execute(
                f"UPDATE {t['memories']} SET vector = NULL "
                f"WHERE id IN ({_placeholders(len(ids))}) AND vector IS NOT NULL",
                ids,
            )
            after = ids[-1]

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        table = self._t["messages" if kind == "message" else "memories"]
        pairs = [(str(rid), vector_to_bytes(vec)) for rid, vec in items]
        if not pairs:
            return
        async with self._transaction() as cur:
            owners: set[str] = set()
            for chunk in _chunks(pairs, 128):
                ids = [rid for rid, _ in chunk]
                cases: list[Any] = []
                for rid, blob in chunk:
                    cases += (rid, blob)
                await cur.execute(
                    f"UPDATE {table} SET vector = CASE id "
                    + " ".join(["WHEN %s THEN %s"] * len(chunk))
                    + f" END WHERE id IN ({_placeholders(len(ids))})",
                    [*cases, *ids],
                )
                await cur.execute(
                    f"SELECT DISTINCT user_id FROM {table} WHERE id IN ({_placeholders(len(ids))})",
                    ids,
                )
                owners.update(row[0] for row in await cur.fetchall())
            if kind == "message":
                await self._messages_changed(cur, owners)
            else:
                await self._memories_changed(cur, owners)

    async def _vector_state(self, user_id: str) -> tuple[Any, int, Any, Any]:
        """The store's epoch and the user's message generation, message epoch and memory
        generation (``None`` for a user who never had vectors)."""
        g = self._t["vector_generations"]
        rows = await self._fetch(
            # Named columns: MariaDB would otherwise name them after the statement's text,
            # binary user hash included, which the driver cannot always decode.
            f"SELECT (SELECT epoch FROM {self._t['vector_space']} WHERE id = 1) AS e, "
            f"(SELECT generation FROM {g} WHERE user_hash = %s) AS g, "
            f"(SELECT message_epoch FROM {g} WHERE user_hash = %s) AS me, "
            f"(SELECT memory_generation FROM {g} WHERE user_hash = %s) AS mg",
            (_user_hash(user_id),) * 3,
        )
        epoch, generation, message_epoch, memory_generation = rows[0]
        return epoch, int(generation or 0), message_epoch, memory_generation

    async def _message_index(
        self, user_id: str, key: tuple[Any, Any], generation: int, nbytes: int
    ) -> Any:
        """The user's message vectors as of ``generation``: the index loaded for this
        message epoch, plus the vectors logged (appended) since it was loaded or last
        brought up to date."""

        async def delta(after: int) -> tuple[list[tuple[Any, ...]], int] | None:
            items = await self._appended_vectors(user_id, key[1], after, generation, nbytes)
            return None if items is None else (items, generation)

        try:
            return await self._logged.index(
                f"{user_id}\0message",
                key,
                generation,
                lambda: self._message_vectors(user_id, nbytes),
                delta,
            )
        except StaleLog as exc:  # pragma: no cover - only under a storm of deletions
            raise BackendError(
                str(exc), backend=self.backend_name, operation="vector_search"
            ) from exc

    async def _appended_vectors(
        self, user_id: str, epoch: Any, after: int, upto: int, nbytes: int
    ) -> list[tuple[Any, ...]] | None:
        """The message vectors logged in generations ``(after, upto]`` of the message epoch
        ``epoch``, or ``None`` if the log does not hold all of them any more."""
        h = _user_hash(user_id)
        rows = await self._fetch(
            f"SELECT l.generation, l.ids, (SELECT message_epoch FROM "
            f"{self._t['vector_generations']} WHERE user_hash = %s) AS me "
            f"FROM {self._t['vector_log']} l WHERE l.user_hash = %s "
            "AND l.generation > %s AND l.generation <= %s",
            (h, h, after, upto),
        )
        if len(rows) != upto - after or any(r[2] != epoch for r in rows):
            return None
        ids = [rid for r in rows for rid in r[1].split("\0")]
        out: list[tuple[Any, ...]] = []
        for chunk in _chunks(ids):
            found = await self._fetch(
                f"SELECT id, conversation_id, vector FROM {self._t['messages']} "
                f"WHERE id IN ({_placeholders(len(chunk))}) AND LENGTH(vector) = %s",
                [*chunk, nbytes],
            )
            out += [(r[0], vector_from_bytes(r[2]), None, r[1]) for r in found]
        return out

    async def _message_vectors(self, user_id: str, nbytes: int) -> list[tuple[Any, ...]]:
        rows = await self._fetch(
            f"SELECT id, conversation_id, vector FROM {self._t['messages']} "
            "WHERE user_id = %s AND LENGTH(vector) = %s",
            (user_id, nbytes),
        )
        # Keyed by id, labelled by conversation (filtered with array operations).
        return [(r[0], vector_from_bytes(r[2]), None, r[1]) for r in rows]

    async def _memory_vectors(self, user_id: str, nbytes: int) -> list[tuple[Any, ...]]:
        rows = await self._fetch(
            "SELECT id, user_id, memory_type, category, tags, confidence, importance, "
            f"created_us, expires_us, conversation_id, vector FROM {self._t['memories']} "
            "WHERE user_id = %s AND LENGTH(vector) = %s",
            (user_id, nbytes),
        )
        out: list[tuple[Any, ...]] = []
        for r in rows:
            rec = self._memory((*r[:2], "", *r[2:10], ""))
            out.append((_Entry(rec), vector_from_bytes(r[10])))
        return out

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        user_id, kinds, limit = request.user_id, request.kinds, request.limit
        conversation_id, memory_filter = request.conversation_id, request.memory_filter
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        nbytes = 4 * query.size
        epoch, generation, message_epoch, memory_generation = await self._vector_state(user_id)
        near: list[tuple[float, str, str]] = []
        if "message" in kinds:
            index = await self._message_index(user_id, (epoch, message_epoch), generation, nbytes)
            found = index.search(query, limit, conversation=conversation_id)
            near += [(s, "message", rid) for rid, s in found]
        if "memory" in kinds:
            flt = memory_filter or MemoryFilter(user_id=user_id, now_us=_now_us())
            index = await self._vector_cache.get(
                f"{user_id}\0memory",
                (epoch, memory_generation),
                lambda: self._memory_vectors(user_id, nbytes),
            )

            def allow_memory(key: Any) -> bool:
                rec: MemoryRecord = key.record
                return flt.matches(rec) and conversation_id in (None, rec.conversation_id)

            near += [
                (s, "memory", k.record.id) for k, s in index.search(query, limit, allow_memory)
            ]
        near.sort(key=lambda n: -n[0])
        near = near[:limit]
        msg_ids = [rid for _, kind, rid in near if kind == "message"]
        mem_ids = [rid for _, kind, rid in near if kind == "memory"]
        messages = {r.id: r for r in await self._get_messages(msg_ids)} if msg_ids else {}
        memories = {r.id: r for r in await self._get_memories(mem_ids)} if mem_ids else {}
        hits: list[SearchHit] = []
        # A record deleted since the generation was read is left out; the owner is checked
        # again on the rows themselves.
        for score, kind, rid in near:
            if kind == "message":
                msg = messages.get(rid)
                if msg is not None and msg.user_id == user_id:
                    hits.append(SearchHit("message", score, message=msg))
            else:
                mem = memories.get(rid)
                if mem is not None and mem.user_id == user_id:
                    hits.append(SearchHit("memory", score, memory=mem))
        return hits

    async def _get_memories(self, ids: Sequence[str]) -> list[MemoryRecord]:
        out: list[MemoryRecord] = []
        for chunk in _chunks(list(dict.fromkeys(ids))):
            rows = await self._fetch(
                f"SELECT {_MEM_COLS} FROM {self._t['memories']} "
                f"WHERE id IN ({_placeholders(len(chunk))})",
                chunk,
            )
            out.extend(self._memory(r) for r in rows)
        return out

    # ================================================================ whole-store operations

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        t = self._t
        counts = {"messages": 0, "conversations": 0, "sessions": 0, "memories": 0}
        # Bounded deletes, each committed: a retry after a failure finishes the job.
        steps = (
            ("messages", t["messages"]),
            ("sessions", t["sessions"]),
            (None, t["memory_tags"]),
            ("memories", t["memories"]),
            ("conversations", t["conversations"]),
        )
        for kind, table in steps:
            while True:
                async with self._transaction() as cur:
                    n = int(
                        await cur.execute(
                            f"DELETE FROM {table} WHERE user_id = %s LIMIT 5000", (user_id,)
                        )
                    )
                    if n and kind == "messages":
                        await self._messages_changed(cur, [user_id])
                    elif n and kind == "memories":
                        await self._memories_changed(cur, [user_id])
                if kind is not None:
                    counts[kind] += n
                if n < 5000:
                    break
        self._logged.forget(f"{user_id}\0message")
        self._vector_cache.drop(f"{user_id}\0memory")
        return counts

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
                    await cur.execute(f"ALTER TABLE {self._t[name]} FORCE")
            finally:
                await cur.execute("SET SESSION innodb_ft_user_stopword_table = DEFAULT")
                await conn.commit()

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        t = self._t
        if kind in ("conversations", "messages"):
            after = ""
            while True:
                sql = f"SELECT conversation_id, user_id FROM {t['conversations']} WHERE "
                args: list[Any] = []
                if user_id is not None:
                    sql += "user_id = %s AND "
                    args.append(user_id)
                rows = await self._fetch(
                    sql + "conversation_id > %s ORDER BY conversation_id LIMIT %s",
                    [*args, after, _EXPORT_BATCH],
                )
                if not rows:
                    return
                after = rows[-1][0]
                if kind == "conversations":
                    yield [(r[0], r[1]) for r in rows]
                    continue
                for conv, _owner in rows:
                    async for batch in self._export_conversation(conv):
                        yield batch
        elif kind == "memories":
            async for batch in self._export_keyed(t["memories"], _MEM_COLS, "id", user_id):
                yield [self._memory(r) for r in batch]
        else:
            async for batch in self._export_keyed(t["sessions"], _SES_COLS, "session_id", user_id):
                yield [self._session(r) for r in batch]

    async def _export_conversation(self, conversation_id: str) -> AsyncIterator[list[object]]:
        ts, seq = -(2**63), -1
        while True:
            rows = await self._fetch(
                f"SELECT {_MSG_COLS} FROM {self._t['messages']} WHERE conversation_id = %s "
                "AND (ts_us > %s OR (ts_us = %s AND seq > %s)) ORDER BY ts_us, seq LIMIT %s",
                (conversation_id, ts, ts, seq, _EXPORT_BATCH),
            )
            if not rows:
                return
            records = [self._message(r) for r in rows]
            ts, seq = records[-1].ts_us, records[-1].seq
            yield list(records)

    async def _export_keyed(
        self, table: str, cols: str, key: str, user_id: str | None
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        after = ""
        while True:
            sql = f"SELECT {cols} FROM {table} WHERE "
            args: list[Any] = []
            if user_id is not None:
                sql += "user_id = %s AND "
                args.append(user_id)
            rows = await self._fetch(
                sql + f"{key} > %s ORDER BY {key} LIMIT %s", [*args, after, _EXPORT_BATCH]
            )
            if not rows:
                return
            after = rows[-1][0]
            yield rows
