"""SQLite's dialect: integer keys, an FTS5 index, vector side tables (see docs/backends/sqlite.md).

The statements are module constants so that the benchmark's raw-driver baseline runs exactly
the same SQL.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ...models import MemoryRecord, MessageRecord, SearchHit, SessionRecord
from ...primitives import AppendResult
from ...search import index_text, terms
from ..kit.appends import Append
from ..kit.codec import MEMORIES as MEMORY_CODEC
from ..kit.codec import MEMORY_FIELDS, MESSAGE_FIELDS, SESSION_FIELDS
from ..kit.vectors import vector_to_bytes
from ..sql.dialect import Conversation, NewMessage, RowDialect, Source
from ..sql.plans import stored_ids
from ..sql.steps import Execute, ExecuteMany, Fetch, Insert, Plan
from ..sql.where import marks
from .fulltext import quoted, ranked_rows

__all__ = [
    "DEFERRING",
    "DIALECT",
    "SQLiteDialect",
    "index_pending",
    "match_expression",
    "message_row",
]

KINDS = ("message", "memory")
VECTOR_COUNTERS = (
    "message_vector_generation",
    "message_vector_epoch",
    "memory_vector_generation",
    "memory_vector_epoch",
)
"""The ``users`` columns counting changes to a user's vectors (see migration 3)."""


def message_scope(uid: int, cid: int) -> str:
    """The scope tokens of a message in the full-text index: its owner and conversation."""
    return f"u{uid} c{cid}"


def memory_scope(uid: int) -> str:
    """The scope token of a memory entry in the full-text index: its owner."""
    return f"u{uid}"


# ------------------------------------------------------------------------------ statements

_JOINED = {"conversation_id": "c.conversation_id", "user_id": "u.user_id"}
MESSAGES = Source(
    "messages m JOIN conversations c ON c.cid = m.cid JOIN users u ON u.uid = m.uid",
    [_JOINED.get(f, f"m.{f}") for f in MESSAGE_FIELDS],
    key="m.seq",
    start=0,
)
# A memory entry's conversation id is its own column (not a reference).
MEMORIES = Source(
    "memories m JOIN users u ON u.uid = m.uid",
    ["u.user_id" if f == "user_id" else f"m.{f}" for f in MEMORY_FIELDS],
    key="m.rid",
    start=0,
)
_MEMORY_COLUMNS = ("uid", *MEMORY_FIELDS[2:])  # a memory row's values after its id and owner
_TAGS = _MEMORY_COLUMNS.index("tags")
INSERT_MEMORY = (
    f"INSERT INTO memories ({', '.join(_MEMORY_COLUMNS)}, id) "
    f"VALUES ({marks(len(_MEMORY_COLUMNS) + 1)})"
)
_SET = ", ".join(c + " = ?" for c in _MEMORY_COLUMNS)
UPDATE_MEMORY = f"UPDATE memories SET {_SET} WHERE rid = ?"

SELECT_USER = "SELECT uid FROM users WHERE user_id = ?"
# The key of the store's one user; no row when there are more (index look-ups only).
ONLY_USER = (
    "SELECT uid FROM users WHERE uid = (SELECT min(uid) FROM users) "
    "AND uid = (SELECT max(uid) FROM users)"
)
INSERT_USER = "INSERT INTO users (user_id) VALUES (?)"
SELECT_CONVERSATION = (
    "SELECT c.cid, c.uid, u.user_id FROM conversations c JOIN users u ON u.uid = c.uid "
    "WHERE c.conversation_id = ?"
)
INSERT_CONVERSATION = "INSERT INTO conversations (conversation_id, uid) VALUES (?, ?)"
INSERT_MESSAGE = (
    "INSERT INTO messages (id, cid, uid, role, content, message_type, timestamp, ts_us, "
    "metadata, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
# A lone message into a stored conversation of the user it names, in one statement: no row
# when the conversation is missing or another user's (or the id is stored).
INSERT_OWNED_MESSAGE = (
    "INSERT INTO messages (id, cid, uid, role, content, message_type, timestamp, ts_us, "
    "metadata, parent_id) SELECT ?, c.cid, c.uid, ?, ?, ?, ?, ?, ?, ? FROM conversations c "
    "WHERE c.conversation_id = ? AND c.uid = (SELECT uid FROM users WHERE user_id = ?) "
    "ON CONFLICT (id) DO NOTHING"
)
# Batches number their rows themselves, so the search rows can use the same keys.
INSERT_MESSAGE_AT = (
    "INSERT INTO messages (seq, id, cid, uid, role, content, message_type, timestamp, ts_us, "
    "metadata, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM messages"
INSERT_SEARCH = "INSERT INTO search_fts (rowid, scope, body) VALUES (?, ?, ?)"
# A message stored on its own is indexed later, in a batch (see ``index_pending``). ``OR
# IGNORE``: the row of a deleted message whose key a new one took may still be there.
INSERT_PENDING = "INSERT OR IGNORE INTO search_pending (seq) VALUES (?)"
ANY_PENDING = "SELECT EXISTS (SELECT 1 FROM search_pending)"
PENDING_BATCH = 2000  # messages one catch-up statement indexes
INDEX_EVERY = 256  # a message whose key is a multiple of this indexes those waiting
# A message stored before its vector (``vectors="deferred"``); see ``without_vectors``.
INSERT_VECTOR_PENDING = "INSERT OR IGNORE INTO vector_pending (seq) VALUES (?)"
INSERT_TAG = "INSERT INTO memory_tags (rid, tag) VALUES (?, ?)"
# ``OR REPLACE``: a row left behind by a tool that deleted records without foreign keys
# must not block the new record's vector.
INSERT_MESSAGE_VECTOR = "INSERT OR REPLACE INTO message_vectors (seq, uid, vector) VALUES (?, ?, ?)"
INSERT_MEMORY_VECTOR = "INSERT OR REPLACE INTO memory_vectors (rid, uid, vector) VALUES (?, ?, ?)"


def _bump(kinds: Sequence[str], epoch: bool, where: str) -> str:
    columns = [f"{k}_vector_{c}" for k in kinds for c in ("generation", "epoch")[: 1 + epoch]]
    return f"UPDATE users SET {', '.join(f'{c} = {c} + 1' for c in columns)} {where}"


BUMP_VECTORS = {
    (kind, epoch): _bump((kind,), epoch, "WHERE uid = ?")
    for kind in KINDS
    for epoch in (False, True)
}
"""``UPDATE`` of a user's change counters for ``(kind, epoch)``: every change to the user's
vectors of that kind bumps the generation; one that is not an append bumps the epoch too."""
BUMP_EVERY_USER = _bump(KINDS, True, "")

WINDOW_OF_USER = (
    f"SELECT {MESSAGES.select} FROM {MESSAGES.tables} WHERE u.user_id = ? "
    "ORDER BY m.ts_us DESC, m.seq DESC LIMIT ?"
)
SEARCH_MESSAGES = (
    f"SELECT {MESSAGES.select}, -f.rank FROM search_fts f "
    "JOIN messages m ON m.seq = f.rowid JOIN conversations c ON c.cid = m.cid "
    "JOIN users u ON u.uid = m.uid "
    "WHERE search_fts MATCH ? AND f.rowid > 0 AND m.uid = ? {extra}"
    "ORDER BY f.rank, m.ts_us DESC, m.seq DESC LIMIT ?"
)
SEARCH_MEMORIES = (
    f"SELECT {MEMORIES.select}, -f.rank FROM search_fts f "
    "JOIN memories m ON m.rid = -f.rowid JOIN users u ON u.uid = m.uid "
    "WHERE search_fts MATCH ? AND f.rowid < 0 AND m.uid = ? {extra}"
    "ORDER BY f.rank, m.created_us DESC, m.id LIMIT ?"
)
_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_us INTEGER NOT NULL
)"""


def index_pending(limit: int | None = None) -> Plan[int]:
    """Index the messages waiting for their full-text rows (all of them, or the ``limit``
    oldest), in the transaction the plan runs in; returns how many were indexed."""
    done = 0
    while limit is None or done < limit:
        size = PENDING_BATCH if limit is None else min(PENDING_BATCH, limit - done)
        rows = yield Fetch(
            "SELECT p.seq, m.uid, m.cid, m.content FROM search_pending p "
            "LEFT JOIN messages m ON m.seq = p.seq ORDER BY p.seq LIMIT ?",
            (size,),
        )
        if not rows:
            break
        found = [r for r in rows if r[3] is not None]  # a deleted message leaves none
        last = rows[-1][0]
        if found:
            # A full-text row for the key may be left by any earlier path: this one wins.
            yield Execute(
                "DELETE FROM search_fts WHERE rowid IN "
                "(SELECT seq FROM search_pending WHERE seq <= ?)",
                (last,),
            )
            yield ExecuteMany(
                INSERT_SEARCH,
                [(r[0], message_scope(r[1], r[2]), index_text(r[3])) for r in found],
            )
        yield Execute("DELETE FROM search_pending WHERE seq <= ?", (last,))
        done += len(rows)
        if len(rows) < size:
            break
    return done


_MESSAGE_VALUES = operator.attrgetter(*MESSAGE_FIELDS[2:9])  # role ... parent_id


def message_row(rec: MessageRecord, cid: int, uid: int) -> tuple[Any, ...]:
    """The values of :data:`INSERT_MESSAGE`."""
    return (rec.id, cid, uid, *_MESSAGE_VALUES(rec))


def _expression(words: Sequence[str], scope: str) -> str:
    alternatives = " OR ".join(quoted(w) for w in words)
    return f"scope : {quoted(scope)} AND body : ({alternatives})"


def match_expression(query: str, scope: str) -> str | None:
    """The FTS5 query for ``query``'s terms within ``scope`` (``None``: nothing to look for)."""
    words = DIALECT.search_terms(query)
    return _expression(words, scope) if words else None


class SQLiteDialect(RowDialect):
    """SQLite's layout, writes and full-text search (see the module docstring)."""

    backend: ClassVar[str] = "sqlite"
    for_update: ClassVar[str] = ""  # the writer holds the database's write lock
    conversation_ref: ClassVar[str] = "cid"
    user_ref: ClassVar[str] = "uid"
    memory_ref: ClassVar[str] = "rid"
    version_table: ClassVar[str] = "schema_migrations"

    conversations = Source(
        "conversations c JOIN users u ON u.uid = c.uid",
        ("c.conversation_id", "u.user_id"),
        key="c.cid",
        start=0,
    )
    messages = MESSAGES
    memories = MEMORIES
    sessions = Source(
        "sessions s JOIN users u ON u.uid = s.uid JOIN conversations c ON c.cid = s.cid",
        [_JOINED.get(f, f"s.{f}") for f in SESSION_FIELDS],
        key="s.session_id",
    )

    def tags_condition(self, tags: Sequence[str]) -> tuple[str, list[Any]]:
        # Tags as rows, so "any of these tags" is an indexed lookup on exact text.
        return (
            "EXISTS (SELECT 1 FROM memory_tags t "
            f"WHERE t.rid = m.rid AND t.tag IN ({marks(len(tags))}))",
            list(tags),
        )

    def storage_bytes(self) -> Plan[int | None]:
        # The database file's pages (records, indexes, full-text index and vectors).
        rows = yield Fetch("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size")
        return int(rows[0][0])

    def vector_value(self, vector: Any) -> bytes | None:
        return None if vector is None else vector_to_bytes(vector)

    # ---------------------------------------------------------------- owners

    def user_key(self, user_id: str) -> Plan[int | None]:
        rows = yield Fetch(SELECT_USER, (user_id,))
        return rows[0][0] if rows else None

    def _new_user_key(self, user_id: str) -> Plan[int]:
        uid = yield from self.user_key(user_id)
        if uid is None:
            uid = yield Insert(INSERT_USER, (user_id,))
        return uid

    def create_conversations(self, claims: Mapping[str, str]) -> Plan[dict[str, Conversation]]:
        out: dict[str, Conversation] = {}
        for conv, user in claims.items():
            uid = yield from self._new_user_key(user)
            cid = yield Insert(INSERT_CONVERSATION, (conv, uid))
            out[conv] = Conversation(cid, user, uid)
        return out

    # ---------------------------------------------------------------- messages

    def append_alone(self, item: Append) -> Plan[AppendResult | None]:
        # The hot path, a message into a stored conversation of its user: look-up, insert,
        # its waiting key. A new conversation, or another user's, takes the shared append.
        (rec,) = item.records
        vector = self.vector_value(rec.vector)  # preparation, before the transaction
        if item.enforce_owner and vector is None:
            # The owner is known (the caller's user): no look-up first. Nothing inserted
            # (no such conversation, another user's, the id stored) takes the look-up below.
            args = (rec.id, *_MESSAGE_VALUES(rec), item.conversation_id, item.user_id)
            seq = yield Insert(INSERT_OWNED_MESSAGE, args)
            if seq is not None:
                rec.seq, rec.user_id = seq, item.user_id
                yield from self._pending(seq)
                if self.defer_vectors:
                    yield Execute(INSERT_VECTOR_PENDING, (seq,))
                return AppendResult(item.user_id, frozenset())
        rows = yield Fetch(SELECT_CONVERSATION, (item.conversation_id,))
        if not rows:
            return None
        cid, uid, owner = rows[0]
        if item.enforce_owner and owner != item.user_id:
            return None
        seq = yield Insert(INSERT_MESSAGE, message_row(rec, cid, uid))
        if seq is None:  # stored already
            return AppendResult(owner, frozenset((rec.id,)))
        rec.seq, rec.user_id = seq, owner
        yield from self.messages_added(
            [NewMessage(rec, Conversation(cid, owner, uid), None, vector)]
        )
        return AppendResult(owner, frozenset())

    def window_scope(
        self, conversation_id: str | None, user_id: str | None
    ) -> tuple[str, list[Any]]:
        if conversation_id is None or user_id is None:
            return super().window_scope(conversation_id, user_id)
        # Ownership is the conversation's: with the user's key as a one-time value, the
        # planner walks the conversation's index (filtering messages by their owner lets it
        # pick the user's index and step over all of that user's newer conversations).
        return (
            "c.conversation_id = ? AND c.uid = (SELECT uid FROM users WHERE user_id = ?)",
            [conversation_id, user_id],
        )

    def insert_messages(self, rows: Sequence[NewMessage], probed: frozenset[str]) -> Plan[set[str]]:
        if len(rows) == 1:
            # The hot path, one round of SQL: the insert itself says whether the id was stored.
            rec, conv = rows[0].record, rows[0].conversation
            seq = yield Insert(INSERT_MESSAGE, message_row(rec, conv.key, conv.owner_key))
            if seq is None:
                return set()
            rec.seq, rec.user_id = seq, conv.owner
            return {rec.id}
        unknown = [r.record.id for r in rows if r.record.id not in probed]
        stored = (yield from stored_ids(self, unknown)) if unknown else set()
        fresh = [r for r in rows if r.record.id not in stored]
        if fresh:
            first = (yield Fetch(MAX_SEQ))[0][0] + 1
            for seq, row in enumerate(fresh, first):
                row.record.seq, row.record.user_id = seq, row.conversation.owner
            yield ExecuteMany(
                INSERT_MESSAGE_AT,
                [
                    (
                        r.record.seq,
                        *message_row(r.record, r.conversation.key, r.conversation.owner_key),
                    )
                    for r in fresh
                ],
            )
        return {r.record.id for r in fresh}

    def messages_added(self, rows: Sequence[NewMessage]) -> Plan[None]:
        if len(rows) == 1:
            yield from self._pending(rows[0].record.seq)
        else:
            yield ExecuteMany(
                INSERT_SEARCH,
                [
                    (
                        r.record.seq,
                        message_scope(r.conversation.owner_key, r.conversation.key),
                        index_text(r.record.content),
                    )
                    for r in rows
                ],
            )
        if self.defer_vectors:
            waiting = [(r.record.seq,) for r in rows if r.vector is None]
            if waiting:
                yield ExecuteMany(INSERT_VECTOR_PENDING, waiting)
        vectors = [
            (r.record.seq, r.conversation.owner_key, r.vector) for r in rows if r.vector is not None
        ]
        if vectors:
            yield ExecuteMany(INSERT_MESSAGE_VECTOR, vectors)
            for uid in sorted({v[1] for v in vectors}):
                yield Execute(BUMP_VECTORS["message", False], (uid,))

    def _pending(self, seq: int) -> Plan[None]:
        # One message: its full-text row waits (a batch indexes many at a fraction of the
        # cost each); a search indexes what waits first, so it misses nothing.
        yield Execute(INSERT_PENDING, (seq,))
        if seq % INDEX_EVERY == 0:
            yield from index_pending(PENDING_BATCH)

    def messages_deleting(self, where: str, args: Sequence[Any]) -> Plan[None]:
        for table, key in (("search_fts", "rowid"), ("search_pending", "seq")):
            yield Execute(
                f"DELETE FROM {table} WHERE {key} IN (SELECT seq FROM messages WHERE {where})",
                args,
            )

    def messages_changed(self, owner_keys: Sequence[Any]) -> Plan[None]:
        # The vectors went with their rows (foreign key); the owner's copies are outdated.
        for uid in owner_keys:
            yield Execute(BUMP_VECTORS["message", True], (uid,))

    # ---------------------------------------------------------------- memories

    def upsert_memory(self, rec: MemoryRecord, body: Any, vector: Any) -> Plan[bool]:
        """The entry with its tags, its search row (replaced when its text changed) and its
        vector (replaced, or dropped when the new write has none)."""
        rows = yield Fetch(
            "SELECT m.rid, m.uid, m.content, u.user_id FROM memories m "
            "JOIN users u ON u.uid = m.uid WHERE m.id = ?",
            (rec.id,),
        )
        old = rows[0] if rows else None
        if old is not None and old[3] != rec.user_id:
            return False
        uid = old[1] if old is not None else (yield from self._new_user_key(rec.user_id))
        values = [uid, *MEMORY_CODEC.row(rec)[2:]]
        values[_TAGS] = json.dumps(rec.tags, ensure_ascii=False)
        if old is None:
            rid = yield Insert(INSERT_MEMORY, [*values, rec.id])
        else:
            rid = old[0]
            yield Execute(UPDATE_MEMORY, [*values, rid])
            yield Execute("DELETE FROM memory_tags WHERE rid = ?", (rid,))
        if rec.tags:
            yield ExecuteMany(INSERT_TAG, [(rid, tag) for tag in rec.tags])
        if old is None or old[2] != rec.content:
            if old is not None:
                yield Execute("DELETE FROM search_fts WHERE rowid = ?", (-rid,))
            yield Execute(INSERT_SEARCH, (-rid, memory_scope(uid), index_text(rec.content)))
        if old is not None:  # not an append: copies of the user's vectors reload
            yield Execute("DELETE FROM memory_vectors WHERE rid = ?", (rid,))
        if vector is not None:
            yield Execute(INSERT_MEMORY_VECTOR, (rid, uid, vector))
        if vector is not None or old is not None:
            yield Execute(BUMP_VECTORS["memory", old is not None], (uid,))
        return True

    def memories_deleting(self, keys: Sequence[Any]) -> Plan[None]:
        # Tags and vectors go with the rows (foreign keys); the search rows do not.
        for condition, args in self.among("rowid", [-rid for rid in keys]):
            yield Execute(f"DELETE FROM search_fts WHERE {condition}", args)

    def memories_changed(self, owner_keys: Sequence[Any]) -> Plan[None]:
        for uid in owner_keys:
            yield Execute(BUMP_VECTORS["memory", True], (uid,))

    # ---------------------------------------------------------------- sessions and users

    def upsert_session(self, rec: SessionRecord, conversation: Conversation) -> Plan[bool]:
        written = yield Execute(
            "INSERT INTO sessions (session_id, uid, cid, is_active, started_us, payload) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
            "cid = excluded.cid, is_active = excluded.is_active, "
            "started_us = excluded.started_us, payload = excluded.payload "
            "WHERE sessions.uid = excluded.uid",
            (
                rec.session_id,
                conversation.owner_key,
                conversation.key,
                int(rec.is_active),
                rec.started_us,
                rec.payload,
            ),
        )
        return written == 1

    def forget_steps(self, key: Any) -> list[tuple[str | None, str, str, list[Any]]]:
        return [
            # The owner token finds every search row of the user, messages and memories alike.
            (None, "search_fts", "search_fts MATCH ?", [f'scope : "u{key}"']),
            (None, "search_pending", "seq IN (SELECT seq FROM messages WHERE uid = ?)", [key]),
            ("messages", "messages", "uid = ?", [key]),
            ("memories", "memories", "uid = ?", [key]),
            ("sessions", "sessions", "uid = ?", [key]),
            # Sessions of other users cannot sit in the user's conversations (claims are
            # enforced); this keeps the foreign keys satisfied even for rows of other tools.
            ("sessions", "sessions", "cid IN (SELECT cid FROM conversations WHERE uid = ?)", [key]),
            ("conversations", "conversations", "uid = ?", [key]),
            (None, "users", "uid = ?", [key]),
        ]

    # ---------------------------------------------------------------- search

    def search_terms(self, query: str) -> list[str]:
        return list(dict.fromkeys(terms(query)))

    def search_messages(
        self, key: Any, terms: Any, conversation_id: str | None, limit: int
    ) -> Plan[list[SearchHit]]:
        extra, args, scope = "", [], f"u{key}"
        if conversation_id is not None:
            rows = yield Fetch(SELECT_CONVERSATION, (conversation_id,))
            if not rows or rows[0][1] != key:
                return []
            # The conversation's own token narrows the index lookup to that conversation.
            scope, extra, args = f"c{rows[0][0]}", "AND +m.cid = ? ", [rows[0][0]]
        alone = False
        if conversation_id is None:
            rows = yield Fetch(ONLY_USER)
            alone = bool(rows) and rows[0][0] == key
        ranked = yield from ranked_rows(terms, scope, limit, alone=alone)
        if ranked:
            scores = dict(ranked)
            rows = yield Fetch(
                f"SELECT {MESSAGES.select} FROM {MESSAGES.tables} "
                f"WHERE m.seq IN ({marks(len(scores))}) AND +m.uid = ? {extra}",
                [*scores, key, *args],
            )
            if len(rows) == len(scores):  # else rows out of step with the index: see below
                records = [self.message(row) for row in rows]
                records.sort(key=lambda r: (-scores[r.seq], -r.ts_us, -r.seq))
                return [SearchHit("message", scores[r.seq], message=r) for r in records[:limit]]
        elif ranked is not None:
            return []
        # The plain query: every matching row ranked and joined, ties broken on the records.
        rows = yield Fetch(
            SEARCH_MESSAGES.format(extra=extra), [_expression(terms, scope), key, *args, limit]
        )
        return [SearchHit("message", row[11], message=self.message(row)) for row in rows]

    def search_memories(
        self, key: Any, terms: Any, conditions: tuple[str, list[Any]], limit: int
    ) -> Plan[list[SearchHit]]:
        extra, args = conditions
        rows = yield Fetch(
            SEARCH_MEMORIES.format(extra=extra),
            [_expression(terms, f"u{key}"), key, *args, limit],
        )
        return [SearchHit("memory", row[12], memory=self.memory(row)) for row in rows]

    # ---------------------------------------------------------------- schema

    def schema_version(self) -> Plan[int]:
        found = yield Fetch(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )
        if not found:
            return 0
        rows = yield Fetch("SELECT coalesce(max(version), 0) FROM schema_migrations")
        return int(rows[0][0])

    def create_version_table(self) -> Plan[None]:
        yield Execute(_VERSION_TABLE)

    def lock_schema(self) -> Plan[None]:
        # The write lock first; the runner then looks again (another process may have
        # migrated meanwhile).
        yield Execute("BEGIN IMMEDIATE")

    def unlock_schema(self, done: bool) -> Plan[None]:
        try:
            yield Execute("COMMIT" if done else "ROLLBACK")
        except Exception:
            if done:
                raise  # a failed ROLLBACK: the engine ended the transaction already


class DeferringSQLiteDialect(SQLiteDialect):
    """The dialect of a store with ``vectors="deferred"``: messages wait for their vectors."""

    defer_vectors = True


DIALECT = SQLiteDialect()
DEFERRING = DeferringSQLiteDialect()
