"""The raw ``asyncmy`` driver doing what ``MySQLMemory`` does, for ``benchmarks.throughput``.

:class:`RawMySQLDriver` runs the library's own statements on the library's own schema (its
tables are created by ``MySQLMemory`` under a fresh prefix and dropped afterwards), with the
same analysed search terms, but without the library: no validation, no group commit, no
retries, one transaction per call.

* ``store_one``: claim the conversation (``SELECT ... LOCK IN SHARE MODE``, ``INSERT`` when
  new), ``INSERT`` the message, ``COMMIT``.
* ``store_batch``: the claim, a look-up of the ids already stored, multi-row ``INSERT``\\ s,
  ``COMMIT``.
* ``read_rows`` / ``search_rows``: the window and ``MATCH ... AGAINST`` statements.

Importing this module registers the driver for ``mysql://`` and ``mariadb://`` URLs.
``python -m benchmarks.raw_mysql 'mysql://root@127.0.0.1:3306/test?table_prefix=bench_'``
runs the throughput benchmark with it (same options as ``benchmarks.throughput``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import asyncmy
from bruno_core.models.message import Message

from benchmarks.throughput import CONTEXT_LIMIT, SEARCH_LIMIT, RawDriver, register_raw_driver
from bruno_memstore.backends.mysql.backend import MySQLMemory
from bruno_memstore.backends.mysql.dialect import TermRewriter
from bruno_memstore.backends.sql.dialect import message_of
from bruno_memstore.models import message_to_record, record_to_message
from bruno_memstore.url import MemoryURL

__all__ = ["RawMySQLDriver"]

_TABLES = (
    "schema_version",
    "settings",
    "conversations",
    "messages",
    "memories",
    "memory_tags",
    "sessions",
    "ft_stopwords",
)
_INSERT_COLUMNS = (
    "id, conversation_id, user_id, role, message_type, ts_us, ts_text, parent_id, content, "
    "metadata, search_terms"
)
_READ_COLUMNS = (  # the library's order: a message record's fields
    "id, conversation_id, role, content, message_type, ts_text, ts_us, metadata, parent_id, "
    "user_id, seq"
)
_ROW = "(" + ",".join(["%s"] * 11) + ")"

_TERMS = TermRewriter()  # InnoDB's default token limits


class RawMySQLDriver(RawDriver):
    """``asyncmy`` with a pool, one connection per concurrent task."""

    name: ClassVar[str] = "asyncmy"

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        base = url.query.get("table_prefix", "bruno_")
        self.prefix = f"{base}raw{uuid.uuid4().hex[:6]}_"
        async with MySQLMemory(url.raw, table_prefix=self.prefix):
            pass  # creates the tables
        self.pool = await asyncmy.create_pool(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            database=url.path.lstrip("/"),
            charset="utf8mb4",
            autocommit=True,
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            minsize=1,
            maxsize=40,
        )
        self.messages = f"`{self.prefix}messages`"
        self.conversations = f"`{self.prefix}conversations`"

    async def close(self) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "DROP TABLE IF EXISTS " + ", ".join(f"`{self.prefix}{t}`" for t in _TABLES)
            )
        self.pool.close()
        await self.pool.wait_closed()

    async def _claim(self, cur: Any, user: str, conv: str) -> None:
        await cur.execute(
            f"SELECT conversation_id, user_id FROM {self.conversations} "
            "WHERE conversation_id IN (%s) LOCK IN SHARE MODE",
            (conv,),
        )
        if not await cur.fetchall():
            await cur.execute(
                f"INSERT INTO {self.conversations} (conversation_id, user_id, created_us) "
                "VALUES (%s,%s,%s)",
                (conv, user, int(time.time() * 1e6)),
            )

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("START TRANSACTION")
            await self._claim(cur, user, conv)
            await cur.execute(
                f"INSERT INTO {self.messages} ({_INSERT_COLUMNS}) VALUES {_ROW}",
                _row(message, user, conv),
            )
            await cur.execute("COMMIT")

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("START TRANSACTION")
            await self._claim(cur, user, conv)
            for start in range(0, len(messages), 500):
                chunk = messages[start : start + 500]
                ids = [str(m.id) for m in chunk]
                await cur.execute(
                    f"SELECT id FROM {self.messages} WHERE id IN ({','.join(['%s'] * len(ids))})",
                    ids,
                )
                await cur.fetchall()
                await cur.execute(
                    f"INSERT INTO {self.messages} ({_INSERT_COLUMNS}) VALUES "
                    + ",".join([_ROW] * len(chunk)),
                    [v for m in chunk for v in _row(m, user, conv)],
                )
            await cur.execute("COMMIT")

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[Any]:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)
            return list(await cur.fetchall())

    async def read_rows(self, user: str) -> list[Any]:
        return await self._fetch(
            f"SELECT {_READ_COLUMNS} FROM {self.messages} WHERE user_id = %s "
            "ORDER BY ts_us DESC, seq DESC LIMIT %s",
            (user, CONTEXT_LIMIT),
        )

    async def search_rows(self, user: str, query: str) -> list[Any]:
        q = _TERMS.query(query)
        if not q:
            return []
        match = "MATCH(search_terms) AGAINST(%s IN NATURAL LANGUAGE MODE)"
        return await self._fetch(
            f"SELECT {_READ_COLUMNS}, {match} AS score FROM {self.messages} "
            f"WHERE {match} AND user_id = %s ORDER BY score DESC, ts_us DESC, id LIMIT %s",
            (q, q, user, SEARCH_LIMIT),
        )

    def to_messages(self, rows: list[Any]) -> list[Message]:
        return [record_to_message(message_of(r)) for r in rows]


def _row(message: Message, user: str, conv: str) -> tuple[Any, ...]:
    rec = message_to_record(message, conv)
    return (
        rec.id,
        conv,
        user,
        rec.role,
        rec.message_type,
        rec.ts_us,
        rec.timestamp,
        rec.parent_id,
        rec.content,
        rec.metadata,
        _TERMS.index(rec.content),
    )


register_raw_driver("mysql", RawMySQLDriver)
register_raw_driver("mariadb", RawMySQLDriver)


if __name__ == "__main__":
    from benchmarks.throughput import app

    app()
