"""Vector search on SQLite: exact cosine over one user's vectors, held in process.

Vectors are float32 BLOBs in side tables beside their records (``message_vectors`` keyed by
``seq``, ``memory_vectors`` by ``rid``), written in the records' transactions; the
``sqlite3`` module cannot load extensions here, so there is no vector index in the file. A
search loads the user's vectors into a :class:`~bruno_memstore.vector_index.VectorIndex`
(cached per user, see ``SQLiteMemory``) and keeps it while the user's change counters
(``dialect.VECTOR_COUNTERS``) say it is current; appended rows are loaded on their own.

Searches run on one thread, which owns the cached indexes (:class:`LoadedIndexes`), so they
need no lock. The writes (recording the vector space, attaching vectors) are plans.
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...models import MemoryFilter, MemoryRecord, MessageRecord, SearchHit, to_us, utcnow
from ..kit.vectors import VectorIndex, vector_from_bytes
from ..sql.steps import Execute, ExecuteMany, Fetch, Plan
from ..sql.where import marks, memory_conditions
from .dialect import (
    BUMP_EVERY_USER,
    BUMP_VECTORS,
    DIALECT,
    INSERT_MEMORY_VECTOR,
    INSERT_MESSAGE_VECTOR,
    MEMORIES,
    MESSAGES,
    SELECT_CONVERSATION,
    VECTOR_COUNTERS,
)

__all__ = [
    "KINDS",
    "CachedIndex",
    "LoadedIndexes",
    "claim_vector_space",
    "counters_of",
    "load_vectors",
    "put_vectors",
    "snapshot",
    "vector_counters",
    "vector_search",
    "vector_space",
]

KINDS = ("message", "memory")
_VECTOR_KEY = {"message": "seq", "memory": "rid"}
_LOAD_BATCH = 4096
LOAD_VECTORS = {
    kind: f"SELECT {key}, vector FROM {kind}_vectors WHERE uid = ? AND {key} > ? "
    f"ORDER BY {key} LIMIT {_LOAD_BATCH}"
    for kind, key in _VECTOR_KEY.items()
}
INSERT_VECTOR = {"message": INSERT_MESSAGE_VECTOR, "memory": INSERT_MEMORY_VECTOR}
SELECT_VECTOR_COUNTERS = f"SELECT uid, {', '.join(VECTOR_COUNTERS)} FROM users WHERE user_id = ?"
_SPACE = "vector_space"  # the settings row holding the recorded model and dimension


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
    return conn.execute(sql, args).fetchall()


def _one(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> Any:
    rows = conn.execute(sql, args).fetchall()
    return rows[0] if rows else None


# ------------------------------------------------------------------------------ writes


def vector_space() -> Plan[tuple[str, int] | None]:
    """The recorded ``(model, dimension)`` of the store's vectors, or ``None``."""
    rows = yield Fetch("SELECT value FROM settings WHERE name = ?", (_SPACE,))
    if not rows:
        return None
    space = json.loads(rows[0][0])
    return str(space["model"]), int(space["dimension"])


def claim_vector_space(model: str, dimension: int, replace: bool) -> Plan[tuple[str, int]]:
    """Record the space unless one is; ``replace`` drops every vector and records it in any
    case. Returns the space recorded afterwards."""
    value = json.dumps({"model": model, "dimension": dimension}, ensure_ascii=False)
    if replace:
        yield Execute("DELETE FROM message_vectors")
        yield Execute("DELETE FROM memory_vectors")
        yield Execute(BUMP_EVERY_USER)
        conflict = "DO UPDATE SET value = excluded.value"
    else:
        conflict = "DO NOTHING"
    yield Execute(
        f"INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) {conflict}",
        (_SPACE, value),
    )
    recorded = yield from vector_space()
    assert recorded is not None
    return recorded


def put_vectors(kind: str, items: Sequence[tuple[str, bytes]]) -> Plan[int]:
    """Attach or replace the vectors of stored records, by record id; ids no longer stored
    are skipped. Returns how many vectors were written."""
    table = "messages" if kind == "message" else "memories"
    blobs = dict(items)
    rows: list[tuple[int, int, bytes]] = []
    for condition, args in DIALECT.among("id", list(blobs)):
        found = yield Fetch(
            f"SELECT id, {_VECTOR_KEY[kind]}, uid FROM {table} WHERE {condition}", args
        )
        rows += [(key, uid, blobs[rid]) for rid, key, uid in found]
    if rows:
        yield ExecuteMany(INSERT_VECTOR[kind], rows)
    for uid in sorted({row[1] for row in rows}):
        yield Execute(BUMP_VECTORS[kind, True], (uid,))
    return len(rows)


# ------------------------------------------------------------------------------ search


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
        flt = MemoryFilter(user_id=None, now_us=to_us(utcnow()))
    conditions, args = memory_conditions(flt, DIALECT.tags_condition, conversation_id)
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
        for start in range(0, len(keys), DIALECT.in_chunk):
            chunk = keys[start : start + DIALECT.in_chunk]
            if kind == "message":
                rows = _all(
                    conn,
                    f"SELECT {MESSAGES.select} FROM {MESSAGES.tables} "
                    f"WHERE m.seq IN ({marks(len(chunk))}) AND +m.uid = ?",
                    [*chunk, uid],
                )
                messages.update((row[10], MessageRecord(*row)) for row in rows)
            else:
                rows = _all(
                    conn,
                    f"SELECT m.rid, {MEMORIES.select} FROM {MEMORIES.tables} "
                    f"WHERE m.rid IN ({marks(len(chunk))}) "
                    "AND +m.uid = ?",
                    [*chunk, uid],
                )
                memories.update((row[0], DIALECT.memory(row, 1)) for row in rows)
    hits: list[SearchHit] = []
    for score, kind, key in ranked:
        if kind == "message" and key in messages:
            hits.append(SearchHit("message", score, message=messages[key]))
        elif kind == "memory" and key in memories:
            hits.append(SearchHit("memory", score, memory=memories[key]))
    return hits
