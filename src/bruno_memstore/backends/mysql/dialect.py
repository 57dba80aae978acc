"""MariaDB's and MySQL's dialect: FULLTEXT terms, tag rows (see docs/backends/mysql.md)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from asyncmy.errors import MySQLError

from ...errors import SchemaError
from ...models import MemoryRecord, SearchHit, SessionRecord
from ...search import ANALYSIS_VERSION, terms
from ..kit.codec import (
    MEMORIES,
    MEMORY_FIELDS,
    MESSAGE_FIELDS,
    MESSAGES,
    SESSION_FIELDS,
    SESSIONS,
)
from ..kit.vectors import vector_to_bytes
from ..sql.append import Append
from ..sql.dialect import Conversation, NewMessage, RowDialect, Source
from ..sql.plans import stored_ids
from ..sql.steps import Commit, Execute, Fetch, Plan
from ..sql.where import marks
from .schema import STORE_TABLES

__all__ = [
    "INDEXED_CHARS",
    "MySQLDialect",
    "TermRewriter",
    "error_code",
    "user_hash",
]

_DUPLICATE_KEY = 1062
_NO_SUCH_TABLE = 1146
_LOG_TRIM = 256  # every this many appends of a user, its append log is trimmed ...
_LOG_KEEP = 1024  # ... to this many entries
_LOCK_TIMEOUT = 60  # seconds a process waits for another one's migration
_DELETE_BATCH = 5000  # rows one statement of a long deletion removes at most

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


def user_hash(text: str) -> bytes:
    """The key of a user's vector counters (and of a tag): a SHA-256 of the text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def error_code(exc: BaseException) -> int | None:
    """The server's (or the client's) error number of a driver error."""
    if isinstance(exc, MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def row_size(rec: Any) -> int:
    """About how many bytes a message's row takes in an ``INSERT`` (escaping can double a
    string; the search terms are about the content's size)."""
    content = len(rec.content.encode("utf-8"))
    vector = 0 if rec.vector is None else 2 * 4 * len(rec.vector)
    return 2 * (2 * content + len(rec.metadata.encode("utf-8"))) + vector + 1024


# The codec's field order; ``timestamp``'s text is stored as ``ts_text``.
_MESSAGE_COLUMNS = ["ts_text" if f == "timestamp" else f for f in MESSAGE_FIELDS]
_MESSAGE_INSERT = ", ".join([*_MESSAGE_COLUMNS[:-1], "search_terms", "vector"])  # no seq
_MEMORY_COLUMNS = (*MEMORY_FIELDS, "search_terms", "vector")


class MySQLDialect(RowDialect):
    """MariaDB's and MySQL's layout and statements, for one table prefix (see the module)."""

    backend: ClassVar[str] = "mysql"
    share_lock: ClassVar[str] = " LOCK IN SHARE MODE"
    # New conversations are claimed at once and taken back if nothing went in: a look-up of
    # the ids first would cost a round trip.
    probe_new_conversations: ClassVar[bool] = False

    def __init__(
        self,
        database: str,
        prefix: str,
        terms_: TermRewriter = TermRewriter(),
        max_packet: int = 1 << 24,
    ) -> None:
        self.database = database
        self.prefix = prefix
        self.terms = terms_
        self.max_packet = max_packet
        t = self.table
        self.conversations = Source(
            f"{t('conversations')} c", ("c.conversation_id", "c.user_id"), "c.conversation_id"
        )
        fields = [f"m.{c}" for c in _MESSAGE_COLUMNS]
        self.messages = Source(f"{t('messages')} m", fields, key="m.seq", start=0)
        self.memories = Source(f"{t('memories')} m", [f"m.{c}" for c in MEMORY_FIELDS], "m.id")
        self.sessions = Source(
            f"{t('sessions')} s", [f"s.{c}" for c in SESSION_FIELDS], "s.session_id"
        )

    def table(self, name: str) -> str:
        return f"`{self.prefix}{name}`"

    def storage_bytes(self) -> Plan[int | None]:
        # InnoDB's estimate of the data and index pages of the store's tables.
        names = [self.prefix + name for name in STORE_TABLES]
        rows = yield Fetch(
            "SELECT coalesce(sum(data_length + index_length), 0) FROM information_schema.tables "
            f"WHERE table_schema = DATABASE() AND table_name IN ({marks(len(names))})",
            names,
        )
        return int(rows[0][0])

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s")

    def after_position(self, ts_us: int, seq: int) -> tuple[str, list[Any]]:
        # MySQL walks its index for this form, not for a row comparison.
        return "(m.ts_us > ? OR (m.ts_us = ? AND m.seq > ?))", [ts_us, ts_us, seq]

    def tags_condition(self, tags: Sequence[str]) -> tuple[str, list[Any]]:
        hashes = list(dict.fromkeys(user_hash(tag) for tag in tags))
        return (
            f"EXISTS (SELECT 1 FROM {self.table('memory_tags')} g WHERE g.user_id = m.user_id "
            f"AND g.memory_id = m.id AND g.tag_hash IN ({marks(len(hashes))}))",
            hashes,
        )

    def search_body(self, content: str) -> str:
        return self.terms.index(content)

    def vector_value(self, vector: Any) -> bytes | None:
        return None if vector is None else vector_to_bytes(vector)

    def is_duplicate(self, exc: BaseException) -> bool:
        return error_code(exc) == _DUPLICATE_KEY

    # ---------------------------------------------------------------- conversations, messages

    def conversation_extras(self) -> dict[str, Any]:
        return {"created_us": time.time_ns() // 1000}

    def insert_messages(self, rows: Sequence[NewMessage], probed: frozenset[str]) -> Plan[set[str]]:
        """New ids are the rule, so the rows are inserted at once; only when that hits a
        stored id (a retry) are the stored ids looked up and the rest inserted."""
        inserted: set[str] = set()
        found: set[str] = set()
        for _attempt in range(8):
            taken = set(inserted)
            todo: list[NewMessage] = []
            for row in rows:
                if row.record.id not in found and row.record.id not in taken:
                    taken.add(row.record.id)
                    todo.append(row)
            try:
                for chunk in self._packets(todo):
                    yield Execute(
                        f"INSERT INTO {self.table('messages')} ({_MESSAGE_INSERT}) VALUES "
                        + ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk)),
                        [v for row in chunk for v in _message_values(row)],
                    )
                    inserted.update(row.record.id for row in chunk)
            except Exception as exc:
                # A stored id (or one committed meanwhile by another connection): only the
                # statement was rolled back, so look the ids up and insert the rest.
                if not self.is_duplicate(exc):
                    raise
                ids = list(dict.fromkeys(r.record.id for r in rows if r.record.id not in inserted))
                found |= yield from stored_ids(self, ids)
                continue
            return inserted
        raise RuntimeError("ids kept colliding with concurrent writers")  # pragma: no cover

    def insert_alone(self, item: Append) -> Plan[bool]:
        """One message into a conversation its user owns, in one autocommit statement;
        ``False`` (nothing written) when the conversation is not stored or not the user's,
        or the id is: the shared append then decides in a transaction."""
        (rec,) = item.records
        owner = item.user_id
        conv = Conversation(item.conversation_id, owner, owner)
        values = _message_values(NewMessage(rec, conv, self.search_body(rec.content), None))
        try:
            written = yield Execute(
                f"INSERT INTO {self.table('messages')} ({_MESSAGE_INSERT}) "
                f"SELECT {marks(len(values))} FROM {self.table('conversations')} "
                "WHERE conversation_id = ? AND user_id = ?",
                [*values, item.conversation_id, owner],
                alone=True,
            )
        except Exception as exc:
            if self.is_duplicate(exc):
                return False
            raise
        return written == 1

    def _packets(self, rows: list[NewMessage]) -> Iterator[list[NewMessage]]:
        budget = self.max_packet // 2
        chunk: list[NewMessage] = []
        size = 0
        for row in rows:
            row_bytes = row_size(row.record)
            if chunk and size + row_bytes > budget:
                yield chunk
                chunk, size = [], 0
            chunk.append(row)
            size += row_bytes
        if chunk:
            yield chunk

    def messages_added(self, rows: Sequence[NewMessage]) -> Plan[None]:
        """Mark the messages inserted without a vector as waiting for it (``defer_vectors``),
        and log the ids of message vectors just appended, under each owner's next
        generation."""
        if self.defer_vectors:
            yield from self._mark_waiting([r for r in rows if r.vector is None])
        appended: dict[str, list[str]] = {}
        for row in rows:
            if row.vector is not None:
                appended.setdefault(row.conversation.owner, []).append(row.record.id)
        hashes = yield from self._count(appended, "generation = generation + 1", "1,0,0")
        if not hashes:
            return
        log = self.table("vector_log")
        found = yield Fetch(
            f"SELECT user_hash, generation FROM {self.table('vector_generations')} "
            f"WHERE user_hash IN ({marks(len(hashes))})",
            hashes,
        )
        generations = dict(found)
        yield Execute(
            f"INSERT INTO {log} (user_hash, generation, ids) VALUES "
            + ",".join(["(?,?,?)"] * len(appended)),
            [
                v
                for owner, ids in appended.items()
                for v in (user_hash(owner), generations[user_hash(owner)], "\0".join(ids))
            ],
        )
        for h in hashes:  # keep the last _LOG_KEEP appends (a reader further behind reloads)
            if generations[h] % _LOG_TRIM == 0:
                yield Execute(
                    f"DELETE FROM {log} WHERE user_hash = ? AND generation <= ?",
                    (h, generations[h] - _LOG_KEEP),
                )

    def messages_changed(self, owner_keys: Sequence[Any]) -> Plan[None]:
        """A message vector of these users was removed or replaced: a new message epoch."""
        # Assignments apply left to right: the epoch takes the new generation.
        hashes = yield from self._count(
            owner_keys, "generation = generation + 1, message_epoch = generation", "1,1,0"
        )
        if hashes:
            yield Execute(
                f"DELETE FROM {self.table('vector_log')} WHERE user_hash IN ({marks(len(hashes))})",
                hashes,
            )

    def memories_changed(self, owner_keys: Sequence[Any]) -> Plan[None]:
        """A memory-entry vector of these users was added, replaced or removed."""
        yield from self._count(owner_keys, "memory_generation = memory_generation + 1", "0,0,1")

    def _count(self, users: Iterable[str], update: str, fresh: str) -> Plan[list[bytes]]:
        # Every counter update is the last statement of its transaction: the rows stay
        # locked until it commits, taken in one (sorted) order everywhere, so writers never
        # deadlock on them, and a user's generations commit in the order they were given.
        hashes = sorted({user_hash(u) for u in users})
        if hashes:
            yield Execute(
                f"INSERT INTO {self.table('vector_generations')} "
                "(user_hash, generation, message_epoch, memory_generation) VALUES "
                + ",".join([f"(?,{fresh})"] * len(hashes))
                + f" ON DUPLICATE KEY UPDATE {update}",
                hashes,
            )
        return hashes

    # ---------------------------------------------------------------- memories and sessions

    def upsert_memory(self, rec: MemoryRecord, body: Any, vector: Any) -> Plan[bool]:
        values = [*MEMORIES.row(rec), body, vector]
        values[5] = json.dumps(rec.tags, ensure_ascii=False)
        affected = yield from self._upsert_owned("memories", _MEMORY_COLUMNS, values)
        if affected is None:
            return False
        tags = self.table("memory_tags")
        yield Execute(f"DELETE FROM {tags} WHERE memory_id = ?", (rec.id,))
        hashes = list(dict.fromkeys(user_hash(tag) for tag in rec.tags))
        if hashes:
            yield Execute(
                f"INSERT INTO {tags} (memory_id, user_id, tag_hash) VALUES "
                + ",".join(["(?,?,?)"] * len(hashes)),
                [v for h in hashes for v in (rec.id, rec.user_id, h)],
            )
        if vector is not None or affected != 1:
            # A replaced entry's old vector went with the old row (and its filter columns,
            # which loaded indexes keep, changed).
            yield from self.memories_changed([rec.user_id])
        return True

    def memories_deleting(self, keys: Sequence[Any]) -> Plan[None]:
        for condition, args in self.among("memory_id", keys):
            yield Execute(f"DELETE FROM {self.table('memory_tags')} WHERE {condition}", args)

    def upsert_session(self, rec: SessionRecord, conversation: Conversation) -> Plan[bool]:
        values = SESSIONS.row(rec)
        values[3] = int(rec.is_active)
        return (yield from self._upsert_owned("sessions", SESSION_FIELDS, values)) is not None

    def _upsert_owned(
        self, table: str, names: Sequence[str], values: Sequence[Any]
    ) -> Plan[int | None]:
        """Insert a row keyed by ``names[0]``, or update the stored row if its ``user_id``
        (``names[1]``) is the same; ``None`` if it is another user's (left unchanged).

        One statement decides: the update sets each column only where the stored owner is
        the writer's, and locks the row either way. Returns the affected rows: 1 for a new
        row, 2 for a changed one, 0 for one found unchanged.
        """
        # ``col = ?`` rather than ``VALUES(col)``, which MySQL 8.0.20+ deprecates with a
        # warning on every statement.
        updates = ", ".join(f"{c} = IF(user_id = ?, ?, {c})" for c in names[2:])
        user = values[1]
        affected = yield Execute(
            f"INSERT INTO {self.table(table)} ({', '.join(names)}) "
            f"VALUES ({marks(len(names))}) ON DUPLICATE KEY UPDATE {updates}",
            (*values, *(x for v in values[2:] for x in (user, v))),
        )
        if affected == 0:  # unchanged, or another user's: the row is locked, read its owner
            rows = yield Fetch(
                f"SELECT user_id FROM {self.table(table)} WHERE {names[0]} = ?", values[:1]
            )
            if rows[0][0] != user:
                return None
        return int(affected)

    # ---------------------------------------------------------------- deletion

    def delete_rows(self, table: str, where: str, args: Sequence[Any]) -> Plan[int]:
        # Bounded deletes, each committed: a retry after a failure finishes the job.
        total = 0
        while True:
            count = yield Execute(
                f"DELETE FROM {self.table(table)} WHERE {where} LIMIT {_DELETE_BATCH}", args
            )
            total += count
            yield Commit()
            if count < _DELETE_BATCH:
                return total

    def _mark_waiting(self, rows: Sequence[NewMessage]) -> Plan[None]:
        """Put these inserted messages' keys and owners in ``vector_pending`` (and their keys
        on the records)."""
        by_id = {r.record.id: r for r in rows}
        for condition, args in self.among("id", list(by_id)):
            found = yield Fetch(
                f"SELECT seq, id FROM {self.table('messages')} WHERE {condition}", args
            )
            for seq, rid in found:
                by_id[rid].record.seq = int(seq)
            if found:
                yield Execute(
                    f"INSERT IGNORE INTO {self.table('vector_pending')} (seq, user_id) VALUES "
                    + ",".join(["(?,?)"] * len(found)),
                    [v for seq, rid in found for v in (seq, by_id[rid].conversation.owner)],
                )

    def messages_deleting(self, where: str, args: Sequence[Any]) -> Plan[None]:
        yield from self.unmark_messages(where, args)

    def unmark_messages(self, where: str, args: Sequence[Any]) -> Plan[None]:
        """Delete the ``vector_pending`` marks of the messages ``m`` that ``where`` selects.

        The marked keys are read first (the messages' index, then the marks' primary key),
        and only those found are deleted: a DELETE with the messages in a subquery would
        scan every mark.
        """
        found = yield Fetch(
            f"SELECT p.seq FROM {self.table('messages')} m "
            f"JOIN {self.table('vector_pending')} p ON p.seq = m.seq WHERE {where}",
            args,
        )
        for condition, keys in self.among("seq", [row[0] for row in found]):
            yield Execute(f"DELETE FROM {self.table('vector_pending')} WHERE {condition}", keys)

    def forget_steps(self, key: Any) -> list[tuple[str | None, str, str, list[Any]]]:
        steps = super().forget_steps(key)  # messages, sessions, memories, conversations
        steps.insert(2, (None, "memory_tags", "user_id = ?", [key]))
        steps.insert(0, (None, "vector_pending", "user_id = ?", [key]))
        return steps

    # ---------------------------------------------------------------- search

    def search_terms(self, query: str) -> str:
        return self.terms.query(query)

    def search_messages(
        self, key: Any, terms: Any, conversation_id: str | None, limit: int
    ) -> Plan[list[SearchHit]]:
        sql = (
            f"SELECT {self.messages.select}, {_MATCH} AS score FROM {self.messages.tables} "
            f"WHERE {_MATCH} AND m.user_id = ?"
        )
        args: list[Any] = [terms, terms, key]
        if conversation_id is not None:
            sql += " AND m.conversation_id = ?"
            args.append(conversation_id)
        rows = yield Fetch(sql + " ORDER BY score DESC, m.ts_us DESC, m.id LIMIT ?", [*args, limit])
        return [SearchHit("message", float(r[-1]), message=self.message(r)) for r in rows]

    def search_memories(
        self, key: Any, terms: Any, conditions: tuple[str, list[Any]], limit: int
    ) -> Plan[list[SearchHit]]:
        where, args = conditions
        rows = yield Fetch(
            f"SELECT {self.memories.select}, {_MATCH} AS score FROM {self.memories.tables} "
            f"WHERE {_MATCH} AND m.user_id = ? {where}"
            "ORDER BY score DESC, m.created_us DESC, m.id LIMIT ?",
            [terms, terms, key, *args, limit],
        )
        return [SearchHit("memory", float(r[-1]), memory=self.memory(r)) for r in rows]

    # ---------------------------------------------------------------- schema

    def schema_version(self) -> Plan[int]:
        try:
            rows = yield Fetch(f"SELECT MAX(version) FROM {self.table('schema_version')}")
        except Exception as exc:
            if error_code(exc) != _NO_SUCH_TABLE:
                raise
            return 0
        return int(rows[0][0] or 0)

    def create_version_table(self) -> Plan[None]:
        yield Execute(
            f"CREATE TABLE IF NOT EXISTS {self.table('schema_version')} ("
            "version INT NOT NULL PRIMARY KEY, name VARCHAR(200) NOT NULL, "
            "applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )

    def lock_schema(self) -> Plan[None]:
        rows = yield Fetch("SELECT GET_LOCK(?, ?)", (self.lock_name, _LOCK_TIMEOUT))
        if rows[0][0] != 1:
            raise SchemaError(
                f"another process held the migration lock for {_LOCK_TIMEOUT}s",
                backend=self.backend,
                operation="connect",
            )

    def unlock_schema(self, done: bool) -> Plan[None]:
        yield Fetch("SELECT RELEASE_LOCK(?)", (self.lock_name,))

    @property
    def lock_name(self) -> str:
        """The ``GET_LOCK`` name serialising schema changes of this store's tables."""
        digest = hashlib.sha256(f"{self.database}\0{self.prefix}".encode()).hexdigest()[:32]
        return f"bruno_memstore.migrate.{digest}"  # at most 64 characters

    def record_version(self, version: int, name: str) -> Execute:
        return Execute(
            f"INSERT INTO {self.table('schema_version')} (version, name) VALUES (?, ?)",
            (version, name),
        )

    def too_new(self, version: int, latest: int) -> SchemaError:
        return SchemaError(
            f"the tables with prefix {self.prefix!r} are at schema version {version}, "
            f"newer than this library's {latest}; upgrade bruno-memstore",
            backend=self.backend,
            operation="connect",
        )


_MATCH = "MATCH(m.search_terms) AGAINST(? IN NATURAL LANGUAGE MODE)"


def _message_values(row: NewMessage) -> list[Any]:
    # The codec's row without seq, the owner as user_id, then the indexed forms.
    return [*MESSAGES.row(row.record)[:-2], row.conversation.owner, row.body, row.vector]
