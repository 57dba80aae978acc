"""What only SQLiteMemory promises: the engine set-up, schema, indexes, vectors, processes and
threads.

The shared semantics are checked by the conformance suite (``tests/conformance``).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
import sqlite3
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _killed_writer import acknowledged_until_killed, writer_script
from bruno_memstore import open_memory
from bruno_memstore.backends.sql import plans as shared
from bruno_memstore.backends.sql import threaded
from bruno_memstore.backends.sql.append import Append, append_group
from bruno_memstore.backends.sql.sync import run_group, run_plan
from bruno_memstore.backends.sqlite import SQLiteMemory, fulltext
from bruno_memstore.backends.sqlite import vectors as ops
from bruno_memstore.backends.sqlite.dialect import (
    DIALECT,
    INDEX_EVERY,
    INSERT_MESSAGE,
    ONLY_USER,
    SEARCH_MESSAGES,
    SELECT_USER,
    match_expression,
    message_row,
)
from bruno_memstore.backends.sqlite.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    VECTOR_COUNTERS,
    migrate,
)
from bruno_memstore.base import archive_marker
from bruno_memstore.capabilities import Capability
from bruno_memstore.errors import (
    BackendError,
    BackendUnavailableError,
    ClosedError,
    ConflictError,
    InvalidArgumentError,
    OwnershipError,
    SchemaError,
)
from bruno_memstore.models import MemoryFilter, SearchRequest, memory_to_record, message_to_record
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing import (
    at,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_user_id,
)
from bruno_memstore.testing.erasure import find_in_files, marker, run_erasures

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memory.db"


@pytest.fixture
async def memory(db_path: Path) -> AsyncIterator[SQLiteMemory]:
    mem = SQLiteMemory(db_path)
    try:
        yield mem
    finally:
        await mem.shutdown()


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to the file, as any SQLite tool would open it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def fts_rows(path: Path) -> set[int]:
    with raw(path) as conn:
        return {r[0] for r in conn.execute("SELECT rowid FROM search_fts")}


def search_rows(path: Path) -> set[int]:
    """The records the full-text index holds or will hold: its rows and the waiting."""
    with raw(path) as conn:
        waiting = {r[0] for r in conn.execute("SELECT seq FROM search_pending")}
    return fts_rows(path) | waiting


def fts_consistent(path: Path) -> None:
    """The index holds exactly one row per memory entry and per message, but for the
    messages waiting for theirs (each listed once, and only while it waits); nothing is
    left of deleted records, and the index is not corrupt."""
    with raw(path) as conn:
        conn.execute("INSERT INTO search_fts (search_fts) VALUES ('integrity-check')")
        messages = {r[0] for r in conn.execute("SELECT seq FROM messages")}
        memories = {-r[0] for r in conn.execute("SELECT rid FROM memories")}
        waiting = {r[0] for r in conn.execute("SELECT seq FROM search_pending")}
    indexed = fts_rows(path)
    assert indexed - messages == memories
    assert waiting <= messages
    assert not waiting & indexed
    assert (indexed & messages) | waiting == messages


def vectors_consistent(path: Path) -> None:
    """Every message and memory entry has one vector, filed under its owner, and no vector
    outlives its record (the memory under test embeds everything it stores)."""
    with raw(path) as conn:
        assert set(conn.execute("SELECT seq, uid FROM message_vectors")) == set(
            conn.execute("SELECT seq, uid FROM messages")
        )
        assert set(conn.execute("SELECT rid, uid FROM memory_vectors")) == set(
            conn.execute("SELECT rid, uid FROM memories")
        )


def counters(path: Path, user: str) -> dict[str, int]:
    """The user's vector change counters (all 0 for an unknown user)."""
    with raw(path) as conn:
        row = conn.execute(
            f"SELECT {', '.join(VECTOR_COUNTERS)} FROM users WHERE user_id = ?", (user,)
        ).fetchone()
    return dict(zip(VECTOR_COUNTERS, row or (0,) * len(VECTOR_COUNTERS), strict=True))


def unit_vectors(n: int, dimension: int = 384, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dimension)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


TOPICS = [
    "My sister adopted a small grey kitten from the animal shelter",
    "The quarterly tax return is due at the end of the month",
    "We hiked up the mountain trail and camped near the summit",
    "I am learning to bake sourdough bread with a new starter",
]


async def store(memory: SQLiteMemory, user: str, conv: str, texts: list[str]) -> list[Any]:
    msgs = [make_message(t, timestamp=at(i)) for i, t in enumerate(texts)]
    await memory.store_messages(msgs, conversation_id=conv, user_id=user)
    return msgs


# ==================================================================== engine set-up


async def test_wal_mode_and_synchronous_setting(db_path: Path) -> None:
    async with SQLiteMemory(db_path, synchronous="normal") as mem:
        await mem.store_message(make_message("hi"), "u", "c")
        assert await mem._submit(lambda c: c.execute("PRAGMA synchronous").fetchall()) == [(1,)]
        assert await mem._submit(
            lambda c: c.execute("PRAGMA query_only").fetchall(), mem._reader_pool
        ) == [(1,)]
        assert await mem._submit(lambda c: c.execute("PRAGMA foreign_keys").fetchall()) == [(1,)]
        # Set, whatever the build's default: deleted rows are overwritten with zeros.
        assert await mem._submit(lambda c: c.execute("PRAGMA secure_delete").fetchall()) == [(1,)]
        assert await mem._submit(
            lambda c: c.execute("PRAGMA secure_delete").fetchall(), mem._reader_pool
        ) == [(1,)]
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
    async with SQLiteMemory(db_path) as mem:
        # The default: FULL, so an acknowledged commit is on disk.
        assert await mem._submit(lambda c: c.execute("PRAGMA synchronous").fetchall()) == [(2,)]


def test_bad_options_are_refused(tmp_path: Path) -> None:
    for kwargs, argument in (
        ({"synchronous": "off"}, "synchronous"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"busy_timeout": "5"}, "busy_timeout"),
        ({"readers": 0}, "readers"),
        ({"vector_users": 0}, "vector_users"),
        ({"merge_on_delete": "no"}, "merge_on_delete"),
        ({"db_path": ""}, "db_path"),
        ({"db_path": 3}, "db_path"),
    ):
        kwargs.setdefault("db_path", tmp_path / "x.db")
        with pytest.raises(InvalidArgumentError) as info:
            SQLiteMemory(**kwargs)
        assert info.value.argument == argument


# ==================================================================== schema


async def test_schema_version_and_idempotent_migrations(db_path: Path) -> None:
    async with SQLiteMemory(db_path) as mem:
        await mem.store_message(make_message("hello"), "u", "c")
    for _ in range(2):  # reopening applies nothing again
        async with SQLiteMemory(db_path) as mem:
            assert len(await mem.retrieve_messages("c")) == 1
    with raw(db_path) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
        assert migrate(conn) == (LATEST_VERSION, LATEST_VERSION)


async def test_older_schema_is_migrated_and_its_rows_indexed(db_path: Path) -> None:
    # A file at version 1 (no full-text index), with data written then.
    with raw(db_path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        assert migrate(conn, target=1) == (0, 1)
        conn.execute("INSERT INTO users (uid, user_id) VALUES (1, 'alice')")
        conn.execute("INSERT INTO conversations (cid, conversation_id, uid) VALUES (1, 'c', 1)")
        rec = message_to_record(make_message("an old note about the lighthouse"), "c")
        conn.execute(INSERT_MESSAGE, message_row(rec, 1, 1))
        entry = memory_to_record(make_memory_entry("alice", "Alice keeps a lighthouse diary"))
        conn.execute(
            "INSERT INTO memories (id, uid, content, memory_type, category, tags, confidence, "
            "importance, created_us, expires_us, conversation_id, payload) "
            "VALUES (?, 1, ?, ?, ?, '[]', ?, ?, ?, ?, ?, ?)",
            (
                entry.id,
                entry.content,
                entry.memory_type,
                entry.category,
                entry.confidence,
                entry.importance,
                entry.created_us,
                entry.expires_us,
                entry.conversation_id,
                entry.payload,
            ),
        )
    async with SQLiteMemory(db_path) as mem:
        found = await mem.search("alice", "lighthouse")
        assert {r.kind for r in found} == {"message", "memory"}
        hits = await mem.search_messages("lighthouse", user_id="alice")
        assert [str(m.id) for m in hits] == [rec.id]
    with raw(db_path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchall() == [
            (LATEST_VERSION,)
        ]
    fts_consistent(db_path)


async def test_newer_schema_is_refused(db_path: Path) -> None:
    with raw(db_path) as conn:
        migrate(conn)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', 0)", (999,))
    mem = SQLiteMemory(db_path)
    with pytest.raises(SchemaError, match="999"):
        await mem.initialize()
    assert not mem.connected


async def test_index_is_rebuilt_when_the_text_analysis_changed(db_path: Path) -> None:
    async with SQLiteMemory(db_path) as mem:
        await store(mem, "u", "c", ["the gardener planted tulips"])
    with raw(db_path) as conn:
        # As if an older analysis had indexed different terms.
        conn.execute("UPDATE search_fts SET body = 'unrelated'")
        conn.execute("UPDATE settings SET value = 'older' WHERE name = 'analyzer'")
    async with SQLiteMemory(db_path) as mem:
        assert len(await mem.search_messages("tulip", user_id="u")) == 1
    fts_consistent(db_path)


# ==================================================================== full-text index upkeep


async def test_search_rows_follow_every_deletion(memory: SQLiteMemory, db_path: Path) -> None:
    alice, bob = new_user_id(), new_user_id()
    conv_a, conv_b = new_conversation_id(), new_conversation_id()
    system = make_message("You are a helpful otter", role="system", timestamp=at(0))
    await memory.store_messages([system], conversation_id=conv_a, user_id=alice)
    await store(memory, alice, conv_a, ["otters hold hands", "otters eat clams"])
    await store(memory, alice, conv_b, ["otters sleep floating"])
    await store(memory, bob, new_conversation_id(), ["bob likes otters too"])
    keep = make_memory_entry(alice, "Alice adores otters")
    gone = make_memory_entry(alice, "Alice once met an otter")
    expired = make_memory_entry(alice, "otter festival", expires_at=at(0).replace(year=2001))
    for entry in (keep, gone, expired):
        await memory.store_memory(entry)
    fts_consistent(db_path)
    vectors_consistent(db_path)
    before = len(search_rows(db_path))

    await memory.clear_history(conv_a)  # keeps the system message
    fts_consistent(db_path)
    vectors_consistent(db_path)
    assert len(search_rows(db_path)) == before - 2
    assert [m.content for m in await memory.retrieve_messages(conv_a)] == [system.content]

    await memory.delete_memory(str(gone.id))
    assert await memory.purge_expired() == 1
    fts_consistent(db_path)
    vectors_consistent(db_path)
    assert len(search_rows(db_path)) == before - 4

    await memory.clear_conversation(alice, conv_b)
    fts_consistent(db_path)
    vectors_consistent(db_path)
    await memory.forget_user(alice)
    fts_consistent(db_path)
    vectors_consistent(db_path)
    assert await memory.search(alice, "otters") == []
    assert [m.content for m in await memory.search_messages("otter", user_id=bob)] == [
        "bob likes otters too"
    ]
    with raw(db_path) as conn:
        assert conn.execute(
            "SELECT count(*) FROM users WHERE user_id = ?", (alice,)
        ).fetchall() == [(0,)]


async def test_replacing_a_memory_reindexes_it(memory: SQLiteMemory, db_path: Path) -> None:
    user = new_user_id()
    entry = make_memory_entry(user, "likes espresso")
    await memory.store_memory(entry)
    entry.content = "likes green tea"
    await memory.store_memory(entry)
    fts_consistent(db_path)
    vectors_consistent(db_path)
    assert await memory.search(user, "espresso", mode="keyword") == []
    found = await memory.search(user, "tea", mode="keyword")
    assert [r.memory.id for r in found if r.memory] == [entry.id]


async def keyword(memory: SQLiteMemory, user: str, query: str) -> list[str]:
    """The contents of the messages a keyword search finds."""
    return [
        r.message.content for r in await memory.search(user, query, mode="keyword") if r.message
    ]


def waiting(path: Path) -> int:
    with raw(path) as conn:
        return int(conn.execute("SELECT count(*) FROM search_pending").fetchone()[0])


async def test_messages_stored_alone_wait_and_any_instance_search_finds_them(
    db_path: Path,
) -> None:
    alice, conv = new_user_id(), new_conversation_id()
    async with SQLiteMemory(db_path) as writer, SQLiteMemory(db_path) as other:
        for i, text in enumerate(["walrus tusks", "narwhal horn"]):
            await writer.store_message(make_message(text, timestamp=at(i)), alice, conv)
        assert waiting(db_path) == 2  # acknowledged, durable, not in the index yet
        fts_consistent(db_path)
        # Another instance (or process) sees them waiting and indexes them before searching.
        assert await keyword(other, alice, "narwhal") == ["narwhal horn"]
        assert waiting(db_path) == 0
        fts_consistent(db_path)
        assert await keyword(writer, alice, "walrus") == ["walrus tusks"]


async def test_waiting_messages_are_indexed_in_batches_as_stores_go_on(
    memory: SQLiteMemory, db_path: Path
) -> None:
    user, conv = new_user_id(), new_conversation_id()
    for i in range(INDEX_EVERY + 10):
        await memory.store_message(make_message(f"note {i}", timestamp=at(i)), user, conv)
    # The message keyed INDEX_EVERY indexed the ones before it: ten wait.
    assert waiting(db_path) == 10
    fts_consistent(db_path)
    batch = [make_message(f"batch {i}", timestamp=at(1000 + i)) for i in range(3)]
    await memory.store_messages(batch, conversation_id=conv, user_id=user)
    assert waiting(db_path) == 10  # a batch writes its own rows at once
    fts_consistent(db_path)


async def test_a_key_taken_again_is_indexed_with_its_new_text(
    memory: SQLiteMemory, db_path: Path
) -> None:
    user, conv = new_user_id(), new_conversation_id()
    await store(memory, user, conv, ["alpha walrus one", "alpha walrus two"])  # indexed at once
    # A tool deletes the newest message by hand, leaving its search row behind; SQLite then
    # gives its key to the next message, which waits for its row.
    with raw(db_path) as conn:
        conn.execute("DELETE FROM messages WHERE seq = 2")
    await memory.store_message(make_message("beta narwhal", timestamp=at(5)), user, conv)
    with raw(db_path) as conn:
        assert conn.execute("SELECT seq FROM search_pending").fetchall() == [(2,)]
    assert await keyword(memory, user, "narwhal") == ["beta narwhal"]
    assert await keyword(memory, user, "walrus") == ["alpha walrus one"]
    fts_consistent(db_path)


async def test_fts_syntax_in_queries_is_plain_text(memory: SQLiteMemory) -> None:
    user = new_user_id()
    await store(memory, user, new_conversation_id(), ['say "NEAR" AND (or) NOT col:umn * ^x'])
    for query in ('"', '""', "NEAR(", "AND OR NOT", "col:umn", "*", "^x", "{a b}:c", "a'b", "\\"):
        await memory.search(user, query)  # never an FTS5 syntax error
    assert len(await memory.search_messages("near column", user_id=user)) == 1


# ==================================================================== ranked full text


def plain_ranking(path: Path, user: str, query: str, limit: int) -> list[tuple[str, float]]:
    """``(id, score)`` of the plain query's answer: every matching row ranked and joined."""
    with raw(path) as conn:
        uid = conn.execute(SELECT_USER, (user,)).fetchone()[0]
        rows = conn.execute(
            SEARCH_MESSAGES.format(extra=""), [match_expression(query, f"u{uid}"), uid, limit]
        ).fetchall()
    return [(row[0], row[-1]) for row in rows]


def ranked_statements(path: Path, user: str, query: str, limit: int) -> list[str]:
    """The ranked full-text statements a search of ``query`` runs: ``"split"`` (the most
    common term only adds to the others' rows) or ``"full"``."""
    seen: list[str] = []
    with raw(path) as conn:
        uid = conn.execute(SELECT_USER, (user,)).fetchone()[0]
        alone = conn.execute(ONLY_USER).fetchall() == [(uid,)]
        conn.set_trace_callback(seen.append)
        terms = DIALECT.search_terms(query)
        run_plan(conn, partial(fulltext.ranked_rows, terms, f"u{uid}", limit, alone=alone))
    return ["split" if "OR body :" in s else "full" for s in seen if "-rank" in s]


async def keyword_ranking(
    memory: SQLiteMemory, user: str, query: str, limit: int
) -> list[tuple[str, float]]:
    found = await memory.search(user, query, limit=limit, kinds=("message",), mode="keyword")
    hits = await memory._text_search(
        SearchRequest(user_id=user, query=query, kinds=frozenset({"message"}), limit=limit)
    )
    assert [str(r.message.id) for r in found if r.message] == [
        h.message.id for h in hits if h.message
    ]
    return [(h.message.id, h.score) for h in hits if h.message]


@pytest.fixture
async def keyword_memory(db_path: Path) -> AsyncIterator[SQLiteMemory]:
    """A store without an embedding model: thousands of messages stored in a blink."""
    mem = SQLiteMemory(db_path, embedding_model=None)
    try:
        yield mem
    finally:
        await mem.shutdown()


async def fill(memory: SQLiteMemory, user: str, texts: list[str]) -> None:
    for start in range(0, len(texts), 500):
        await store(memory, user, new_conversation_id(), texts[start : start + 500])


@pytest.mark.parametrize("others", [False, True])
@pytest.mark.parametrize("rare", [40, 3])
async def test_a_term_most_rows_hold_never_costs_the_best_matches(
    keyword_memory: SQLiteMemory, db_path: Path, rare: int, others: bool
) -> None:
    """'coffee' is in 1,200 of the user's 4,200 messages. With 40 'lighthouse' messages,
    the ten best are found among them (the rows holding only 'coffee' are never scored);
    with 3, the best also hold only 'coffee' and the full query runs. Either way the answer
    is the plain query's, scores and order, whether the user is alone in the store or
    another user's messages match too (and stay out)."""
    user = new_user_id()
    if others:
        await fill(keyword_memory, new_user_id(), ["lighthouse coffee coffee"] * 50)
    texts = [f"green tea number {i} in the garden" for i in range(3000 - rare)]
    texts += [f"coffee with milk number {i}" for i in range(1200)]
    texts += [f"the lighthouse keeper {i} drinks coffee" for i in range(rare)]
    memory = keyword_memory
    await fill(memory, user, texts)
    query = "lighthouse coffee"
    got = await keyword_ranking(memory, user, query, 10)
    want = plain_ranking(db_path, user, query, 10)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-12)
    assert ranked_statements(db_path, user, query, 10) == (
        ["split"] if rare == 40 else ["split", "full"]
    )
    with raw(db_path) as conn:  # the row count bm25() uses, read from the index's record
        rows, counts = run_plan(conn, partial(fulltext.term_order, DIALECT.search_terms(query)))
    extra = 50 if others else 0
    assert (rows, [n for _, n in counts]) == (4200 + extra, [rare + extra, 1200 + rare + extra])
    contents = [r.message.content for r in await memory.search(user, query, mode="keyword")]
    assert sum("lighthouse" in c for c in contents) == min(rare, 10)


@pytest.mark.parametrize("copies", [30, 200])
async def test_equal_scores_at_the_cut_are_broken_newest_first(
    memory: SQLiteMemory, db_path: Path, copies: int
) -> None:
    """Equal copies stored in an order unlike their timestamps: the ten newest by time
    come first, whether the tied group fits in the rows read (30) or not (200)."""
    user = new_user_id()
    seconds = list(range(copies))
    seconds.sort(key=lambda s: (s * 7919) % copies)  # stored out of time order
    msgs = [make_message("a red tulip", timestamp=at(s)) for s in seconds]
    await memory.store_messages(msgs, conversation_id=new_conversation_id(), user_id=user)
    found = await memory.search(user, "tulip", limit=10, mode="keyword")
    assert [r.message.timestamp for r in found if r.message] == [
        at(s) for s in range(copies - 1, copies - 11, -1)
    ]
    assert [i for i, _ in await keyword_ranking(memory, user, "tulip", 10)] == [
        i for i, _ in plain_ranking(db_path, user, "tulip", 10)
    ]


# ==================================================================== vectors


async def test_vector_changes_move_only_their_users_counters(
    memory: SQLiteMemory, db_path: Path
) -> None:
    user, other, conv = new_user_id(), new_user_id(), new_conversation_id()
    await store(memory, other, new_conversation_id(), ["someone else's note"])
    theirs = counters(db_path, other)

    def moved(messages: tuple[int, int], memories: tuple[int, int]) -> None:
        """(generation, epoch) of each kind."""
        assert counters(db_path, user) == dict(
            zip(VECTOR_COUNTERS, (*messages, *memories), strict=True)
        )

    await store(memory, user, conv, TOPICS[:2])  # an append: the generation only
    moved((1, 0), (0, 0))
    await store(memory, user, conv, TOPICS[2:])
    moved((2, 0), (0, 0))
    entry = make_memory_entry(user, "likes espresso")
    await memory.store_memory(entry)
    moved((2, 0), (1, 0))
    entry.content = "likes green tea"  # a replaced vector: the epoch too
    await memory.store_memory(entry)
    moved((2, 0), (2, 1))
    await memory.clear_history(conv)
    moved((3, 1), (2, 1))
    await memory.delete_memory(str(entry.id))
    moved((3, 1), (3, 2))
    await memory.store_memory(make_memory_entry(user, "old", expires_at=at(0)))
    assert await memory.purge_expired() == 1
    moved((3, 1), (5, 3))
    assert counters(db_path, other) == theirs  # nothing of theirs changed
    await memory.reindex()  # drops and replaces every vector: every user's epochs move
    assert counters(db_path, other)["message_vector_epoch"] > theirs["message_vector_epoch"]
    assert counters(db_path, user)["memory_vector_epoch"] > 3


async def test_store_of_the_previous_schema_gets_vectors_by_reindex(db_path: Path) -> None:
    # A file written at version 2 (before vectors), with messages and an entry.
    with raw(db_path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        assert migrate(conn, target=2) == (0, 2)
        recs = [
            message_to_record(make_message(t, timestamp=at(i)), "c") for i, t in enumerate(TOPICS)
        ]
        conn.execute("BEGIN")
        run_plan(conn, partial(append_group, DIALECT, [Append("c", "alice", recs, True)]))
        entry = memory_to_record(make_memory_entry("alice", "Alice bakes bread every Sunday"))
        run_plan(conn, partial(shared.put_memory, DIALECT, entry))
        conn.execute("COMMIT")
    async with SQLiteMemory(db_path) as mem:
        await mem.initialize()
        assert mem.schema_version == LATEST_VERSION
        assert mem.vector_space == await mem.embedder.space()  # recorded on first open
        # Old records: found by keywords, not by meaning until reindexed.
        assert len(await mem.search("alice", "kitten", mode="keyword")) == 1
        assert await mem.search("alice", "a cat for the family", mode="vector") == []
        puppy = make_message("we brought a puppy home", timestamp=at(9))
        await mem.store_message(puppy, "alice", "c")  # new records have vectors at once
        found = await mem.search("alice", "a cat for the family", mode="vector", limit=10)
        assert [r.message.id for r in found if r.message] == [puppy.id]

        assert await mem.reindex() == {"message": len(TOPICS) + 1, "memory": 1}
        found = await mem.search(
            "alice", "a cat for the family", mode="vector", limit=10, kinds=("message",)
        )
        assert found[0].message is not None and str(found[0].message.id) == recs[0].id
        assert len(found) == len(TOPICS) + 1
        found = await mem.search("alice", "baking loaves", mode="vector", kinds=("memory",))
        assert [str(r.memory.id) for r in found if r.memory] == [entry.id]
    vectors_consistent(db_path)


async def test_writes_of_another_instance_invalidate_the_cached_index(db_path: Path) -> None:
    """Two instances share only the file, as two processes would: each keeps its own copy
    of the user's vectors, which the other's writes must invalidate."""
    async with SQLiteMemory(db_path) as one, SQLiteMemory(db_path) as two:
        user, conv, other_conv = new_user_id(), new_conversation_id(), new_conversation_id()
        await store(one, user, conv, TOPICS)
        loads = one._vectors.cache

        async def nearest(query: str, **kw: Any) -> list[str]:
            found = await one.search(user, query, mode="vector", limit=10, **kw)
            return [str(r.message.id if r.message else r.memory.id) for r in found]  # type: ignore[union-attr]

        assert len(await nearest("a cat for the family")) == len(TOPICS)
        assert loads.loads == 1
        assert len(await nearest("a cat for the family")) == len(TOPICS)
        assert loads.loads == 1  # nothing changed: the copy is used as it is

        # An append elsewhere: the copy takes the new row and is not rebuilt.
        cat = make_message("our tabby cat sleeps all day", timestamp=at(20))
        await two.store_message(cat, user, other_conv)
        found = await nearest("a cat for the family")
        assert len(found) == len(TOPICS) + 1 and str(cat.id) in found
        assert loads.loads == 1

        # A deletion elsewhere: the copy is rebuilt without it.
        await two.clear_conversation(user, other_conv)
        assert str(cat.id) not in await nearest("a cat for the family")
        assert loads.loads == 2

        # A memory entry replaced elsewhere: its new vector is the one found.
        entry = make_memory_entry(user, "quarterly tax return")
        await one.store_memory(entry)
        assert await nearest("grey kitten", kinds=("memory",)) == [str(entry.id)]
        entry.content = "a grey kitten"
        await two.store_memory(entry)
        found = await one.search(user, "grey kitten", mode="vector", kinds=("memory",))
        assert [r.memory.id for r in found if r.memory] == [entry.id]
        assert found[0].score > 0.6

        # The user forgotten elsewhere: nothing left to find.
        await two.forget_user(user)
        assert await nearest("a cat for the family") == []


async def test_vectors_round_trip_as_float32(memory: SQLiteMemory, db_path: Path) -> None:
    user = new_user_id()
    msgs = await store(memory, user, new_conversation_id(), TOPICS)
    assert memory.embedder is not None
    expected = await memory.embedder.embed(TOPICS)
    with raw(db_path) as conn:
        blobs = dict(
            conn.execute(
                "SELECT m.id, v.vector FROM messages m JOIN message_vectors v ON v.seq = m.seq"
            ).fetchall()
        )
    for msg, row in zip(msgs, expected, strict=True):
        assert np.frombuffer(blobs[str(msg.id)], dtype="<f4").tolist() == row.tolist()
    # A search scores by cosine: the stored text itself scores 1.
    found = await memory.search(user, TOPICS[1], mode="vector", limit=1)
    assert found[0].message is not None and found[0].message.id == msgs[1].id
    assert found[0].score == pytest.approx(1.0, abs=1e-4)


# ==================================================================== query plans

_PLAN_OK_VIRTUAL = re.compile(r"^SCAN (f|search_fts) VIRTUAL TABLE INDEX \d+:(M|=)")


async def _populate(memory: SQLiteMemory, users: list[str]) -> None:
    for u, user in enumerate(users):
        for c in range(3):
            texts = [f"note {i} about kayaks and maps" for i in range(40 * (u + 1))]
            await store(memory, user, f"{user}-c{c}", texts)
        await memory.get_context(user, f"{user}-c0")
        for i in range(5):
            await memory.store_memory(
                make_memory_entry(user, f"fact {i} about kayaks", category="k", tags=["t"])
            )


def _plans(path: Path, calls: list[Callable[[sqlite3.Connection], object]]) -> dict[str, str]:
    """Every statement the calls executed, with its query plan."""
    statements: list[str] = []
    with raw(path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")  # the writes are rolled back afterwards
        conn.set_trace_callback(statements.append)
        for call in calls:
            call(conn)
        conn.set_trace_callback(None)
        plans = {}
        for sql in statements:
            if not re.match(r"\s*(SELECT|DELETE|UPDATE|INSERT INTO \w+ .*SELECT)", sql, re.I):
                continue
            if "sqlite_master" in sql or "'main'." in sql:
                continue  # the engine's own statements (schema, FTS5 shadow tables)
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            plans[sql] = "\n".join(r[3] for r in rows)
        conn.execute("ROLLBACK")
    return plans


def _vector_loads(conn: sqlite3.Connection, user: str) -> object:
    """The reads of a vector search: the user's counters, then every vector of each kind
    and the ones added after the first."""
    state = run_plan(conn, partial(ops.VECTORS.state, DIALECT, user))
    assert state is not None and state.message and state.memory
    for kind in ("message", "memory"):
        at = getattr(state, kind)
        assert run_plan(conn, partial(ops.VECTORS.load, DIALECT, kind, user, at, 4 * 384))
        run_plan(conn, partial(ops.VECTORS.added, DIALECT, kind, user, at, 1, 4 * 384))
    return state


def run(plan: Callable[..., Any], *args: Any) -> Callable[[sqlite3.Connection], object]:
    """A plan of the SQL family over SQLite's dialect, as a function of a connection."""
    return lambda conn: run_plan(conn, partial(plan, DIALECT, *args))


@pytest.mark.parametrize("analyzed", [False, True])
async def test_queries_use_indexes(memory: SQLiteMemory, db_path: Path, analyzed: bool) -> None:
    users = [new_user_id() for _ in range(3)]
    await _populate(memory, users)
    if analyzed:  # plans must not depend on statistics
        with raw(db_path) as conn:
            conn.execute("ANALYZE")
    user, conv = users[-1], f"{users[-1]}-c1"
    flt = MemoryFilter(user_id=user, memory_types=("semantic",), categories=("k",), tags=("t",))
    listing = [
        run(shared.read_window, conv, None, 20),
        run(shared.read_window, None, user, 20),
        run(shared.read_window, conv, user, 20),
        run(shared.read_window_and_marker, conv, user, 20, archive_marker(conv)),
        run(shared.read_window_and_marker, conv, None, 20, archive_marker(conv)),
        run(shared.conversation_owner, conv),
        run(shared.latest_session, user, None, True),
        run(shared.latest_session, user, conv, True),
        run(shared.query_memories, flt),
        run(shared.export_page, "messages", user, None, 50),
    ]
    other = [
        run(shared.get_messages, ["a", "b"]),
        run(shared.get_session, conv),
        run(shared.get_sessions, [archive_marker(conv), archive_marker(f"{user}-c2")]),
        run(shared.query_memories, MemoryFilter(None, ids=("m",), include_expired=True, limit=1)),
        run(shared.text_search, SearchRequest(user, "kayak maps", limit=5, memory_filter=flt)),
        run(shared.text_search, SearchRequest(user, "kayak", frozenset({"message"}), conv, 5)),
        run(shared.statistics, user),
        run(shared.export_page, "conversations", user, None, 50),
        run(shared.export_page, "memories", user, None, 50),
        run(shared.export_page, "sessions", user, None, 50),
        lambda c: _vector_loads(c, user),
        lambda c: run_plan(c, partial(ops.VECTORS.put, DIALECT, "message", [("a", b"")])),
        lambda c: run_plan(c, partial(ops.VECTORS.put, DIALECT, "memory", [("m", b"")])),
        run(append_group, [Append(conv, user, [message_to_record(make_message("x"), conv)], True)]),
        run(shared.delete_messages, conv, frozenset({"system"})),
        run(shared.delete_memory, "m", None),
        run(shared.purge_expired, 10**18),
        run(shared.forget_user, users[0]),
    ]
    ordered = _plans(db_path, listing)
    plans = {**ordered, **_plans(db_path, other)}
    assert len(plans) >= 20
    for sql, plan in plans.items():
        for line in plan.splitlines():
            if line.startswith("SCAN"):
                assert _PLAN_OK_VIRTUAL.match(line), f"full scan in {sql!r}:\n{plan}"
    for sql, plan in ordered.items():
        assert "TEMP B-TREE FOR ORDER BY" not in plan, f"sort instead of index: {sql!r}\n{plan}"


# ==================================================================== durability and processes

_WRITER_SCRIPT = writer_script(
    "from bruno_memstore.backends.sqlite import SQLiteMemory", "SQLiteMemory(path)"
)


@pytest.mark.slow
async def test_acknowledged_writes_survive_a_killed_process(db_path: Path) -> None:
    acked = await acknowledged_until_killed(_WRITER_SCRIPT, str(db_path), count=400)
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    async with SQLiteMemory(db_path) as mem:
        stored = await mem._get_messages(acked)
        assert {r.id for r in stored} == set(acked)
    fts_consistent(db_path)


_OPENER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from bruno_core.models.message import Message, MessageRole
    from bruno_memstore.backends.sqlite import SQLiteMemory

    async def main(path: str, me: str, start: float) -> None:
        time.sleep(max(0.0, start - time.time()))  # every process opens the new file at once
        async with SQLiteMemory(path) as memory:
            for i in range(150):
                shared = Message(role=MessageRole.USER, content=f"{me} in the shared room {i}")
                await memory.store_message(shared, "team", "shared")
                own = Message(role=MessageRole.USER, content=f"{me} alone {i}")
                await memory.store_message(own, me, f"room-{me}")

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
    """
)


@pytest.mark.slow
async def test_processes_share_one_new_file(db_path: Path) -> None:
    start = time.time() + 1.0
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _OPENER_SCRIPT,
            str(db_path),
            f"p{n}",
            str(start),
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(3)
    ]
    for proc in procs:
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    with raw(db_path) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in MIGRATIONS]  # each applied exactly once
    async with SQLiteMemory(db_path) as mem:
        assert len(await mem.retrieve_messages("shared")) == 450
        for n in range(3):
            assert len(await mem.retrieve_messages(f"room-p{n}")) == 150
        stats = await mem.get_statistics("team")
        assert stats["total_messages"] == 450
    fts_consistent(db_path)


async def test_two_instances_on_one_file(db_path: Path) -> None:
    async with SQLiteMemory(db_path) as one, SQLiteMemory(db_path) as two:
        user, conv = new_user_id(), new_conversation_id()

        async def write(mem: SQLiteMemory, tag: str) -> None:
            for i in range(60):
                await mem.store_message(make_message(f"{tag} {i}"), user, conv)

        await asyncio.gather(write(one, "one"), write(two, "two"))
        for mem in (one, two):  # each sees every acknowledged write of the other
            window = await mem.retrieve_messages(conv)
            assert len(window) == 120
            assert len({m.id for m in window}) == 120
        with pytest.raises(OwnershipError):
            await two.store_message(make_message("intruder"), new_user_id(), conv)
        await one.store_message(make_message("from one after that"), user, conv)
        assert (await two.retrieve_messages(conv, limit=1))[0].content == "from one after that"
    fts_consistent(db_path)


async def test_busy_database_is_transient_and_retried(db_path: Path) -> None:
    async with SQLiteMemory(db_path) as mem:
        await mem.store_message(make_message("first"), "u", "c")
    with raw(db_path) as blocker:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        impatient = SQLiteMemory(db_path, busy_timeout=0.05, retry=RetryPolicy(attempts=1))
        with pytest.raises(BackendError) as info:
            await impatient.store_message(make_message("blocked"), "u", "c")
        assert isinstance(info.value.cause, sqlite3.OperationalError)
        assert impatient._is_transient(info.value.cause)
        await impatient.shutdown()

        patient = SQLiteMemory(db_path, busy_timeout=0.05)  # retried with backoff
        asyncio.get_running_loop().call_later(0.3, blocker.rollback)
        await patient.store_message(make_message("after the wait"), "u", "c")
        assert [m.content for m in await patient.retrieve_messages("c")] == [
            "after the wait",
            "first",
        ]
        await patient.shutdown()


async def test_unreachable_file_is_unavailable(tmp_path: Path) -> None:
    mem = SQLiteMemory(tmp_path / "missing-dir" / "memory.db")
    with pytest.raises(BackendUnavailableError) as info:
        await mem.store_message(make_message("x"), "u", "c")
    assert "missing-dir" in str(info.value)
    assert not mem.connected


def test_constraint_failures_are_translated(tmp_path: Path) -> None:
    mem = SQLiteMemory(tmp_path / "x.db")
    err = mem._translate("store_message", sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert isinstance(err, ConflictError) and isinstance(err.cause, sqlite3.IntegrityError)
    err = mem._translate("store_message", UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate"))
    assert isinstance(err, InvalidArgumentError)


async def test_unpaired_surrogates_are_refused_without_writing(memory: SQLiteMemory) -> None:
    user, conv = new_user_id(), new_conversation_id()
    # bruno-core's Message refuses them in content; metadata values pass through to us.
    with pytest.raises(InvalidArgumentError):
        await memory.store_message(make_message("ok", metadata={"k": "bad \ud800"}), user, conv)
    assert await memory.retrieve_messages(conv) == []


# ==================================================================== grouped commits


async def test_a_failing_write_does_not_fail_its_group(memory: SQLiteMemory) -> None:
    owner, other = new_user_id(), new_user_id()
    taken = new_conversation_id()
    await memory.store_message(make_message("mine"), owner, taken)
    convs = [new_conversation_id() for _ in range(40)]
    results = await asyncio.gather(
        *(memory.store_message(make_message(f"m{i}"), other, c) for i, c in enumerate(convs)),
        memory.store_message(make_message("intruder"), other, taken),
        return_exceptions=True,
    )
    assert all(r is None for r in results[:-1])
    assert isinstance(results[-1], OwnershipError)
    assert [m.content for m in await memory.retrieve_messages(taken)] == ["mine"]
    for i, conv in enumerate(convs):
        assert [m.content for m in await memory.retrieve_messages(conv)] == [f"m{i}"]


async def test_a_write_that_ends_the_transaction_fails_alone(db_path: Path) -> None:
    # RAISE(ROLLBACK) rolls the whole group's transaction back, not just the job's savepoint:
    # the others must run again and be stored.
    # No embedding model: the writes reach the writer's queue at once, whatever the load.
    memory = SQLiteMemory(db_path, embedding_model=None)
    await memory.initialize()
    await memory._submit(
        lambda c: c.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.messages "
            "WHEN NEW.content = 'doomed' BEGIN SELECT RAISE(ROLLBACK, 'refused'); END"
        )
    )
    user = new_user_id()
    writers = [make_message(f"good {i}") for i in range(10)]
    writers.insert(4, make_message("doomed"))
    started, gate = threading.Event(), threading.Event()

    def hold(_conn: object) -> None:
        started.set()
        gate.wait(120)  # the bound only keeps a failing test from hanging

    # The writer runs this job alone and waits on the gate; the writes below queue up behind
    # it (submitted before it started, they would join its group instead).
    held = memory._submit(hold)
    assert await asyncio.to_thread(started.wait, 60)
    stores = [
        asyncio.ensure_future(memory.store_message(m, user, new_conversation_id())) for m in writers
    ]
    # Until every write waits in the writer's queue (a thread's queue: no event to await).
    while memory._writer._jobs.qsize() < len(writers):
        assert not held.done(), "the gate opened before the writes queued up"
        await asyncio.sleep(0.001)
    gate.set()
    await held
    results = await asyncio.gather(*stores, return_exceptions=True)
    assert [r for r in results if r is not None] == [results[4]]
    assert "refused" in str(results[4])
    assert (await memory.get_statistics(user))["total_messages"] == 10
    await memory.shutdown()


@pytest.mark.parametrize("vectors", ["inline", "deferred"])
async def test_a_lone_message_of_its_users_conversation_is_one_insert(
    db_path: Path, vectors: str
) -> None:
    # Deferred: the vector is attached after the write, so the message has none in it.
    options: dict[str, Any] = (
        {"vectors": "deferred"} if vectors == "deferred" else {"embedding_model": None}
    )
    memory = SQLiteMemory(db_path, **options)
    first, second, third = (make_message(f"m{i}", timestamp=at(i)) for i in range(3))
    await memory.store_message(first, "u", "c")
    await memory.flush()  # deferred: its vector written, so no job of the queue joins the next
    statements: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    await memory._submit(trace)
    await memory.store_message(second, "u", "c")
    await memory._submit(lambda c: c.set_trace_callback(None))
    # The user's own conversation: no look-up before the insert.
    expected = ["BEGIN IMMEDIATE", "INSERT INTO messages", "INSERT OR IGNORE INTO search_pending"]
    if vectors == "deferred":
        expected.append("INSERT OR IGNORE INTO vector_pending")
    # The store's transaction (in deferred mode the vectors' own may follow).
    heads = [s.split(" (")[0] for s in statements]
    start = heads.index("INSERT INTO messages") - 1
    assert heads[start : start + len(expected) + 1] == [*expected, "COMMIT"], statements
    await memory.store_message(second, "u", "c")  # stored already: nothing written
    with pytest.raises(OwnershipError):
        await memory.store_message(third, "v", "c")  # another user's conversation
    await memory.store_message(third, "u", "d")  # a new conversation
    assert [m.content for m in await memory.retrieve_context("u", conversation_id="c")] == [
        "m0",
        "m1",
    ]
    assert [m.content for m in await memory.retrieve_context("u", conversation_id="d")] == ["m2"]
    rows = memory._inline.execute("SELECT count(*) FROM search_pending").fetchall()
    assert rows == [(3,)]
    hits = await memory.search("u", "m1", kinds=("message",), mode="keyword")
    assert [h.message.content for h in hits] == ["m1"]
    await memory.shutdown()


async def test_concurrent_writers_share_commits(db_path: Path) -> None:
    # Without an embedding model: the model embeds one write after another, which spaces
    # their arrival at the writer by its own time per text.
    memory = SQLiteMemory(db_path, embedding_model=None)
    user, conv = new_user_id(), new_conversation_id()
    await memory.initialize()
    statements: list[str] = []
    await memory._submit(lambda c: c.set_trace_callback(statements.append))
    await asyncio.gather(
        *(memory.store_message(make_message(f"n{i}"), user, conv) for i in range(200))
    )
    await memory._submit(lambda c: c.set_trace_callback(None))
    commits = sum(1 for s in statements if s == "COMMIT")
    assert commits <= 20, f"{commits} commits for 200 concurrent writes"
    window = await memory.retrieve_messages(conv)
    assert len(window) == 200 and len({m.id for m in window}) == 200
    await memory.shutdown()


# ==================================================================== the event loop and threads


class Ticker:
    """A task that wakes every 2 ms and records when it ran.

    While it runs, the objects the test process held before are frozen out of the garbage
    collector's reach (``gc.freeze``): a full collection would otherwise scan the whole heap
    of a long test run (every module and fixture), a pause of the process that is no
    engine's doing.
    """

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ticker:
        gc.collect()
        gc.freeze()
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._done.set()
        assert self._task is not None
        await self._task
        gc.unfreeze()

    async def _run(self) -> None:
        while not self._done.is_set():
            self.ticks.append(time.perf_counter())
            await asyncio.sleep(0.002)

    def check(self, start: float, end: float, blocked: float = 0.0) -> None:
        """The loop ran all along, apart from ``blocked`` seconds of known work on it.

        A loop blocked by the engine shows one gap as long as the whole operation; a free
        one shows none longer than three quarters of it (or a quarter second), however
        loaded the machine (other processes and the engine's threads share the CPU and the
        GIL, and known work on the loop takes longer when the CPU is short).
        """
        inside = [t for t in self.ticks if start <= t <= end]
        gaps = [b - a for a, b in itertools.pairwise([start, *inside, end])]
        free = max(end - start - blocked, 0.0)
        assert len(inside) >= free / 0.2, f"{len(inside)} ticks in {free:.2f} s"
        allowed = blocked + max(0.25, free * 0.75)
        assert max(gaps) <= allowed, f"the loop stood still for {max(gaps):.3f} s of {free:.3f}"


async def test_event_loop_keeps_ticking_during_a_large_batch(db_path: Path) -> None:
    # Without an embedding model, whose time is not the engine's (the vectors of a large
    # batch are written by test_engine_work_runs_off_the_loop).
    memory = SQLiteMemory(db_path, embedding_model=None)
    await memory.initialize()
    msgs = [make_message(f"batch message {i} about sailing boats") for i in range(20_000)]
    started, cpu = time.perf_counter(), time.thread_time()
    for m in msgs:  # the validation the shared layer does on the loop before the engine runs
        message_to_record(m, "conv")
    validation, validation_cpu = time.perf_counter() - started, time.thread_time() - cpu
    async with Ticker() as ticker:
        t0, cpu = time.perf_counter(), time.thread_time()
        await memory.store_messages(msgs, conversation_id="conv", user_id="u")
        t1, loop_cpu = time.perf_counter(), time.thread_time() - cpu
    ticker.check(t0, t1, blocked=1.5 * validation)
    # The loop's own thread did the shared layer's work and little else (the engine's
    # inserts, several times as much, ran on the writer), whatever the load: CPU time does
    # not stretch when other processes take the cores.
    assert loop_cpu <= 2 * validation_cpu + 0.1, (loop_cpu, validation_cpu)
    assert len(await memory.retrieve_messages("conv", limit=5)) == 5
    await memory.shutdown()


async def test_engine_work_runs_off_the_loop(memory: SQLiteMemory) -> None:
    await memory.initialize()
    records = [
        message_to_record(make_message(f"direct batch {i} of kayak notes"), "c")
        for i in range(20_000)
    ]
    for rec, vec in zip(records, unit_vectors(len(records)), strict=True):
        rec.vector = vec
    async with Ticker() as ticker:
        t0 = time.perf_counter()
        await memory._append_messages("c", "u", records, enforce_owner=True)
        t1 = time.perf_counter()
        # The first search loads the user's 20,000 vectors (on the vector thread).
        found = await memory._vector_search(
            SearchRequest("u", "", frozenset({"message"}), limit=3), records[7].vector
        )
        t2 = time.perf_counter()
    ticker.check(t0, t1)
    ticker.check(t1, t2)
    assert found[0].message is not None and found[0].message.id == records[7].id


def _statement_threads(conn: sqlite3.Connection) -> list[int]:
    """The threads that run each statement on ``conn`` from now on."""
    threads: list[int] = []
    conn.set_trace_callback(lambda _sql: threads.append(threading.get_ident()))
    return threads


def test_a_lone_job_runs_once_in_its_own_transaction(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "lone.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    calls: list[str] = []

    def good(c: sqlite3.Connection) -> int:
        calls.append("good")
        assert c.in_transaction
        return c.execute("INSERT INTO t VALUES (1)").rowcount

    def bad(c: sqlite3.Connection) -> None:
        calls.append("bad")
        c.execute("INSERT INTO t VALUES (2)")
        raise ValueError("refused")

    assert run_group(conn, [good]) == [(None, 1)]
    ((error, value),) = run_group(conn, [bad])
    assert isinstance(error, ValueError) and value is None
    assert calls == ["good", "bad"]  # the failed job is not run again
    assert not conn.in_transaction
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]  # its write rolled back


async def test_a_lone_message_takes_the_short_append_and_the_rest_the_shared_one(
    memory: SQLiteMemory,
) -> None:
    first, second, third = (make_message(f"m{i}", timestamp=at(i)) for i in range(3))
    await memory.store_message(first, "u", "c")  # a new conversation: the shared append
    await memory.store_message(second, "u", "c")  # the short path
    await memory.store_message(second, "u", "c")  # stored already: nothing written
    with pytest.raises(OwnershipError):
        await memory.store_message(third, "v", "c")  # another user's conversation
    await memory.store_message(third, conversation_id="c")  # unattributed: joins it
    window = await memory.retrieve_context("u", conversation_id="c")
    assert [m.content for m in window] == ["m0", "m1", "m2"]
    rows = memory._inline.execute("SELECT count(*) FROM search_pending").fetchall()
    assert rows == [(3,)]  # each waits for its full-text row


async def test_a_users_conversation_window_walks_the_conversations_index(
    memory: SQLiteMemory,
) -> None:
    """A user's newest conversation must not make reading an older one of theirs scan it."""
    for conv in ("old", "new", "other"):
        msgs = [make_message(f"{conv} {i}", timestamp=at(i)) for i in range(30)]
        await memory.store_messages(
            msgs, conversation_id=conv, user_id="u" if conv != "other" else "v"
        )
    sql, args = shared.window(memory._sql, "old", "u", 20)
    steps = [row[3] for row in memory._inline.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
    assert any("messages_by_conversation" in s for s in steps), steps
    assert not any("messages_by_user" in s for s in steps), steps
    window = await memory.retrieve_context("u", conversation_id="old", limit=20)
    assert [m.content for m in window] == [f"old {i}" for i in range(10, 30)]
    assert await memory.retrieve_context("v", conversation_id="old") == []  # not v's


async def test_point_reads_run_on_the_loop_and_longer_ones_on_the_readers(
    memory: SQLiteMemory,
) -> None:
    msgs = [make_message(f"note {i}", timestamp=at(i)) for i in range(150)]
    await memory.store_messages(msgs, conversation_id="c", user_id="u")
    on_loop = _statement_threads(memory._inline)
    window = await memory.retrieve_context("u", conversation_id="c", limit=20)
    assert [str(m.id) for m in window] == [str(m.id) for m in msgs[-20:]]
    assert on_loop and set(on_loop) == {threading.get_ident()}
    on_loop.clear()
    everything = await memory.retrieve_messages("c", limit=150)  # longer than a point read
    assert len(everything) == 150 and on_loop == []


async def test_point_reads_from_another_threads_loop_use_the_readers(
    memory: SQLiteMemory,
) -> None:
    await memory.store_message(make_message("hello"), conversation_id="c", user_id="u")
    on_loop = _statement_threads(memory._inline)

    def elsewhere() -> list[str]:
        async def read() -> list[str]:
            return [m.content for m in await memory.retrieve_context("u", conversation_id="c")]

        return asyncio.run(read())

    assert await asyncio.to_thread(elsewhere) == ["hello"]
    assert on_loop == []  # the loop's connection belongs to this thread


async def test_a_slow_point_read_sends_the_next_ones_to_the_readers(
    memory: SQLiteMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await memory.store_message(make_message("hello"), conversation_id="c", user_id="u")
    on_loop = _statement_threads(memory._inline)
    monkeypatch.setattr(SQLiteMemory, "inline_budget", 0.0)  # every read is "too slow"
    monkeypatch.setattr(threaded, "thread_usage", _usage(waits=0, preemptions=0))
    await memory.retrieve_context("u", conversation_id="c")
    ran = len(on_loop)
    assert ran and memory._inline_paused_until > time.monotonic()
    assert len(await memory.retrieve_context("u", conversation_id="c")) == 1
    assert len(on_loop) == ran  # paused: the second read ran on a reader
    memory._inline_paused_until = 0.0
    monkeypatch.setattr(SQLiteMemory, "inline_budget", 60.0)
    await memory.retrieve_context("u", conversation_id="c")
    assert len(on_loop) > ran  # the pause over, reads run on the loop again


def _usage(*, waits: int, preemptions: int) -> Callable[[], tuple[float, int, int]]:
    """A thread's usage counters growing by ``waits`` and ``preemptions`` at each look,
    using no CPU."""
    looks = itertools.count()

    def usage() -> tuple[float, int, int]:
        n = next(looks)
        return 0.0, n * waits, n * preemptions

    return usage


@pytest.mark.parametrize(("waits", "paused"), [(1, True), (0, False)])
async def test_a_point_read_slow_only_for_a_preemption_stays_on_the_loop(
    memory: SQLiteMemory, monkeypatch: pytest.MonkeyPatch, waits: int, paused: bool
) -> None:
    """Past its budget, a read that waited pauses the loop's reads; one whose thread was only
    preempted meanwhile (the machine busy, not the read) does not."""
    await memory.store_message(make_message("hello"), conversation_id="c", user_id="u")
    on_loop = _statement_threads(memory._inline)
    monkeypatch.setattr(SQLiteMemory, "inline_budget", 0.0)
    monkeypatch.setattr(threaded, "thread_usage", _usage(waits=waits, preemptions=1))
    await memory.retrieve_context("u", conversation_id="c")
    ran = len(on_loop)
    assert ran
    assert (memory._inline_paused_until > time.monotonic()) is paused
    await memory.retrieve_context("u", conversation_id="c")
    assert (len(on_loop) == ran) is paused


def test_thread_usage_counts_this_threads_cpu() -> None:
    before = threaded.thread_usage()
    if sys.platform != "linux":
        assert before is None
        return
    assert before is not None
    spent = time.thread_time() + 0.02
    while time.thread_time() < spent:  # 20 ms of this thread's CPU, however busy the machine
        pass
    after = threaded.thread_usage()
    assert after is not None and after[0] > before[0] and after[1:] >= before[1:]


async def test_a_busy_database_sends_a_point_read_to_the_readers(
    memory: SQLiteMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the loop's connection reports "database is locked" (it never waits
    for a lock); the read is answered by a reader and the loop's reads pause."""
    await memory.store_message(make_message("hello"), conversation_id="c", user_id="u")
    inline = memory._inline

    class Locked:
        def execute(self, *args: Any) -> Any:
            raise sqlite3.OperationalError("database is locked")

        def __getattr__(self, name: str) -> Any:
            return getattr(inline, name)

    memory._inline = Locked()
    window = await memory.retrieve_context("u", conversation_id="c")
    assert [m.content for m in window] == ["hello"]
    assert memory._inline_paused_until > time.monotonic()
    memory._inline = inline


def _worker_threads(mem: SQLiteMemory) -> list[Any]:
    threads = [mem._writer._thread] if mem._writer else []
    for pool in (mem._reader_pool, mem._search_pool):
        if pool:
            threads += [t._thread for t in pool._threads]
    return threads


async def test_shutdown_joins_threads_and_initialize_reopens(db_path: Path) -> None:
    mem = SQLiteMemory(db_path, readers=3)
    await mem.store_message(make_message("before"), "u", "c")
    threads = _worker_threads(mem)
    # The writer, 3 readers, 3 for searches.
    assert len(threads) == 7 and all(t.is_alive() for t in threads)
    await mem.shutdown()
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(ClosedError):
        await mem.store_message(make_message("refused"), "u", "c")
    await mem.initialize()
    await mem.store_message(make_message("after"), "u", "c")
    assert [m.content for m in await mem.retrieve_messages("c")] == ["after", "before"]
    await mem.shutdown()


async def test_slow_searches_leave_window_reads_alone(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = SQLiteMemory(db_path, readers=2, embedding_model=None)
    await mem.store_message(make_message("quick read"), "light-user", "light")
    await mem.store_message(make_message("heavy words"), "heavy-user", "heavy")
    release, running = threading.Event(), threading.Semaphore(0)
    search = shared.text_search

    def held_search(*args: Any, **kwargs: Any) -> Any:
        # Stands for a search that takes long: it holds its thread until released.
        running.release()
        release.wait()
        return search(*args, **kwargs)

    monkeypatch.setattr(shared, "text_search", held_search)
    searches = [asyncio.create_task(mem.search("heavy-user", "heavy")) for _ in range(2)]
    try:
        for _ in searches:  # both are on a thread of their own now
            assert await asyncio.to_thread(running.acquire, timeout=60)
        read = asyncio.create_task(mem.retrieve_messages("light"))
        # The timeout only keeps a queued read from hanging the test.
        done, _ = await asyncio.wait(
            [read, *searches], timeout=60, return_when=asyncio.FIRST_COMPLETED
        )
        assert done == {read}  # answered while both searches still hold their threads
    finally:
        release.set()
    assert [m.content for m in read.result()] == ["quick read"]
    assert all(len(found) == 1 for found in await asyncio.gather(*searches))
    await mem.shutdown()


async def test_a_dropped_memory_ends_its_threads(db_path: Path) -> None:
    mem = SQLiteMemory(db_path)
    await mem.initialize()
    threads = _worker_threads(mem)
    del mem
    gc.collect()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


async def test_callers_on_different_event_loops(db_path: Path) -> None:
    mem = SQLiteMemory(db_path)
    await mem.store_message(make_message("from the test loop"), "u", "c")

    def elsewhere() -> list[str]:
        async def run() -> list[str]:
            await mem.store_message(make_message("from another loop"), "u", "c")
            return [m.content for m in await mem.retrieve_messages("c")]

        return asyncio.run(run())

    assert await asyncio.to_thread(elsewhere) == ["from another loop", "from the test loop"]
    await mem.shutdown()


# ==================================================================== URLs and repr


async def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_memory("sqlite:///data/rel.db")
    assert isinstance(rel, SQLiteMemory)
    assert rel.db_path == str(tmp_path / "data" / "rel.db")
    absolute = open_memory(f"sqlite:///{tmp_path}/abs.db?synchronous=normal&busy_timeout=2.5")
    assert isinstance(absolute, SQLiteMemory)
    assert absolute.db_path == str(tmp_path / "abs.db")
    assert (absolute.synchronous, absolute.busy_timeout) == ("normal", 2.5)
    tuned = open_memory(
        f"sqlite:///{tmp_path}/t.db?readers=3&context_window=5&vector_users=8", readers=1
    )
    assert isinstance(tuned, SQLiteMemory)
    # Keyword options win.
    assert (tuned.readers, tuned.context_window, tuned.vector_users) == (1, 5, 8)

    mem = open_memory("sqlite:///:memory:")
    assert isinstance(mem, SQLiteMemory) and mem.in_memory
    assert not mem.supports(Capability.DURABLE)
    async with mem:
        await mem.store_message(make_message("ephemeral"), "u", "c")
        assert len(await mem.search_messages("ephemeral", user_id="u")) == 1
    assert SQLiteMemory(tmp_path / "f.db").supports(Capability.DURABLE)

    for bad in (
        "sqlite://",
        "sqlite://host/x.db",
        "sqlite+pysqlite:///x.db",
        "sqlite:///x.db?unknown=1",
        "sqlite:///x.db?busy_timeout=soon",
        "sqlite:///x.db?synchronous=off",
    ):
        with pytest.raises(InvalidArgumentError):
            open_memory(bad)


async def test_repr_and_describe(tmp_path: Path) -> None:
    mem = SQLiteMemory(tmp_path / "r.db")
    assert mem.describe() == f"sqlite:///{tmp_path}/r.db"
    assert repr(mem) == f"SQLiteMemory(sqlite:///{tmp_path}/r.db)"
    assert repr(SQLiteMemory(":memory:")) == "SQLiteMemory(sqlite:///:memory:)"
    # The URL printed is one open_memory accepts, for the same file.
    for name in ("r.db", "odd name?#%.db"):
        mem = SQLiteMemory(tmp_path / name)
        again = open_memory(mem.describe())
        assert isinstance(again, SQLiteMemory) and again.db_path == mem.db_path


async def test_default_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with SQLiteMemory() as mem:
        await mem.store_message(make_message("x"), "u", "c")
    assert (tmp_path / "bruno_memory.db").exists()
    assert (tmp_path / "bruno_memory.db").stat().st_size > 0


# ------------------------------------------------------------------------------ erasure


def _files(db_path: Path) -> list[Path]:
    return [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]


def _wal_size(db_path: Path) -> int:
    return Path(f"{db_path}-wal").stat().st_size


async def test_erasure_leaves_no_words_in_the_files(db_path: Path) -> None:
    memory = SQLiteMemory(db_path, embedding_model=None)
    try:
        done = await run_erasures(memory)
        # While the store is open: the database file, its WAL and shared-memory index.
        found = find_in_files(_files(db_path), done.erased_words | done.kept)
        assert not set(found) & done.erased_words, found
        assert done.kept <= set(found)  # the look reaches the data
        assert _wal_size(db_path) == 0  # truncated after the erasure
    finally:
        await memory.shutdown()
    found = find_in_files(_files(db_path), done.erased_words | done.kept)
    assert not set(found) & done.erased_words, found
    assert done.kept <= set(found)


async def test_clear_history_and_purge_leave_no_words(db_path: Path) -> None:
    memory = SQLiteMemory(db_path, embedding_model=None)
    user, conv = new_user_id(), new_conversation_id()
    cleared, expired, kept = marker(), marker(), marker()
    try:
        await store(memory, user, conv, [f"about {cleared}", f"more {cleared}"])
        await memory.store_messages(
            [make_message(f"system {kept}", role="system")], conversation_id=conv, user_id=user
        )
        await memory.store_memory(
            make_memory_entry(user, f"gone {expired}", expires_at=at(0).replace(year=2001))
        )
        await memory.clear_history(conv)
        assert await memory.purge_expired() == 1
    finally:
        await memory.shutdown()
    found = find_in_files(_files(db_path), [cleared, expired, kept])
    assert set(found) == {kept}, found


async def test_a_reader_holding_the_wal_delays_its_truncation(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The documented limit: another connection reading an older snapshot keeps the WAL
    (and so the old pages) until the next complete checkpoint, which ``compact`` runs."""
    memory = SQLiteMemory(db_path, embedding_model=None, busy_timeout=0.2)
    user, word = new_user_id(), marker()
    try:
        await store(memory, user, new_conversation_id(), [f"the word {word}"])
        with raw(db_path) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM messages").fetchall()
            with caplog.at_level("WARNING"):
                await memory.forget_user(user)
            assert "WAL was not truncated" in caplog.text
            assert _wal_size(db_path) > 0
            reader.execute("COMMIT")
        await memory.compact()
        assert _wal_size(db_path) == 0
        assert find_in_files(_files(db_path), [word]) == {}
    finally:
        await memory.shutdown()


async def test_compact_erases_what_older_deletions_left(db_path: Path) -> None:
    """Rows deleted without ``secure_delete`` (by an older version, or another tool) leave
    their bytes in free pages and FTS5 segments; ``compact`` rewrites both."""
    memory = SQLiteMemory(db_path, embedding_model=None)
    user, word = new_user_id(), marker()
    await store(memory, user, new_conversation_id(), [f"the word {word}", "other words"])
    await memory.shutdown()
    with raw(db_path) as conn:
        conn.execute("PRAGMA secure_delete = OFF")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(
            "DELETE FROM search_fts WHERE rowid IN (SELECT seq FROM messages WHERE content LIKE ?)",
            (f"%{word}%",),
        )
        conn.execute("DELETE FROM messages WHERE content LIKE ?", (f"%{word}%",))
    assert word in find_in_files(_files(db_path), [word])  # the remains are there
    memory = SQLiteMemory(db_path, embedding_model=None)
    try:
        await memory.compact()
        assert len(await memory.retrieve_context(user, limit=10)) == 1
    finally:
        await memory.shutdown()
    assert find_in_files(_files(db_path), [word]) == {}


async def test_without_merge_on_delete_words_wait_for_compact(db_path: Path) -> None:
    """``merge_on_delete=False``: the erased words stay in the index's old segments (never
    searchable) until ``compact`` merges it; every other copy goes at once."""
    memory = SQLiteMemory(db_path, embedding_model=None, merge_on_delete=False)
    user, word = new_user_id(), marker()
    try:
        await store(memory, user, new_conversation_id(), [f"the word {word}", "other words"])
        await store(memory, new_user_id(), new_conversation_id(), ["filler " * 50] * 20)
        await memory.forget_user(user)
        assert await memory.search(user, word) == []
        with raw(db_path) as conn:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            rows = {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
        holding = {t for t, r in rows.items() if word.encode() in repr(r).encode()}
        assert holding == {"search_fts_data"}, holding  # the segments, and nothing else
        await memory.compact()
    finally:
        await memory.shutdown()
    assert find_in_files(_files(db_path), [word]) == {}
