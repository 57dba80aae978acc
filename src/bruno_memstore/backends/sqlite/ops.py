"""The SQL of :class:`~bruno_memstore.backends.sqlite.SQLiteMemory`, as functions of a connection.

Each function runs on a worker thread against the connection that thread owns (see
``threads``): writes inside the writer's transaction, reads as one statement or inside
:func:`snapshot`. They take and return the records of :mod:`bruno_memstore.models`.

The statements are module constants so that the benchmark's raw-driver baseline runs exactly
the same SQL. Vector search (:func:`vector_search`) runs on one thread, which owns the
in-process indexes it brings up to date (:class:`LoadedIndexes`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...errors import OwnershipError
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SessionRecord,
    to_us,
    utcnow,
)
from ...primitives import AppendResult, memory_taken, session_taken
from ...search import index_text, terms
from ..kit.vectors import VectorIndex, vector_from_bytes
from .schema import VECTOR_COUNTERS, memory_scope, message_scope

__all__ = [
    "INSERT_MESSAGE",
    "INSERT_MESSAGE_AT",
    "INSERT_SEARCH",
    "KINDS",
    "SELECT_CONVERSATION",
    "WINDOW_OF_CONVERSATION",
    "WINDOW_OF_USER",
    "CachedIndex",
    "LoadedIndexes",
    "append_messages",
    "checkpoint_wal",
    "claim_vector_space",
    "compact_search_index",
    "conversation_owner",
    "counters_of",
    "delete_memory",
    "delete_messages",
    "erasing",
    "export_page",
    "forget_user",
    "get_memory",
    "get_messages",
    "get_session",
    "latest_session",
    "load_vectors",
    "match_expression",
    "message_row",
    "purge_expired",
    "put_memory",
    "put_session",
    "put_vectors",
    "query_memories",
    "read_window",
    "rebuild_file",
    "search_bodies",
    "snapshot",
    "statistics",
    "text_search",
    "vector_counters",
    "vector_search",
    "vector_space",
]

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...) list
KINDS = ("message", "memory")
_MIN_KEY = -(2**63)

# ------------------------------------------------------------------------------ statements

MESSAGE_COLUMNS = (
    "m.id, c.conversation_id, m.role, m.content, m.message_type, m.timestamp, m.ts_us, "
    "m.metadata, m.parent_id, u.user_id, m.seq"
)  # in MessageRecord's field order
MEMORY_COLUMNS = (
    "m.id, u.user_id, m.content, m.memory_type, m.category, m.tags, m.confidence, "
    "m.importance, m.created_us, m.expires_us, m.conversation_id, m.payload"
)
SESSION_COLUMNS = "s.session_id, u.user_id, c.conversation_id, s.is_active, s.started_us, s.payload"

SELECT_USER = "SELECT uid FROM users WHERE user_id = ?"
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
# Batches number their rows themselves, so the search rows can use the same keys.
INSERT_MESSAGE_AT = (
    "INSERT INTO messages (seq, id, cid, uid, role, content, message_type, timestamp, ts_us, "
    "metadata, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM messages"
INSERT_SEARCH = "INSERT INTO search_fts (rowid, scope, body) VALUES (?, ?, ?)"
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
SELECT_VECTOR_COUNTERS = f"SELECT uid, {', '.join(VECTOR_COUNTERS)} FROM users WHERE user_id = ?"

WINDOW_OF_CONVERSATION = (
    f"SELECT {MESSAGE_COLUMNS} FROM conversations c JOIN users u ON u.uid = c.uid "
    "JOIN messages m ON m.cid = c.cid WHERE c.conversation_id = ? "
    "ORDER BY m.ts_us DESC, m.seq DESC LIMIT ?"
)
WINDOW_OF_OWNED_CONVERSATION = (
    f"SELECT {MESSAGE_COLUMNS} FROM conversations c JOIN users u ON u.uid = c.uid "
    "JOIN messages m ON m.cid = c.cid WHERE c.conversation_id = ? AND u.user_id = ? "
    "ORDER BY m.ts_us DESC, m.seq DESC LIMIT ?"
)
WINDOW_OF_USER = (
    f"SELECT {MESSAGE_COLUMNS} FROM users u JOIN messages m ON m.uid = u.uid "
    "JOIN conversations c ON c.cid = m.cid WHERE u.user_id = ? "
    "ORDER BY m.ts_us DESC, m.seq DESC LIMIT ?"
)
SEARCH_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS}, -f.rank FROM search_fts f "
    "JOIN messages m ON m.seq = f.rowid JOIN conversations c ON c.cid = m.cid "
    "JOIN users u ON u.uid = m.uid "
    "WHERE search_fts MATCH ? AND f.rowid > 0 AND m.uid = ? {extra}"
    "ORDER BY f.rank, m.ts_us DESC, m.seq DESC LIMIT ?"
)
SEARCH_MEMORIES = (
    f"SELECT {MEMORY_COLUMNS}, -f.rank FROM search_fts f "
    "JOIN memories m ON m.rid = -f.rowid JOIN users u ON u.uid = m.uid "
    "WHERE search_fts MATCH ? AND f.rowid < 0 AND m.uid = ? {extra}"
    "ORDER BY f.rank, m.created_us DESC, m.id LIMIT ?"
)
_SESSION_FROM = (
    "FROM sessions s JOIN users u ON u.uid = s.uid JOIN conversations c ON c.cid = s.cid "
)


# ------------------------------------------------------------------------------ helpers


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Run several reads against one consistent snapshot (a read transaction).

    Inside a transaction already (reads served by the writer, for ``:memory:``), that one is
    the snapshot.
    """
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _all(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    # fetchall() always: a half-read statement would pin the reader's snapshot.
    return conn.execute(sql, args).fetchall()


def _one(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> Any:
    rows = conn.execute(sql, args).fetchall()
    return rows[0] if rows else None


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _user_key(conn: sqlite3.Connection, user_id: str) -> int | None:
    row = _one(conn, SELECT_USER, (user_id,))
    return row[0] if row else None


def _owned(
    conn: sqlite3.Connection, conversation_id: str, user_id: str, enforce: bool, operation: str
) -> tuple[int, int, str] | None:
    """``(cid, uid, owner)`` of the conversation, ``None`` if new; raises ``OwnershipError``
    if ``enforce`` and another user owns it."""
    row = _one(conn, SELECT_CONVERSATION, (conversation_id,))
    if row is None:
        return None
    if enforce and row[2] != user_id:
        raise OwnershipError(
            f"conversation {conversation_id!r} belongs to another user",
            backend="sqlite",
            operation=operation,
        )
    return row[0], row[1], row[2]


def _claim(
    conn: sqlite3.Connection, conversation_id: str, user_id: str, enforce: bool, operation: str
) -> tuple[int, int, str]:
    """``(cid, uid, owner)`` of the conversation, created for ``user_id`` if new."""
    owned = _owned(conn, conversation_id, user_id, enforce, operation)
    return owned or _create_conversation(conn, conversation_id, user_id)


def _create_conversation(
    conn: sqlite3.Connection, conversation_id: str, user_id: str
) -> tuple[int, int, str]:
    uid = _user_key(conn, user_id)
    if uid is None:
        uid = conn.execute(INSERT_USER, (user_id,)).lastrowid
    cid = conn.execute(INSERT_CONVERSATION, (conversation_id, uid)).lastrowid
    assert uid is not None and cid is not None
    return cid, uid, user_id


def match_expression(query: str, scope: str) -> str | None:
    """The FTS5 query for ``query``'s terms within ``scope`` (``None``: nothing to look for).

    Every term is a quoted string, so FTS5 syntax in user text (``AND``, ``NEAR``, ``*``,
    quotes, parentheses) is plain text.
    """
    words = list(dict.fromkeys(terms(query)))
    if not words:
        return None
    alternatives = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
    return f'scope : "{scope}" AND body : ({alternatives})'


def _memory(row: Sequence[Any]) -> MemoryRecord:
    return MemoryRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        json.loads(row[5]),
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
    )


def _session(row: Sequence[Any]) -> SessionRecord:
    return SessionRecord(row[0], row[1], row[2], bool(row[3]), row[4], row[5])


def _memory_filter(flt: MemoryFilter) -> tuple[str, list[Any]]:
    """SQL conditions (on alias ``m``) for every filter of ``flt`` but the user."""
    sql: list[str] = []
    args: list[Any] = []
    if flt.memory_types:
        sql.append(f"AND m.memory_type IN ({_marks(len(flt.memory_types))})")
        args += flt.memory_types
    if flt.categories:
        sql.append(f"AND m.category IN ({_marks(len(flt.categories))})")
        args += flt.categories
    if flt.tags:
        sql.append(
            "AND EXISTS (SELECT 1 FROM memory_tags t "
            f"WHERE t.rid = m.rid AND t.tag IN ({_marks(len(flt.tags))}))"
        )
        args += flt.tags
    if flt.min_confidence > 0:
        sql.append("AND m.confidence >= ?")
        args.append(flt.min_confidence)
    if flt.min_importance > 0:
        sql.append("AND m.importance >= ?")
        args.append(flt.min_importance)
    if not flt.include_expired:
        sql.append("AND (m.expires_us IS NULL OR m.expires_us > ?)")
        args.append(flt.now_us)
    return " ".join(sql) + " ", args


# ------------------------------------------------------------------------------ erasure
#
# Every connection runs with ``secure_delete`` on, so a deleted row's bytes are overwritten
# with zeros in its page (and freed pages are zeroed). Two copies escape that:
#
# * FTS5 deletes by writing "delete" entries into a new segment; the words and positions of
#   the deleted row stay in the old segments until a merge drops them. ``optimize`` merges
#   every segment into one, leaving only live rows' entries (the old segments' pages are then
#   freed, and zeroed). FTS5's own 'secure-delete' option (SQLite 3.42+) would do this per
#   row, but it changes the index format for older SQLite versions, and the library must
#   work with the SQLite Python is built with: ``optimize`` works on every version.
# * WAL mode writes pages to the WAL; the old page images stay there until a checkpoint
#   copies the new ones into the database file and the WAL is truncated.


def compact_search_index(conn: sqlite3.Connection) -> None:
    """Merge the full-text index into one segment, dropping the entries of deleted rows."""
    conn.execute("INSERT INTO search_fts (search_fts) VALUES ('optimize')")


def erasing(conn: sqlite3.Connection, delete: Callable[[sqlite3.Connection], Any]) -> Any:
    """Run a deletion (``delete_messages``, ``delete_memory``, ``purge_expired``,
    ``forget_user``); if it deleted anything, merge the full-text index after it."""
    result = delete(conn)
    if any(result.values()) if isinstance(result, dict) else result:
        compact_search_index(conn)
    return result


def checkpoint_wal(conn: sqlite3.Connection) -> bool:
    """Copy the WAL into the database file and truncate it to zero bytes (no transaction).

    Waits up to the busy timeout for other connections reading older snapshots; returns
    ``False`` (and logs) if one still was, leaving old page images in the WAL until the next
    complete checkpoint.
    """
    try:
        busy, _frames, _copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
    except sqlite3.OperationalError as exc:
        # Another process checkpointing at this moment: the erasure itself is committed.
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        busy = 1
    if busy:
        log.warning(
            "SQLite: another connection kept reading, so the WAL was not truncated; it holds "
            "pages of erased records until the next complete checkpoint"
        )
    return not busy


def rebuild_file(conn: sqlite3.Connection) -> None:
    """Rewrite the database file with only live pages, then truncate the WAL (no transaction).

    Erases what deletions made before ``secure_delete`` was on may have left in free pages.
    """
    conn.execute("VACUUM")
    checkpoint_wal(conn)


# ------------------------------------------------------------------------------ messages


def message_row(rec: MessageRecord, cid: int, uid: int) -> tuple[Any, ...]:
    return (
        rec.id,
        cid,
        uid,
        rec.role,
        rec.content,
        rec.message_type,
        rec.timestamp,
        rec.ts_us,
        rec.metadata,
        rec.parent_id,
    )


def conversation_owner(conn: sqlite3.Connection, conversation_id: str) -> str | None:
    row = _one(conn, SELECT_CONVERSATION, (conversation_id,))
    return row[2] if row else None


def append_messages(
    conn: sqlite3.Connection,
    conversation_id: str,
    user_id: str,
    records: Sequence[MessageRecord],
    enforce_owner: bool,
    bodies: Sequence[str],
    vectors: Sequence[bytes | None] = (),
) -> AppendResult:
    """Claim the conversation, insert the new records and index them (writer transaction).

    Records already stored are skipped; if all are, nothing is written (a new conversation
    is looked up first, so it is created only when something goes in). ``bodies`` are the
    records' analysed texts (:func:`search_bodies`) and ``vectors`` their vectors as bytes
    (``None``: none), in the same order.
    """
    owned = _owned(conn, conversation_id, user_id, enforce_owner, "store_message")
    existing: set[str] = set()
    if records and (owned is None or len(records) > 1):
        existing = _stored_ids(conn, [r.id for r in records])
        if len(existing) == len(records):
            # Nothing to insert: a new conversation is not created either.
            return AppendResult(owned[2] if owned else user_id, frozenset(existing))
    cid, uid, owner = owned or _create_conversation(conn, conversation_id, user_id)
    scope = message_scope(uid, cid)
    if len(records) == 1:
        # In an existing conversation (the hot path) one round of SQL: the insert itself
        # says whether the id was already stored.
        rec = records[0]
        cur = conn.execute(INSERT_MESSAGE, message_row(rec, cid, uid))
        if cur.rowcount != 1:
            return AppendResult(owner, frozenset((rec.id,)))
        conn.execute(INSERT_SEARCH, (cur.lastrowid, scope, bodies[0]))
        if vectors and vectors[0] is not None:
            conn.execute(INSERT_MESSAGE_VECTOR, (cur.lastrowid, uid, vectors[0]))
            conn.execute(BUMP_VECTORS["message", False], (uid,))
        rec.seq, rec.user_id = cur.lastrowid, owner
        return AppendResult(owner, frozenset())
    fresh = [i for i, r in enumerate(records) if r.id not in existing]
    if fresh:
        first = _one(conn, MAX_SEQ)[0] + 1
        rows = []
        search_rows = []
        vector_rows = []
        for seq, i in enumerate(fresh, first):
            rec = records[i]
            rec.seq, rec.user_id = seq, owner
            rows.append((seq, *message_row(rec, cid, uid)))
            search_rows.append((seq, scope, bodies[i]))
            if vectors and vectors[i] is not None:
                vector_rows.append((seq, uid, vectors[i]))
        conn.executemany(INSERT_MESSAGE_AT, rows)
        conn.executemany(INSERT_SEARCH, search_rows)
        if vector_rows:
            conn.executemany(INSERT_MESSAGE_VECTOR, vector_rows)
            conn.execute(BUMP_VECTORS["message", False], (uid,))
    return AppendResult(owner, frozenset(existing))


def _stored_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    """Which of these message ids are stored."""
    stored: set[str] = set()
    for chunk in _chunks(ids):
        found = _all(conn, f"SELECT id FROM messages WHERE id IN ({_marks(len(chunk))})", chunk)
        stored.update(row[0] for row in found)
    return stored


def search_bodies(texts: Sequence[str]) -> list[str]:
    """What the full-text index holds for each text: the shared analyzer's terms."""
    return [index_text(text) for text in texts]


def get_messages(conn: sqlite3.Connection, ids: Sequence[str]) -> list[MessageRecord]:
    out: list[MessageRecord] = []
    for chunk in _chunks(ids):
        rows = _all(
            conn,
            f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN conversations c ON c.cid = m.cid "
            f"JOIN users u ON u.uid = m.uid WHERE m.id IN ({_marks(len(chunk))})",
            chunk,
        )
        out += [MessageRecord(*row) for row in rows]
    return out


def read_window(
    conn: sqlite3.Connection, conversation_id: str | None, user_id: str | None, limit: int | None
) -> list[MessageRecord]:
    """The newest ``limit`` messages, oldest first (see ``StoragePrimitives._read_window``)."""
    n = -1 if limit is None else limit
    if conversation_id is None:
        rows = _all(conn, WINDOW_OF_USER, (user_id, n))
    elif user_id is None:
        rows = _all(conn, WINDOW_OF_CONVERSATION, (conversation_id, n))
    else:
        rows = _all(conn, WINDOW_OF_OWNED_CONVERSATION, (conversation_id, user_id, n))
    rows.reverse()
    return [MessageRecord(*row) for row in rows]


def delete_messages(
    conn: sqlite3.Connection, conversation_id: str, keep_roles: frozenset[str]
) -> int:
    """Delete the conversation's messages not in ``keep_roles`` (all: the conversation too)."""
    row = _one(conn, SELECT_CONVERSATION, (conversation_id,))
    if row is None:
        return 0
    cid, uid = row[0], row[1]
    where = "cid = ?"
    args: list[Any] = [cid]
    if keep_roles:
        where += f" AND role NOT IN ({_marks(len(keep_roles))})"
        args += sorted(keep_roles)
    conn.execute(
        f"DELETE FROM search_fts WHERE rowid IN (SELECT seq FROM messages WHERE {where})", args
    )
    # The vectors go with their rows (foreign key), and the owner's copies are outdated.
    count = conn.execute(f"DELETE FROM messages WHERE {where}", args).rowcount
    if count:
        conn.execute(BUMP_VECTORS["message", True], (uid,))
    if not keep_roles:
        conn.execute("DELETE FROM sessions WHERE cid = ?", (cid,))
        conn.execute("DELETE FROM conversations WHERE cid = ?", (cid,))
    return count


# ------------------------------------------------------------------------------ memories


def put_memory(
    conn: sqlite3.Connection, rec: MemoryRecord, body: str, vector: bytes | None = None
) -> None:
    """Insert the entry, or replace the same user's entry with this id: its vector too, and
    its search row when its text changed. Another user's entry raises ``OwnershipError``.

    ``body`` is the entry's analysed text (:func:`search_bodies`), ``vector`` its vector as
    bytes (``None``: none; a replaced entry then has none either). The check and the write
    run in the writer's transaction, which holds the database's write lock.
    """
    old = _one(
        conn,
        "SELECT m.rid, m.uid, m.content, u.user_id FROM memories m "
        "JOIN users u ON u.uid = m.uid WHERE m.id = ?",
        (rec.id,),
    )
    if old is not None and old[3] != rec.user_id:
        raise memory_taken(rec.id)
    uid = old[1] if old is not None else _user_key(conn, rec.user_id)
    if uid is None:
        uid = conn.execute(INSERT_USER, (rec.user_id,)).lastrowid
    assert uid is not None
    values = (
        uid,
        rec.content,
        rec.memory_type,
        rec.category,
        json.dumps(rec.tags, ensure_ascii=False),
        rec.confidence,
        rec.importance,
        rec.created_us,
        rec.expires_us,
        rec.conversation_id,
        rec.payload,
    )
    if old is None:
        rid = conn.execute(
            "INSERT INTO memories (uid, content, memory_type, category, tags, confidence, "
            "importance, created_us, expires_us, conversation_id, payload, id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, rec.id),
        ).lastrowid
        assert rid is not None
        conn.executemany(INSERT_TAG, [(rid, tag) for tag in rec.tags])
        conn.execute(INSERT_SEARCH, (-rid, memory_scope(uid), body))
        if vector is not None:
            conn.execute(INSERT_MEMORY_VECTOR, (rid, uid, vector))
            conn.execute(BUMP_VECTORS["memory", False], (uid,))
        return
    rid = old[0]
    conn.execute(
        "UPDATE memories SET uid = ?, content = ?, memory_type = ?, category = ?, tags = ?, "
        "confidence = ?, importance = ?, created_us = ?, expires_us = ?, conversation_id = ?, "
        "payload = ? WHERE rid = ?",
        (*values, rid),
    )
    conn.execute("DELETE FROM memory_tags WHERE rid = ?", (rid,))
    conn.executemany(INSERT_TAG, [(rid, tag) for tag in rec.tags])
    if old[2] != rec.content:
        conn.execute("DELETE FROM search_fts WHERE rowid = ?", (-rid,))
        conn.execute(INSERT_SEARCH, (-rid, memory_scope(uid), body))
    # The old vector is replaced (or dropped): not an append, so copies reload.
    conn.execute("DELETE FROM memory_vectors WHERE rid = ?", (rid,))
    if vector is not None:
        conn.execute(INSERT_MEMORY_VECTOR, (rid, uid, vector))
    conn.execute(BUMP_VECTORS["memory", True], (uid,))


def get_memory(conn: sqlite3.Connection, memory_id: str) -> MemoryRecord | None:
    row = _one(
        conn,
        f"SELECT {MEMORY_COLUMNS} FROM memories m JOIN users u ON u.uid = m.uid WHERE m.id = ?",
        (memory_id,),
    )
    return _memory(row) if row else None


def query_memories(conn: sqlite3.Connection, flt: MemoryFilter) -> list[MemoryRecord]:
    conditions, args = _memory_filter(flt)
    rows = _all(
        conn,
        f"SELECT {MEMORY_COLUMNS} FROM users u JOIN memories m ON m.uid = u.uid "
        f"WHERE u.user_id = ? {conditions}"
        "ORDER BY m.importance DESC, m.created_us DESC, m.id LIMIT ?",
        [flt.user_id, *args, flt.limit],
    )
    return [_memory(row) for row in rows]


def delete_memory(conn: sqlite3.Connection, memory_id: str, user_id: str | None = None) -> bool:
    """Delete the entry (only ``user_id``'s, when given: ``OwnershipError`` otherwise)."""
    row = _one(
        conn,
        "SELECT m.rid, m.uid, u.user_id FROM memories m JOIN users u ON u.uid = m.uid "
        "WHERE m.id = ?",
        (memory_id,),
    )
    if row is None:
        return False
    if user_id is not None and row[2] != user_id:
        raise memory_taken(memory_id)
    conn.execute("DELETE FROM search_fts WHERE rowid = ?", (-row[0],))
    conn.execute("DELETE FROM memories WHERE rid = ?", (row[0],))
    conn.execute(BUMP_VECTORS["memory", True], (row[1],))
    return True


def purge_expired(conn: sqlite3.Connection, now_us: int) -> int:
    owners = set(_all(conn, "SELECT uid FROM memories WHERE expires_us <= ?", (now_us,)))
    conn.executemany(BUMP_VECTORS["memory", True], owners)
    conn.execute(
        "DELETE FROM search_fts WHERE rowid IN (SELECT -rid FROM memories WHERE expires_us <= ?)",
        (now_us,),
    )
    return conn.execute("DELETE FROM memories WHERE expires_us <= ?", (now_us,)).rowcount


# ------------------------------------------------------------------------------ sessions


def put_session(conn: sqlite3.Connection, rec: SessionRecord, operation: str) -> None:
    """Upsert the session, claiming its conversation; ``OwnershipError`` (nothing written)
    if another user has the session id or the conversation."""
    held = _one(
        conn,
        "SELECT u.user_id FROM sessions s JOIN users u ON u.uid = s.uid WHERE s.session_id = ?",
        (rec.session_id,),
    )
    if held is not None and held[0] != rec.user_id:
        raise session_taken(rec.session_id)
    cid, uid, _owner = _claim(conn, rec.conversation_id, rec.user_id, True, operation)
    conn.execute(
        "INSERT INTO sessions (session_id, uid, cid, is_active, started_us, payload) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET uid = excluded.uid, "
        "cid = excluded.cid, is_active = excluded.is_active, "
        "started_us = excluded.started_us, payload = excluded.payload",
        (rec.session_id, uid, cid, int(rec.is_active), rec.started_us, rec.payload),
    )


def get_session(conn: sqlite3.Connection, session_id: str) -> SessionRecord | None:
    row = _one(
        conn, f"SELECT {SESSION_COLUMNS} {_SESSION_FROM}WHERE s.session_id = ?", (session_id,)
    )
    return _session(row) if row else None


def latest_session(
    conn: sqlite3.Connection, user_id: str, conversation_id: str | None, active_only: bool
) -> SessionRecord | None:
    where = "u.user_id = ?"
    args: list[Any] = [user_id]
    if conversation_id is not None:
        where += " AND c.conversation_id = ?"
        args.append(conversation_id)
    if active_only:
        where += " AND s.is_active = 1"
    row = _one(
        conn,
        f"SELECT {SESSION_COLUMNS} {_SESSION_FROM}WHERE {where} "
        "ORDER BY s.started_us DESC, s.session_id DESC LIMIT 1",
        args,
    )
    return _session(row) if row else None


# ------------------------------------------------------------------------------ search


def text_search(
    conn: sqlite3.Connection,
    user_id: str,
    query: str,
    kinds: frozenset[str],
    conversation_id: str | None,
    limit: int,
    flt: MemoryFilter | None,
) -> list[SearchHit]:
    """BM25-ranked hits (score ``-bm25``, higher is better) of the user's records."""
    hits: list[SearchHit] = []
    with snapshot(conn):
        uid = _user_key(conn, user_id)
        if uid is None:
            return hits
        if "message" in kinds:
            hits += _search_messages(conn, uid, query, conversation_id, limit)
        if "memory" in kinds:
            hits += _search_memories(conn, uid, query, conversation_id, limit, flt)
    if len(kinds) > 1:
        hits.sort(key=lambda h: -h.score)
        del hits[limit:]
    return hits


def _search_messages(
    conn: sqlite3.Connection, uid: int, query: str, conversation_id: str | None, limit: int
) -> list[SearchHit]:
    extra = ""
    args: list[Any] = []
    scope = f"u{uid}"
    if conversation_id is not None:
        conv = _one(conn, SELECT_CONVERSATION, (conversation_id,))
        if conv is None or conv[1] != uid:
            return []
        # The conversation's own token narrows the index lookup to that conversation.
        scope = f"c{conv[0]}"
        extra = "AND m.cid = ? "
        args.append(conv[0])
    expression = match_expression(query, scope)
    if expression is None:
        return []
    rows = _all(conn, SEARCH_MESSAGES.format(extra=extra), [expression, uid, *args, limit])
    return [SearchHit("message", row[11], message=MessageRecord(*row[:11])) for row in rows]


def _search_memories(
    conn: sqlite3.Connection,
    uid: int,
    query: str,
    conversation_id: str | None,
    limit: int,
    flt: MemoryFilter | None,
) -> list[SearchHit]:
    expression = match_expression(query, f"u{uid}")
    if expression is None:
        return []
    if flt is None:
        conditions, args = "AND (m.expires_us IS NULL OR m.expires_us > ?) ", [to_us(utcnow())]
    else:
        conditions, args = _memory_filter(flt)
    if conversation_id is not None:
        conditions += "AND m.conversation_id = ? "
        args.append(conversation_id)
    rows = _all(conn, SEARCH_MEMORIES.format(extra=conditions), [expression, uid, *args, limit])
    return [SearchHit("memory", row[12], memory=_memory(row)) for row in rows]


# ------------------------------------------------------------------------------ vectors

_VECTOR_KEY = {"message": "seq", "memory": "rid"}
_LOAD_BATCH = 4096
LOAD_VECTORS = {
    kind: f"SELECT {key}, vector FROM {kind}_vectors WHERE uid = ? AND {key} > ? "
    f"ORDER BY {key} LIMIT {_LOAD_BATCH}"
    for kind, key in _VECTOR_KEY.items()
}
INSERT_VECTOR = {"message": INSERT_MESSAGE_VECTOR, "memory": INSERT_MEMORY_VECTOR}
_SPACE = "vector_space"  # the settings row holding the recorded model and dimension


def vector_space(conn: sqlite3.Connection) -> tuple[str, int] | None:
    """The recorded ``(model, dimension)`` of the store's vectors, or ``None``."""
    row = _one(conn, "SELECT value FROM settings WHERE name = ?", (_SPACE,))
    if row is None:
        return None
    space = json.loads(row[0])
    return str(space["model"]), int(space["dimension"])


def claim_vector_space(
    conn: sqlite3.Connection, model: str, dimension: int, replace: bool
) -> tuple[str, int]:
    """Record the space unless one is (writer transaction); ``replace`` drops every vector
    and records it in any case. Returns the space recorded afterwards."""
    value = json.dumps({"model": model, "dimension": dimension}, ensure_ascii=False)
    if replace:
        conn.execute("DELETE FROM message_vectors")
        conn.execute("DELETE FROM memory_vectors")
        conn.execute(BUMP_EVERY_USER)
        conflict = "DO UPDATE SET value = excluded.value"
    else:
        conflict = "DO NOTHING"
    conn.execute(
        f"INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) {conflict}",
        (_SPACE, value),
    )
    recorded = vector_space(conn)
    assert recorded is not None
    return recorded


def put_vectors(conn: sqlite3.Connection, kind: str, items: Sequence[tuple[str, bytes]]) -> int:
    """Attach or replace the vectors of stored records, by record id (writer transaction).

    Ids no longer stored are skipped. Returns how many vectors were written.
    """
    table = "messages" if kind == "message" else "memories"
    blobs = dict(items)
    rows: list[tuple[int, int, bytes]] = []
    for chunk in _chunks(list(blobs)):
        found = _all(
            conn,
            f"SELECT id, {_VECTOR_KEY[kind]}, uid FROM {table} WHERE id IN ({_marks(len(chunk))})",
            chunk,
        )
        rows += [(key, uid, blobs[rid]) for rid, key, uid in found]
    conn.executemany(INSERT_VECTOR[kind], rows)
    for uid in {row[1] for row in rows}:
        conn.execute(BUMP_VECTORS[kind, True], (uid,))
    return len(rows)


def vector_counters(conn: sqlite3.Connection, user_id: str) -> tuple[int, ...] | None:
    """``(uid, *VECTOR_COUNTERS)`` of the user, or ``None`` for an unknown user."""
    row = _one(conn, SELECT_VECTOR_COUNTERS, (user_id,))
    return tuple(row) if row else None


def counters_of(counters: Sequence[int], kind: str) -> tuple[int, int]:
    """``(generation, epoch)`` of ``kind`` in a :func:`vector_counters` row."""
    at = 1 if kind == "message" else 3
    return counters[at], counters[at + 1]


def load_vectors(
    conn: sqlite3.Connection, kind: str, uid: int, after: int, index: VectorIndex
) -> int:
    """Put the user's vectors of ``kind`` keyed above ``after`` into ``index``; return the
    last key loaded (``after`` if none)."""
    while True:
        rows = _all(conn, LOAD_VECTORS[kind], (uid, after))
        if rows:
            index.put_many((key, vector_from_bytes(blob)) for key, blob in rows)
            after = rows[-1][0]
        if len(rows) < _LOAD_BATCH:
            return after


class _Loaded:
    __slots__ = ("generation", "index", "last")

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self.generation: int | None = None  # the user's generation the index reflects
        self.last = 0  # the highest key loaded


class LoadedIndexes:
    """How far each cached per-user index has been loaded.

    Indexes come from a ``UserVectorCache`` keyed by ``(uid, epoch)``, created empty. Before
    a search, :meth:`bring_up_to_date` loads the rows stored since the index was last brought
    up to date: all of them for a new index, only appended ones later (keys only grow while
    the epoch stands, so they are the keys above the last one loaded). Used by one thread
    only, so nothing here needs a lock.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()

    def bring_up_to_date(
        self,
        conn: sqlite3.Connection,
        kind: str,
        user_id: str,
        uid: int,
        index: VectorIndex,
        generation: int,
    ) -> None:
        key = (kind, user_id)
        entry = self._entries.get(key)
        if entry is None or entry.index is not index:
            # A new index, or one whose progress was forgotten: (re)load every row (putting
            # a key again replaces its vector, so this is safe on a loaded index too).
            entry = self._entries[key] = _Loaded(index)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if entry.generation != generation:
            entry.last = load_vectors(conn, kind, uid, entry.last, index)
            entry.generation = generation


CachedIndex = tuple[tuple[int, int], VectorIndex]  # ((uid, epoch) it was cached for, index)


def vector_search(
    conn: sqlite3.Connection,
    user_id: str,
    vector: Any,
    conversation_id: str | None,
    limit: int,
    flt: MemoryFilter | None,
    indexes: dict[str, CachedIndex],
    loaded: LoadedIndexes,
) -> list[SearchHit]:
    """The user's records nearest to ``vector``, best first, score = cosine similarity.

    ``indexes`` holds the cached index of each kind to search. Within one snapshot: the
    user's counters are read; an index cached for the current epoch is brought up to date,
    otherwise (the user's vectors were removed or replaced since) a private one is loaded;
    the candidates are restricted before ranking (conversation; memory filter and expiry),
    and the winning records are read.
    """
    with snapshot(conn):
        counters = vector_counters(conn, user_id)
        if counters is None:
            return []
        uid = counters[0]
        ranked: list[tuple[float, str, int]] = []
        for kind, (cached_for, index) in indexes.items():
            generation, epoch = counters_of(counters, kind)
            if cached_for == (uid, epoch):
                loaded.bring_up_to_date(conn, kind, user_id, uid, index, generation)
            else:
                index = VectorIndex()
                load_vectors(conn, kind, uid, 0, index)
            if not len(index):
                continue
            keys = _allowed_keys(conn, kind, uid, len(index), conversation_id, flt)
            if keys is not None and not keys:
                continue
            allow = None if keys is None else keys.__contains__
            ranked += [(score, kind, key) for key, score in index.search(vector, limit, allow)]  # type: ignore[misc]
        ranked.sort(key=lambda r: -r[0])
        return _vector_hits(conn, uid, ranked[:limit])


def _allowed_keys(
    conn: sqlite3.Connection,
    kind: str,
    uid: int,
    indexed: int,
    conversation_id: str | None,
    flt: MemoryFilter | None,
) -> set[int] | None:
    """The keys of ``kind`` a search may return (``None``: all ``indexed`` of them)."""
    if kind == "message":
        if conversation_id is None:
            return None
        conv = _one(conn, SELECT_CONVERSATION, (conversation_id,))
        if conv is None or conv[1] != uid:
            return set()
        return {row[0] for row in _all(conn, "SELECT seq FROM messages WHERE cid = ?", (conv[0],))}
    if flt is None:
        conditions, args = "AND (m.expires_us IS NULL OR m.expires_us > ?) ", [to_us(utcnow())]
    else:
        conditions, args = _memory_filter(flt)
    if conversation_id is not None:
        conditions += "AND m.conversation_id = ? "
        args.append(conversation_id)
    keys = {
        row[0]
        for row in _all(
            conn,
            "SELECT v.rid FROM memory_vectors v JOIN memories m ON m.rid = v.rid "
            f"WHERE v.uid = ? {conditions}",
            [uid, *args],
        )
    }
    # Every vector the query finds is in the index (both reflect this snapshot).
    return None if len(keys) == indexed else keys


def _vector_hits(
    conn: sqlite3.Connection, uid: int, ranked: list[tuple[float, str, int]]
) -> list[SearchHit]:
    """The records of ``(score, kind, key)`` candidates, in that order (the owner checked).

    ``+m.uid``: the owner is checked on the rows found by key, never used to find them (the
    planner would otherwise walk all of the user's rows by the owner index).
    """
    messages: dict[int, MessageRecord] = {}
    memories: dict[int, MemoryRecord] = {}
    for kind, keys in (
        ("message", [k for _, kind, k in ranked if kind == "message"]),
        ("memory", [k for _, kind, k in ranked if kind == "memory"]),
    ):
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            if kind == "message":
                rows = _all(
                    conn,
                    f"SELECT {MESSAGE_COLUMNS} FROM messages m "
                    "JOIN conversations c ON c.cid = m.cid JOIN users u ON u.uid = m.uid "
                    f"WHERE m.seq IN ({_marks(len(chunk))}) AND +m.uid = ?",
                    [*chunk, uid],
                )
                messages.update((row[10], MessageRecord(*row)) for row in rows)
            else:
                rows = _all(
                    conn,
                    f"SELECT m.rid, {MEMORY_COLUMNS} FROM memories m "
                    f"JOIN users u ON u.uid = m.uid WHERE m.rid IN ({_marks(len(chunk))}) "
                    "AND +m.uid = ?",
                    [*chunk, uid],
                )
                memories.update((row[0], _memory(row[1:])) for row in rows)
    hits: list[SearchHit] = []
    for score, kind, key in ranked:
        if kind == "message" and key in messages:
            hits.append(SearchHit("message", score, message=messages[key]))
        elif kind == "memory" and key in memories:
            hits.append(SearchHit("memory", score, memory=memories[key]))
    return hits


# ------------------------------------------------------------------------------ users


def statistics(conn: sqlite3.Connection, user_id: str) -> dict[str, object]:
    out: dict[str, object] = {
        "messages": 0,
        "conversations": 0,
        "sessions": 0,
        "active_sessions": 0,
        "memories": 0,
        "messages_by_role": {},
        "first_message_us": None,
        "last_message_us": None,
    }
    with snapshot(conn):
        uid = _user_key(conn, user_id)
        if uid is None:
            return out
        by_role = _all(
            conn,
            "SELECT role, count(*), min(ts_us), max(ts_us) FROM messages WHERE uid = ? "
            "GROUP BY role",
            (uid,),
        )
        out["messages"] = sum(r[1] for r in by_role)
        out["messages_by_role"] = {r[0]: r[1] for r in by_role}
        if by_role:
            out["first_message_us"] = min(r[2] for r in by_role)
            out["last_message_us"] = max(r[3] for r in by_role)
        out["conversations"] = _one(
            conn, "SELECT count(*) FROM conversations WHERE uid = ?", (uid,)
        )[0]
        sessions = _one(
            conn, "SELECT count(*), coalesce(sum(is_active), 0) FROM sessions WHERE uid = ?", (uid,)
        )
        out["sessions"], out["active_sessions"] = sessions
        out["memories"] = _one(conn, "SELECT count(*) FROM memories WHERE uid = ?", (uid,))[0]
    return out


def forget_user(conn: sqlite3.Connection, user_id: str) -> dict[str, int]:
    """Delete every record of the user, search rows included (writer transaction)."""
    counts = {"messages": 0, "conversations": 0, "sessions": 0, "memories": 0}
    uid = _user_key(conn, user_id)
    if uid is None:
        return counts
    # The owner token finds every search row of the user, messages and memories alike.
    conn.execute("DELETE FROM search_fts WHERE search_fts MATCH ?", (f'scope : "u{uid}"',))
    counts["messages"] = conn.execute("DELETE FROM messages WHERE uid = ?", (uid,)).rowcount
    counts["memories"] = conn.execute("DELETE FROM memories WHERE uid = ?", (uid,)).rowcount
    counts["sessions"] = conn.execute("DELETE FROM sessions WHERE uid = ?", (uid,)).rowcount
    # Sessions of other users cannot sit in the user's conversations (claims are enforced);
    # this keeps the foreign keys satisfied even for rows written by other tools.
    counts["sessions"] += conn.execute(
        "DELETE FROM sessions WHERE cid IN (SELECT cid FROM conversations WHERE uid = ?)", (uid,)
    ).rowcount
    counts["conversations"] = conn.execute(
        "DELETE FROM conversations WHERE uid = ?", (uid,)
    ).rowcount
    conn.execute("DELETE FROM users WHERE uid = ?", (uid,))
    return counts


# ------------------------------------------------------------------------------ export


def export_page(
    conn: sqlite3.Connection, kind: str, user_id: str | None, after: Any, size: int
) -> tuple[list[object], Any]:
    """One page of records of ``kind`` after the key ``after``; return it and the next key.

    Messages come one conversation at a time, in ``(ts_us, seq)`` order. An empty page means
    the export is complete.
    """
    with snapshot(conn):
        if user_id is None:
            owner, who = "", []
        else:
            uid = _user_key(conn, user_id)
            if uid is None:
                return [], None
            owner, who = "AND {alias}.uid = ? ", [uid]
        if kind == "conversations":
            rows = _all(
                conn,
                "SELECT c.cid, c.conversation_id, u.user_id FROM conversations c "
                f"JOIN users u ON u.uid = c.uid WHERE c.cid > ? {owner.format(alias='c')}"
                "ORDER BY c.cid LIMIT ?",
                [after or 0, *who, size],
            )
            return [(r[1], r[2]) for r in rows], (rows[-1][0] if rows else None)
        if kind == "memories":
            rows = _all(
                conn,
                f"SELECT m.rid, {MEMORY_COLUMNS} FROM memories m JOIN users u ON u.uid = m.uid "
                f"WHERE m.rid > ? {owner.format(alias='m')}ORDER BY m.rid LIMIT ?",
                [after or 0, *who, size],
            )
            return [_memory(r[1:]) for r in rows], (rows[-1][0] if rows else None)
        if kind == "sessions":
            rows = _all(
                conn,
                f"SELECT {SESSION_COLUMNS} {_SESSION_FROM}WHERE s.session_id > ? "
                f"{owner.format(alias='s')}ORDER BY s.session_id LIMIT ?",
                [after or "", *who, size],
            )
            return [_session(r) for r in rows], (rows[-1][0] if rows else None)
        return _export_messages(conn, owner.format(alias="c"), who, after, size)


def _export_messages(
    conn: sqlite3.Connection, owner: str, who: list[Any], after: Any, size: int
) -> tuple[list[object], Any]:
    # The key is (cid, position): position is the last (ts_us, seq) exported from that
    # conversation, or None once the conversation is finished.
    cid, position = after if after is not None else (0, None)
    out: list[object] = []
    while len(out) < size:
        if position is None:
            conv = _one(
                conn,
                f"SELECT c.cid FROM conversations c WHERE c.cid > ? {owner}ORDER BY c.cid LIMIT 1",
                [cid, *who],
            )
            if conv is None:
                break
            cid, position = conv[0], (_MIN_KEY, _MIN_KEY)
        wanted = size - len(out)
        rows = _all(
            conn,
            f"SELECT {MESSAGE_COLUMNS} FROM messages m "
            "JOIN conversations c ON c.cid = m.cid JOIN users u ON u.uid = m.uid "
            "WHERE m.cid = ? AND (m.ts_us, m.seq) > (?, ?) ORDER BY m.ts_us, m.seq LIMIT ?",
            (cid, *position, wanted),
        )
        out += [MessageRecord(*row) for row in rows]
        position = (rows[-1][6], rows[-1][10]) if len(rows) == wanted else None
    return out, ((cid, position) if out else None)
