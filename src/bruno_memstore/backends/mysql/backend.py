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
* The primitives are the SQL family's plans (:mod:`..sql`) over this engine's dialect
  (``dialect``); concurrent message writes are group-committed: one transaction and one log
  flush for every writer waiting at that moment (the kit's group committer).
* The schema is migrated on first use, once, under ``GET_LOCK`` (several processes may
  start together).
* Vectors are float32 BLOBs in the records' own rows, written by the record's statement.
  MariaDB 10.11 and MySQL 8 have no vector index, so search is exact and in process: a
  user's vectors are loaded (:class:`~bruno_memstore.backends.kit.vectors.ExactVectors`)
  and kept while the user's generation (bumped in every transaction that changes them)
  stays the same; appended vectors are read from an append log.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, ClassVar, Literal

import asyncmy
import numpy as np

from ...capabilities import DATABASE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import BackendError, BackendUnavailableError, InvalidArgumentError
from ...limits import Limits, Record
from ...models import MemoryFilter, MemoryRecord, MessageRecord, SearchHit, SearchRequest
from ...url import MemoryURL, redact_url
from ..kit.hits import ranked_hits
from ..kit.vectors import ExactVectors, StaleLog, nearest, vector_from_bytes, vector_to_bytes
from ..sql.backend import Mode, SQLMemory
from ..sql.schema import migrate, refresh_analysis
from ..sql.steps import (
    Commit,
    Done,
    Execute,
    ExecuteMany,
    Fetch,
    Insert,
    Plan,
    Step,
    begin,
    drive_async,
)
from .dialect import (
    INDEXED_CHARS,
    MySQLDialect,
    TermRewriter,
    error_code,
    query_terms,
    row_size,
    search_terms,
    user_hash,
)
from .schema import Server, migrations_for

__all__ = ["INDEXED_CHARS", "MySQLMemory", "TermRewriter", "query_terms", "search_terms"]

_DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"
_PREFIX = re.compile(r"[A-Za-z0-9_]{0,48}")

# Driver errors worth retrying: lost/failed connections, deadlock, lock wait timeout,
# too many connections, server shutting down, connection killed.
_TRANSIENT_CODES = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055})
# Of those, the ones meaning "the server cannot be reached".
_UNAVAILABLE_CODES = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055})
_ANALYSIS_SETTING = "analysis_version"  # the settings row: what built the search terms
_REINDEX_BATCH = 500
_DROP_BATCH = 5000


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


def _packet_limits(max_packet: int) -> Limits:
    """A server's largest packet as the limit on one record's statement (with room to spare)."""
    return Limits(
        max_record_bytes=max_packet - 4096,
        size_limit=f"this server's max_allowed_packet ({max_packet} bytes)",
    )


class MySQLMemory(SQLMemory):
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
        InvalidArgumentError: a malformed URL or option.
    """

    backend_name: ClassVar[str] = "mysql"
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {Capability.VECTORS}
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
    }

    def __init__(self, url: str = _DEFAULT_URL, **options: Any) -> None:
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
        self._server: Server | None = None
        self._max_packet = 16 * 1024 * 1024
        self.limits = _packet_limits(self._max_packet)
        self._sql: MySQLDialect = self.dialect_type(database, prefix)
        # Two indexes per user: messages (following the append log) and memory entries.
        self._vectors = ExactVectors(max_users=cache_users)

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
        return self._server.name if self._server else None

    # ================================================================ errors

    def _is_transient(self, exc: BaseException) -> bool:
        code = error_code(exc)
        if code is not None:
            return code in _TRANSIENT_CODES
        return isinstance(exc, (ConnectionError, OSError)) and not isinstance(exc, TimeoutError)

    def _is_unavailable(self, exc: BaseException) -> bool:
        code = error_code(exc)
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
            self._server = Server.detect(conn.get_server_info())
            async with conn.cursor() as cur:
                run = partial(_run, cur, self._sql)
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
                # Stored terms are rebuilt if the shared text analysis or the server's token
                # limits changed since they were made.
                await drive_async(
                    refresh_analysis(self._sql, self._analysis_current, self._reindex),
                    partial(_run, cur, self._sql),
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
                is_systemic=self._is_systemic,
                max_batch=self._max_batch,
                max_inflight=min(2, writers),
                weight=lambda a: sum(row_size(r) for r in a.records),
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

    def _analysis_current(self) -> Plan[bool]:
        rows = yield Fetch(
            f"SELECT value FROM {self._sql.table('settings')} WHERE name = ?",
            (_ANALYSIS_SETTING,),
        )
        return bool(rows) and rows[0][0] == self._sql.terms.signature

    def _reindex(self) -> Plan[None]:
        """Rebuild the stored terms (if any were made by another analysis), then record the
        analysis; each part is committed on its own."""
        d = self._sql
        settings = d.table("settings")
        found = yield Fetch(f"SELECT value FROM {settings} WHERE name = ?", (_ANALYSIS_SETTING,))
        for table, key, after in (("messages", "seq", 0), ("memories", "id", "")) if found else ():
            while True:
                rows = yield Fetch(
                    f"SELECT {key}, content FROM {d.table(table)} WHERE {key} > ? "
                    f"ORDER BY {key} LIMIT {_REINDEX_BATCH}",
                    (after,),
                )
                if not rows:
                    break
                yield Execute("START TRANSACTION")
                yield ExecuteMany(
                    f"UPDATE {d.table(table)} SET search_terms = ? WHERE {key} = ?",
                    [(d.terms.index(content), k) for k, content in rows],
                )
                yield Execute("COMMIT")
                after = rows[-1][0]
        yield Execute(
            f"INSERT INTO {settings} (name, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE value = ?",
            (_ANALYSIS_SETTING, d.terms.signature, d.terms.signature),
        )

    async def schema_version(self) -> int:
        """The newest migration applied to this store's tables."""
        return await self._perform("read", self._sql.schema_version)

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
                if error_code(exc) in _UNAVAILABLE_CODES:
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

    async def _perform(self, mode: Mode, make_plan: Callable[[], Plan[Any]]) -> Any:
        plan = make_plan()
        first = begin(plan)  # the plan's preparation, on the event loop
        if isinstance(first, Done):
            return first.value
        if mode in ("read", "scan"):
            async with self._connection() as conn, conn.cursor() as cur:
                return await drive_async(plan, partial(_run, cur, self._sql), first)
        async with self._transaction() as cur:
            return await drive_async(plan, partial(_run, cur, self._sql), first)

    # ================================================================ messages

    def _record_size(self, record: Record) -> int:
        # The size of the statement that writes the record: the server answers one larger
        # than its packet limit with error 1153 (see ``_packet_limits``).
        if isinstance(record, MessageRecord):
            return row_size(record)
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

    # ================================================================ vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        table = self._sql.table("vector_space")
        if space is not None and not replace:
            await self._execute(
                f"INSERT INTO {table} (id, model, dimension, epoch) VALUES (1, %s, %s, 1) "
                "ON DUPLICATE KEY UPDATE id = id",
                (space.model, space.dimension),
            )
        elif space is not None:
            # Vectors first: an interrupted run leaves the old model recorded over fewer
            # vectors (searches stay right), never the new one over old vectors.
            await self._drop_vectors()
            await self._execute(
                f"INSERT INTO {table} (id, model, dimension, epoch) VALUES (1, %s, %s, 1) "
                "ON DUPLICATE KEY UPDATE model = %s, dimension = %s, epoch = epoch + 1",
                (space.model, space.dimension, space.model, space.dimension),
            )
            self._vectors.clear()
            return space
        rows = await self._fetch(f"SELECT model, dimension FROM {table} WHERE id = 1")
        return VectorSpace(rows[0][0], int(rows[0][1])) if rows else None

    async def _drop_vectors(self) -> None:
        """Set every vector to NULL, in bounded statements (by primary key ranges)."""
        messages, memories = self._sql.table("messages"), self._sql.table("memories")
        ((low, high),) = await self._fetch(f"SELECT MIN(seq), MAX(seq) FROM {messages}")
        if high is not None:
            for start in range(int(low), int(high) + 1, _DROP_BATCH):
                await self._execute(
                    f"UPDATE {messages} SET vector = NULL "
                    "WHERE seq >= %s AND seq < %s AND vector IS NOT NULL",
                    (start, start + _DROP_BATCH),
                )
        await self._execute(f"UPDATE {memories} SET vector = NULL WHERE vector IS NOT NULL")

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        if items:
            await self._perform("write", partial(self._vectors_put, kind, items))

    def _vectors_put(self, kind: str, items: Sequence[Any]) -> Plan[None]:
        d = self._sql
        table = d.table("messages" if kind == "message" else "memories")
        pairs = [(str(rid), vector_to_bytes(vec)) for rid, vec in items]  # preparation
        owners: set[str] = set()
        for start in range(0, len(pairs), 128):
            chunk = pairs[start : start + 128]
            ids = [rid for rid, _ in chunk]
            yield Execute(
                f"UPDATE {table} SET vector = CASE id "
                + " ".join(["WHEN ? THEN ?"] * len(chunk))
                + f" END WHERE id IN ({', '.join('?' * len(ids))})",
                [*(v for pair in chunk for v in pair), *ids],
            )
            found = yield Fetch(
                f"SELECT DISTINCT user_id FROM {table} WHERE id IN ({', '.join('?' * len(ids))})",
                ids,
            )
            owners.update(row[0] for row in found)
        changed = d.messages_changed if kind == "message" else d.memories_changed
        yield from changed(sorted(owners))

    async def _vector_state(self, user_id: str) -> tuple[Any, int, Any, Any]:
        """The store's epoch and the user's message generation, message epoch and memory
        generation (``None`` for a user who never had vectors)."""
        g = self._sql.table("vector_generations")
        rows = await self._fetch(
            # Named columns: MariaDB would otherwise name them after the statement's text,
            # binary user hash included, which the driver cannot always decode.
            f"SELECT (SELECT epoch FROM {self._sql.table('vector_space')} WHERE id = 1) AS e, "
            f"(SELECT generation FROM {g} WHERE user_hash = %s) AS g, "
            f"(SELECT message_epoch FROM {g} WHERE user_hash = %s) AS me, "
            f"(SELECT memory_generation FROM {g} WHERE user_hash = %s) AS mg",
            (user_hash(user_id),) * 3,
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
            return await self._vectors.messages(
                user_id, key, generation, lambda: self._message_vectors(user_id, nbytes), delta
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
        h = user_hash(user_id)
        rows = await self._fetch(
            f"SELECT l.generation, l.ids, (SELECT message_epoch FROM "
            f"{self._sql.table('vector_generations')} WHERE user_hash = %s) AS me "
            f"FROM {self._sql.table('vector_log')} l WHERE l.user_hash = %s "
            "AND l.generation > %s AND l.generation <= %s",
            (h, h, after, upto),
        )
        if len(rows) != upto - after or any(r[2] != epoch for r in rows):
            return None
        ids = [rid for r in rows for rid in r[1].split("\0")]
        out: list[tuple[Any, ...]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found = await self._fetch(
                f"SELECT id, conversation_id, vector FROM {self._sql.table('messages')} "
                f"WHERE id IN ({', '.join(['%s'] * len(chunk))}) AND LENGTH(vector) = %s",
                [*chunk, nbytes],
            )
            out += [(r[0], vector_from_bytes(r[2]), None, r[1]) for r in found]
        return out

    async def _message_vectors(self, user_id: str, nbytes: int) -> list[tuple[Any, ...]]:
        rows = await self._fetch(
            f"SELECT id, conversation_id, vector FROM {self._sql.table('messages')} "
            "WHERE user_id = %s AND LENGTH(vector) = %s",
            (user_id, nbytes),
        )
        # Keyed by id, labelled by conversation (filtered with array operations).
        return [(r[0], vector_from_bytes(r[2]), None, r[1]) for r in rows]

    async def _memory_vectors(self, user_id: str, nbytes: int) -> list[tuple[Any, ...]]:
        rows = await self._fetch(
            "SELECT id, user_id, '', memory_type, category, tags, confidence, importance, "
            "created_us, expires_us, conversation_id, '', vector FROM "
            f"{self._sql.table('memories')} WHERE user_id = %s AND LENGTH(vector) = %s",
            (user_id, nbytes),
        )
        # Entries without their text, for the filters.
        return [(self._sql.memory(r), vector_from_bytes(r[12])) for r in rows]

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        user_id = request.user_id
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        nbytes = 4 * query.size
        epoch, generation, message_epoch, memory_generation = await self._vector_state(user_id)
        messages = memories = None
        if "message" in request.kinds:
            messages = await self._message_index(
                user_id, (epoch, message_epoch), generation, nbytes
            )
        if "memory" in request.kinds:
            memories = await self._vectors.memories(
                user_id,
                (epoch, memory_generation),
                lambda: self._memory_vectors(user_id, nbytes),
            )
        found = nearest(request, query, messages=messages, memories=memories)
        msg_ids = [rid for kind, rid, _ in found if kind == "message"]
        mem_ids = [rid for kind, rid, _ in found if kind == "memory"]
        by_id = MemoryFilter(user_id, include_expired=True, limit=len(mem_ids), ids=tuple(mem_ids))
        # A record deleted since the generation was read is left out; the owner is checked
        # again on the rows themselves.
        return ranked_hits(
            found,
            {r.id: r for r in await self._get_messages(msg_ids)} if msg_ids else {},
            {r.id: r for r in await self._query_memories(by_id)} if mem_ids else {},
            user_id=user_id,
        )

    # ================================================================ whole-store operations

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        counts = await super()._forget_user(user_id)
        self._vectors.forget(user_id)
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
                    await cur.execute(f"ALTER TABLE {self._sql.table(name)} FORCE")
            finally:
                await cur.execute("SET SESSION innodb_ft_user_stopword_table = DEFAULT")
                await conn.commit()


# ==================================================================== helpers


async def _run(cur: Any, d: MySQLDialect, step: Step) -> Any:
    """Run one step on an ``asyncmy`` cursor."""
    kind = step.__class__
    if kind is Fetch:
        await cur.execute(d.sql(step.sql), step.args)
        return list(await cur.fetchall())
    if kind is Execute:
        return int(await cur.execute(d.sql(step.sql), step.args))
    if kind is ExecuteMany:
        await cur.executemany(d.sql(step.sql), step.rows)
        return None
    if kind is Insert:
        await cur.execute(d.sql(step.sql), step.args)
        return cur.lastrowid
    if kind is Commit:
        if not cur.connection.get_autocommit():
            await cur.connection.commit()
        return None
    raise TypeError(f"not a step: {step!r}")
