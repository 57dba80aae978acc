"""MySQLMemory against the real MariaDB: schema, collations, text fidelity, full-text
rewriting, query plans, group commit, migrations across processes, URL handling, vectors.

The server is ``BRUNO_TEST_MYSQL_URL`` (default: the machine's MariaDB); an unreachable
server fails these tests. Each module run uses tables of its own (a fresh prefix).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncmy
import numpy as np
import pytest
import pytest_asyncio
from bruno_core.models.memory import MemoryQuery
from bruno_core.models.message import MessageRole

from bruno_memstore import open_memory
from bruno_memstore.backends.kit.vectors import vector_from_bytes, vector_to_bytes
from bruno_memstore.backends.mysql.backend import MySQLMemory
from bruno_memstore.backends.mysql.dialect import MySQLDialect, TermRewriter
from bruno_memstore.backends.mysql.schema import LATEST_VERSION
from bruno_memstore.backends.sql.steps import Execute
from bruno_memstore.errors import (
    BackendError,
    BackendUnavailableError,
    ClosedError,
    InvalidArgumentError,
    MissingDependencyError,
    SchemaError,
)
from bruno_memstore.search import ANALYSIS_VERSION
from bruno_memstore.testing.builders import (
    at,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from bruno_memstore.testing.erasure import find_in_files, run_erasures
from bruno_memstore.url import MemoryURL
from faults._mysql_server import MariaDBServer

MYSQL_URL = os.environ.get("BRUNO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
BACKEND_PACKAGE = "bruno_memstore.backends.mysql"
TABLES = (
    "schema_version",
    "settings",
    "conversations",
    "messages",
    "memories",
    "memory_tags",
    "sessions",
    "ft_stopwords",
    "vector_generations",
    "vector_space",
    "vector_log",
    "vector_pending",
)


async def _raw(url: str = MYSQL_URL) -> Any:
    u = MemoryURL.parse(url)
    try:
        return await asyncmy.connect(
            host=u.host,
            port=u.port or 3306,
            user=u.username or "root",
            password=u.password or "",
            database=u.path.lstrip("/"),
            charset="utf8mb4",
            autocommit=True,
        )
    except Exception as exc:  # the engine is required: fail, never skip
        pytest.fail(f"MariaDB/MySQL is required and unreachable at {url}: {exc}", pytrace=False)


async def _query(sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
    conn = await _raw()
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, args)
            return list(await cur.fetchall())
    finally:
        conn.close()


async def _drop(prefix: str) -> None:
    await _query("DROP TABLE IF EXISTS " + ", ".join(f"`{prefix}{t}`" for t in TABLES))


@pytest_asyncio.fixture
async def prefix() -> AsyncIterator[str]:
    """A table prefix of its own, dropped afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}_"
    yield name
    await _drop(name)


@pytest_asyncio.fixture
async def memory(prefix: str) -> AsyncIterator[MySQLMemory]:
    mem = MySQLMemory(MYSQL_URL, table_prefix=prefix, connect_timeout=5)
    try:
        await mem.initialize()
    except BackendUnavailableError as exc:
        pytest.fail(f"MariaDB/MySQL is required and unreachable: {exc}", pytrace=False)
    yield mem
    await mem.shutdown()


# ==================================================================== URL and options


async def test_url_options_are_typed_and_checked(prefix: str) -> None:
    mem = open_memory(
        f"mariadb://root@127.0.0.1:3306/test?pool_size=3&table_prefix={prefix}"
        "&write_batching=false&connect_timeout=2.5"
    )
    assert isinstance(mem, MySQLMemory)
    assert mem.table_prefix == prefix
    assert mem._pool_size == 3 and mem._connect_timeout == 2.5 and not mem._batching
    # Keyword arguments win over URL options.
    assert MySQLMemory(f"{MYSQL_URL}?pool_size=3", pool_size=7)._pool_size == 7
    with pytest.raises(InvalidArgumentError, match="pool_sise"):
        MySQLMemory(f"{MYSQL_URL}?pool_sise=3")
    with pytest.raises(InvalidArgumentError) as info:
        MySQLMemory(f"{MYSQL_URL}?pool_size=many")
    assert "pool_size" in info.value.argument
    with pytest.raises(InvalidArgumentError, match="database"):
        MySQLMemory("mysql://root@127.0.0.1:3306/")
    with pytest.raises(InvalidArgumentError):
        MySQLMemory(MYSQL_URL, table_prefix="bad-prefix; DROP")
    with pytest.raises(InvalidArgumentError):
        MySQLMemory(MYSQL_URL, pool_size=4, pool_min_size=5)


async def test_password_is_redacted_everywhere() -> None:
    mem = MySQLMemory("mysql://root:hunter2@127.0.0.1:1/test", connect_timeout=1)
    assert "hunter2" not in repr(mem)
    assert "***" in repr(mem)
    with pytest.raises(BackendUnavailableError) as info:
        await mem.initialize()
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


# ==================================================================== schema


async def test_schema_is_innodb_utf8mb4_with_exact_ids(memory: MySQLMemory, prefix: str) -> None:
    engines = await _query(
        "SELECT table_name, engine FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name LIKE %s",
        (prefix.replace("_", "\\_") + "%",),
    )
    assert {e for _, e in engines} == {"InnoDB"}
    assert len(engines) == len(TABLES)
    columns = await _query(
        "SELECT column_name, character_set_name, collation_name "
        "FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = %s",
        (f"{prefix}messages",),
    )
    info = {c[0]: (c[1], c[2]) for c in columns}
    for name in ("id", "conversation_id", "user_id", "content", "metadata"):
        assert info[name] == ("utf8mb4", "utf8mb4_nopad_bin"), name
    versions = await _query(f"SELECT version FROM `{prefix}schema_version`")
    assert [v[0] for v in versions] == list(range(1, LATEST_VERSION + 1))
    assert await memory.schema_version() == LATEST_VERSION
    assert memory.dialect == "mariadb"


async def test_ids_compare_exactly(memory: MySQLMemory) -> None:
    uid, other = new_user_id(), new_user_id()
    base = new_conversation_id()
    variants = [base, base + " ", base.upper(), base + "\u00a0"]
    for i, conv in enumerate(variants):
        owner = uid if i % 2 == 0 else other
        await memory.store_message(make_message(f"in variant {i}"), owner, conv)
    for i, conv in enumerate(variants):
        got = await memory.retrieve_messages(conv)
        assert [m.content for m in got] == [f"in variant {i}"]
    # "a" and "a " are different users, too.
    await memory.create_session("ada")
    assert (await memory.get_statistics("ada "))["sessions"] == 0


async def test_four_byte_text_and_metadata_are_stored_exactly(
    memory: MySQLMemory, prefix: str
) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    content = (
        "emoji 😀👩‍👩‍👧 astral \U0001d518\U0001d52b\U0001d526 𠜎 nul\x00 quote ' \" \\ %s %% ;--"
    )
    metadata = {"z": 1, "a": {"y": [3, 2, 1], "b": "🎉"}, "m": None}
    msg = make_message(content, metadata=metadata)
    await memory.store_message(msg, uid, conv)
    rows = await _query(
        f"SELECT HEX(content), metadata FROM `{prefix}messages` WHERE id = %s", (str(msg.id),)
    )
    assert bytes.fromhex(rows[0][0]).decode("utf-8") == content
    # The text as given: key order and separators survive (no JSON normalisation).
    assert rows[0][1] == '{"z":1,"a":{"y":[3,2,1],"b":"🎉"},"m":null}'
    (got,) = await memory.retrieve_messages(conv)
    assert got.content == content
    assert list(got.metadata) == ["z", "a", "m"]


async def test_newer_schema_is_refused(memory: MySQLMemory, prefix: str) -> None:
    await _query(
        f"INSERT INTO `{prefix}schema_version` (version, name) VALUES (%s, 'from the future')",
        (LATEST_VERSION + 1,),
    )
    fresh = MySQLMemory(MYSQL_URL, table_prefix=prefix)
    with pytest.raises(SchemaError, match="newer"):
        await fresh.initialize()


async def test_changed_text_analysis_reindexes(memory: MySQLMemory, prefix: str) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("the pangolin sleeps"), uid, conv)
    entry = make_memory_entry(uid, "pangolins eat ants")
    await memory.store_memory(entry)
    # Simulate terms built by an older analysis: wrong terms, older version number.
    await _query(f"UPDATE `{prefix}messages` SET search_terms = 'stale'")
    await _query(f"UPDATE `{prefix}memories` SET search_terms = 'stale'")
    await _query(f"UPDATE `{prefix}settings` SET value = '0' WHERE name = 'analysis_version'")
    assert await memory.search(uid, "pangolin", mode="keyword") == []
    await memory.shutdown()
    reopened = MySQLMemory(MYSQL_URL, table_prefix=prefix)
    try:
        found = await reopened.search(uid, "pangolin", mode="keyword")
        assert sorted(r.kind for r in found) == ["memory", "message"]
        rows = await _query(f"SELECT value FROM `{prefix}settings` WHERE name = 'analysis_version'")
        assert rows[0][0] == f"{ANALYSIS_VERSION}:3:84"
    finally:
        await reopened.shutdown()


async def test_migrations_apply_once_across_processes(prefix: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from bruno_memstore.backends.mysql import MySQLMemory
        start = float(sys.argv[1])
        async def main():
            await asyncio.sleep(max(0.0, start - time.time()))
            mem = MySQLMemory({MYSQL_URL!r}, table_prefix={prefix!r})
            await mem.initialize()
            await mem.shutdown()
        asyncio.run(main())
        """
    )
    start = str(time.time() + 2.0)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            start,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-800:] for o in outputs]
    rows = await _query(f"SELECT version, COUNT(*) FROM `{prefix}schema_version` GROUP BY 1")
    assert rows == [(v, 1) for v in range(1, LATEST_VERSION + 1)]


# ==================================================================== full-text search


async def test_search_terms_dodge_innodb_limits() -> None:
    search_terms, query_terms = TermRewriter().index, TermRewriter().query
    # Short words are padded past innodb_ft_min_token_size, non-ASCII and long ones hashed.
    assert search_terms("AI") == "ai_"
    assert search_terms("running dogs") == "run dog"
    hashed = search_terms("Zürich")  # diacritics are folded by the shared analysis
    assert hashed == "zurich"
    russian = search_terms("привет")
    assert russian.startswith("u") and len(russian) == 21 and russian.isascii()
    assert len(search_terms("x" * 200)) == 21
    # A server with other token limits gets tokens that fit them.
    narrow = TermRewriter(min_len=5, max_len=12)
    assert narrow.index("AI") == "ai___"
    assert [len(t) for t in narrow.index("привет " + "y" * 40).split()] == [12, 12]
    # Operators in a query cannot survive analysis: only word characters remain.
    assert query_terms('+cats -dogs "exact" (group) ~near* @3') == "cat dog exact group near 3__"


async def test_search_finds_what_innodb_alone_would_miss(memory: MySQLMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    texts = [
        "we talked about AI and ML today",  # 2-letter words: below the min token size
        "visit www example com later",  # words on InnoDB's own stop list
        "Привет, как дела?",  # Cyrillic
        "東京で寿司を食べた",  # Japanese, no spaces
        "she was running every morning",  # stemming
        "a" * 120 + " marker",  # a word longer than innodb_ft_max_token_size
    ]
    msgs = [make_message(t, timestamp=at(i)) for i, t in enumerate(texts)]
    await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
    cases = {
        "AI": 0,
        "www": 1,
        "com": 1,
        "привет": 2,
        "寿司": 3,
        "runs": 4,
        "a" * 120: 5,
    }
    for query, index in cases.items():
        found = await memory.search_messages(query, user_id=uid)
        assert [m.id for m in found][:1] == [msgs[index].id], query


async def test_hostile_queries_never_break_the_statement(memory: MySQLMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    await memory.store_message(make_message("plain words about gardens"), uid, conv)
    for query in [
        "')) OR 1=1 --",
        '+garden* -"x" >< ~ @8 (',
        "%s %% \\",
        "MATCH AGAINST IN BOOLEAN MODE",
        "\x00",
        "😀",
    ]:
        results = await memory.search(uid, query)
        assert all(r.score <= 1.0 for r in results)
    assert len(await memory.search(uid, "garden') OR ('1")) == 1


# ==================================================================== query plans


class _Recorder(MySQLMemory):
    """Records every statement sent (with its arguments filled in)."""

    statements: list[str]

    def _connect_kwargs(self) -> dict[str, Any]:
        self.statements = []
        return {
            **super()._connect_kwargs(),
            "query_callback": lambda _cur, sql, _ms: self.statements.append(sql),
        }


_NOT_PLANNED = (
    "SELECT GET_LOCK",
    "SELECT RELEASE_LOCK",
    "SELECT @@",
    "SELECT version FROM",
    "SELECT value FROM",
    "SELECT MAX(version)",
)
_FINE_EXTRAS = ("Impossible WHERE", "no matching row", "optimized away", "No tables used")


async def test_every_query_uses_an_index(prefix: str) -> None:
    mem = _Recorder(MYSQL_URL, table_prefix=prefix)
    await mem.initialize()
    try:
        # Enough rows over enough users that a full scan is never the cheap plan.
        users = [new_user_id() for _ in range(40)]
        for n, user in enumerate(users):
            conv = new_conversation_id()
            batch = [
                make_message(f"note {i} about topic{n % 7} and gardens", timestamp=at(i))
                for i in range(40)
            ]
            await mem.store_messages(batch, conversation_id=conv, user_id=user)
            await mem.store_memory(
                make_memory_entry(user, f"fact {n} about gardens", tags=["t1", f"t{n}"])
            )
            await mem.create_session(user)
        await _query(f"ANALYZE TABLE `{prefix}messages`, `{prefix}memories`, `{prefix}sessions`")
        uid, conv = users[3], new_conversation_id()
        msg = make_message("the workload message about gardens", role=MessageRole.SYSTEM)
        mem.statements.clear()
        await mem.store_message(msg, uid, conv)
        await mem.store_message(msg, uid, conv)  # the retry path looks the id up
        await mem.retrieve_context(uid, conversation_id=conv, limit=5)
        await mem.retrieve_context(uid, limit=5)
        await mem.retrieve_messages(conv)
        await mem.search(uid, "gardens topic3")
        await mem.retrieve_memories(
            MemoryQuery(user_id=uid, tags=["t1"], categories=["x"], min_importance=0.1)
        )
        await mem.retrieve_memories(MemoryQuery(user_id=uid, query_text="gardens"))
        await mem.get_statistics(uid)
        await mem.get_context(uid)
        await mem.get_context(uid, conv)
        for kind in ("conversations", "messages", "memories", "sessions"):
            async for _ in mem.export_batches(kind, uid):
                pass
        await mem.purge_expired()
        await mem.clear_history(conv, keep_system_messages=True)
        entry = make_memory_entry(uid, "to delete")
        await mem.store_memory(entry)
        await mem.delete_memory(str(entry.id), user_id=uid)
        await mem.clear_conversation(uid, conv)
        await mem.forget_user(users[5])
        await mem.reindex()  # drops every vector, then writes them again
        assert await _planned_without_scans(mem.statements) >= 20
    finally:
        await mem.shutdown()


async def _planned_without_scans(statements: list[str]) -> int:
    """``EXPLAIN`` each distinct statement that reads rows; fail on a table scan. Returns
    how many were explained."""
    planned = [
        s
        for s in dict.fromkeys(statements)
        if s.split()[0].upper() in ("SELECT", "DELETE", "UPDATE") and not s.startswith(_NOT_PLANNED)
    ]
    conn = await _raw()
    try:
        async with conn.cursor() as cur:
            for sql in planned:
                await cur.execute("EXPLAIN " + sql)
                names = [d[0] for d in cur.description]
                for row in await cur.fetchall():
                    plan = dict(zip(names, row, strict=True))
                    if plan["table"] is None or any(
                        e in (plan["Extra"] or "") for e in _FINE_EXTRAS
                    ):
                        continue
                    assert plan["type"] != "ALL" and plan["key"], (sql[:300], plan)
    finally:
        conn.close()
    return len(planned)


class _Switch:
    """A small stand-in model that refuses while ``down``."""

    model_name = "switch"
    dimension = 8
    down = True

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        if self.down:
            raise RuntimeError("the model is down")
        rows = np.zeros((len(texts), 8), dtype=np.float32)
        for i, text in enumerate(texts):
            rows[i, len(text) % 8] = 1.0
        return rows


async def test_the_queue_of_deferred_vectors_uses_an_index(prefix: str) -> None:
    model = _Switch()
    mem = _Recorder(MYSQL_URL, table_prefix=prefix, embedding_model=model, vectors="deferred")
    await mem.initialize()
    try:
        users = [new_user_id() for _ in range(40)]
        convs = [new_conversation_id() for _ in users]
        for user, conv in zip(users, convs, strict=True):
            batch = [make_message(f"note {i} waiting", timestamp=at(i)) for i in range(40)]
            await mem.store_messages(batch, conversation_id=conv, user_id=user)
        await _query(f"ANALYZE TABLE `{prefix}messages`, `{prefix}vector_pending`")
        waiting = await _query(f"SELECT count(*) FROM `{prefix}vector_pending`")
        assert waiting[0][0] == 1600
        mem.statements.clear()
        await mem.store_message(
            make_message("one more", role=MessageRole.SYSTEM), users[0], convs[0]
        )
        await mem.clear_history(convs[0], keep_system_messages=True)
        await mem.clear_conversation(users[1], convs[1])
        await mem.forget_user(users[2])
        model.down = False
        await mem.flush()
        assert await _query(f"SELECT count(*) FROM `{prefix}vector_pending`") == [(0,)]
        sent = list(mem.statements)
        # Plans are judged over a full queue again (an empty table is always scanned).
        model.down = True
        for user in users[3:]:
            batch = [make_message(f"note {i} waiting again", timestamp=at(i)) for i in range(40)]
            await mem.store_messages(batch, conversation_id=new_conversation_id(), user_id=user)
        await _query(f"ANALYZE TABLE `{prefix}messages`, `{prefix}vector_pending`")
        queue = {s.split()[0].upper() for s in sent if "vector_pending" in s}
        assert {"SELECT", "DELETE", "INSERT"} <= queue  # the queue's statements were sent
        assert await _planned_without_scans(sent) >= 8
    finally:
        await mem.shutdown()


# ==================================================================== writes


async def test_concurrent_writers_are_group_committed(memory: MySQLMemory) -> None:
    uid = new_user_id()
    convs = [new_conversation_id() for _ in range(8)]
    msgs = [make_message(f"grouped {i}", timestamp=at(i % 5)) for i in range(256)]
    assert memory._committer is not None and memory.embedder is not None
    # Embedded beforehand (cached by text), so the writers reach the committer together.
    await memory.embedder.embed([m.content for m in msgs])
    before = memory._committer.batches
    await asyncio.gather(*(memory.store_message(m, uid, convs[i % 8]) for i, m in enumerate(msgs)))
    batches = memory._committer.batches - before
    assert batches < len(msgs) / 4  # many writers per transaction
    stats = await memory.get_statistics(uid)
    assert stats["total_messages"] == 256 and stats["conversations"] == 8
    # Every row carries its vector, written by the same group commit.
    rows = await _query(
        f"SELECT COUNT(*) FROM `{memory.table_prefix}messages` "
        "WHERE user_id = %s AND LENGTH(vector) = 384 * 4",
        (uid,),
    )
    assert rows[0][0] == 256


async def test_a_bad_row_fails_only_its_own_writer(prefix: str) -> None:
    doomed = make_message("this row is refused by the server")

    class PickyDialect(MySQLDialect):
        def insert_messages(self, rows: Any, probed: Any) -> Any:
            if any(row.record.id == str(doomed.id) for row in rows):
                yield Execute("SELECT * FROM `no_such_table_for_this_test`")
            return (yield from super().insert_messages(rows, probed))

    class Picky(MySQLMemory):
        dialect_type = PickyDialect

    mem = Picky(MYSQL_URL, table_prefix=prefix)
    try:
        uid, conv = new_user_id(), new_conversation_id()
        good = [make_message(f"good {i}", timestamp=at(i)) for i in range(20)]
        results = await asyncio.gather(
            *(mem.store_message(m, uid, conv) for m in [*good[:10], doomed, *good[10:]]),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and "no_such_table" in str(failed[0])
        got = await mem.retrieve_context(uid, conversation_id=conv, limit=50)
        assert {m.id for m in got} == {m.id for m in good}
    finally:
        await mem.shutdown()


async def test_a_client_side_failure_fails_only_its_own_writer(prefix: str) -> None:
    # The doomed row fails in the client, before the server sees it (its vector cannot be
    # encoded): an error with no server code, which must still fail only its own writer.
    doomed = make_message("this row cannot be encoded")

    class GarblingDialect(MySQLDialect):
        def insert_messages(self, rows: Any, probed: Any) -> Any:
            if any(row.record.id == str(doomed.id) for row in rows):
                vector_to_bytes(["not a number"])  # what encoding its vector would raise
            return (yield from super().insert_messages(rows, probed))

    class Garbling(MySQLMemory):
        dialect_type = GarblingDialect

    mem = Garbling(MYSQL_URL, table_prefix=prefix, embedding_model=None)
    try:
        await mem.initialize()
        assert mem._committer is not None
        uid = new_user_id()
        good = [make_message(f"good {i}", timestamp=at(i)) for i in range(10)]
        writers = [*good[:5], doomed, *good[5:]]
        before = mem._committer.batches
        results = await asyncio.gather(
            *(mem.store_message(m, uid, new_conversation_id()) for m in writers),
            return_exceptions=True,
        )
        assert mem._committer.batches - before < len(writers)  # they did share a batch
        assert [r for r in results if r is not None] == [results[5]]
        assert isinstance(results[5], BackendError)
        assert isinstance(results[5].cause, ValueError)
        stats = await mem.get_statistics(uid)
        assert stats["total_messages"] == 10 and stats["conversations"] == 10
    finally:
        await mem.shutdown()


async def test_batches_larger_than_a_packet_are_split(memory: MySQLMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    big = "x" * 600_000 + " tail"
    msgs = [make_message(f"{i} {big}", timestamp=at(i)) for i in range(30)]  # ~18 MB of text
    assert await memory.store_messages(msgs, conversation_id=conv, user_id=uid) == 30
    got = await memory.retrieve_context(uid, conversation_id=conv, limit=50)
    assert [m.id for m in got] == [m.id for m in msgs]
    assert got[-1].content == msgs[-1].content


async def test_oversized_message_is_refused_before_writing(memory: MySQLMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    huge = make_message("y" * (memory._max_packet // 2))
    with pytest.raises(InvalidArgumentError, match="max_allowed_packet"):
        await memory.store_message(huge, uid, conv)
    assert await memory.retrieve_messages(conv) == []


async def test_oversized_memory_entry_is_refused_before_writing(memory: MySQLMemory) -> None:
    uid = new_user_id()
    # Well under the packet as text, over it as the statement that stores it.
    huge = make_memory_entry(uid, "z" * (memory._max_packet // 4))
    with pytest.raises(InvalidArgumentError, match="max_allowed_packet") as info:
        await memory.store_memory(huge)
    assert info.value.argument == "memory_entry"
    assert await memory.retrieve_memories(MemoryQuery(user_id=uid, include_expired=True)) == []
    fits = make_memory_entry(uid, "z" * (memory._max_packet // 16))
    await memory.store_memory(fits)
    (got,) = await memory.retrieve_memories(MemoryQuery(user_id=uid))
    assert got.content == fits.content


async def test_memory_tags_match_exactly_at_any_length(memory: MySQLMemory) -> None:
    uid = new_user_id()
    long_tag = "τ" * 400
    a = make_memory_entry(uid, "tagged long", tags=[long_tag])
    b = make_memory_entry(uid, "tagged short", tags=["tag", "Tag "])
    await memory.store_memory(a)
    await memory.store_memory(b)
    by_long = await memory.retrieve_memories(MemoryQuery(user_id=uid, tags=[long_tag]))
    assert [e.id for e in by_long] == [a.id]
    assert [
        e.id for e in await memory.retrieve_memories(MemoryQuery(user_id=uid, tags=["Tag "]))
    ] == [b.id]
    assert await memory.retrieve_memories(MemoryQuery(user_id=uid, tags=["TAG"])) == []
    rows = await _query(
        f"SELECT COUNT(*) FROM `{memory.table_prefix}memory_tags` WHERE memory_id = %s",
        (str(b.id),),
    )
    assert rows[0][0] == 2
    await memory.delete_memory(str(b.id))
    rows = await _query(
        f"SELECT COUNT(*) FROM `{memory.table_prefix}memory_tags` WHERE memory_id = %s",
        (str(b.id),),
    )
    assert rows[0][0] == 0


async def test_is_transient_classifies_real_server_errors(memory: MySQLMemory) -> None:
    conn = await _raw()
    try:
        async with conn.cursor() as cur:
            with pytest.raises(asyncmy.errors.ProgrammingError) as syntax:
                await cur.execute("SELEC 1")
            await cur.execute(
                f"INSERT INTO `{memory.table_prefix}settings` (name, value) VALUES ('dup', 'x')"
            )
            with pytest.raises(asyncmy.errors.IntegrityError) as dup:
                await cur.execute(
                    f"INSERT INTO `{memory.table_prefix}settings` (name, value) VALUES ('dup', 'y')"
                )
    finally:
        conn.close()
    assert not memory._is_transient(syntax.value)
    assert not memory._is_transient(dup.value)
    for code in (1205, 1213, 1040, 2006, 2013):
        assert memory._is_transient(asyncmy.errors.OperationalError(code, "x"))
    assert memory._is_unavailable(asyncmy.errors.OperationalError(2003, "x"))
    assert not memory._is_unavailable(asyncmy.errors.OperationalError(1213, "x"))


async def test_json_metadata_round_trips_like_the_text(memory: MySQLMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    metadata = {"unicode": "ünï 😀", "float": 0.1, "big": 2**53, "nested": [[{"k": []}]]}
    msg = make_message("meta", metadata=metadata)
    await memory.store_message(msg, uid, conv)
    (got,) = await memory.retrieve_messages(conv)
    assert json.dumps(got.metadata) == json.dumps(metadata)


async def test_shutdown_lets_queued_writes_finish(prefix: str) -> None:
    mem = MySQLMemory(MYSQL_URL, table_prefix=prefix)
    uid, conv = new_user_id(), new_conversation_id()
    msgs = [make_message(f"in flight {i}", timestamp=at(i)) for i in range(64)]
    await mem.initialize()
    writes = [asyncio.create_task(mem.store_message(m, uid, conv)) for m in msgs]
    await asyncio.sleep(0)  # queued, some already in a batch
    await mem.shutdown()
    results = await asyncio.gather(*writes, return_exceptions=True)
    done = [m for m, r in zip(msgs, results, strict=True) if r is None]
    refused = [r for r in results if r is not None]
    assert all(isinstance(r, ClosedError) for r in refused)
    await mem.shutdown()  # again: a no-op
    reopened = MySQLMemory(MYSQL_URL, table_prefix=prefix)
    try:
        stored = {m.id for m in await reopened.retrieve_messages(conv)}
        assert {m.id for m in done} <= stored
    finally:
        await reopened.shutdown()


async def test_write_connections_are_reused(memory: MySQLMemory) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    for i in range(5):
        await memory.store_message(make_message(f"sequential {i}", timestamp=at(i)), uid, conv)
        await memory.create_session(uid)
    # One connection served every transaction: none was dropped as "still in a transaction".
    assert memory._write_pool.size == 1
    assert memory._write_pool.freesize == 1


class _Watching(MySQLMemory):
    """Records every pooled connection handed out, and those whose use was interrupted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[Any] = []
        self.interrupted: list[Any] = []

    @asynccontextmanager
    async def _connection(self, *, write: bool = False) -> AsyncIterator[Any]:
        async with super()._connection(write=write) as conn:
            self.handed.append(conn)
            try:
                yield conn
            except BaseException:
                self.interrupted.append(conn)
                raise


async def _answers_correctly(mem: _Watching, conv: str, expected: list[str]) -> None:
    """Every connection of both pools, used at once and again, reads back the known rows."""
    mem.handed.clear()

    async def read() -> None:
        got = await mem.retrieve_messages(conv)
        assert [m.content for m in reversed(got)] == expected

    async def write() -> None:
        async with mem._transaction() as cur:
            await cur.execute(
                f"SELECT content FROM `{mem.table_prefix}messages` "
                "WHERE conversation_id = %s ORDER BY ts_us, seq",
                (conv,),
            )
            assert [row[0] for row in await cur.fetchall()] == expected

    for _ in range(3):
        await asyncio.gather(*(read() for _ in range(8)), *(write() for _ in range(4)))
    assert not any(c in mem.handed for c in mem.interrupted)


async def test_cancelled_queries_never_return_their_connection(prefix: str) -> None:
    # Large replies (many packets) cut short at random points by timeouts and cancellation,
    # while writes run too; afterwards every pooled connection must still be in step.
    mem = _Watching(MYSQL_URL, table_prefix=prefix, embedding_model=None, pool_size=12)
    try:
        uid, conv = new_user_id(), new_conversation_id()
        rng = random.Random(7)
        bulk = "".join(rng.choice("abcdefgh ") for _ in range(200_000))
        msgs = [make_message(f"{i} {bulk}", timestamp=at(i)) for i in range(12)]
        await mem.store_messages(msgs, conversation_id=conv, user_id=uid)
        expected = [m.content for m in msgs]

        async def read() -> None:
            await mem.retrieve_messages(conv)

        async def write(i: int) -> None:
            await mem.store_memory(make_memory_entry(uid, f"{i} {bulk}"))

        for round_ in range(12):
            jobs = [read() if i % 3 else write(i) for i in range(18)]
            tasks = [asyncio.ensure_future(job) for job in jobs]
            for task in tasks:
                task.get_loop().call_later(rng.uniform(0.0, 0.03), task.cancel)
            await asyncio.gather(*tasks, return_exceptions=True)
            timed = [
                asyncio.wait_for(read(), rng.uniform(0.0, 0.02)) for _ in range(6 + round_ % 3)
            ]
            await asyncio.gather(*timed, return_exceptions=True)
        assert mem.interrupted, "no query was interrupted: the test proves nothing"
        await _answers_correctly(mem, conv, expected)
    finally:
        await mem.shutdown()


async def test_a_connection_out_of_step_is_never_reused(prefix: str) -> None:
    # A reply left unread (as an interrupted read leaves it), then a driver error with a
    # client code (2014, commands out of sync): the connection must be closed, not pooled,
    # or the next query on it reads the old reply as its own.
    mem = _Watching(MYSQL_URL, table_prefix=prefix, embedding_model=None, pool_size=4)
    try:
        uid, conv = new_user_id(), new_conversation_id()
        msgs = [make_message(f"row {i} " + "v" * 50_000, timestamp=at(i)) for i in range(8)]
        await mem.store_messages(msgs, conversation_id=conv, user_id=uid)
        table = f"`{mem.table_prefix}messages`"
        with pytest.raises(asyncmy.errors.OperationalError) as info:
            async with mem._connection() as conn:
                await conn._execute_command(3, f"SELECT content FROM {table}".encode())  # COM_QUERY
                await conn.commit()  # reads the SELECT's reply instead of COMMIT's
        assert info.value.args[0] == 2014
        await _answers_correctly(mem, conv, [m.content for m in msgs])
    finally:
        await mem.shutdown()


async def test_missing_driver_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without asyncmy the package cannot be imported; the registry names the extra.
    for name in [m for m in sys.modules if m.startswith(("asyncmy", BACKEND_PACKAGE))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "asyncmy", None)
    with pytest.raises(MissingDependencyError) as info:
        open_memory(MYSQL_URL)
    assert "pip install 'bruno-memstore[mysql]'" in str(info.value)
    assert isinstance(info.value, ImportError)


# ==================================================================== vectors


async def _generation(prefix: str, user_id: str) -> tuple[int, int, int] | None:
    """(message generation, message epoch, memory generation) of the user."""
    rows = await _query(
        "SELECT generation, message_epoch, memory_generation "
        f"FROM `{prefix}vector_generations` WHERE user_hash = %s",
        (hashlib.sha256(user_id.encode()).digest(),),
    )
    return tuple(int(v) for v in rows[0]) if rows else None  # type: ignore[return-value]


async def _log(prefix: str, user_id: str) -> list[tuple[int, list[str]]]:
    rows = await _query(
        f"SELECT generation, ids FROM `{prefix}vector_log` WHERE user_hash = %s "
        "ORDER BY generation",
        (hashlib.sha256(user_id.encode()).digest(),),
    )
    return [(int(g), ids.split("\0")) for g, ids in rows]


async def test_vectors_are_float32_blobs_in_the_record_rows(
    memory: MySQLMemory, prefix: str
) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    system = make_message("you talk about kittens", role=MessageRole.SYSTEM, timestamp=at(0))
    chat = make_message("my kitten is grey", timestamp=at(1))
    await memory.store_messages([system, chat], conversation_id=conv, user_id=uid)
    assert memory.embedder is not None
    rows = await _query(f"SELECT vector FROM `{prefix}messages` WHERE id = %s", (str(chat.id),))
    want = await memory.embedder.embed_one(chat.content)
    assert np.array_equal(vector_from_bytes(rows[0][0]), want)
    space = await _query(f"SELECT model, dimension, epoch FROM `{prefix}vector_space`")
    assert space == [(memory.embedder.model_name, 384, 1)]
    # Every change of the user's vectors bumps the user's generation, in the same commit.
    seen = [await _generation(prefix, uid)]
    assert seen[0] == (1, 0, 0)  # one append: generation 1 of the first message epoch
    assert await _log(prefix, uid) == [(1, [str(system.id), str(chat.id)])]

    async def changed() -> None:
        now = await _generation(prefix, uid)
        assert now not in seen, seen
        seen.append(now)

    entry = make_memory_entry(uid, "likes grey kittens", category="pets")
    await memory.store_memory(entry)
    await changed()
    entry.metadata.category = "animals"  # a replaced entry: new filter columns
    await memory.store_memory(entry)
    await changed()
    await memory.clear_history(conv)  # the system message stays
    await changed()
    counters = await _generation(prefix, uid)
    assert counters is not None and counters[1] == counters[0]  # a removal: a new epoch
    assert await _log(prefix, uid) == []
    rows = await _query(
        f"SELECT id FROM `{prefix}messages` WHERE user_id = %s AND vector IS NOT NULL", (uid,)
    )
    assert rows == [(str(system.id),)]
    await memory.delete_memory(str(entry.id))
    await changed()
    short = make_memory_entry(uid, "brief kitten", expires_at=at(1))
    await memory.store_memory(short)
    await changed()
    assert await memory.purge_expired() >= 1
    await changed()
    # Reads and searches change nothing.
    await memory.search(uid, "kitten", mode="vector")
    await memory.retrieve_context(uid, conversation_id=conv)
    assert await _generation(prefix, uid) == seen[-1]
    await memory.clear_conversation(uid, conv)
    await changed()
    more = make_message("one more kitten")
    await memory.store_message(more, uid, new_conversation_id())
    await changed()
    counters = await _generation(prefix, uid)
    assert counters is not None and await _log(prefix, uid) == [(counters[0], [str(more.id)])]
    await memory.forget_user(uid)
    await changed()  # the row stays (it holds a digest, not the id) and moved on


async def test_a_write_without_a_model_stores_no_vector(prefix: str) -> None:
    mem = MySQLMemory(MYSQL_URL, table_prefix=prefix, embedding_model=None)
    try:
        uid = new_user_id()
        await mem.store_message(make_message("no vector here"), uid, new_conversation_id())
        await mem.store_memory(make_memory_entry(uid, "nor here"))
        for table in ("messages", "memories"):
            rows = await _query(f"SELECT vector FROM `{prefix}{table}` WHERE user_id = %s", (uid,))
            assert rows == [(None,)]
        assert await _generation(prefix, uid) is None
    finally:
        await mem.shutdown()


async def test_other_processes_see_vector_changes_through_the_generation(
    memory: MySQLMemory, prefix: str
) -> None:
    other = MySQLMemory(MYSQL_URL, table_prefix=prefix)
    try:
        uid = new_user_id()
        conv = new_conversation_id()
        await memory.store_message(make_message("the grey kitten sleeps"), uid, conv)
        assert len(await memory.search(uid, "kitten", mode="vector")) == 1
        loads = memory._vectors.cache.loads
        await memory.search(uid, "kitten", mode="vector")
        await memory.search(uid, "sleeping cat", mode="vector", kinds=("message",))
        assert memory._vectors.cache.loads == loads  # served from the loaded index
        conv2 = new_conversation_id()
        await other.store_message(make_message("another kitten arrived"), uid, conv2)
        assert len(await memory.search(uid, "kitten", mode="vector")) == 2
        # An append is read from the log: no reload.
        assert memory._vectors.cache.loads == loads
        scoped = await memory.search(uid, "kitten", mode="vector", conversation_id=conv2)
        assert [r.content for r in scoped] == ["another kitten arrived"]
        await other.clear_conversation(uid, conv)
        found = await memory.search(uid, "kitten", mode="vector")
        assert [r.content for r in found] == ["another kitten arrived"]
        assert memory._vectors.cache.loads > loads  # a removal: reloaded
        # Forgotten, then written again: nothing of the old vectors survives anywhere.
        await other.forget_user(uid)
        await other.store_messages(
            [make_message("a new kitten"), make_message("a second new kitten")],
            conversation_id=new_conversation_id(),
            user_id=uid,
        )
        found = await memory.search(uid, "kitten", mode="vector")
        assert sorted(r.content for r in found) == ["a new kitten", "a second new kitten"]
    finally:
        await other.shutdown()


async def test_a_schema_1_store_is_migrated_and_reindexed(prefix: str) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    old = MySQLMemory(MYSQL_URL, table_prefix=prefix, embedding_model=None)
    msgs = [make_message(t, timestamp=at(i)) for i, t in enumerate(VECTOR_TOPICS)]
    await old.store_messages(msgs, conversation_id=conv, user_id=uid)
    await old.store_memory(make_memory_entry(uid, "the user adopted a kitten"))
    await old.shutdown()
    # Back to what a store written before vectors looks like: schema version 1.
    await _query(f"ALTER TABLE `{prefix}messages` DROP COLUMN vector")
    await _query(f"ALTER TABLE `{prefix}memories` DROP COLUMN vector")
    await _query(
        f"DROP TABLE `{prefix}vector_generations`, `{prefix}vector_space`, `{prefix}vector_log`"
    )
    await _query(f"DELETE FROM `{prefix}schema_version` WHERE version >= 2")
    new = MySQLMemory(MYSQL_URL, table_prefix=prefix)
    try:
        await new.initialize()
        assert await new.schema_version() == LATEST_VERSION
        # Old rows have no vector until reindex; keyword search and reads work meanwhile.
        assert await new.search(uid, "kitten shelter", mode="vector") == []
        assert await new.search(uid, "kitten", mode="keyword")
        assert await new.reindex() == {"message": len(msgs), "memory": 1}
        found = await new.search(uid, "a cat from the animal shelter", mode="vector", limit=2)
        assert sorted(r.kind for r in found) == ["memory", "message"]
        assert [r.message.id for r in found if r.message] == [msgs[0].id]
    finally:
        await new.shutdown()


async def test_reindex_replaces_every_vector_and_moves_the_epoch(
    memory: MySQLMemory, prefix: str
) -> None:
    uid = new_user_id()
    await memory.store_messages(
        [make_message(t, timestamp=at(i)) for i, t in enumerate(VECTOR_TOPICS)],
        conversation_id=new_conversation_id(),
        user_id=uid,
    )
    await memory.search(uid, "kitten", mode="vector")  # loads the user's vectors
    counts = await memory.reindex()
    assert counts["message"] >= len(VECTOR_TOPICS)
    space = await _query(f"SELECT epoch FROM `{prefix}vector_space`")
    assert space == [(2,)]
    rows = await _query(
        f"SELECT COUNT(*) FROM `{prefix}messages` WHERE user_id = %s AND LENGTH(vector) = 1536",
        (uid,),
    )
    assert rows == [(len(VECTOR_TOPICS),)]
    found = await memory.search(uid, "a cat from the animal shelter", mode="vector", limit=1)
    assert found[0].content == VECTOR_TOPICS[0]


VECTOR_TOPICS = [
    "my sister adopted a small grey kitten from the animal shelter",
    "the quarterly tax return is due at the end of the month",
    "we hiked up the mountain trail and camped near the summit",
    "I am learning to bake sourdough bread with a new starter",
    "the football match went to penalties after extra time",
    "our flight to Lisbon was delayed by three hours",
]


# ==================================================================== erasure


async def test_compact_leaves_no_erased_words_in_the_table_files() -> None:
    """InnoDB keeps deleted rows' bytes in their pages, and FULLTEXT keeps their words in its
    auxiliary tables, until ``compact`` rebuilds the tables; the redo log and the system
    tablespace (undo log, doublewrite buffer) keep them regardless, as documented."""
    server = MariaDBServer()
    try:
        server.start()
        memory = MySQLMemory(server.url, table_prefix="e_", embedding_model=None)
        try:
            done = await run_erasures(memory)
            # "www" is on InnoDB's default stop list: the rebuilt index must keep ours.
            www = make_message("see www pages")
            await memory.store_message(www, done.kept_user, "www-conversation")
            await memory.compact()
            await memory.compact()  # again: harmless
            assert [m.id for m in await memory.search_messages("www", done.kept_user)] == [www.id]
        finally:
            await memory.shutdown()
        server.stop()  # every page on disk
        words = done.erased_words | done.kept
        tables = find_in_files([server.datadir / "test"], words)
        assert not set(tables) & done.erased_words, tables
        assert done.kept <= set(tables)  # the look reaches the data
        logs = find_in_files([server.datadir / "ib_logfile0"], words)
        assert done.erased_words <= set(logs)  # the documented limit
    finally:
        server.destroy()


async def test_vector_search_works_for_every_user_id(memory: MySQLMemory) -> None:
    # The vector state query once left its columns unnamed: MariaDB named them after the
    # statement, binary user hash included, and some hashes (``user-6``'s) broke the driver's
    # decoding of the column names. Many user ids, so that such hashes are among them.
    users = [f"user-{i}" for i in range(400)]
    await memory.store_message(make_message("the zebra grazes"), users[6], new_conversation_id())
    for user in users:
        hits = await memory.search(user, "zebra", mode="vector")
        assert [h.content for h in hits] == (["the zebra grazes"] if user == users[6] else [])
        assert (await memory.get_statistics(user))["user_id"] == user
