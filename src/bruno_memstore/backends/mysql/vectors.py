"""MariaDB's and MySQL's statements for vectors kept as blobs (see docs/backends/mysql.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..kit.batches import chunks
from ..sql.steps import Commit, Execute, Fetch, Plan
from ..sql.vectors import (
    BlobVectors,
    Kind,
    KindState,
    VectorState,
    filter_columns,
    memory_items,
    message_items,
)
from ..sql.where import marks
from .dialect import MySQLDialect, user_hash

__all__ = ["VECTORS", "MySQLVectors"]

_DROP_BATCH = 5000  # message rows one statement clears of their vectors
_PUT_BATCH = 128  # vectors one statement attaches


class MySQLVectors(BlobVectors):
    """Vectors in the records' rows; counters per user hash; an append log of message ids."""

    def state(self, d: MySQLDialect, user_id: str) -> Plan[VectorState]:  # type: ignore[override]
        g = d.table("vector_generations")
        rows = yield Fetch(
            # Named columns: MariaDB would otherwise name them after the statement's text,
            # binary user hash included, which the driver cannot always decode.
            f"SELECT (SELECT epoch FROM {d.table('vector_space')} WHERE id = 1) AS e, "
            f"(SELECT generation FROM {g} WHERE user_hash = ?) AS g, "
            f"(SELECT message_epoch FROM {g} WHERE user_hash = ?) AS me, "
            f"(SELECT memory_generation FROM {g} WHERE user_hash = ?) AS mg",
            (user_hash(user_id),) * 3,
        )
        epoch, generation, message_epoch, memory_generation = rows[0]
        # Memory entries are reloaded whenever their generation moves (nothing is logged).
        return VectorState(
            KindState((epoch, message_epoch), int(generation or 0)),
            KindState((epoch, memory_generation), 0),
        )

    def load(  # type: ignore[override]
        self, d: MySQLDialect, kind: Kind, user_id: str, state: KindState, nbytes: int
    ) -> Plan[list[tuple[Any, ...]]]:
        if kind == "message":
            rows = yield Fetch(
                f"SELECT id, conversation_id, vector FROM {d.table('messages')} "
                "WHERE user_id = ? AND LENGTH(vector) = ?",
                (user_id, nbytes),
            )
            return message_items(rows)
        rows = yield Fetch(
            f"SELECT {filter_columns(d)}, m.vector FROM {d.memories.tables} "
            "WHERE m.user_id = ? AND LENGTH(m.vector) = ?",
            (user_id, nbytes),
        )
        return memory_items(d, rows)

    def added(  # type: ignore[override]
        self, d: MySQLDialect, kind: Kind, user_id: str, state: KindState, after: int, nbytes: int
    ) -> Plan[list[tuple[Any, ...]] | None]:
        upto = state.logged
        h = user_hash(user_id)
        rows = yield Fetch(
            f"SELECT l.generation, l.ids, (SELECT message_epoch FROM "
            f"{d.table('vector_generations')} WHERE user_hash = ?) AS me "
            f"FROM {d.table('vector_log')} l WHERE l.user_hash = ? "
            "AND l.generation > ? AND l.generation <= ?",
            (h, h, after, upto),
        )
        epoch = state.epoch[1]  # type: ignore[index]
        if len(rows) != upto - after or any(r[2] != epoch for r in rows):
            return None  # the log no longer holds all of them
        ids = [rid for r in rows for rid in r[1].split("\0")]
        found: list[Any] = []
        for condition, args in d.among("id", ids):
            found += yield Fetch(
                f"SELECT id, conversation_id, vector FROM {d.table('messages')} "
                f"WHERE {condition} AND LENGTH(vector) = ?",
                [*args, nbytes],
            )
        return message_items(found)

    def space(self, d: MySQLDialect) -> Plan[tuple[str, int] | None]:  # type: ignore[override]
        rows = yield Fetch(f"SELECT model, dimension FROM {d.table('vector_space')} WHERE id = 1")
        return (rows[0][0], int(rows[0][1])) if rows else None

    def claim(  # type: ignore[override]
        self, d: MySQLDialect, model: str, dimension: int, replace: bool
    ) -> Plan[tuple[str, int]]:
        insert = (
            f"INSERT INTO {d.table('vector_space')} (id, model, dimension, epoch) "
            "VALUES (1, ?, ?, 1) ON DUPLICATE KEY UPDATE "
        )
        if not replace:
            yield Execute(insert + "id = id", (model, dimension))
            recorded = yield from self.space(d)
            assert recorded is not None
            return recorded
        # Vectors first: an interrupted run leaves the old model recorded over fewer
        # vectors (searches stay right), never the new one over old vectors.
        yield from self._drop_vectors(d)
        yield Execute(
            insert + "model = ?, dimension = ?, epoch = epoch + 1",
            (model, dimension, model, dimension),
        )
        return model, dimension

    def _drop_vectors(self, d: MySQLDialect) -> Plan[None]:
        """Set every vector to NULL, in bounded statements (by primary key ranges)."""
        messages = d.table("messages")
        ((low, high),) = yield Fetch(f"SELECT MIN(seq), MAX(seq) FROM {messages}")
        if high is not None:
            for start in range(int(low), int(high) + 1, _DROP_BATCH):
                yield Execute(
                    f"UPDATE {messages} SET vector = NULL "
                    "WHERE seq >= ? AND seq < ? AND vector IS NOT NULL",
                    (start, start + _DROP_BATCH),
                )
                yield Commit()
        yield Execute(f"UPDATE {d.table('memories')} SET vector = NULL WHERE vector IS NOT NULL")
        yield Commit()

    def put(  # type: ignore[override]
        self, d: MySQLDialect, kind: Kind, items: Sequence[tuple[str, bytes]]
    ) -> Plan[int]:
        table = d.table("messages" if kind == "message" else "memories")
        owners: set[str] = set()
        written = 0
        for chunk in chunks(items, _PUT_BATCH):
            ids = [rid for rid, _ in chunk]
            written += yield Execute(
                f"UPDATE {table} SET vector = CASE id "
                + " ".join(["WHEN ? THEN ?"] * len(chunk))
                + f" END WHERE id IN ({marks(len(ids))})",
                [*(v for pair in chunk for v in pair), *ids],
            )
            found = yield Fetch(
                f"SELECT DISTINCT user_id FROM {table} WHERE id IN ({marks(len(ids))})", ids
            )
            owners.update(row[0] for row in found)
            if kind == "message":  # no longer waiting (``vectors="deferred"``)
                yield from d.unmark_messages(f"m.id IN ({marks(len(ids))})", ids)
        changed = d.messages_changed if kind == "message" else d.memories_changed
        yield from changed(sorted(owners))
        return written


VECTORS = MySQLVectors()
