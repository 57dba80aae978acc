"""PostgresMemory against the real PostgreSQL: schema and migrations (also from concurrent
processes), query plans, NUL refusal, text fidelity, pool options from the URL, redaction,
ranking, deletion in every table, group commit and COPY batches; and with pgvector: the
vector mode and its detection, vector columns and HNSW indexes, vectors written on every
write path, filtered nearest-neighbour search that never starves, model changes.

The servers are ``BRUNO_TEST_POSTGRES_URL`` (default: the machine's PostgreSQL 15, without
pgvector) and the project's PostgreSQL 18 with pgvector (``_engines.pgvector_url()``); an
unreachable server fails these tests. Each test works in schemas of its own, dropped
afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import asyncpg
import numpy as np
import pytest
import pytest_asyncio
from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryQuery
from bruno_core.models.message import MessageRole
from pgvector.asyncpg import register_vector

import _engines as engines
from bruno_memstore import open_memory
from bruno_memstore.backends.postgres import PostgresMemory
from bruno_memstore.backends.postgres import backend as postgres_module
from bruno_memstore.backends.postgres import vectors as postgres_vectors
from bruno_memstore.backends.postgres.dialect import PostgresDialect
from bruno_memstore.backends.postgres.schema import LATEST_VERSION, check_schema, migrations
from bruno_memstore.backends.sql import plans as shared
from bruno_memstore.capabilities import DATABASE, Capability
from bruno_memstore.embeddings.adapter import VectorSpace
from bruno_memstore.errors import (
    BackendUnavailableError,
    CapabilityError,
    ConflictError,
    InvalidArgumentError,
    MissingDependencyError,
    OwnershipError,
    SchemaError,
)
from bruno_memstore.models import (
    MemoryFilter,
    SearchRequest,
    message_to_record,
    session_to_record,
)
from bruno_memstore.testing.builders import (
    at,
    collect_export,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from bruno_memstore.testing.erasure import find_in_files, run_erasures
from bruno_memstore.url import MemoryURL
from faults._pg_server import PostgresServer

POSTGRES_URL = os.environ.get(
    "BRUNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TABLES = ("conversations", "messages", "memories", "sessions")
BACKEND_PACKAGE = "bruno_memstore.backends.postgres"


async def _connect(url: str = POSTGRES_URL) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PostgresMemory(url)._dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is required for these tests and is unreachable at "
            f"{MemoryURL.parse(url)}: {exc!r}. Start it or set BRUNO_TEST_POSTGRES_URL "
            "(BRUNO_TEST_PGVECTOR_URL for the server with pgvector).",
            pytrace=False,
        )


@pytest_asyncio.fixture
async def db() -> AsyncIterator[asyncpg.Connection]:
    """A plain driver connection, for looking behind the backend's back."""
    conn = await _connect()
    try:
        yield conn
    finally:
        await conn.close()


async def _schema_names(conn: asyncpg.Connection) -> AsyncIterator[Callable[[], str]]:
    made: list[str] = []

    def fresh() -> str:
        made.append(f"t_pg_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield fresh
    for name in made:
        await conn.execute(f"DROP SCHEMA IF EXISTS {check_schema(name)} CASCADE")


@pytest_asyncio.fixture
async def schemas(db: asyncpg.Connection) -> AsyncIterator[Callable[[], str]]:
    """Hands out fresh schema names; drops every one of them after the test."""
    async for fresh in _schema_names(db):
        yield fresh


@pytest.fixture(scope="module")
def pgvector_url() -> str:
    """The project's PostgreSQL 18 with pgvector (started if it is down)."""
    return engines.pgvector_url()


@pytest_asyncio.fixture
async def vdb(pgvector_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain driver connection to the pgvector server (vectors decode to ``Vector``)."""
    conn = await _connect(pgvector_url)
    await register_vector(conn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def vschemas(vdb: asyncpg.Connection) -> AsyncIterator[Callable[[], str]]:
    """Fresh schema names on the pgvector server; dropped after the test."""
    async for fresh in _schema_names(vdb):
        yield fresh


@pytest_asyncio.fixture
async def memory(schemas: Callable[[], str]) -> AsyncIterator[PostgresMemory]:
    mem = PostgresMemory(POSTGRES_URL, schema=schemas())
    await mem.initialize()
    try:
        yield mem
    finally:
        await mem.shutdown()


async def _count(db: asyncpg.Connection, schema: str, table: str, where: str, *args: Any) -> int:
    return await db.fetchval(
        f"SELECT count(*) FROM {check_schema(schema)}.{table} WHERE {where}", *args
    )


# ==================================================================== schema and migrations


async def test_schema_is_created_once_and_reconnecting_changes_nothing(
    db: asyncpg.Connection, schemas: Callable[[], str]
) -> None:
    schema = schemas()
    for _ in range(3):
        async with PostgresMemory(POSTGRES_URL, schema=schema) as mem:
            await mem.store_message(make_message("persisted"), new_user_id(), new_conversation_id())
    versions = await db.fetch(
        f"SELECT version FROM {check_schema(schema)}.schema_version ORDER BY version"
    )
    assert [r[0] for r in versions] == list(range(1, LATEST_VERSION + 1))
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    assert {r[0] for r in tables} == {*TABLES, "schema_version", "meta"}
    assert await _count(db, schema, "messages", "true") == 3


async def test_concurrent_first_connects_in_one_process_migrate_once(
    db: asyncpg.Connection, schemas: Callable[[], str]
) -> None:
    schema = schemas()
    memories = [PostgresMemory(POSTGRES_URL, schema=schema, min_size=1) for _ in range(6)]
    try:
        await asyncio.gather(*(m.initialize() for m in memories))
    finally:
        await asyncio.gather(*(m.shutdown() for m in memories))
    assert await _count(db, schema, "schema_version", "true") == LATEST_VERSION


async def test_concurrent_first_connects_from_processes_migrate_once(
    db: asyncpg.Connection, schemas: Callable[[], str]
) -> None:
    schema = schemas()
    script = textwrap.dedent(
        f"""
        import asyncio, time
        from bruno_memstore.backends.postgres import PostgresMemory
        from bruno_memstore.testing.builders import make_message

        async def main():
            # Start together: every process waits for the same wall-clock instant.
            await asyncio.sleep(max(0.0, {{start}} - time.time()))
            async with PostgresMemory({POSTGRES_URL!r}, schema={schema!r}) as mem:
                await mem.store_message(make_message("hi"), "u", "conv-" + str(time.time()))

        asyncio.run(main())
        """
    )
    start = time.time() + 1.5
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script.replace("{start}", repr(start)),
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outcomes = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err.decode() for _, err in outcomes]
    assert await _count(db, schema, "schema_version", "true") == LATEST_VERSION
    assert await _count(db, schema, "messages", "true") == 4


async def test_a_newer_schema_is_refused(
    db: asyncpg.Connection, schemas: Callable[[], str]
) -> None:
    schema = schemas()
    async with PostgresMemory(POSTGRES_URL, schema=schema):
        pass
    await db.execute(
        f"INSERT INTO {check_schema(schema)}.schema_version (version, description) "
        "VALUES (999, 'from the future')"
    )
    with pytest.raises(SchemaError, match="999"):
        await PostgresMemory(POSTGRES_URL, schema=schema).initialize()


async def test_language_is_validated_and_recorded(schemas: Callable[[], str]) -> None:
    with pytest.raises(InvalidArgumentError, match="english") as info:
        await PostgresMemory(POSTGRES_URL, schema=schemas(), language="klingon").initialize()
    assert info.value.argument == "language"
    with pytest.raises(InvalidArgumentError):
        PostgresMemory(POSTGRES_URL, language="english'; DROP TABLE x")
    schema = schemas()
    async with PostgresMemory(POSTGRES_URL, schema=schema, language="english") as mem:
        uid = new_user_id()
        await mem.store_message(make_message("The cats were running"), uid, new_conversation_id())
        # The server's English configuration analyses the text.
        assert len(await mem.search_messages("cat runs", user_id=uid)) == 1
    with pytest.raises(SchemaError, match="language=english"):
        await PostgresMemory(POSTGRES_URL, schema=schema).initialize()


def first_statement(sql: PostgresDialect, plan: Any) -> tuple[str, list[Any]]:
    """The first statement a plan of the SQL family runs, and its arguments."""
    step = next(plan)
    return sql.sql(step.sql), list(step.args)


async def test_queries_use_their_indexes(memory: PostgresMemory, db: asyncpg.Connection) -> None:
    users = [new_user_id() for _ in range(20)]
    for n, uid in enumerate(users):
        conv = new_conversation_id()
        # Every user writes about gardens; only user 3 ever mentions a zebra, twice.
        texts = [f"note {i} about gardens" for i in range(100)]
        if n == 3:
            texts[10] = texts[60] = "a zebra in the gardens"
        msgs = [make_message(t, timestamp=at(i)) for i, t in enumerate(texts)]
        await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
        await memory.create_session(uid)
        await memory.store_memory(make_memory_entry(uid, f"fact {n} about gardens"))
    for table in TABLES:
        await db.execute(f"ANALYZE {check_schema(memory.schema)}.{table}")
    sql: PostgresDialect = memory._sql
    uid = users[3]
    conv = await db.fetchval(
        f"SELECT conversation_id FROM {sql.schema}.conversations WHERE user_id = $1", uid
    )
    plans = {
        "messages_window_idx": first_statement(sql, shared.read_window(sql, conv, uid, 20)),
        "messages_user_window_idx": first_statement(sql, shared.read_window(sql, None, uid, 20)),
        "messages_tsv_idx": (
            sql.search(1),
            [uid, ["zebra"], 10, True, False, None, uid, [], [], [], 0.0, 0.0, False, 0],
        ),
        "memories_user_idx": first_statement(sql, shared.query_memories(sql, MemoryFilter(uid))),
        "sessions_user_idx": first_statement(sql, shared.latest_session(sql, uid, None, True)),
        "sessions_conversation_idx": (
            f"SELECT session_id FROM {sql.schema}.sessions WHERE conversation_id = $1",
            [conv],
        ),
        "conversations_user_idx": (
            f"SELECT conversation_id FROM {sql.schema}.conversations WHERE user_id = $1",
            [uid],
        ),
        "memories_expiry_idx": first_statement(sql, shared.purge_expired(sql, 0)),
    }
    async with db.transaction():
        # Small tables make sequential scans cheap; what is checked here is that an index
        # serves each query shape.
        await db.execute("SET LOCAL enable_seqscan = off")
        for index, (statement, args) in plans.items():
            plan = await db.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *args)
            assert f'"{index}"' in plan, (index, json.loads(plan))


# ==================================================================== what PostgreSQL cannot hold


async def test_nul_characters_are_refused_before_anything_is_written(
    memory: PostgresMemory, db: asyncpg.Connection
) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    bad = [
        make_message("nul \x00 inside"),
        make_message("fine", metadata={"k": "nul \x00 value"}),
        make_message("fine", metadata={"nul \x00 key": 1}),
        make_message("fine", metadata={"deep": [{"x": ["\x00"]}]}),
    ]
    for msg in bad:
        with pytest.raises(InvalidArgumentError, match="NUL"):
            await memory.store_message(msg, uid, conv)
    with pytest.raises(InvalidArgumentError, match="NUL"):
        await memory.store_messages(
            [make_message("good one"), make_message("bad \x00")], conversation_id=conv, user_id=uid
        )
    for entry in (
        make_memory_entry(uid, "nul \x00 memory"),
        make_memory_entry(uid, "fine", custom_fields={"k": "\x00"}),
        make_memory_entry(uid, "fine", tags=["a\x00b"]),
    ):
        with pytest.raises(InvalidArgumentError, match="NUL"):
            await memory.store_memory(entry)
    with pytest.raises(InvalidArgumentError, match="NUL"):
        await memory.create_session(uid, {"device": "nul \x00"})
    for table in TABLES:
        assert await _count(db, memory.schema, table, "user_id = $1", uid) == 0, table
    # A literal backslash-u-0000 in text is not a NUL character and is stored.
    await memory.store_message(make_message("escaped \\u0000 text"), uid, conv)
    (back,) = await memory.retrieve_messages(conv)
    assert back.content == "escaped \\u0000 text"


async def test_unicode_round_trip_is_exact_in_the_table(
    memory: PostgresMemory, db: asyncpg.Connection
) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    text = "emoji 😀👩‍👩‍👧 flags 🇨🇭 astral 𝄞𓀀 combining é CJK 你好 RTL שלום quote ' \" \\ %_"
    msg = make_message(text, metadata={"emoji": "🎉", "nested": {"ü": ["😀", 1.5, None]}})
    await memory.store_message(msg, uid, conv)
    (back,) = await memory.retrieve_messages(conv)
    assert back == msg.model_copy(update={"conversation_id": conv})
    row = await db.fetchrow(
        f"SELECT content, metadata->'nested'->'ü'->>0 FROM {check_schema(memory.schema)}.messages "
        "WHERE id = $1",
        str(msg.id),
    )
    assert row[0] == text
    assert row[1] == "😀"  # the JSONB column is queryable
    big = make_message("é" * 1_000_000)
    await memory.store_message(big, uid, conv)
    assert (await memory.retrieve_messages(conv, limit=1))[0].content == big.content


async def test_large_floats_in_metadata_round_trip_exactly(memory: PostgresMemory) -> None:
    # JSONB would turn 1e23 into the integer 10**23; the exact text is what is read back.
    uid, conv = new_user_id(), new_conversation_id()
    metadata = {"big": 1e23, "small": 5e-324, "neg_zero": -0.0, "order": {"b": 1, "a": 2}}
    msg = make_message("floats", metadata=metadata)
    await memory.store_message(msg, uid, conv)
    (back,) = await memory.retrieve_messages(conv)
    assert back.metadata == metadata
    assert type(back.metadata["big"]) is float
    assert list(back.metadata["order"]) == ["b", "a"]


# ==================================================================== options, URL, secrets


async def test_pool_options_come_from_the_url(schemas: Callable[[], str]) -> None:
    schema = schemas()
    url = (
        f"{POSTGRES_URL}?schema={schema}&min_size=2&max_size=3&connect_timeout=4"
        "&command_timeout=7.5&statement_cache_size=0&group_commit=off&application_name=bruno-t"
        "&ef_search=64"
    )
    mem = open_memory(url)
    assert isinstance(mem, PostgresMemory)
    assert (mem.schema, mem.min_size, mem.max_size) == (schema, 2, 3)
    assert (mem.connect_timeout, mem.command_timeout) == (4.0, 7.5)
    assert (mem.statement_cache_size, mem.group_commit, mem.ef_search) == (0, False, 64)
    async with mem:
        pool = mem._pool
        assert (pool.get_min_size(), pool.get_max_size(), pool.get_size()) == (2, 3, 2)
        assert await pool.fetchval("SHOW application_name") == "bruno-t"
        async with pool.acquire() as conn:
            assert conn._config.command_timeout == 7.5
            assert conn._stmt_cache.get_max_size() == 0
        assert mem._committer is None  # group_commit=off
        await mem.store_message(make_message("no group"), new_user_id(), new_conversation_id())
    # Keyword arguments win over the URL; postgres:// and +asyncpg are accepted.
    mem = open_memory(url.replace("postgresql://", "postgres+asyncpg://"), max_size=5)
    assert mem.max_size == 5


@pytest.mark.parametrize(
    ("query", "argument"),
    [
        ("pool_size=3", "url"),
        ("max_size=lots", "url option max_size"),
        ("min_size=4&max_size=2", "min_size"),
        ("max_size=0", "max_size"),
        ("connect_timeout=-1", "connect_timeout"),
        ("schema=bad-name", "schema"),
        ("group_commit=maybe", "url option group_commit"),
        ("ef_search=0", "ef_search"),
        ("ef_search=1001", "ef_search"),
    ],
)
def test_bad_options_are_refused_by_name(query: str, argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        open_memory(f"{POSTGRES_URL}?{query}")
    assert info.value.argument == argument


def test_bad_urls_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="driver"):
        PostgresMemory("postgresql+psycopg://localhost/db")
    with pytest.raises(InvalidArgumentError, match="postgresql://"):
        PostgresMemory("mysql://localhost/db")
    with pytest.raises(InvalidArgumentError, match="either"):
        PostgresMemory("postgresql://a/b", connection_string="postgresql://a/b")
    # The guide's keyword works too.
    assert PostgresMemory(connection_string=POSTGRES_URL).describe() == str(
        MemoryURL.parse(POSTGRES_URL)
    )


async def test_the_password_never_shows(
    caplog: pytest.LogCaptureFixture, unused_tcp_port: int
) -> None:
    secret = "pa55:w/rd@x"
    quoted = "pa55%3Aw%2Frd%40x"
    url = f"postgresql://bob:{quoted}@127.0.0.1:{unused_tcp_port}/test?connect_timeout=2"
    mem = open_memory(url)
    for text in (repr(mem), mem.describe(), str(MemoryURL.parse(url))):
        assert secret not in text and quoted not in text and "***" in text
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendUnavailableError) as info:
        await mem.store_message(make_message("x"), "u", "c")
    message = f"{info.value} {info.value!r} {info.value.details}"
    assert secret not in message and quoted not in message
    assert "bob:***@127.0.0.1" in str(info.value)
    assert secret not in caplog.text and quoted not in caplog.text
    leaked = mem._redact(f"boom {secret} {quoted} {url}")
    assert secret not in leaked and quoted not in leaked


def test_missing_asyncpg_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without asyncpg the package cannot be imported; the registry names the extra.
    for name in [m for m in sys.modules if m.startswith(("asyncpg", BACKEND_PACKAGE))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'bruno-memstore\[postgres\]'"):
        open_memory(POSTGRES_URL)


def test_transient_errors_are_classified(memory: PostgresMemory) -> None:
    exc = asyncpg.exceptions
    for transient in (
        ConnectionResetError(),
        exc.ConnectionDoesNotExistError("closed in the middle"),
        exc.TooManyConnectionsError("too many"),
        exc.SerializationError("serialize"),
        exc.DeadlockDetectedError("deadlock"),
        exc.AdminShutdownError("terminating"),
        exc.CannotConnectNowError("starting up"),
    ):
        assert memory._is_transient(transient), transient
    for permanent in (
        exc.UniqueViolationError("dup"),
        exc.UndefinedTableError("no table"),
        exc.InvalidPasswordError("bad password"),
        ValueError("bug"),
    ):
        assert not memory._is_transient(permanent), permanent
    assert memory._is_unavailable(exc.CannotConnectNowError("starting up"))
    assert not memory._is_unavailable(exc.SerializationError("serialize"))


# ==================================================================== search


async def test_ranking_is_ts_rank_cd_weighted_by_rarity(memory: PostgresMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    texts = [
        "piano lesson on monday",
        "piano piano piano, the piano is out of tune",
        "a long message that mentions the piano once among many other unrelated words here",
        "violin and piano duet",
        "violin lesson",
    ]
    msgs = [make_message(t, timestamp=at(i)) for i, t in enumerate(texts)]
    await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
    # One term: the order is ts_rank_cd's (more occurrences, shorter text first).
    sql = memory._sql
    direct = await memory._pool.fetch(
        f"""SELECT id FROM {sql.schema}.messages
            WHERE user_id = $1 AND tsv @@ plainto_tsquery('simple', 'piano')
            ORDER BY ts_rank_cd(tsv, plainto_tsquery('simple', 'piano'), 1) DESC, ts_us DESC""",
        uid,
    )
    found = await memory.search(uid, "piano")
    assert [str(r.message.id) for r in found if r.message] == [r[0] for r in direct]
    assert found[0].message is not None and found[0].message.id == msgs[1].id
    # Two terms: "violin" (2 of 5 messages) outweighs "piano" (4 of 5).
    found = await memory.search(uid, "violin piano")
    assert found[0].message is not None and found[0].message.id == msgs[3].id
    assert {r.message.id for r in found[1:3] if r.message} >= {msgs[4].id}
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)


async def test_search_text_never_reaches_the_query_parser(memory: PostgresMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    msg = make_message("order 66 was executed")
    await memory.store_message(msg, uid, conv)
    for query in ("!", "a & b", "x | y", "!(order)", "order:*", "'", "\\", "<->", "(", "&|!"):
        found = await memory.search_messages(query, user_id=uid)
        assert all(m.id == msg.id for m in found), query
    many = " ".join(f"word{i}" for i in range(40)) + " order"
    assert await memory.search_messages(many, user_id=uid) == []  # terms beyond the 16th


# ==================================================================== deletion


async def test_clear_and_forget_remove_rows_from_every_table(
    memory: PostgresMemory, db: asyncpg.Connection
) -> None:
    uid, other = new_user_id(), new_user_id()
    conv_a, conv_b, conv_o = new_conversation_id(), new_conversation_id(), new_conversation_id()
    await memory.store_messages(
        [make_message("system prompt", role=MessageRole.SYSTEM), make_message("alpha words")],
        conversation_id=conv_a,
        user_id=uid,
    )
    await memory.store_message(make_message("beta words"), uid, conv_b)
    await memory.store_message(make_message("other user's words"), other, conv_o)
    await memory.get_context(uid, conv_a)
    await memory.get_context(uid, conv_b)
    await memory.store_memory(make_memory_entry(uid, "a remembered fact"))
    await memory.store_memory(make_memory_entry(other, "another fact"))
    s = memory.schema

    await memory.clear_history(conv_a)  # the system message stays
    assert await _count(db, s, "messages", "conversation_id = $1", conv_a) == 1
    await memory.clear_conversation(uid, conv_a)
    for table in ("messages", "sessions", "conversations"):
        assert await _count(db, s, table, "conversation_id = $1", conv_a) == 0, table
    assert await _count(db, s, "memories", "user_id = $1", uid) == 1

    counts = await memory.forget_user(uid)
    assert counts == {"messages": 1, "conversations": 1, "sessions": 1, "memories": 1}
    for table in TABLES:
        assert await _count(db, s, table, "user_id = $1", uid) == 0, table
    assert await _count(db, s, "messages", "user_id = $1", other) == 1
    assert await memory.search(uid, "words fact") == []


# ==================================================================== writes


async def test_group_commit_keeps_every_append_apart(memory: PostgresMemory) -> None:
    assert memory._committer is not None
    batches: list[int] = []
    run = memory._committer._run

    async def spy(batch: Any) -> Any:
        batches.append(len(batch))
        return await run(batch)

    memory._committer._run = spy
    owner, intruder, conv = new_user_id(), new_user_id(), new_conversation_id()
    await memory.store_message(make_message("first"), owner, conv)
    msgs = [make_message(f"m{i}", timestamp=at(i % 3)) for i in range(120)]
    dup = msgs[0]
    await memory.store_message(dup, owner, conv)

    async def store(i: int) -> str:
        try:
            if i % 10 == 9:
                await memory.store_message(make_message("intrusion"), intruder, conv)
            elif i % 10 == 8:
                await memory.store_message(
                    dup.model_copy(update={"content": "changed"}), owner, conv
                )
            else:
                await memory.store_message(msgs[i], owner, conv)
                await memory.store_message(msgs[i], owner, conv)  # idempotent
        except OwnershipError:
            return "owner"
        except ConflictError:
            return "conflict"
        return "ok"

    outcomes = await asyncio.gather(*(store(i) for i in range(120)))
    assert (outcomes.count("owner"), outcomes.count("conflict")) == (12, 12)
    assert max(batches) > 1  # concurrent appends did share statements
    stored = await memory.retrieve_messages(conv)
    contents = [m.content for m in stored]
    assert len(contents) == len(set(contents))
    assert set(contents) == {msgs[i].content for i in range(120) if i % 10 < 8} | {"first"}
    rows = await memory._read_window(conversation_id=conv, user_id=None, limit=None)
    assert [(r.ts_us, r.seq) for r in rows] == sorted((r.ts_us, r.seq) for r in rows)
    assert len({r.seq for r in rows}) == len(rows)


async def test_a_lone_message_into_a_stored_conversation_keeps_every_rule(
    memory: PostgresMemory, db: asyncpg.Connection
) -> None:
    owner, intruder, conv = new_user_id(), new_user_id(), new_conversation_id()
    first, second = make_message("first words"), make_message("second words", timestamp=at(0))
    await memory.store_message(first, owner, conv)  # claims the conversation
    await memory.store_message(second, owner, conv)  # into the stored conversation
    await memory.store_message(second, owner, conv)  # the same id again: nothing new
    with pytest.raises(OwnershipError):
        await memory.store_message(make_message("intrusion"), intruder, conv)
    s = check_schema(memory.schema)
    rows = await db.fetch(
        f"SELECT content, user_id, tsv <> ''::tsvector FROM {s}.messages "
        "WHERE conversation_id = $1 ORDER BY ts_us, seq",
        conv,
    )
    assert [tuple(r) for r in rows] == [("second words", owner, True), ("first words", owner, True)]
    assert [h.message.content for h in await memory.search(owner, "second")] == ["second words"]
    with pytest.raises(ConflictError):
        await memory.store_message(second.model_copy(update={"content": "other"}), owner, conv)


@pytest.mark.parametrize("min_size", [0, 2])
async def test_a_small_pool_serves_many_concurrent_operations(
    schemas: Callable[[], str], min_size: int
) -> None:
    """Connections kept between operations never leave a caller waiting on the pool."""
    url, schema = POSTGRES_URL, schemas()
    async with PostgresMemory(url, schema=schema, min_size=min_size, max_size=2) as mem:
        uid, conv = new_user_id(), new_conversation_id()

        async def work(i: int) -> int:
            await mem.store_message(make_message(f"m{i}"), uid, conv)
            return len(await mem.retrieve_messages(conv))

        # A pool that a kept connection starved would hang here; wait_for bounds the wait.
        counts = await asyncio.wait_for(asyncio.gather(*(work(i) for i in range(60))), 30)
        assert max(counts) == 60
        assert len(await mem.retrieve_messages(conv)) == 60


async def test_large_batches_go_through_copy_in_order(memory: PostgresMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    msgs = [make_message(f"bulk {i}", timestamp=at(i // 100)) for i in range(2500)]
    assert await memory.store_messages(msgs[:1500], conversation_id=conv, user_id=uid) == 1500
    # Half already stored: only the new ones count, and nothing is duplicated.
    assert await memory.store_messages(msgs[500:], conversation_id=conv, user_id=uid) == 1000
    window = await memory.retrieve_context(uid, conversation_id=conv, limit=1000)
    assert [m.id for m in window] == [m.id for m in msgs[1500:]]
    with pytest.raises(OwnershipError):
        await memory.store_messages(
            [make_message(f"x {i}") for i in range(1200)],
            conversation_id=conv,
            user_id=new_user_id(),
        )
    assert (await memory.get_statistics(uid))["total_messages"] == 2500
    exported = await collect_export(memory, "messages", uid)
    assert [m.id for m in exported] == [str(m.id) for m in msgs]


@pytest.mark.parametrize("size", [3, 1200])  # one group statement; COPY
async def test_an_append_of_stored_ids_claims_nothing(memory: PostgresMemory, size: int) -> None:
    uid, conv, fresh = new_user_id(), new_conversation_id(), new_conversation_id()
    msgs = [make_message(f"stored {i}", timestamp=at(i)) for i in range(size)]
    assert await memory.store_messages(msgs, conversation_id=conv, user_id=uid) == size
    again = [message_to_record(m, fresh) for m in msgs]
    result = await memory._append_messages(fresh, uid, again, enforce_owner=True)
    assert result.existing_ids == {str(m.id) for m in msgs}
    assert await memory._conversation_owner(fresh) is None
    # One new id among them: the conversation is claimed, and only that one goes in.
    extra = message_to_record(make_message("new here", timestamp=at(0)), fresh)
    result = await memory._append_messages(fresh, uid, [*again, extra], enforce_owner=True)
    assert result.existing_ids == {str(m.id) for m in msgs}
    assert await memory._conversation_owner(fresh) == uid
    assert [str(m.id) for m in await memory.retrieve_messages(fresh)] == [extra.id]


async def test_sessions_claim_their_conversation(memory: PostgresMemory) -> None:
    uid, other = new_user_id(), new_user_id()
    session = SessionContext(user_id=uid, conversation_id=new_conversation_id())
    await memory._put_session(session_to_record(session))
    stranger = SessionContext(user_id=other, conversation_id=session.conversation_id)
    with pytest.raises(OwnershipError):
        await memory._put_session(session_to_record(stranger))
    assert await memory._get_session(stranger.session_id) is None
    assert await memory._conversation_owner(session.conversation_id) == uid


async def test_messages_store_the_denormalised_owner(
    memory: PostgresMemory, db: asyncpg.Connection
) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    msg = make_message("who owns me")
    # The two-argument form: the owner comes from the message's metadata.
    await memory.store_message(msg.model_copy(update={"metadata": {"user_id": uid}}), conv)
    row = await db.fetchrow(
        f"SELECT * FROM {check_schema(memory.schema)}.messages WHERE id = $1",
        str(msg.id),
    )
    assert row["user_id"] == uid and row["conversation_id"] == conv
    assert message_to_record(msg, conv).ts_us == row["ts_us"]


# ==================================================================== pgvector


class PlantedModel:
    """A model whose vectors the text plants: ``"a=0.75 #12"`` is a unit vector whose cosine
    with the query direction (the text ``"a=1"``) is exactly 0.75, the rest pointing in a
    direction of its own (seeded by the number). Any other text is a seeded random vector."""

    def __init__(self, dimension: int = 16, name: str = "planted") -> None:
        self.dimension = dimension
        self.model_name = f"{name}-{dimension}"

    def vector(self, text: str) -> np.ndarray:
        found = re.match(r"a=([0-9.]+)(?: #(\d+))?", text)
        a, seed = (float(found[1]), int(found[2] or 0)) if found else (0.0, _seed(text))
        rest = np.random.default_rng(seed).standard_normal(self.dimension - 1)
        out = np.empty(self.dimension, dtype=np.float32)
        out[0] = a
        out[1:] = np.sqrt(max(0.0, 1.0 - a * a)) * rest / np.linalg.norm(rest)
        return out

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vector(t) for t in texts])


def _seed(text: str) -> int:
    return int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little")


def _planted(a: float, n: int) -> str:
    return f"a={a:.6f} #{n}"


async def _store_planted(
    mem: PostgresMemory, uid: str, sims: Sequence[float], *, conv_size: int = 1000, first: int = 0
) -> list[Any]:
    """Store messages with these cosines to the query, in batches of ``conv_size``."""
    msgs = [make_message(_planted(a, first + i), timestamp=at(i)) for i, a in enumerate(sims)]
    for start in range(0, len(msgs), conv_size):
        part = msgs[start : start + conv_size]
        await mem.store_messages(part, conversation_id=new_conversation_id(), user_id=uid)
    return msgs


async def _column_type(conn: asyncpg.Connection, schema: str, table: str) -> str | None:
    return await conn.fetchval(
        """SELECT format_type(atttypid, atttypmod) FROM pg_attribute
           WHERE attrelid = to_regclass($1) AND attname = 'embedding' AND NOT attisdropped""",
        f"{check_schema(schema)}.{table}",
    )


async def _index_def(conn: asyncpg.Connection, schema: str, table: str) -> str | None:
    return await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2",
        schema,
        f"{table}_embedding_idx",
    )


async def _vectors(conn: asyncpg.Connection, schema: str, table: str) -> dict[str, Any]:
    rows = await conn.fetch(f"SELECT id, embedding FROM {check_schema(schema)}.{table}")
    return {r[0]: None if r[1] is None else r[1].to_numpy() for r in rows}


def _cte_runs(plan: Any) -> dict[str, tuple[int, int]]:
    """``{cte name: (loops of its scan, rows)}`` from ``EXPLAIN (ANALYZE, FORMAT JSON)``."""
    found: dict[str, tuple[int, int]] = {}

    def walk(node: dict[str, Any]) -> None:
        name = node.get("Subplan Name", "")
        if name.startswith("CTE "):
            found[name[4:]] = (node["Actual Loops"], node["Actual Rows"])
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def _uses_hnsw(plan: Any, table: str) -> bool:
    """Whether the HNSW index of ``table`` was scanned (not merely planned)."""

    def walk(node: dict[str, Any]) -> bool:
        if node.get("Index Name") == f"{table}_embedding_idx" and node["Actual Loops"] > 0:
            return True
        return any(walk(child) for child in node.get("Plans", ()))

    return walk(plan[0]["Plan"])


def _choose_plan(mem: PostgresMemory, choice: str) -> None:
    """Make the vector search take its ``"exact"`` or ``"index"`` plan for any user, or
    choose as it does by default (``"chosen"``)."""
    mem._exact_rows, mem._exact_factor = {
        "exact": (2**62, 0.0),
        "index": (10, 0.0),
        "chosen": (postgres_vectors.EXACT_SCAN_ROWS, postgres_vectors.EXACT_SCAN_FACTOR),
    }[choice]


async def _explain_search(
    mem: PostgresMemory, uid: str, query: np.ndarray, *, limit: int, kinds: str = "message"
) -> Any:
    """Run the vector search statement under ``EXPLAIN ANALYZE`` as the backend runs it."""
    from pgvector import Vector

    from bruno_memstore.backends.sql.where import filter_values as _filter_args
    from bruno_memstore.models import MemoryFilter

    async with mem._pool.acquire() as conn, conn.transaction():
        await conn.execute(postgres_vectors.search_settings(True), "40")
        text = await conn.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {postgres_vectors.vector_search(mem._sql)}",
            uid,
            Vector(query),
            limit,
            kinds == "message",
            kinds == "memory",
            None,
            *_filter_args(MemoryFilter(user_id=uid)),
            mem._exact_rows,
            mem._exact_factor,
        )
    return json.loads(text)


async def test_pgvector_mode_schema_and_indexes(
    vdb: asyncpg.Connection, vschemas: Callable[[], str], pgvector_url: str
) -> None:
    schema = vschemas()
    async with PostgresMemory(pgvector_url, schema=schema, embedding_model=PlantedModel()) as mem:
        assert mem.vector_support == "pgvector", mem.vector_support_reason
        assert mem.pgvector_version is not None and "pgvector" in mem.vector_support_reason
        assert mem.supports(Capability.VECTORS) and mem.search_mode == "hybrid"
        assert mem.vector_space == VectorSpace("planted-16", 16)
        assert mem.schema_version == LATEST_VERSION
    meta = dict(await vdb.fetch(f"SELECT key, value FROM {check_schema(schema)}.meta"))
    assert meta["vector_mode"] == "pgvector"
    assert (meta["vector_model"], meta["vector_dimension"]) == ("planted-16", "16")
    for table in ("messages", "memories"):
        assert (await _column_type(vdb, schema, table) or "").endswith("vector(16)")
        index = await _index_def(vdb, schema, table) or ""
        assert "USING hnsw (embedding" in index and "vector_cosine_ops" in index, index
        assert "m='16'" in index and "ef_construction='64'" in index, index


async def test_without_pgvector_the_store_is_full_text_only(
    db: asyncpg.Connection, schemas: Callable[[], str]
) -> None:
    schema = schemas()
    async with PostgresMemory(POSTGRES_URL, schema=schema) as mem:
        assert mem.vector_support == "none"
        assert "no pgvector" in mem.vector_support_reason
        assert mem.capabilities == DATABASE | {Capability.PRUNING}
        assert not mem.supports(Capability.VECTORS)
        assert mem.embedder is None and mem.search_mode == "keyword"
        uid = new_user_id()
        await mem.store_message(make_message("a grey kitten"), uid, new_conversation_id())
        assert len(await mem.search(uid, "kitten")) == 1
        with pytest.raises(CapabilityError):
            await mem.search(uid, "kitten", mode="vector")
    meta = dict(await db.fetch(f"SELECT key, value FROM {check_schema(schema)}.meta"))
    assert meta["vector_mode"] == "none" and "no pgvector" in meta["vector_mode_reason"]
    assert await _column_type(db, schema, "messages") is None
    # Asking for vector search outright is refused when connecting.
    with pytest.raises(CapabilityError, match="vector"):
        await PostgresMemory(POSTGRES_URL, schema=schema, search_mode="vector").initialize()


async def test_without_pgvector_the_first_operation_may_come_before_connecting(
    schemas: Callable[[], str],
) -> None:
    # The shared layer would embed (or search by vector) before learning that the engine
    # has no vectors; each kind of first operation works on a memory never connected.
    uid, conv = new_user_id(), new_conversation_id()
    async with PostgresMemory(POSTGRES_URL, schema=(schema := schemas())) as mem:
        await mem.store_message(make_message("a grey kitten"), uid, conv)
    first_ops: list[Callable[[PostgresMemory], Any]] = [
        lambda m: m.store_message(make_message("a black kitten"), uid, conv),
        lambda m: m.store_memory(make_memory_entry(uid, "likes kittens")),
        lambda m: m.search(uid, "kitten"),
        lambda m: m.retrieve_context(uid, "kitten", strategy="hybrid"),
    ]
    for first in first_ops:
        mem = PostgresMemory(POSTGRES_URL, schema=schema)
        try:
            await first(mem)
            assert mem.vector_support == "none" and mem.search_mode == "keyword"
        finally:
            await mem.shutdown()
    mem = PostgresMemory(POSTGRES_URL, schema=schema)
    try:
        with pytest.raises(CapabilityError):
            await mem.search(uid, "kitten", mode="vector")
        assert len(await mem.search(uid, "kitten")) == 3
    finally:
        await mem.shutdown()


async def test_a_refused_create_extension_leaves_a_full_text_store(
    vdb: asyncpg.Connection, pgvector_url: str
) -> None:
    # A database without the extension, owned by a role that may not create it.
    name = f"t_noext_{uuid.uuid4().hex[:10]}"
    role = "bruno_plain_role"
    if not await vdb.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        await vdb.execute(f"CREATE ROLE {role} LOGIN")
    await vdb.execute(f"CREATE DATABASE {name} OWNER {role}")
    try:
        url = MemoryURL.parse(pgvector_url)
        plain = f"postgresql://{role}@{url.host}:{url.port}/{name}"
        async with PostgresMemory(plain, schema="s") as mem:
            assert mem.vector_support == "none"
            assert "CREATE EXTENSION vector was refused" in mem.vector_support_reason
            assert not mem.supports(Capability.VECTORS)
            uid = new_user_id()
            await mem.store_message(make_message("still works"), uid, new_conversation_id())
            assert len(await mem.search(uid, "works")) == 1
    finally:
        await vdb.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def test_vectors_are_written_with_their_rows_on_every_path(
    vdb: asyncpg.Connection, vschemas: Callable[[], str], pgvector_url: str
) -> None:
    schema = vschemas()
    model = PlantedModel()
    mem = PostgresMemory(pgvector_url, schema=schema, embedding_model=model)
    alone = PostgresMemory(pgvector_url, schema=schema, embedding_model=model, group_commit=False)
    async with mem, alone:
        uid = new_user_id()
        # Group commit: concurrent single appends.
        singles = [make_message(f"single {i}") for i in range(40)]
        await asyncio.gather(*(mem.store_message(m, uid, new_conversation_id()) for m in singles))
        # One statement without group commit; a COPY batch.
        await alone.store_messages(
            [make_message("alone")], conversation_id=new_conversation_id(), user_id=uid
        )
        bulk = [make_message(f"bulk {i}") for i in range(1200)]
        await mem.store_messages(bulk, conversation_id=new_conversation_id(), user_id=uid)
        entry = make_memory_entry(uid, "first text")
        await mem.store_memory(entry)
        entry.content = "second text"
        await mem.store_memory(entry)
    stored = await _vectors(vdb, schema, "messages")
    assert len(stored) == 40 + 1 + 1200
    for message in await _messages_by_id(vdb, schema):
        vec = stored[message[0]]
        assert vec is not None and np.allclose(vec, model.vector(message[1]), atol=1e-6)
    (memory_vec,) = (await _vectors(vdb, schema, "memories")).values()
    assert np.allclose(memory_vec, model.vector("second text"), atol=1e-6)


async def _messages_by_id(conn: asyncpg.Connection, schema: str) -> list[Any]:
    return await conn.fetch(f"SELECT id, content FROM {check_schema(schema)}.messages")


async def test_a_small_user_among_many_nearer_rows_gets_all_of_theirs(
    vdb: asyncpg.Connection, vschemas: Callable[[], str], pgvector_url: str
) -> None:
    """10,000 rows of ten other users lie nearer to the query than any of the user's 30: the
    exact plan (chosen for few rows) and the HNSW plan (forced here: it walks past the
    others' rows and finds fewer than the limit, so the exact plan completes it) both
    return all 30, nearest first, with their cosine similarities."""
    model = PlantedModel()
    mem = PostgresMemory(pgvector_url, schema=vschemas(), embedding_model=model)
    async with mem:
        rng = np.random.default_rng(3)
        crowd = [new_user_id() for _ in range(10)]
        for n, uid in enumerate(crowd):
            await _store_planted(mem, uid, rng.uniform(0.9, 1.0, 1000), first=n * 1000)
        mine = new_user_id()
        sims = np.linspace(0.5, 0.1, 30)
        my_msgs = await _store_planted(mem, mine, sims, first=10**6)
        await vdb.execute(f"ANALYZE {mem._sql.schema}.messages")
        expected = [m.id for m in my_msgs]  # already nearest first
        query = model.vector("a=1")

        for plan_choice in ("chosen", "index"):  # the exact plan (chosen), then the HNSW plan
            _choose_plan(mem, plan_choice)
            for mode in ("vector", "hybrid"):
                found = await mem.search(mine, "a=1", mode=mode, limit=50)
                assert [r.message.id for r in found if r.message] == expected, (plan_choice, mode)
            hits = await mem._vector_search(
                SearchRequest(mine, "", frozenset({"message"}), limit=50), query
            )
            assert [h.score for h in hits] == pytest.approx(list(sims), abs=1e-4)
            plan = await _explain_search(mem, mine, query, limit=50)
            runs = _cte_runs(plan)
            assert runs["msg_exact"][1] == 30
            assert _uses_hnsw(plan, "messages") == (plan_choice == "index"), runs

        # A crowd user searched through the index gets (nearly) the answer of an exact search.
        uid = crowd[4]
        plan = await _explain_search(mem, uid, query, limit=10)
        assert _uses_hnsw(plan, "messages") and _cte_runs(plan)["msg_index"][1] == 10
        got = await mem.search(uid, "a=1", mode="vector", limit=10)
        ids = [str(r.message.id) for r in got if r.message]
        rows = await vdb.fetch(
            f"""SELECT id FROM {mem._sql.schema}.messages WHERE user_id = $1
                ORDER BY (embedding <=> $2) + 0 LIMIT 10""",
            uid,
            query,
        )
        assert len(set(ids) & {r[0] for r in rows}) >= 9  # HNSW is approximate


async def test_memory_filters_apply_inside_the_index_scan(
    vschemas: Callable[[], str], pgvector_url: str
) -> None:
    mem = PostgresMemory(pgvector_url, schema=vschemas(), embedding_model=PlantedModel())
    async with mem:
        mem.search_mode = "vector"
        uid = new_user_id()
        for i in range(60):
            await mem.store_memory(make_memory_entry(uid, _planted(0.99, i), category="noise"))
        pets = [
            make_memory_entry(uid, _planted(a, 100 + n), category="pets")
            for n, a in enumerate((0.3, 0.2))
        ]
        for entry in pets:
            await mem.store_memory(entry)
        gone = make_memory_entry(
            uid, _planted(0.5, 200), category="pets", created_at=at(0), expires_at=at(1)
        )
        await mem.store_memory(gone)
        for plan_choice in ("exact", "index"):  # exact, then HNSW with the fallback
            _choose_plan(mem, plan_choice)
            got = await mem.retrieve_memories(
                MemoryQuery(user_id=uid, query_text="a=1", categories=["pets"], limit=10)
            )
            assert [m.id for m in got] == [e.id for e in pets], plan_choice


async def test_model_change_resizes_the_columns_and_reindex_fills_them(
    vdb: asyncpg.Connection, vschemas: Callable[[], str], pgvector_url: str
) -> None:
    schema = vschemas()
    uid = new_user_id()
    async with PostgresMemory(pgvector_url, schema=schema, embedding_model=PlantedModel()) as mem:
        await _store_planted(mem, uid, [0.9, 0.5, 0.1])
        await mem.store_memory(make_memory_entry(uid, _planted(0.7, 9)))
    wide = PlantedModel(2048, "wide")  # beyond HNSW's 2,000: searched exactly
    async with PostgresMemory(pgvector_url, schema=schema, embedding_model=wide) as mem:
        assert await mem.reindex() == {"message": 3, "memory": 1}
        assert (await _column_type(vdb, schema, "messages") or "").endswith("vector(2048)")
        assert await _index_def(vdb, schema, "messages") is None
        found = await mem.search(uid, "a=1", mode="vector", limit=10)
        assert [round(r.score, 3) for r in found] == [0.9, 0.7, 0.5, 0.1]
    narrow = PlantedModel(8, "narrow")
    async with PostgresMemory(pgvector_url, schema=schema, embedding_model=narrow) as mem:
        await mem.reindex()
        assert mem.vector_space == VectorSpace("narrow-8", 8)
        found = await mem.search(uid, "a=1", mode="vector", limit=10)
        assert [round(r.score, 3) for r in found] == [0.9, 0.7, 0.5, 0.1]
    for table in ("messages", "memories"):
        assert (await _column_type(vdb, schema, table) or "").endswith("vector(8)")
        assert "hnsw" in (await _index_def(vdb, schema, table) or "")
    assert all(
        v is not None and v.shape == (8,)
        for v in (await _vectors(vdb, schema, "messages")).values()
    )


async def test_concurrent_first_connects_record_one_space(
    vdb: asyncpg.Connection, vschemas: Callable[[], str], pgvector_url: str
) -> None:
    schema = vschemas()
    models = [PlantedModel(16, f"m{i}") for i in range(5)]
    memories = [PostgresMemory(pgvector_url, schema=schema, embedding_model=m) for m in models]
    try:
        await asyncio.gather(*(m.initialize() for m in memories))
        spaces = {m.vector_space for m in memories}
        assert len(spaces) == 1  # the first claim won; the others see it (and a mismatch)
        (space,) = spaces
        meta = dict(await vdb.fetch(f"SELECT key, value FROM {check_schema(schema)}.meta"))
        assert meta["vector_model"] == space.model
        winner = next(m for m in memories if m.embedder and m.embedder.model_name == space.model)
        await winner.store_message(make_message("a=0.5 #1"), new_user_id(), new_conversation_id())
    finally:
        await asyncio.gather(*(m.shutdown() for m in memories))


async def test_a_store_from_before_vectors_gets_them_and_asks_for_reindex(
    vdb: asyncpg.Connection,
    vschemas: Callable[[], str],
    pgvector_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = vschemas()
    quoted = check_schema(schema)
    uid = new_user_id()
    # A version-1 store, as the previous release left it, with messages in it.
    async with PostgresMemory(pgvector_url, schema=schema, embedding_model=None) as mem:
        await _store_planted(mem, uid, [0.8, 0.4])
    await vdb.execute(f"DROP TABLE {quoted}.meta")
    for table in ("messages", "memories"):
        await vdb.execute(f"ALTER TABLE {quoted}.{table} DROP COLUMN embedding")
    await vdb.execute(f"DELETE FROM {quoted}.schema_version WHERE version > 1")
    assert migrations(quoted, "memstore")[0][0] == 1
    caplog.set_level(logging.INFO, logger="bruno_memstore")
    async with PostgresMemory(pgvector_url, schema=schema, embedding_model=PlantedModel()) as mem:
        assert mem.vector_support == "pgvector" and mem.schema_version == LATEST_VERSION
        assert "bruno-memstore reindex" in caplog.text
        assert await mem.search(uid, "a=1", mode="vector") == []
        assert await mem.reindex() == {"message": 2, "memory": 0}
        found = await mem.search(uid, "a=1", mode="vector")
        assert [round(r.score, 3) for r in found] == [0.8, 0.4]


async def test_without_the_pgvector_package_vectors_are_off_and_never_stale(
    vdb: asyncpg.Connection,
    vschemas: Callable[[], str],
    pgvector_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = vschemas()
    uid = new_user_id()
    entry = make_memory_entry(uid, "a=0.9 #1")
    async with PostgresMemory(pgvector_url, schema=schema, embedding_model=PlantedModel()) as mem:
        await mem.store_memory(entry)
    monkeypatch.setattr(postgres_module, "register_vector", None)
    async with PostgresMemory(pgvector_url, schema=schema) as mem:
        assert mem.vector_support == "none" and "pip install" in mem.vector_support_reason
        assert not mem.supports(Capability.VECTORS) and mem.search_mode == "keyword"
        entry.content = "replaced without a vector"
        await mem.store_memory(entry)
        bulk = [make_message(f"bulk {i}") for i in range(1100)]  # no COPY without the codec
        assert (
            await mem.store_messages(bulk, conversation_id=new_conversation_id(), user_id=uid)
            == 1100
        )
        assert len(await mem.search(uid, "replaced")) == 1
    assert list((await _vectors(vdb, schema, "memories")).values()) == [None]
    assert set((await _vectors(vdb, schema, "messages")).values()) == {None}


# ==================================================================== erasure


@pytest.fixture(scope="module")
def private_server() -> Iterator[PostgresServer]:
    """A cluster of its own, whose data directory the test can read."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


async def test_compact_leaves_no_erased_words_in_the_data_files(
    private_server: PostgresServer,
) -> None:
    """Deleted rows stay in their pages (dead, then free space) until ``compact`` rewrites
    the tables; the WAL keeps them regardless, as documented."""
    memory = PostgresMemory(private_server.url, embedding_model=None)
    try:
        done = await run_erasures(memory)
        await memory.compact()
        await memory.compact()  # again: harmless
        conn = await asyncpg.connect(private_server.url)
        try:
            await conn.execute("CHECKPOINT")  # every page of the live files on disk
        finally:
            await conn.close()
        words = done.erased_words | done.kept
        found = find_in_files([private_server.datadir / "base"], words)
        assert not set(found) & done.erased_words, found
        assert done.kept <= set(found)  # the look reaches the data
        wal = find_in_files([private_server.datadir / "pg_wal"], words)
        assert done.erased_words <= set(wal)  # the documented limit
        assert len(await memory.search(done.kept_user, min(done.kept, key=len))) > 0
    finally:
        await memory.shutdown()
