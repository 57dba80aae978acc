"""SQLite's statements for vectors kept as blobs in side tables (see docs/backends/sqlite.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..sql.dialect import Dialect
from ..sql.schema import stored_setting
from ..sql.steps import Execute, ExecuteMany, Fetch, Plan
from ..sql.vectors import (
    BlobVectors,
    Kind,
    KindState,
    VectorState,
    filter_columns,
    memory_items,
    message_items,
)
from .dialect import BUMP_EVERY_USER, BUMP_VECTORS, INSERT_MEMORY_VECTOR, INSERT_MESSAGE_VECTOR

__all__ = ["VECTORS", "SQLiteVectors"]

_KEY = {"message": "seq", "memory": "rid"}
_LOAD_BATCH = 4096
_SPACE = "vector_space"  # the settings row holding the recorded model and dimension
SELECT_STATE = (
    "SELECT u.uid, u.message_vector_generation, u.message_vector_epoch, "
    "u.memory_vector_generation, u.memory_vector_epoch, "
    "(SELECT max(seq) FROM message_vectors WHERE uid = u.uid), "
    "(SELECT max(rid) FROM memory_vectors WHERE uid = u.uid) "
    "FROM users u WHERE u.user_id = ?"
)
_LOAD_MESSAGES = (
    "SELECT v.seq, m.id, c.conversation_id, v.vector FROM message_vectors v "
    "JOIN messages m ON m.seq = v.seq JOIN conversations c ON c.cid = m.cid "
    f"WHERE v.uid = ? AND v.seq > ? AND v.seq <= ? ORDER BY v.seq LIMIT {_LOAD_BATCH}"
)


def _load_memories(d: Dialect) -> str:
    return (
        f"SELECT v.rid, {filter_columns(d)}, v.vector FROM memory_vectors v "
        "JOIN memories m ON m.rid = v.rid JOIN users u ON u.uid = m.uid "
        f"WHERE v.uid = ? AND v.rid > ? AND v.rid <= ? ORDER BY v.rid LIMIT {_LOAD_BATCH}"
    )


class SQLiteVectors(BlobVectors):
    """Side tables keyed by the records' integer keys; counters on the ``users`` row."""

    def state(self, d: Dialect, user_id: str) -> Plan[VectorState | None]:
        rows = yield Fetch(SELECT_STATE, (user_id,))
        if not rows:
            return None
        uid, message_generation, message_epoch, memory_generation, memory_epoch, *last = rows[0]
        # Generation 0: the user never had vectors of that kind.
        return VectorState(
            KindState((uid, message_epoch), last[0] or 0) if message_generation else None,
            KindState((uid, memory_epoch), last[1] or 0) if memory_generation else None,
        )

    def load(
        self, d: Dialect, kind: Kind, user_id: str, state: KindState, nbytes: int
    ) -> Plan[list[tuple[Any, ...]]]:
        # Exactly up to the logged key: a later one is taken by the next delta.
        return (yield from self.added(d, kind, user_id, state, 0, nbytes))

    def added(
        self, d: Dialect, kind: Kind, user_id: str, state: KindState, after: int, nbytes: int
    ) -> Plan[list[tuple[Any, ...]]]:
        sql = _LOAD_MESSAGES if kind == "message" else _load_memories(d)
        uid = state.epoch[0]  # type: ignore[index]
        items: list[tuple[Any, ...]] = []
        while after < state.logged:
            rows = yield Fetch(sql, (uid, after, state.logged))
            if rows:
                values = [row[1:] for row in rows]
                items += message_items(values) if kind == "message" else memory_items(d, values)
                after = rows[-1][0]
            if len(rows) < _LOAD_BATCH:
                break
        return items

    def space(self, d: Dialect) -> Plan[tuple[str, int] | None]:
        value = yield from stored_setting(d, _SPACE)
        if value is None:
            return None
        space = json.loads(value)
        return str(space["model"]), int(space["dimension"])

    def claim(self, d: Dialect, model: str, dimension: int, replace: bool) -> Plan[tuple[str, int]]:
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
        recorded = yield from self.space(d)
        assert recorded is not None
        return recorded

    def put(self, d: Dialect, kind: Kind, items: Sequence[tuple[str, bytes]]) -> Plan[int]:
        table = "messages" if kind == "message" else "memories"
        blobs = dict(items)
        rows: list[tuple[int, int, bytes]] = []
        for condition, args in d.among("id", list(blobs)):
            found = yield Fetch(
                f"SELECT id, {_KEY[kind]}, uid FROM {table} WHERE {condition}", args
            )
            rows += [(key, uid, blobs[rid]) for rid, key, uid in found]
        if rows:
            yield ExecuteMany(
                INSERT_MESSAGE_VECTOR if kind == "message" else INSERT_MEMORY_VECTOR, rows
            )
            if kind == "message":  # no longer waiting (``vectors="deferred"``)
                for condition, args in d.among("seq", [row[0] for row in rows]):
                    yield Execute(f"DELETE FROM vector_pending WHERE {condition}", args)
        for uid in sorted({row[1] for row in rows}):
            yield Execute(BUMP_VECTORS[kind, True], (uid,))
        return len(rows)


VECTORS = SQLiteVectors()
