"""The raw ``asyncpg`` baseline for ``PostgresMemory`` in :mod:`benchmarks.throughput`.

:class:`AsyncpgDriver` runs each benchmarked operation with the driver alone, executing the
library's own SQL statements (``bruno_memstore.backends.postgres.dialect``) on a schema the
library created, with the same parameter values (analysed text included, computed inside
the timing as the library does):

* ``store_one``: the statement for one message into a stored conversation (the claiming
  append statement when the conversation is new), autocommitted: one round trip and one
  commit per message, whatever the number of concurrent tasks (one pooled connection each);
* ``store_batch``: ``COPY`` into the staging table, then the ``INSERT ... SELECT``, in one
  transaction;
* ``read_rows``: the user's newest 20 messages;
* ``search_rows``: the ranked full-text statement over the user's messages.

What the library adds on top: validation, the ownership and idempotency rules, group commit
of concurrent appends, retries, metrics and bruno-core models. Importing this module
registers the driver for ``postgresql://`` and ``postgres://`` URLs::

    python -m benchmarks.throughput "postgresql://postgres@127.0.0.1/test?schema=bench1"

The raw driver works in a schema of its own (``bench_raw_<random>``), dropped on close.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
from bruno_core.models.message import Message

from bruno_memstore.backends.postgres import PostgresMemory, bulk
from bruno_memstore.backends.postgres.dialect import PostgresDialect
from bruno_memstore.backends.postgres.dialect import analysed as _analysed
from bruno_memstore.backends.postgres.schema import check_schema
from bruno_memstore.backends.sql.dialect import message_of as _message
from bruno_memstore.backends.sql.plans import window
from bruno_memstore.models import record_to_message, to_us
from bruno_memstore.search import MAX_QUERY_TERMS, terms
from bruno_memstore.url import MemoryURL

from .throughput import CONTEXT_LIMIT, SEARCH_LIMIT, RawDriver, register_raw_driver

__all__ = ["AsyncpgDriver"]


class AsyncpgDriver(RawDriver):
    """``asyncpg`` with a pool of one connection per concurrent writer (32)."""

    name: ClassVar[str] = "asyncpg"
    pool_size: ClassVar[int] = 32

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        self.schema = f"bench_raw_{uuid.uuid4().hex[:12]}"
        dsn = PostgresMemory(url.raw)._dsn  # the same server, without the library's options
        # The library creates the schema and its tables; from here on, only the driver.
        async with PostgresMemory(url.raw, schema=self.schema):
            pass
        self.sql = PostgresDialect(check_schema(self.schema), None)
        self.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=self.pool_size)
        s = self.sql.schema
        self.window = self.sql.sql(window(self.sql, None, "", 1)[0])
        self.drop = f"DROP SCHEMA {s} CASCADE"

    async def close(self) -> None:
        await self.pool.execute(self.drop)
        await self.pool.close()

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        r = _values(message)
        if await self.pool.fetchval(self.sql.append_one, conv, user, True, *r) is None:
            await self.pool.execute(self.sql.append, [conv], [user], [True], [1], *([v] for v in r))

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        rows = [(n, *_values(m)) for n, m in enumerate(messages)]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.fetchval(bulk.claim_conversation(self.sql), conv, user)
            await conn.execute(bulk.create_staging(self.sql))
            await conn.copy_records_to_table(
                bulk.staging_table(self.sql), columns=self.sql.row_columns, records=rows
            )
            await conn.execute(bulk.insert_staged(self.sql), conv, user)

    async def read_rows(self, user: str) -> list[Any]:
        return await self.pool.fetch(self.window, user, CONTEXT_LIMIT)

    async def search_rows(self, user: str, query: str) -> list[Any]:
        words = list(dict.fromkeys(terms(query)))[:MAX_QUERY_TERMS]
        if not words:
            return []
        no_filter = [user, [], [], [], 0.0, 0.0, False, 0]
        rows = await self.pool.fetch(
            self.sql.search(len(words)), user, words, SEARCH_LIMIT, True, False, None, *no_filter
        )
        return [row[2:] for row in rows]

    def to_messages(self, rows: list[Any]) -> list[Message]:
        return [record_to_message(_message(row)) for row in rows]


def _values(m: Message) -> tuple[Any, ...]:
    """One message's staged column values (``PostgresDialect.row_columns[1:]``)."""
    return (
        str(m.id),
        m.role.value,
        m.message_type.value,
        m.content,
        m.timestamp.isoformat(),
        to_us(m.timestamp),
        json.dumps(m.metadata, ensure_ascii=False, separators=(",", ":")),
        str(m.parent_id) if m.parent_id else None,
        _analysed(m.content),
    )


register_raw_driver("postgresql", AsyncpgDriver)
register_raw_driver("postgres", AsyncpgDriver)
