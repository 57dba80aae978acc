"""bruno-memory 0.1.5, the memory package of bruno-core's authors: its SQLite, PostgreSQL
and Redis backends, through their public methods.

Its ``retrieve_messages(conversation_id, limit=20)`` returns a conversation's *oldest* 20
messages, so the last 20 are read as the whole conversation, sliced (the one way its API
gives them). ``search_messages`` has no user filter: it searches the whole store. The
PostgreSQL and Redis backends take UUID conversation ids. Emptying a store uses the
engine's driver (each system has its own database).
"""

from __future__ import annotations

import uuid
from typing import Any

from bruno_core.models import Message, MessageRole

from .contract import PeerSystem, Row, remove_sqlite_files
from .data import ChatMessage

_ALL = 1_000_000


class _Upstream(PeerSystem):
    packages = ("bruno-memory", "bruno-core", "pydantic")
    search_scope = "all"

    def __init__(self, target: dict[str, Any]) -> None:
        super().__init__(target)
        self.backend: Any = None
        self.notes.append(
            "last 20 = retrieve_messages(conversation) sliced: retrieve_messages(limit=20) "
            "returns the oldest 20; search_messages covers every user"
        )

    def native(self, m: ChatMessage) -> Message:
        role = MessageRole.USER if m.role == "user" else MessageRole.ASSISTANT
        return Message(
            role=role,
            content=m.content,
            metadata={"turn": m.turn},
            conversation_id=self._conversation_text(m),
            timestamp=m.at,
        )

    def _conversation_text(self, m: ChatMessage) -> str:
        return m.conversation_uuid

    def _conversation(self, m: ChatMessage) -> Any:
        return uuid.UUID(m.conversation_uuid)

    async def store(self, native: Message, m: ChatMessage) -> None:
        await self.backend.store_message(native, self._conversation(m))

    async def last(self, first: ChatMessage, n: int) -> list[Message]:
        return (await self.backend.retrieve_messages(self._conversation(first), limit=_ALL))[-n:]

    async def everything(self, first: ChatMessage) -> list[Message]:
        return await self.backend.retrieve_messages(self._conversation(first), limit=_ALL)

    async def search(self, user: str, word: str, limit: int) -> list[Message]:
        return await self.backend.search_messages(word, limit=limit)

    def rows(self, result: list[Message]) -> list[Row]:
        return [(m.role.value, m.content, (m.metadata or {}).get("turn")) for m in result]


class UpstreamSQLite(_Upstream):
    """``SQLiteMemoryBackend`` (one aiosqlite connection; it sets WAL, synchronous=NORMAL)."""

    packages = (*_Upstream.packages, "aiosqlite")

    def _conversation_text(self, m: ChatMessage) -> str:
        return m.conversation

    def _conversation(self, m: ChatMessage) -> Any:
        return m.conversation

    async def store(self, native: Message, m: ChatMessage) -> None:
        await self.backend.store_message(native)

    async def empty(self) -> None:
        from bruno_memory.backends.sqlite import SQLiteMemoryBackend
        from bruno_memory.base import SQLiteConfig

        if self.backend is not None:
            await self.backend.disconnect()
        remove_sqlite_files(self.target["path"])
        self.backend = SQLiteMemoryBackend(SQLiteConfig(database_path=self.target["path"]))
        await self.backend.connect()

    async def open(self) -> None:
        await self.empty()
        async with self.backend._connection.execute("PRAGMA synchronous") as cursor:
            level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[(await cursor.fetchone())[0]]
        self.notes.append(f"synchronous={level} as the library sets it (FULL fsyncs each commit)")

    async def close(self) -> None:
        if self.backend is not None:
            await self.backend.disconnect()


class UpstreamPostgres(_Upstream):
    """``PostgreSQLMemoryBackend`` (asyncpg pool 1..20) in its own database."""

    packages = (*_Upstream.packages, "asyncpg")

    async def _sql(self, statement: str) -> Any:
        import asyncpg

        conn = await asyncpg.connect(self.target["dsn"])
        try:
            return await conn.execute(statement)
        finally:
            await conn.close()

    async def empty(self) -> None:
        from bruno_memory.backends.postgresql import PostgreSQLMemoryBackend
        from bruno_memory.base import PostgreSQLConfig

        if self.backend is not None:
            await self.backend.close()
        await self._sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        t = self.target
        self.backend = PostgreSQLMemoryBackend(
            PostgreSQLConfig(
                host=t["host"],
                port=t["port"],
                database=t["database"],
                username=t["user"],
                password=t.get("password") or "",
            )
        )
        await self.backend.connect()

    async def settle(self) -> None:
        await self._sql("VACUUM ANALYZE")

    async def close(self) -> None:
        if self.backend is not None:
            await self.backend.close()


class UpstreamRedis(_Upstream):
    """``RedisMemoryBackend`` (redis.asyncio; its default TTL of 24 h left as it is)."""

    packages = (*_Upstream.packages, "redis")

    async def empty(self) -> None:
        from bruno_memory.backends.redis import RedisMemoryBackend
        from bruno_memory.base import RedisConfig

        if self.backend is None:
            t = self.target
            config = RedisConfig(host=t["host"], port=t["port"], database=t["db"])
            self.backend = RedisMemoryBackend(config)
            await self.backend.connect()
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.target["url"])
        try:
            await client.flushdb()
        finally:
            await client.aclose()

    async def close(self) -> None:
        if self.backend is not None:
            await self.backend.close()
