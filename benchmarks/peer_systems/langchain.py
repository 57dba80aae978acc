"""LangChain's chat histories, as a LangChain application keeps a conversation.

* SQLite: ``langchain_community``'s ``SQLChatMessageHistory`` on an async SQLAlchemy engine
  (``sqlite+aiosqlite``, SQLite's defaults: rollback journal, ``synchronous=FULL``);
* PostgreSQL: ``langchain_postgres.PostgresChatMessageHistory`` (psycopg 3), each call on a
  connection of a ``psycopg_pool`` pool of up to 20 (the class takes one connection);
* Redis: ``langchain_community``'s ``RedisChatMessageHistory`` (a synchronous class: its
  ``aadd_messages`` / ``aget_messages`` run in the default thread pool).

One history object per conversation, made before timing. None of them reads "the last N"
(``aget_messages()`` returns the whole conversation, sliced here) and none searches.
Untimed bulk loads write the rows the classes themselves write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from .contract import PeerSystem, Row, remove_sqlite_files
from .data import ChatMessage


class _LangChain(PeerSystem):
    search_scope = None

    def __init__(self, target: dict[str, Any]) -> None:
        super().__init__(target)
        self.histories: dict[str, Any] = {}

    def native(self, m: ChatMessage) -> BaseMessage:
        kind = HumanMessage if m.role == "user" else AIMessage
        return kind(content=m.content, additional_kwargs={"turn": m.turn})

    async def store(self, native: BaseMessage, m: ChatMessage) -> None:
        await self.histories[m.conversation].aadd_messages([native])

    async def last(self, first: ChatMessage, n: int) -> list[BaseMessage]:
        return (await self.histories[first.conversation].aget_messages())[-n:]

    async def everything(self, first: ChatMessage) -> list[BaseMessage]:
        return await self.histories[first.conversation].aget_messages()

    def rows(self, result: list[BaseMessage]) -> list[Row]:
        role = {"human": "user", "ai": "assistant"}
        return [
            (role.get(x.type, x.type), x.content, x.additional_kwargs.get("turn")) for x in result
        ]


class LangChainSQLite(_LangChain):
    """``SQLChatMessageHistory`` with an ``AsyncEngine`` on ``sqlite+aiosqlite``."""

    packages = ("langchain-community", "langchain-core", "sqlalchemy", "aiosqlite")

    def __init__(self, target: dict[str, Any]) -> None:
        super().__init__(target)
        self.engine: Any = None
        self.converter: Any = None

    async def empty(self) -> None:
        from langchain_community.chat_message_histories.sql import DefaultMessageConverter
        from sqlalchemy.ext.asyncio import create_async_engine

        if self.engine is not None:
            await self.engine.dispose()
        remove_sqlite_files(self.target["path"])
        self.engine = create_async_engine(f"sqlite+aiosqlite:///{self.target['path']}")
        self.converter = DefaultMessageConverter("message_store")  # one ORM class for all
        self.histories = {}

    async def open(self) -> None:
        from sqlalchemy import text

        await self.empty()
        async with self.engine.connect() as conn:
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            level = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
        self.notes.append(f"journal_mode={journal}, synchronous={level} (2 = FULL)")

    async def prepare(self, firsts: Sequence[ChatMessage]) -> None:
        from langchain_community.chat_message_histories import SQLChatMessageHistory

        for m in firsts:
            history = SQLChatMessageHistory(
                session_id=m.conversation,
                connection=self.engine,
                custom_message_converter=self.converter,
            )
            await history.aget_messages()  # creates the table on the object's first call
            self.histories[m.conversation] = history

    async def load(self, natives: Sequence[BaseMessage], msgs: Sequence[ChatMessage]) -> None:
        from sqlalchemy import insert

        table = self.converter.get_sql_model_class().__table__
        rows = []
        for native, m in zip(natives, msgs, strict=True):
            record = self.converter.to_sql_model(native, m.conversation)
            rows.append({"session_id": record.session_id, "message": record.message})
        async with self.engine.begin() as conn:
            await conn.execute(insert(table), rows)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()

    async def count(self) -> int:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            return (await conn.execute(text("SELECT count(*) FROM message_store"))).scalar_one()


class LangChainPostgres(_LangChain):
    """``PostgresChatMessageHistory`` on pooled psycopg connections, in its own database."""

    packages = ("langchain-postgres", "langchain-core", "psycopg", "psycopg-pool")
    TABLE = "chat_history"

    def __init__(self, target: dict[str, Any]) -> None:
        super().__init__(target)
        self.pool: Any = None

    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(self.target["dsn"], min_size=1, max_size=20, open=False)
        await self.pool.open()
        await self.empty()

    async def empty(self) -> None:
        from langchain_postgres import PostgresChatMessageHistory

        async with self.pool.connection() as conn:
            await PostgresChatMessageHistory.adrop_table(conn, self.TABLE)
            await PostgresChatMessageHistory.acreate_tables(conn, self.TABLE)

    async def prepare(self, firsts: Sequence[ChatMessage]) -> None:
        self.histories = {m.conversation: m.conversation_uuid for m in firsts}

    def _history(self, conn: Any, m: ChatMessage) -> Any:
        from langchain_postgres import PostgresChatMessageHistory

        return PostgresChatMessageHistory(self.TABLE, m.conversation_uuid, async_connection=conn)

    async def store(self, native: BaseMessage, m: ChatMessage) -> None:
        async with self.pool.connection() as conn:
            await self._history(conn, m).aadd_messages([native])

    async def everything(self, first: ChatMessage) -> list[BaseMessage]:
        async with self.pool.connection() as conn:
            return await self._history(conn, first).aget_messages()

    async def last(self, first: ChatMessage, n: int) -> list[BaseMessage]:
        return (await self.everything(first))[-n:]

    async def load(self, natives: Sequence[BaseMessage], msgs: Sequence[ChatMessage]) -> None:
        from langchain_core.messages import message_to_dict

        rows = [
            (m.conversation_uuid, json.dumps(message_to_dict(native)))
            for native, m in zip(natives, msgs, strict=True)
        ]
        async with self.pool.connection() as conn, conn.cursor() as cursor:
            sql = f"INSERT INTO {self.TABLE} (session_id, message) VALUES (%s, %s)"
            await cursor.executemany(sql, rows)

    async def settle(self) -> None:
        async with self.pool.connection() as conn:
            await conn.set_autocommit(True)
            await conn.execute(f"VACUUM ANALYZE {self.TABLE}")
            await conn.set_autocommit(False)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def count(self) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(f"SELECT count(*) FROM {self.TABLE}")
            return (await cursor.fetchone())[0]


class LangChainRedis(_LangChain):
    """``langchain_community``'s ``RedisChatMessageHistory`` (``LPUSH`` per message)."""

    packages = ("langchain-community", "langchain-core", "redis")

    async def empty(self) -> None:
        import redis

        for history in self.histories.values():
            history.redis_client.close()
        self.histories = {}
        with redis.Redis.from_url(self.target["url"]) as client:
            client.flushdb()

    async def prepare(self, firsts: Sequence[ChatMessage]) -> None:
        from langchain_community.chat_message_histories import RedisChatMessageHistory

        for m in firsts:
            self.histories[m.conversation] = RedisChatMessageHistory(
                session_id=m.conversation, url=self.target["url"]
            )

    async def load(self, natives: Sequence[BaseMessage], msgs: Sequence[ChatMessage]) -> None:
        batches: dict[str, list[BaseMessage]] = {}
        for native, m in zip(natives, msgs, strict=True):
            batches.setdefault(m.conversation, []).append(native)
        for conversation, batch in batches.items():
            await self.histories[conversation].aadd_messages(batch)

    async def close(self) -> None:
        for history in self.histories.values():
            history.redis_client.close()
