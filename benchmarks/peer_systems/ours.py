"""bruno-memstore (this project) with ``embedding_model=None``: keyword search only, the
configuration comparable with the peers, none of which embeds messages.

Public API only: ``store_message(message, user_id, conversation_id)``;
``store_messages`` per conversation to load untimed; ``retrieve_context(user, None,
limit=20, conversation_id=...)`` (oldest first) for the last 20;
``search(user, word, limit=10, kinds=("message",), mode="keyword")``. Emptying a store uses
the engine's driver.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from bruno_core.models import Message, MessageRole

from .contract import PeerSystem, Row, remove_sqlite_files
from .data import ChatMessage


class _Ours(PeerSystem):
    packages = ("bruno-memstore", "bruno-core", "pydantic")

    def __init__(self, target: dict[str, Any]) -> None:
        super().__init__(target)
        self.memory: Any = None

    @abstractmethod
    def _new(self) -> Any:
        """The store, not yet initialised."""

    async def _wipe(self) -> None:
        """Remove what a previous store left (its connection is closed)."""

    async def empty(self) -> None:
        if self.memory is not None:
            await self.memory.shutdown()
        await self._wipe()
        self.memory = self._new()
        await self.memory.initialize()

    async def close(self) -> None:
        if self.memory is not None:
            await self.memory.shutdown()

    def native(self, m: ChatMessage) -> Message:
        role = MessageRole.USER if m.role == "user" else MessageRole.ASSISTANT
        return Message(role=role, content=m.content, metadata={"turn": m.turn}, timestamp=m.at)

    async def store(self, native: Message, m: ChatMessage) -> None:
        await self.memory.store_message(native, m.user, m.conversation)

    async def load(self, natives: Sequence[Message], msgs: Sequence[ChatMessage]) -> None:
        batches: dict[str, tuple[str, list[Message]]] = {}
        for native, m in zip(natives, msgs, strict=True):
            batches.setdefault(m.conversation, (m.user, []))[1].append(native)
        for conversation, (user, batch) in batches.items():
            await self.memory.store_messages(batch, conversation_id=conversation, user_id=user)

    async def last(self, first: ChatMessage, n: int) -> list[Message]:
        return await self.memory.retrieve_context(
            first.user, None, limit=n, conversation_id=first.conversation
        )

    async def everything(self, first: ChatMessage) -> list[Message]:
        return (await self.memory.retrieve_messages(first.conversation))[::-1]

    async def search(self, user: str, word: str, limit: int) -> list[Message]:
        hits = await self.memory.search(user, word, limit=limit, kinds=("message",), mode="keyword")
        return [hit.message for hit in hits]

    def rows(self, result: list[Message]) -> list[Row]:
        return [
            (getattr(m.role, "value", m.role), m.content, (m.metadata or {}).get("turn"))
            for m in result
        ]


class OursSQLite(_Ours):
    """``SQLiteMemory(path, embedding_model=None)``, the library's defaults otherwise."""

    async def _wipe(self) -> None:
        remove_sqlite_files(self.target["path"])

    def _new(self) -> Any:
        from bruno_memstore import SQLiteMemory

        return SQLiteMemory(self.target["path"], embedding_model=None)

    async def open(self) -> None:
        await self.empty()
        self.notes.append(f"synchronous={self.memory.synchronous} (library default)")

    async def count(self) -> int:
        import sqlite3

        with sqlite3.connect(f"file:{self.target['path']}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM messages").fetchone()[0]


class OursSQLiteNormal(OursSQLite):
    """``SQLiteMemory(path, embedding_model=None, synchronous="normal")``: commits in WAL mode
    without an ``fsync`` each, the durability bruno-memory's SQLite backend runs at."""

    def _new(self) -> Any:
        from bruno_memstore import SQLiteMemory

        return SQLiteMemory(self.target["path"], embedding_model=None, synchronous="normal")

    async def open(self) -> None:
        await self.empty()
        self.notes.append(f"synchronous={self.memory.synchronous}")


class OursPostgres(_Ours):
    """``PostgresMemory(dsn, embedding_model=None)`` in its own database, defaults otherwise."""

    packages = (*_Ours.packages, "asyncpg")

    async def _sql(self, statement: str) -> Any:
        import asyncpg

        conn = await asyncpg.connect(self.target["dsn"])
        try:
            return await conn.fetchval(statement)
        finally:
            await conn.close()

    async def _wipe(self) -> None:
        await self._sql("DROP SCHEMA IF EXISTS bruno_memstore CASCADE")

    def _new(self) -> Any:
        from bruno_memstore import PostgresMemory

        return PostgresMemory(self.target["dsn"], embedding_model=None)

    async def settle(self) -> None:
        await self._sql("VACUUM ANALYZE")

    async def count(self) -> int:
        return await self._sql("SELECT count(*) FROM bruno_memstore.messages")


class OursRedis(_Ours):
    """``RedisMemory(url, embedding_model=None)`` on its own database number."""

    packages = (*_Ours.packages, "redis")

    async def _wipe(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.target["url"])
        try:
            await client.flushdb()
        finally:
            await client.aclose()

    def _new(self) -> Any:
        from bruno_memstore import RedisMemory

        return RedisMemory(self.target["url"], embedding_model=None)
