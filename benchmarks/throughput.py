"""Throughput and latency of the memory backends, against their raw drivers.

For each backend URL (default: SQLite in a temporary directory, and ``memory://``) this
measures, on a fresh store:

* **batch store** — ``store_messages`` in batches, while filling a dataset of ``--users``
  users with ``--per-user`` messages each;
* **context read** — ``retrieve_context(user, limit=20)``, p50 and p99, once the first user is
  stored (``--per-user`` messages in the store) and once every user is;
* **search** — ``search_messages(query, user_id=..., limit=10)`` p50, over the full dataset;
* **store, one await per message** — ``store_message`` awaited message after message;
* **concurrent store** — ``--writers`` tasks calling ``store_message`` at once.

The same operations then run on the engine's raw drivers (for SQLite: ``aiosqlite`` and the
standard ``sqlite3`` module), executing the library's own SQL statements against the same
schema, with the same pragmas and the same parameter values (the full-text rows hold the
same analysed text), and the table shows ours/raw. Raw reads return driver rows; ours return
bruno-core ``Message`` objects. Server engines plug in with :func:`register_raw_driver`.

Stores are opened without an embedding model (``embedding_model=None``): this measures the
storage engine against its raw driver. With the default model every stored message is also
embedded (a few milliseconds each on two cores: ``docs/embeddings.md``), which then bounds
store rates: ``benchmarks.embedded_writes`` measures that; ``benchmarks.vector_latency``
measures vector and hybrid search.

Run ``python -m benchmarks.throughput --help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import platform
import random
import sqlite3
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar

import typer
from bruno_core.models.message import Message, MessageRole
from rich.console import Console
from rich.table import Table

from bruno_memstore import open_memory
from bruno_memstore.backends.sqlite import dialect as sql
from bruno_memstore.backends.sqlite.schema import message_scope, migrate
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import Capability
from bruno_memstore.models import MessageRecord, message_to_record, record_to_message
from bruno_memstore.search import STOP_WORDS, index_text
from bruno_memstore.url import MemoryURL

__all__ = [
    "PRELOADERS",
    "RAW_DRIVERS",
    "AiosqliteDriver",
    "Figures",
    "Ours",
    "RawDriver",
    "Sqlite3Driver",
    "Subject",
    "Workload",
    "app",
    "machine",
    "measure",
    "raw_drivers",
    "register_raw_driver",
    "run_backend",
]

CONTEXT_LIMIT = 20
SEARCH_LIMIT = 10

# ====================================================================== workload


@dataclass(frozen=True)
class Workload:
    """Sizes of one run."""

    users: int = 10
    per_user: int = 10_000
    batch_size: int = 1000
    sequential: int = 2000
    writers: int = 32
    concurrent: int = 6400
    reads: int = 2000
    searches: int = 300
    rounds: int = 5  # implementations alternate this many times in each phase
    seed: int = 7
    preload: bool = False  # users after the first are bulk-loaded, untimed (slow engines)

    @classmethod
    def quick(cls) -> Workload:
        return cls(users=2, per_user=5000, sequential=400, concurrent=1600, reads=500, searches=100)


class TextMaker:
    """Deterministic chat-like text: English function words and a Zipf-distributed vocabulary."""

    def __init__(self, seed: int, vocabulary: int = 6000) -> None:
        self._rng = random.Random(seed)
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        words: set[str] = set()
        while len(words) < vocabulary:
            words.add("".join(self._rng.choices(syllables, k=self._rng.randint(2, 4))))
        self.vocabulary = sorted(words)
        self._rng.shuffle(self.vocabulary)
        self._weights = [1.0 / (rank + 1) for rank in range(vocabulary)]
        self._stop = sorted(STOP_WORDS)

    def sentence(self) -> str:
        n = self._rng.randint(8, 30)
        content = self._rng.choices(self.vocabulary, self._weights, k=n)
        out = [w if self._rng.random() > 0.4 else self._rng.choice(self._stop) for w in content]
        return " ".join(out).capitalize() + "."

    def query(self) -> str:
        """One to three content words, mostly of middling frequency."""
        k = self._rng.randint(1, 3)
        return " ".join(
            self.vocabulary[int(self._rng.paretovariate(0.7) * 20) % 3000] for _ in range(k)
        )

    def messages(self, n: int, start: datetime) -> list[Message]:
        roles = (MessageRole.USER, MessageRole.ASSISTANT)
        return [
            Message(
                role=roles[i % 2],
                content=self.sentence(),
                timestamp=start + timedelta(milliseconds=i),
            )
            for i in range(n)
        ]


# ====================================================================== results


@dataclass
class Figures:
    """What one implementation measured (``None``: not measured)."""

    name: str
    batch_store: float | None = None  # msg/s
    read_small_p50: float | None = None  # seconds
    read_small_p99: float | None = None
    read_large_p50: float | None = None
    read_large_p99: float | None = None
    read_small_p50_rows: float | None = None  # raw drivers: rows only, no Message objects
    read_large_p50_rows: float | None = None
    search_p50: float | None = None
    sequential_store: float | None = None  # msg/s
    concurrent_store: float | None = None  # msg/s
    stored_small: int = 0
    stored_large: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latencies(call: Callable[[int], Awaitable[object]], n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - started)
    return out


# ====================================================================== the harness


class Subject(ABC):
    """What the harness measures: the library's backend, or a raw driver doing the same."""

    name: str
    concurrent: bool = True
    searchable: bool = True  # False: no full-text search, so no search latency to measure

    @abstractmethod
    async def store_one(self, user: str, conv: str, message: Message) -> None: ...

    @abstractmethod
    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None: ...

    async def preload(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        """Store ``messages`` as fast as the engine takes them, untimed (``--preload``): the
        stored items must be those ``store_batch`` writes. Default: ``store_batch``."""
        await self.store_batch(user, conv, messages)

    @abstractmethod
    async def read_context(self, user: str) -> list[Any]:
        """The user's newest :data:`CONTEXT_LIMIT` messages, as bruno-core ``Message``s."""

    async def read_rows(self, user: str) -> list[Any] | None:
        """The same read without building ``Message``s (``None``: not applicable)."""
        return None

    @abstractmethod
    async def search(self, user: str, query: str) -> list[Any]: ...


class Ours(Subject):
    """The library's backend, through its public methods."""

    def __init__(self, memory: MemoryBackend) -> None:
        self.name = "bruno-memstore"
        self.memory = memory
        self.searchable = memory.supports(Capability.FULL_TEXT)

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        await self.memory.store_message(message, user, conv)

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        await self.memory.store_messages(messages, conversation_id=conv, user_id=user)

    async def preload(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        loader = PRELOADERS.get(self.memory.backend_name)
        if loader is None:
            await super().preload(user, conv, messages)
        else:
            await loader(self.memory, user, conv, messages)

    async def read_context(self, user: str) -> list[Any]:
        return await self.memory.retrieve_context(user, limit=CONTEXT_LIMIT)

    async def search(self, user: str, query: str) -> list[Any]:
        return await self.memory.search_messages(query, user_id=user, limit=SEARCH_LIMIT)


def _turns(n: int, turn: int) -> list[int]:
    """Subject indexes in a rotating order, so no subject always runs first or last."""
    return [(turn + k) % n for k in range(n)]


async def measure(subjects: Sequence[Subject], work: Workload, data: Sequence[Dataset]):
    """Run the workload against every subject (each on a fresh store, with its own copy of
    the data), interleaving them phase by phase and in rounds, so that whatever else runs on
    the machine weighs on all of them alike."""
    n = len(subjects)
    figures = [Figures(name=s.name) for s in subjects]
    rounds = max(1, work.rounds)

    async def reads(attr: str) -> None:
        per_round = max(1, work.reads // rounds)
        lat: list[list[float]] = [[] for _ in subjects]
        rows: list[list[float]] = [[] for _ in subjects]
        for r in range(rounds):
            for k in _turns(n, r):
                subject, user = subjects[k], data[k].users[0]
                lat[k] += await _latencies(
                    lambda _i, s=subject, u=user: s.read_context(u), per_round
                )
                if await subject.read_rows(user) is not None:
                    rows[k] += await _latencies(
                        lambda _i, s=subject, u=user: s.read_rows(u), per_round
                    )
        for k, fig in enumerate(figures):
            setattr(fig, f"{attr}_p50", _percentile(lat[k], 0.5))
            setattr(fig, f"{attr}_p99", _percentile(lat[k], 0.99))
            if rows[k]:
                setattr(fig, f"{attr}_p50_rows", _percentile(rows[k], 0.5))

    # Batch store, filling the data set user by user (with ``preload``, users after the
    # first are bulk-loaded and only the first user's batches are timed).
    elapsed = [0.0] * n
    for u in range(work.users):
        for k in _turns(n, u):
            user = data[k].users[u]
            if work.preload and u > 0:
                for batch in data[k].user_batches[u]:
                    await subjects[k].preload(user, f"{user}-conv", batch)
                continue
            started = time.perf_counter()
            for batch in data[k].user_batches[u]:
                await subjects[k].store_batch(user, f"{user}-conv", batch)
            elapsed[k] += time.perf_counter() - started
        if u == 0:
            await reads("read_small")
    timed = 1 if work.preload else work.users
    for k, fig in enumerate(figures):
        fig.batch_store = timed * work.per_user / elapsed[k]
        fig.stored_small, fig.stored_large = work.per_user, work.users * work.per_user
    await reads("read_large")

    # Search over the full data set.
    per_round = max(1, work.searches // rounds) if work.searches else 0
    found: list[list[float]] = [[] for _ in subjects]
    for r in range(rounds):
        for k in _turns(n, r):
            subject, d = subjects[k], data[k]
            if not subject.searchable:
                continue

            async def search(i: int, subject: Subject = subject, d: Dataset = d) -> object:
                user = d.users[i % len(d.users)]
                return await subject.search(user, d.queries[i % len(d.queries)])

            found[k] += await _latencies(search, per_round)
    for k, fig in enumerate(figures):
        if found[k]:
            fig.search_p50 = _percentile(found[k], 0.5)

    # One await per message, then concurrent writers: each in rounds of a slice of the data.
    spent = [0.0] * n
    stored = [0] * n
    for r in range(rounds):
        for k in _turns(n, r):
            d = data[k]
            chunk = d.sequential[r::rounds]
            started = time.perf_counter()
            for message in chunk:
                await subjects[k].store_one(f"seq-{d.run}", f"seq-{d.run}-conv", message)
            spent[k] += time.perf_counter() - started
            stored[k] += len(chunk)
    for k, fig in enumerate(figures):
        if stored[k]:
            fig.sequential_store = stored[k] / spent[k]

    spent = [0.0] * n
    stored = [0] * n
    for r in range(rounds):
        for k in _turns(n, r):
            subject, d = subjects[k], data[k]
            if not subject.concurrent:
                continue

            async def writer(w: int, subject: Subject = subject, d: Dataset = d, r: int = r) -> int:
                msgs = d.concurrent[w][r::rounds]
                for message in msgs:
                    await subject.store_one(f"w{w}-{d.run}", f"w{w}-{d.run}-conv", message)
                return len(msgs)

            started = time.perf_counter()
            counts = await asyncio.gather(*(writer(w) for w in range(work.writers)))
            spent[k] += time.perf_counter() - started
            stored[k] += sum(counts)
    for k, fig in enumerate(figures):
        if stored[k]:
            fig.concurrent_store = stored[k] / spent[k]
    return figures


async def run_backend(
    url: str, drivers: Sequence[type[RawDriver]], workdir: Path, work: Workload, data: Dataset
) -> list[Figures]:
    """Measure the library's backend at ``url`` (a fresh store) and the raw drivers."""
    # The storage engine against its raw driver: no embedding model (the raw drivers embed
    # nothing). Embedding time is measured on its own by benchmarks.embedders.
    memory = open_memory(url, embedding_model=None)
    parsed = MemoryURL.parse(url)
    raw = [driver() for driver in drivers]
    opened: list[RawDriver] = []
    try:
        await memory.initialize()
        for driver in raw:
            await driver.open(parsed, workdir)
            opened.append(driver)
        subjects: list[Subject] = [Ours(memory), *raw]
        figures = await measure(subjects, work, [data.fresh_copy() for _ in subjects])
    finally:
        for driver in opened:
            await driver.close()
        await memory.shutdown()
    for driver, fig in zip(raw, figures[1:], strict=True):
        fig.name = f"raw {driver.name}"
    return figures


# ====================================================================== raw drivers


class RawDriver(Subject):
    """An engine's client used directly, running the library's statements by hand.

    Subclasses implement one engine; register them with :func:`register_raw_driver` under the
    URL scheme of the backend they are compared with. ``read_rows`` and ``search_rows`` return
    the driver's rows; ``to_messages`` builds what the library returns from them.
    """

    name: ClassVar[str]  # type: ignore[misc]

    @abstractmethod
    async def open(self, url: MemoryURL, workdir: Path) -> None:
        """Connect to a fresh store with the library's schema."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def read_rows(self, user: str) -> list[Any]:
        """The user's newest :data:`CONTEXT_LIMIT` messages, newest first (rows)."""

    @abstractmethod
    async def search_rows(self, user: str, query: str) -> list[Any]:
        """The user's best :data:`SEARCH_LIMIT` messages for ``query`` (rows)."""

    @abstractmethod
    def to_messages(self, rows: list[Any]) -> list[Message]:
        """The bruno-core messages the rows hold, in the rows' order."""

    async def read_context(self, user: str) -> list[Any]:
        rows = await self.read_rows(user)
        rows.reverse()  # oldest first, as retrieve_context returns them
        return self.to_messages(rows)

    async def search(self, user: str, query: str) -> list[Any]:
        return self.to_messages(await self.search_rows(user, query))


RAW_DRIVERS: dict[str, list[type[RawDriver]]] = {}
# Bulk loaders of the library's backends by backend name (``--preload``): each writes what
# ``store_messages`` would, in the engine's bulk requests.
Preloader = Callable[[MemoryBackend, str, str, Sequence[Message]], Awaitable[None]]
PRELOADERS: dict[str, Preloader] = {}
# Schemes whose raw drivers live in a module named after another spelling of the engine.
_RAW_MODULE_ALIASES = {
    "postgresql": "postgres",
    "mariadb": "mysql",
    "rediss": "redis",
    "redis+cluster": "redis",
    "rediss+cluster": "redis",
}


def register_raw_driver(scheme: str, driver: type[RawDriver]) -> None:
    """Compare backends of ``scheme`` with ``driver`` too."""
    RAW_DRIVERS.setdefault(scheme, []).append(driver)


def raw_drivers(scheme: str, console: Console | None = None) -> list[type[RawDriver]]:
    """The raw drivers for ``scheme``, importing ``benchmarks.raw_<engine>`` on first use."""
    if scheme not in RAW_DRIVERS:
        name = f"benchmarks.raw_{_RAW_MODULE_ALIASES.get(scheme, scheme)}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name and console is not None:  # the module exists, its client not
                console.print(f"no raw baseline for {scheme}://: {exc}", highlight=False)
        RAW_DRIVERS.setdefault(scheme, [])
    return RAW_DRIVERS[scheme]


def _row(message: Message) -> MessageRecord:
    # The same parameter values the library binds (conversion included in the raw timing).
    return message_to_record(message, message.conversation_id or "")


class _SQLiteRaw(RawDriver):
    """Shared set-up of the SQLite raw drivers: same file settings and schema as ours."""

    def _settings(self, url: MemoryURL, workdir: Path) -> tuple[str, str]:
        synchronous = str(url.option("synchronous", str, "full")).upper()
        path = workdir / f"raw-{self.name.replace(' ', '-')}.db"
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            migrate(conn)
        return str(path), synchronous

    @staticmethod
    def _pragmas(synchronous: str) -> list[str]:
        return [
            "PRAGMA foreign_keys = ON",
            "PRAGMA cache_size = -8192",
            "PRAGMA temp_store = MEMORY",
            "PRAGMA busy_timeout = 5000",
            f"PRAGMA synchronous = {synchronous}",
        ]

    @staticmethod
    def _expression(uid: int, query: str) -> str | None:
        return sql.match_expression(query, f"u{uid}")

    def to_messages(self, rows: list[Any]) -> list[Message]:
        return [record_to_message(MessageRecord(*row[:11])) for row in rows]


class Sqlite3Driver(_SQLiteRaw):
    """The standard ``sqlite3`` module, called directly on the event loop (blocking it)."""

    name = "sqlite3"
    concurrent = False

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        path, synchronous = self._settings(url, workdir)
        self.conn = sqlite3.connect(path, isolation_level=None)
        for pragma in self._pragmas(synchronous):
            self.conn.execute(pragma)
        self.keys: dict[str, tuple[int, int]] = {}

    async def close(self) -> None:
        self.conn.close()

    def _claim(self, user: str, conv: str) -> tuple[int, int]:
        row = self.conn.execute(sql.SELECT_CONVERSATION, (conv,)).fetchall()
        if row:
            return row[0][0], row[0][1]
        uid = self.conn.execute(sql.SELECT_USER, (user,)).fetchall()
        key = uid[0][0] if uid else self.conn.execute(sql.INSERT_USER, (user,)).lastrowid
        cid = self.conn.execute(sql.INSERT_CONVERSATION, (conv, key)).lastrowid
        return cid, key

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        rec = _row(message)
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        cid, uid = self._claim(user, conv)
        cur = c.execute(sql.INSERT_MESSAGE, sql.message_row(rec, cid, uid))
        # As the library stores one message: its full-text row waits (the catch-up of one
        # store in INDEX_EVERY is left out, so the raw figure stays a ceiling).
        c.execute(sql.INSERT_PENDING, (cur.lastrowid,))
        c.execute("COMMIT")

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        recs = [_row(m) for m in messages]
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        cid, uid = self._claim(user, conv)
        ids = [r.id for r in recs]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            c.execute(
                f"SELECT id FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
        first = c.execute(sql.MAX_SEQ).fetchall()[0][0] + 1
        c.executemany(
            sql.INSERT_MESSAGE_AT,
            [(seq, *sql.message_row(r, cid, uid)) for seq, r in enumerate(recs, first)],
        )
        scope = message_scope(uid, cid)
        c.executemany(
            sql.INSERT_SEARCH,
            [(seq, scope, index_text(r.content)) for seq, r in enumerate(recs, first)],
        )
        c.execute("COMMIT")

    async def read_rows(self, user: str) -> list[Any]:
        return self.conn.execute(sql.WINDOW_OF_USER, (user, CONTEXT_LIMIT)).fetchall()

    async def search_rows(self, user: str, query: str) -> list[Any]:
        uid = self.conn.execute(sql.SELECT_USER, (user,)).fetchall()[0][0]
        expression = self._expression(uid, query)
        if expression is None:
            return []
        return self.conn.execute(
            sql.SEARCH_MESSAGES.format(extra=""), (expression, uid, SEARCH_LIMIT)
        ).fetchall()


class AiosqliteDriver(_SQLiteRaw):
    """``aiosqlite``: one connection on its thread; an ``asyncio.Lock`` keeps each
    transaction whole when tasks write concurrently."""

    name = "aiosqlite"

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        import aiosqlite

        path, synchronous = self._settings(url, workdir)
        self.db = await aiosqlite.connect(path, isolation_level=None)
        for pragma in self._pragmas(synchronous):
            await self.db.execute(pragma)
        self.lock = asyncio.Lock()

    async def close(self) -> None:
        await self.db.close()

    async def _fetch(self, statement: str, args: Sequence[Any] = ()) -> list[Any]:
        async with self.db.execute(statement, args) as cur:
            return list(await cur.fetchall())

    async def _claim(self, user: str, conv: str) -> tuple[int, int]:
        row = await self._fetch(sql.SELECT_CONVERSATION, (conv,))
        if row:
            return row[0][0], row[0][1]
        found = await self._fetch(sql.SELECT_USER, (user,))
        key = found[0][0] if found else (await self.db.execute(sql.INSERT_USER, (user,))).lastrowid
        cid = (await self.db.execute(sql.INSERT_CONVERSATION, (conv, key))).lastrowid
        return cid, key  # type: ignore[return-value]

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        rec = _row(message)
        async with self.lock:
            await self.db.execute("BEGIN IMMEDIATE")
            cid, uid = await self._claim(user, conv)
            cur = await self.db.execute(sql.INSERT_MESSAGE, sql.message_row(rec, cid, uid))
            await self.db.execute(sql.INSERT_PENDING, (cur.lastrowid,))  # as ``Sqlite3Driver``
            await self.db.execute("COMMIT")

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        recs = [_row(m) for m in messages]
        async with self.lock:
            await self.db.execute("BEGIN IMMEDIATE")
            cid, uid = await self._claim(user, conv)
            ids = [r.id for r in recs]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                await self._fetch(
                    f"SELECT id FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk
                )
            first = (await self._fetch(sql.MAX_SEQ))[0][0] + 1
            await self.db.executemany(
                sql.INSERT_MESSAGE_AT,
                [(seq, *sql.message_row(r, cid, uid)) for seq, r in enumerate(recs, first)],
            )
            scope = message_scope(uid, cid)
            await self.db.executemany(
                sql.INSERT_SEARCH,
                [(seq, scope, index_text(r.content)) for seq, r in enumerate(recs, first)],
            )
            await self.db.execute("COMMIT")

    async def read_rows(self, user: str) -> list[Any]:
        return await self._fetch(sql.WINDOW_OF_USER, (user, CONTEXT_LIMIT))

    async def search_rows(self, user: str, query: str) -> list[Any]:
        uid = (await self._fetch(sql.SELECT_USER, (user,)))[0][0]
        expression = self._expression(uid, query)
        if expression is None:
            return []
        return await self._fetch(
            sql.SEARCH_MESSAGES.format(extra=""), (expression, uid, SEARCH_LIMIT)
        )


register_raw_driver("sqlite", AiosqliteDriver)
register_raw_driver("sqlite", Sqlite3Driver)


# ====================================================================== data set


@dataclass
class Dataset:
    """Messages built before any timing starts (model construction is not measured)."""

    run: str
    users: list[str]
    user_batches: list[list[list[Message]]]
    sequential: list[Message]
    concurrent: list[list[Message]]
    queries: list[str]

    @classmethod
    def build(cls, work: Workload) -> Dataset:
        maker = TextMaker(work.seed)
        run = uuid.uuid4().hex[:8]
        start = datetime(2024, 1, 1)
        users = [f"user{u}-{run}" for u in range(work.users)]
        batches = []
        for u in range(work.users):
            msgs = maker.messages(work.per_user, start + timedelta(days=u))
            batches.append(
                [msgs[i : i + work.batch_size] for i in range(0, len(msgs), work.batch_size)]
            )
        per_writer = work.concurrent // work.writers
        return cls(
            run=run,
            users=users,
            user_batches=batches,
            sequential=maker.messages(work.sequential, start + timedelta(days=400)),
            concurrent=[
                maker.messages(per_writer, start + timedelta(days=500 + w))
                for w in range(work.writers)
            ],
            queries=[maker.query() for _ in range(200)],
        )

    def fresh_copy(self) -> Dataset:
        """The same messages under new ids (each implementation stores its own copy)."""

        def renew(msgs: list[Message]) -> list[Message]:
            return [m.model_copy(update={"id": uuid.uuid4()}) for m in msgs]

        return Dataset(
            run=uuid.uuid4().hex[:8],
            users=[f"{u}-{uuid.uuid4().hex[:4]}" for u in self.users],
            user_batches=[[renew(b) for b in user] for user in self.user_batches],
            sequential=renew(self.sequential),
            concurrent=[renew(w) for w in self.concurrent],
            queries=self.queries,
        )


# ====================================================================== machine and report


def machine() -> dict[str, str]:
    """What the figures ran on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": f"{platform.system()} {platform.release()}",
    }
    with contextlib.suppress(ImportError):
        from importlib.metadata import version

        info["aiosqlite"] = version("aiosqlite")
    with contextlib.suppress(OSError):
        # Other jobs on the machine skew absolute figures (ratios are interleaved).
        info["load average"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def _rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}/s"


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1e3:.3f} ms"


def _ratio(ours: float | None, raw: float | None) -> str:
    return "—" if ours is None or raw is None or raw == 0 else f"{ours / raw:.2f}x"


_ROWS = (
    ("store, one await per message", "sequential_store", _rate),
    ("store, concurrent writers", "concurrent_store", _rate),
    ("batch store (store_messages)", "batch_store", _rate),
    ("context read p50 @ {small}", "read_small_p50", _ms),
    ("context read p99 @ {small}", "read_small_p99", _ms),
    ("context read p50 @ {small}, raw: rows only", "read_small_p50_rows", _ms),
    ("context read p50 @ {large}", "read_large_p50", _ms),
    ("context read p99 @ {large}", "read_large_p99", _ms),
    ("context read p50 @ {large}, raw: rows only", "read_large_p50_rows", _ms),
    ("search p50 ({per_user}/user)", "search_p50", _ms),
)


def report_table(url: str, results: list[Figures], work: Workload) -> Table:
    """One table per backend: ours, each raw driver, and ours/raw."""
    table = Table(title=f"{url}", title_justify="left")
    table.add_column("operation")
    for fig in results:
        table.add_column(fig.name, justify="right")
        if fig is not results[0]:
            table.add_column(f"ours/{fig.name.removeprefix('raw ')}", justify="right")
    ours = results[0]
    for label, attr, fmt in _ROWS:
        if attr.endswith("_rows") and len(results) == 1:
            continue
        title = label.format(
            small=f"{ours.stored_small:,}",
            large=f"{ours.stored_large:,}",
            per_user=f"{work.per_user:,}",
        )
        if attr == "concurrent_store":
            title = f"store, {work.writers} concurrent writers"
        # Rows-only reads are compared with our (Message-building) reads.
        ours_attr = attr.removesuffix("_rows")
        cells = [title]
        for fig in results:
            cells.append(fmt(getattr(fig, ours_attr if fig is ours else attr)))
            if fig is not ours:
                cells.append(_ratio(getattr(ours, ours_attr), getattr(fig, attr)))
        table.add_row(*cells)
    return table


# ====================================================================== command

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0] if __doc__ else None)


@app.command()
def main(
    urls: Annotated[
        list[str] | None,
        typer.Argument(help="Backend URLs (default: SQLite in a temporary directory, memory://)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Small sizes: a run takes well under a minute.")
    ] = False,
    messages: Annotated[
        int | None, typer.Option(help="Messages in the dataset (split into 10k-message users).")
    ] = None,
    per_user: Annotated[int | None, typer.Option(help="Messages per user in the dataset.")] = None,
    writers: Annotated[int, typer.Option(help="Concurrent writer tasks.")] = 32,
    sequential: Annotated[
        int | None, typer.Option(help="Messages stored one await at a time (0: none).")
    ] = None,
    concurrent: Annotated[
        int | None, typer.Option(help="Messages stored by the concurrent writers (0: none).")
    ] = None,
    reads: Annotated[int | None, typer.Option(help="Context reads at each size.")] = None,
    searches: Annotated[
        int | None, typer.Option(help="Searches over the full dataset (0: none).")
    ] = None,
    preload: Annotated[
        bool,
        typer.Option(
            help="Bulk-load the users after the first, untimed, where the engine has a bulk "
            "loader (slow engines; the batch-store figure is then the first user's)."
        ),
    ] = False,
    raw: Annotated[bool, typer.Option(help="Also measure the raw drivers.")] = True,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
) -> None:
    """Measure store throughput, context-read latency and search latency."""
    sizes = asdict(Workload.quick() if quick else Workload())
    given = {"per_user": per_user, "sequential": sequential, "concurrent": concurrent}
    given |= {"reads": reads, "searches": searches}
    for name, value in given.items():
        if value is not None:
            least = 1 if name in ("per_user", "reads") else 0
            if value < least:
                raise typer.BadParameter(f"--{name.replace('_', '-')} must be at least {least}")
            sizes[name] = value
    if messages is not None:
        sizes["users"] = max(1, round(messages / sizes["per_user"]))
    sizes["writers"] = writers
    sizes["preload"] = preload
    if sizes["concurrent"]:  # a whole number of messages per writer
        sizes["concurrent"] = max(writers, sizes["concurrent"] // writers * writers)
    work = Workload(**sizes)
    # Wide enough for the tables when the output is a file or a pipe.
    console = Console(width=max(Console().width, 150))
    info = machine()
    console.print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), highlight=False)
    console.print(
        f"workload: {work.users} users x {work.per_user:,} messages (batches of "
        f"{work.batch_size}), {work.sequential:,} sequential, {work.concurrent:,} by "
        f"{work.writers} writers, {work.reads:,} reads, {work.searches} searches",
        highlight=False,
    )
    with tempfile.TemporaryDirectory(prefix="bruno-bench-") as tmp:
        workdir = Path(tmp)
        targets = urls or [f"sqlite:///{workdir / 'memory.db'}", "memory://"]
        console.print("building messages…", highlight=False)
        data = Dataset.build(work)
        report: dict[str, Any] = {"machine": info, "workload": asdict(work), "results": {}}
        for url in targets:
            parsed = MemoryURL.parse(url)
            console.print(f"measuring {parsed} …", highlight=False)
            drivers = raw_drivers(parsed.raw.split(":", 1)[0], console) if raw else []
            if drivers:
                names = ", ".join(d.name for d in drivers)
                console.print(f"  with raw {names}, interleaved", highlight=False)
            results = asyncio.run(run_backend(url, drivers, workdir, work, data))
            console.print(report_table(str(parsed), results, work))
            report["results"][str(parsed)] = [asdict(r) for r in results]
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    # Run the importable module, so that raw-driver modules register into its registry.
    from benchmarks.throughput import app as _app

    _app()
