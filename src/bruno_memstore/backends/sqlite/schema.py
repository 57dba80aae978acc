"""SQLiteMemory's schema as ordered migrations (see docs/backends/sqlite.md)."""

from __future__ import annotations

import hashlib
import sqlite3
from functools import partial

from ...search import ANALYSIS_VERSION, index_text
from ..sql.schema import Migration
from ..sql.schema import migrate as migrate_plan
from ..sql.steps import Execute, ExecuteMany, Fetch, Plan
from ..sql.sync import run_plan
from .dialect import DIALECT, INSERT_SEARCH, VECTOR_COUNTERS, memory_scope, message_scope

__all__ = ["LATEST_VERSION", "MIGRATIONS", "VECTOR_COUNTERS", "migrate", "rebuild_search_index"]

_CORE = (
    # AUTOINCREMENT: a key is never reused, so an owner token can never name a later user.
    """CREATE TABLE users (
        uid INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL UNIQUE
    )""",
    """CREATE TABLE conversations (
        cid INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL UNIQUE,
        uid INTEGER NOT NULL REFERENCES users (uid)
    )""",
    "CREATE INDEX conversations_by_user ON conversations (uid)",
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        cid INTEGER NOT NULL REFERENCES conversations (cid),
        uid INTEGER NOT NULL REFERENCES users (uid),
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        message_type TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        ts_us INTEGER NOT NULL,
        metadata TEXT NOT NULL,
        parent_id TEXT
    )""",
    # Windows read newest first by (ts_us, seq); the rowid (seq) ends every index entry.
    "CREATE INDEX messages_by_conversation ON messages (cid, ts_us)",
    "CREATE INDEX messages_by_user ON messages (uid, ts_us)",
    """CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        uid INTEGER NOT NULL REFERENCES users (uid),
        cid INTEGER NOT NULL REFERENCES conversations (cid),
        is_active INTEGER NOT NULL,
        started_us INTEGER NOT NULL,
        payload TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX sessions_by_user ON sessions (uid, is_active, started_us)",
    "CREATE INDEX sessions_by_conversation ON sessions (cid, is_active, started_us)",
    """CREATE TABLE memories (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        uid INTEGER NOT NULL REFERENCES users (uid),
        content TEXT NOT NULL,
        memory_type TEXT NOT NULL,
        category TEXT,
        tags TEXT NOT NULL,
        confidence REAL NOT NULL,
        importance REAL NOT NULL,
        created_us INTEGER NOT NULL,
        expires_us INTEGER,
        conversation_id TEXT,
        payload TEXT NOT NULL
    )""",
    # The unranked listing order (importance, newest, id) straight from the index.
    "CREATE INDEX memories_by_rank ON memories (uid, importance DESC, created_us DESC, id)",
    # (uid, rid): a user's entries in insertion order, for export and deletion.
    "CREATE INDEX memories_by_user ON memories (uid)",
    "CREATE INDEX memories_by_expiry ON memories (expires_us) WHERE expires_us IS NOT NULL",
    # Tags as rows, so "any of these tags" is an indexed lookup on exact text (NUL included).
    """CREATE TABLE memory_tags (
        rid INTEGER NOT NULL REFERENCES memories (rid) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (rid, tag)
    ) WITHOUT ROWID""",
)


# Text exercising every step of the shared analysis. The declared analysis version, and the
# analysed form of this text (a change the version forgot still shows), identify the index.
_PROBE = (
    "Caroline's children WENT running, didn't they? The 8th café in München; "
    "eleven swimmers at 東京タワー"
)
ANALYZER_FINGERPRINT = (
    f"{ANALYSIS_VERSION}:{hashlib.sha256(index_text(_PROBE).encode()).hexdigest()[:16]}"
)
_REBUILD_BATCH = 2000


def rebuild_search_index() -> Plan[None]:
    """Fill the full-text index again from every message and memory entry, and record the
    analysis that did it. Used when the index is created over existing rows, and when the
    library's text analysis changed since the index was built."""
    yield Execute("DELETE FROM search_fts")
    for table, key, scope, sign in (
        ("messages", "seq", "uid, cid", 1),
        ("memories", "rid", "uid", -1),
    ):
        last = 0
        while True:
            rows = yield Fetch(
                f"SELECT {key}, {scope}, content FROM {table} WHERE {key} > ? "
                f"ORDER BY {key} LIMIT ?",
                (last, _REBUILD_BATCH),
            )
            if not rows:
                break
            scopes = (message_scope(*r[1:3]) if sign > 0 else memory_scope(r[1]) for r in rows)
            yield ExecuteMany(
                INSERT_SEARCH,
                [(sign * r[0], s, index_text(r[-1])) for r, s in zip(rows, scopes, strict=True)],
            )
            last = rows[-1][0]
    yield Execute(
        "INSERT INTO settings (name, value) VALUES ('analyzer', ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (ANALYZER_FINGERPRINT,),
    )


def is_current() -> Plan[bool]:
    """Whether the full-text index was built by this library's text analysis."""
    rows = yield Fetch("SELECT value FROM settings WHERE name = 'analyzer'")
    return bool(rows) and rows[0][0] == ANALYZER_FINGERPRINT


# One full-text table for messages (rowid = seq > 0) and memory entries (rowid = -rid < 0),
# so both kinds share BM25 statistics and rank against each other. ``body`` holds the shared
# analyzer's terms (``bruno_memstore.search.index_text``): already case-folded and stemmed,
# so the tokenizer only splits them apart. ``scope`` carries the owner tokens and weighs
# nothing in the ranking. The table keeps its own copy of both, so a row is deleted by rowid
# without analysing the text again.
_FULL_TEXT = (
    """CREATE VIRTUAL TABLE search_fts USING fts5 (
        scope, body, tokenize = 'unicode61 remove_diacritics 0'
    )""",
    "INSERT INTO search_fts (search_fts, rank) VALUES ('rank', 'bm25(0.0, 1.0)')",
    # Which text analysis built the index; a library whose analysis differs rebuilds it.
    "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    rebuild_search_index,
)

# Each vector sits in a side table keyed by its record (written in the record's transaction;
# the foreign key takes it away with the record on every deletion path), with the owner's
# key so one user's vectors load with one index range. Each user row counts changes to the
# user's vectors per kind: the generation grows with every change, the epoch with every
# change that is not an append (a removal or a replaced vector). A process holding a copy of
# the user's vectors reads both and knows whether to load nothing, the rows added since, or
# everything again. The recorded vector space is the settings row 'vector_space'.
_VECTORS = (
    """CREATE TABLE message_vectors (
        seq INTEGER PRIMARY KEY REFERENCES messages (seq) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        vector BLOB NOT NULL
    )""",
    "CREATE INDEX message_vectors_by_user ON message_vectors (uid)",
    """CREATE TABLE memory_vectors (
        rid INTEGER PRIMARY KEY REFERENCES memories (rid) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        vector BLOB NOT NULL
    )""",
    "CREATE INDEX memory_vectors_by_user ON memory_vectors (uid)",
    *(
        f"ALTER TABLE users ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
        for column in VECTOR_COUNTERS
    ),
)

# Messages stored one at a time whose full-text rows are still to be written, by key only
# (no text: erasing a message leaves nothing here to erase). See ``dialect.index_pending``.
_PENDING = ("CREATE TABLE search_pending (seq INTEGER PRIMARY KEY)",)

# Messages stored before their vectors (``vectors="deferred"``), by key only: the durable
# queue the store's task drains. Marked in the message's transaction; the vector's write
# clears the mark, and the foreign key takes it away with the message on every deletion path.
_VECTOR_PENDING = (
    """CREATE TABLE vector_pending (
        seq INTEGER PRIMARY KEY REFERENCES messages (seq) ON DELETE CASCADE
    )""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "users, conversations, messages, sessions and memory entries", _CORE),
    Migration(2, "full-text index over messages and memory entries", _FULL_TEXT),
    Migration(3, "vectors of messages and memory entries, change counters per user", _VECTORS),
    Migration(4, "messages waiting for their full-text rows", _PENDING),
    Migration(5, "messages waiting for their vectors", _VECTOR_PENDING),
)
LATEST_VERSION = MIGRATIONS[-1].version


def migrate(conn: sqlite3.Connection, target: int = LATEST_VERSION) -> tuple[int, int]:
    """Apply the pending migrations up to ``target`` on a connection in autocommit mode
    (``isolation_level=None``); return ``(version_before, version_after)``."""
    return run_plan(conn, partial(migrate_plan, DIALECT, MIGRATIONS, target))
