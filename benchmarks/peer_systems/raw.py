"""The minimal raw drivers: the least work a chat store can do on each engine.

SQL engines get one table, ``chat(id, user_id, conversation, role, content, meta)``, with
an index on ``(conversation, id)`` for the last 20 and one on ``(user_id, id)`` for a
user's search (``content LIKE '%word%'``, newest first). A store is one autocommitted
``INSERT``; a read decodes the metadata JSON inside the timed call, as a library would.
Redis gets one list per conversation (``RPUSH`` of a JSON document, ``LRANGE -20 -1``);
plain Redis has no text index, so no search.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from .contract import PeerSystem, Row, remove_sqlite_files
from .data import ChatMessage

_COLUMNS = "user_id, conversation, role, content, meta"
_SQLITE_TABLE = (
    "CREATE TABLE chat (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, "
    "conversation TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, meta TEXT)"
)
_INDEXES = (
    "CREATE INDEX chat_conversation ON chat (conversation, id)",
    "CREATE INDEX chat_user ON chat (user_id, id)",
)


def _decoded(rows: Sequence[Sequence[Any]]) -> list[Row]:
    return [(r[0], r[1], json.loads(r[2]).get("turn")) for r in rows]


def _row(m: ChatMessage) -> tuple[str, str, str, str, str]:
    return (m.user, m.conversation, m.role, m.content, json.dumps({"turn": m.turn}))


class _RawSQLReads(PeerSystem):
    """The reads of the SQL raw drivers, written once with ``?`` placeholders."""

    @abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """The rows of one statement (``?`` placeholders), on the driver's connection."""

    async def last(self, first: ChatMessage, n: int) -> list[Row]:
        rows = await self._fetch(
            "SELECT role, content, meta FROM chat WHERE conversation = ? ORDER BY id DESC LIMIT ?",
            first.conversation,
            n,
        )
        return _decoded(rows[::-1])

    async def everything(self, first: ChatMessage) -> list[Row]:
        sql = "SELECT role, content, meta FROM chat WHERE conversation = ? ORDER BY id"
        return _decoded(await self._fetch(sql, first.conversation))

    async def search(self, user: str, word: str, limit: int) -> list[Row]:
        rows = await self._fetch(
            "SELECT role, content, meta FROM chat WHERE user_id = ? AND content LIKE ? "
            "ORDER BY id DESC LIMIT ?",
            user,
            f"%{word}%",
            limit,
        )
        return _decoded(rows)

    def rows(self, result: list[Row]) -> list[Row]:
        return result

    async def count(self) -> int:
        return int((await self._fetch("SELECT count(*) FROM chat"))[0][0])


class RawAiosqlite(_RawSQLReads):
    """aiosqlite, one connection; WAL and ``synchronous=FULL`` (fsync per commit), as
    ``SQLiteMemory`` stores by default; ``INSERT`` + ``COMMIT`` per message."""

    packages = ("aiosqlite",)

    def __init__(self, target: dict[str, Any]) -> None:
        super().__init__(target)
        self.db: Any = None

    async def empty(self) -> None:
        import aiosqlite

        if self.db is not None:
            await self.db.close()
        remove_sqlite_files(self.target["path"])
        self.db = await aiosqlite.connect(self.target["path"])
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA synchronous=FULL")
        for statement in (_SQLITE_TABLE, *_INDEXES):
            await self.db.execute(statement)
        await self.db.commit()

    async def open(self) -> None:
        await self.empty()
        self.notes.append("WAL, synchronous=FULL; INSERT + COMMIT per message")

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()

    def native(self, m: ChatMessage) -> tuple[str, str, str, str, str]:
        return _row(m)

    async def store(self, native: Any, m: ChatMessage) -> None:
        await self.db.execute(f"INSERT INTO chat ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", native)
        await self.db.commit()

    async def load(self, natives: Sequence[Any], msgs: Sequence[ChatMessage]) -> None:
        await self.db.executemany(f"INSERT INTO chat ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", natives)
        await self.db.commit()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.db.execute(sql, args) as cursor:
            return list(await cursor.fetchall())


class RawAsyncpg(_RawSQLReads):
    """asyncpg: one connection for one-at-a-time work, a pool of 20 for the concurrent
    writers; an autocommitted ``INSERT`` per message (PostgreSQL's defaults: fsync on,
    synchronous_commit on)."""

    packages = ("asyncpg",)

    def __init__(self, target: dict[str, Any]) -> None:
        super().__init__(target)
        self.conn: Any = None
        self.pool: Any = None

    async def open(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.target["dsn"])
        self.pool = await asyncpg.create_pool(self.target["dsn"], min_size=1, max_size=20)
        await self.empty()

    async def empty(self) -> None:
        await self.conn.execute("DROP TABLE IF EXISTS chat")
        await self.conn.execute(
            "CREATE TABLE chat (id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, "
            "conversation TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, meta JSONB)"
        )
        for statement in _INDEXES:
            await self.conn.execute(statement)

    async def settle(self) -> None:
        await self.conn.execute("VACUUM ANALYZE chat")

    async def close(self) -> None:
        await self.pool.close()
        await self.conn.close()

    def native(self, m: ChatMessage) -> tuple[str, str, str, str, str]:
        return _row(m)

    async def store(self, native: Any, m: ChatMessage) -> None:
        # The pool serves concurrent callers; a lone caller gets the same connection back.
        async with self.pool.acquire() as conn:
            await conn.execute(
                f"INSERT INTO chat ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5::jsonb)", *native
            )

    async def load(self, natives: Sequence[Any], msgs: Sequence[ChatMessage]) -> None:
        await self.conn.copy_records_to_table("chat", records=natives, columns=_COLUMNS.split(", "))

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        parts = sql.split("?")  # ``?`` as asyncpg's ``$n``
        numbered = "".join(p + (f"${k}" if k < len(parts) else "") for k, p in enumerate(parts, 1))
        return list(await self.conn.fetch(numbered, *args))


class RawRedis(PeerSystem):
    """redis.asyncio: ``RPUSH`` of a JSON document per message, ``LRANGE`` to read."""

    packages = ("redis",)
    search_scope = None

    def __init__(self, target: dict[str, Any]) -> None:
        super().__init__(target)
        self.client: Any = None

    async def open(self) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(self.target["url"])
        await self.empty()
        self.notes.append("one list per conversation; plain Redis has no text index: no search")

    async def empty(self) -> None:
        await self.client.flushdb()

    async def close(self) -> None:
        await self.client.aclose()

    def native(self, m: ChatMessage) -> tuple[str, str]:
        doc = {"role": m.role, "content": m.content, "meta": {"turn": m.turn}}
        return f"chat:{m.conversation}", json.dumps(doc)

    async def store(self, native: Any, m: ChatMessage) -> None:
        await self.client.rpush(*native)

    async def load(self, natives: Sequence[Any], msgs: Sequence[ChatMessage]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, doc in natives:
            pipe.rpush(key, doc)
        await pipe.execute()

    async def last(self, first: ChatMessage, n: int) -> list[Row]:
        return self._decoded(await self.client.lrange(f"chat:{first.conversation}", -n, -1))

    async def everything(self, first: ChatMessage) -> list[Row]:
        return self._decoded(await self.client.lrange(f"chat:{first.conversation}", 0, -1))

    @staticmethod
    def _decoded(docs: list[bytes]) -> list[Row]:
        out = []
        for raw in docs:
            doc = json.loads(raw)
            out.append((doc["role"], doc["content"], doc["meta"].get("turn")))
        return out

    def rows(self, result: list[Row]) -> list[Row]:
        return result

    async def count(self) -> int:
        total = 0
        async for key in self.client.scan_iter(match="chat:*", count=1000):
            total += await self.client.llen(key)
        return total
