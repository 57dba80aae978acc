"""Raw ``asyncmy`` baselines for ``MySQLMemory``, and a side-by-side run.

:class:`RawMySQL` does each benchmarked operation with the driver alone, on the tables
``MySQLMemory`` creates and with the statements it sends, but without the library: no
validation, no ownership check, no group commit, no conversion to bruno-core models.

* ``store_one``: one ``INSERT`` per message, each its own transaction (autocommit).
* ``store_batch``: multi-row ``INSERT`` statements in one transaction.
* ``last_n``: the newest ``n`` messages of a conversation.
* ``search``: the ranked ``MATCH ... AGAINST`` statement over the user's messages.

Run ``python -m benchmarks.raw_mysql --help`` for the comparison: one-at-a-time stores,
32 concurrent writers, a 10,000-message batch, last-20 reads at 10k and 100k messages, and
search at 10k messages per user. It uses tables of its own (a fresh prefix), dropped at the end.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncmy
import typer
from bruno_core.models.message import Message
from rich.console import Console
from rich.table import Table

from benchmarks.raw_postgres import make_messages
from bruno_memstore.backends.mysql import MySQLMemory, query_terms, search_terms
from bruno_memstore.url import MemoryURL

__all__ = ["Figure", "RawMySQL", "run"]

DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"
_COLUMNS = (
    "id, conversation_id, user_id, role, message_type, ts_us, ts_text, parent_id, content, "
    "metadata, search_terms"
)
_ROW = "(" + ",".join(["%s"] * 11) + ")"


class RawMySQL:
    """The driver alone, on ``MySQLMemory``'s tables (created by it in :meth:`open`).

    Args:
        url: ``mysql://`` URL of the server.
        prefix: table prefix of the tables to use.
        pool_size: connections (one per concurrent task of the raw baseline).
    """

    def __init__(self, url: str, prefix: str, *, pool_size: int = 32) -> None:
        self.url = url
        self.prefix = prefix
        self.pool_size = pool_size
        self._pool: Any = None
        self.messages = f"`{prefix}messages`"
        self.conversations = f"`{prefix}conversations`"

    async def open(self) -> None:
        """Create the tables (through ``MySQLMemory``) and the pool."""
        async with MySQLMemory(self.url, table_prefix=self.prefix):
            pass
        u = MemoryURL.parse(self.url)
        self._pool = await asyncmy.create_pool(
            host=u.host or "127.0.0.1",
            port=u.port or 3306,
            user=u.username or "root",
            password=u.password or "",
            database=u.path.lstrip("/"),
            charset="utf8mb4",
            autocommit=True,
            minsize=self.pool_size,
            maxsize=self.pool_size,
        )

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """One statement on a pooled connection; its rows."""
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)
            return list(await cur.fetchall())

    async def new_conversation(self, user_id: str, conversation_id: str) -> None:
        """The conversation row the messages belong to."""
        await self.execute(
            f"INSERT IGNORE INTO {self.conversations} (conversation_id, user_id, created_us) "
            "VALUES (%s, %s, 0)",
            (conversation_id, user_id),
        )

    async def store_one(self, message: Message, user_id: str, conversation_id: str) -> None:
        """One message, one statement, one commit."""
        await self.execute(
            f"INSERT INTO {self.messages} ({_COLUMNS}) VALUES {_ROW}",
            _row(message, user_id, conversation_id),
        )

    async def store_batch(
        self, messages: Sequence[Message], user_id: str, conversation_id: str
    ) -> None:
        """Multi-row inserts of 500 rows, in arrival order, in one transaction."""
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("START TRANSACTION")
            for start in range(0, len(messages), 500):
                chunk = messages[start : start + 500]
                flat = [v for m in chunk for v in _row(m, user_id, conversation_id)]
                await cur.execute(
                    f"INSERT INTO {self.messages} ({_COLUMNS}) VALUES "
                    + ",".join([_ROW] * len(chunk)),
                    flat,
                )
            await cur.execute("COMMIT")

    async def last_n(self, conversation_id: str, n: int = 20) -> list[Any]:
        """The newest ``n`` rows, oldest first."""
        rows = await self.execute(
            f"SELECT {_COLUMNS} FROM {self.messages} WHERE conversation_id = %s "
            "ORDER BY ts_us DESC, seq DESC LIMIT %s",
            (conversation_id, n),
        )
        rows.reverse()
        return rows

    async def search(self, user_id: str, query: str, limit: int = 10) -> list[Any]:
        """The ranked full-text statement over the user's messages."""
        q = query_terms(query)
        return await self.execute(
            f"SELECT {_COLUMNS}, MATCH(search_terms) AGAINST(%s IN NATURAL LANGUAGE MODE) AS s "
            f"FROM {self.messages} WHERE MATCH(search_terms) AGAINST(%s IN NATURAL LANGUAGE MODE) "
            "AND user_id = %s ORDER BY s DESC, ts_us DESC, id LIMIT %s",
            (q, q, user_id, limit),
        )

    async def drop(self) -> None:
        """Drop every table with this prefix."""
        names = [
            "schema_version",
            "settings",
            "conversations",
            "messages",
            "memories",
            "memory_tags",
            "sessions",
            "ft_stopwords",
        ]
        await self.execute(
            "DROP TABLE IF EXISTS " + ", ".join(f"`{self.prefix}{n}`" for n in names)
        )


def _row(m: Message, user_id: str, conversation_id: str) -> tuple[Any, ...]:
    ts = m.timestamp if m.timestamp.tzinfo else m.timestamp.replace(tzinfo=UTC)
    return (
        str(m.id),
        conversation_id,
        user_id,
        m.role.value,
        m.message_type.value,
        int((ts - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000),
        m.timestamp.isoformat(),
        None,
        m.content,
        json.dumps(m.metadata),
        search_terms(m.content),
    )


# ==================================================================== the comparison


@dataclass
class Figure:
    """One workload's result for the raw driver and for ``MySQLMemory``."""

    workload: str
    unit: str
    raw: float
    ours: float
    higher_is_better: bool

    @property
    def ratio(self) -> float:
        """``ours / raw`` for throughput, ``raw / ours`` for latency: above 1 is faster."""
        return self.ours / self.raw if self.higher_is_better else self.raw / self.ours


async def _rate(n: int, work: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await work()
    return n / (time.perf_counter() - started)


async def _p50(repeats: int, call: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(10):
        await call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


async def _writers(tasks: int, per_task: int, store: Callable[[int, int], Awaitable[Any]]) -> None:
    async def one(t: int) -> None:
        for j in range(per_task):
            await store(t, j)

    await asyncio.gather(*(one(t) for t in range(tasks)))


async def run(
    url: str, *, singles: int, concurrent: int, tasks: int, batch: int, sizes: Sequence[int]
) -> list[Figure]:
    """Measure every workload on fresh tables; return the figures."""
    prefix = f"bench_{uuid.uuid4().hex[:8]}_"
    raw = RawMySQL(url, prefix, pool_size=tasks)
    await raw.open()
    memory = MySQLMemory(url, table_prefix=prefix, pool_size=tasks)
    await memory.initialize()
    figures: list[Figure] = []
    try:
        msgs = make_messages(singles * 2)
        await raw.new_conversation("raw", "raw-single")

        async def raw_singles() -> None:
            for m in msgs[:singles]:
                await raw.store_one(m, "raw", "raw-single")

        async def our_singles() -> None:
            for m in msgs[singles:]:
                await memory.store_message(m, "ours", "ours-single")

        figures.append(
            Figure(
                "store, one at a time",
                "msg/s",
                await _rate(singles, raw_singles),
                await _rate(singles, our_singles),
                True,
            )
        )

        # Concurrent writers, one conversation each (every store acknowledged on its own).
        per_task = concurrent // tasks
        msgs = make_messages(per_task * tasks * 2, seed=11)
        for t in range(tasks):
            await raw.new_conversation("raw", f"raw-conc-{t}")
        base = per_task * tasks
        raw_rate = await _rate(
            base,
            lambda: _writers(
                tasks,
                per_task,
                lambda t, j: raw.store_one(msgs[t * per_task + j], "raw", f"raw-conc-{t}"),
            ),
        )
        our_rate = await _rate(
            base,
            lambda: _writers(
                tasks,
                per_task,
                lambda t, j: memory.store_message(
                    msgs[base + t * per_task + j], "ours", f"ours-conc-{t}"
                ),
            ),
        )
        figures.append(
            Figure(f"store, {tasks} concurrent writers", "msg/s", raw_rate, our_rate, True)
        )

        msgs = make_messages(batch * 2, seed=13)
        await raw.new_conversation("raw", "raw-batch")
        figures.append(
            Figure(
                f"store, batch of {batch:,}",
                "msg/s",
                await _rate(batch, lambda: raw.store_batch(msgs[:batch], "raw", "raw-batch")),
                await _rate(
                    batch,
                    lambda: memory.store_messages(
                        msgs[batch:], conversation_id="ours-batch", user_id="ours"
                    ),
                ),
                True,
            )
        )

        user, conv = "reader", "reader-conv"
        stored = 0
        for size in sizes:
            more = make_messages(size - stored, seed=size, start=datetime(2023, 1, 1))
            for start in range(0, len(more), 10_000):
                await memory.store_messages(
                    more[start : start + 10_000], conversation_id=conv, user_id=user
                )
            stored = size
            figures.append(
                Figure(
                    f"last 20 of {size:,} messages (p50)",
                    "µs",
                    await _p50(300, lambda: raw.last_n(conv, 20)),
                    await _p50(
                        300, lambda: memory.retrieve_context(user, conversation_id=conv, limit=20)
                    ),
                    False,
                )
            )
            if size == sizes[0]:
                figures.append(
                    Figure(
                        f"search, {size:,} messages of the user (p50)",
                        "µs",
                        await _p50(100, lambda: raw.search(user, "guitar lesson")),
                        await _p50(
                            100, lambda: memory.search_messages("guitar lesson", user_id=user)
                        ),
                        False,
                    )
                )
    finally:
        await memory.shutdown()
        await raw.drop()
        await raw.close()
    return figures


def main(
    url: Annotated[str, typer.Option(help="mysql:// URL")] = DEFAULT_URL,
    singles: Annotated[int, typer.Option(help="messages stored one at a time")] = 500,
    concurrent: Annotated[int, typer.Option(help="messages stored by concurrent tasks")] = 3200,
    tasks: Annotated[int, typer.Option(help="concurrent writer tasks")] = 32,
    batch: Annotated[int, typer.Option(help="messages in the batch")] = 10_000,
    largest: Annotated[int, typer.Option(help="messages in the conversation read")] = 100_000,
) -> None:
    """Compare MySQLMemory with the raw asyncmy driver on the same tables and statements."""
    sizes = [s for s in (10_000, 100_000) if s <= largest] or [largest]
    figures = asyncio.run(
        run(url, singles=singles, concurrent=concurrent, tasks=tasks, batch=batch, sizes=sizes)
    )
    table = Table(title="MySQLMemory vs raw asyncmy")
    for column in ("workload", "raw asyncmy", "MySQLMemory", "vs raw"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    for f in figures:
        table.add_row(
            f.workload, f"{f.raw:,.0f} {f.unit}", f"{f.ours:,.0f} {f.unit}", f"{f.ratio:.2f}x"
        )
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
