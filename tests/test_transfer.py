"""JSON Lines export/import and copy: exact round trips, idempotency, refusals."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

import pytest
from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryEntry, MemoryMetadata, MemoryQuery, MemoryType
from bruno_core.models.message import Message, MessageRole, MessageType

from bruno_memstore import Capability, ConflictError, InMemoryStorage, OwnershipError
from bruno_memstore.base import MemoryBackend
from bruno_memstore.models import message_to_record
from bruno_memstore.transfer import (
    FORMAT_VERSION,
    ImportFormatError,
    copy,
    export_jsonl,
    import_jsonl,
)

Factory = Callable[[str], MemoryBackend]


def _sqlite(path: Path) -> MemoryBackend:
    from bruno_memstore.backends.sqlite import SQLiteMemory

    return SQLiteMemory(str(path))


@pytest.fixture(params=["memory", "sqlite"])
async def make_memory(request: pytest.FixtureRequest, tmp_path: Path):
    """Builds fresh, empty stores of one backend kind; closes them at the end."""
    made: list[MemoryBackend] = []

    def make(name: str) -> MemoryBackend:
        if request.param == "memory":
            memory: MemoryBackend = InMemoryStorage()
        else:
            memory = _sqlite(tmp_path / f"{name}.db")
        made.append(memory)
        return memory

    yield make
    for memory in made:
        await memory.shutdown()


T0 = datetime(2025, 3, 3, 9, 0, 0, 123456)


async def populate(memory: MemoryBackend) -> None:
    """Two users, every record kind, and the awkward cases the format must carry exactly."""
    # alice: a session-backed conversation with ties, unicode, nested metadata, a reply chain.
    ctx = await memory.get_context("alice", "trip")
    assert ctx.conversation_id == "trip"
    first = Message(
        role=MessageRole.USER,
        content='Plan Kyoto 🌸 — "quotes", \\backslash, \'; DROP TABLE x; -- {"json": 1}',
        timestamp=T0,
        metadata={"day": "Mon", "nested": {"list": [1, 2.5, None, True], "ü": "ß"}},
    )
    tied = [
        Message(role=MessageRole.ASSISTANT, content=f"tie {i}", timestamp=T0 + timedelta(seconds=1))
        for i in range(3)
    ]
    await memory.store_messages([first], conversation_id="trip", user_id="alice")
    for msg in tied:  # equal timestamps: arrival order is the order
        await memory.store_message(msg, "alice", "trip")
    reply = Message(
        role=MessageRole.USER,
        content="x" * 5000,
        message_type=MessageType.COMMAND,
        timestamp=T0 + timedelta(seconds=2),
        parent_id=first.id,
    )
    await memory.store_message(reply, "alice", "trip")
    # Offsets kept, naive stays naive.
    aware = Message(
        role=MessageRole.ASSISTANT,
        content="aware timestamp",
        timestamp=datetime(2025, 3, 3, 18, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    )
    await memory.store_message(aware, "alice", "trip")
    await memory.end_session("trip")

    # alice: a second session with metadata and state, in a fresh conversation.
    session = await memory.create_session("alice", metadata={"device": "phone", "n": [1, {}]})
    await memory.store_message(
        Message(role=MessageRole.SYSTEM, content="You are helpful.", timestamp=T0),
        "alice",
        session.conversation_id,
    )
    # alice: a conversation that ends up empty (no messages, no session).
    await memory.store_message(
        Message(role=MessageRole.USER, content="soon gone", metadata={"user_id": "alice"}),
        "scratch",
    )
    await memory.clear_history("scratch")

    # bob: his own conversation and memories.
    await memory.store_message(
        Message(role=MessageRole.USER, content="bob's note about Lisbon", timestamp=T0),
        "bob",
        "bob-conv",
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    entries = [
        MemoryEntry(
            content="Alice is vegetarian",
            memory_type=MemoryType.LONG_TERM,
            user_id="alice",
            conversation_id="trip",
            metadata=MemoryMetadata(
                source="conversation",
                category="diet",
                tags=["food", "preference"],
                confidence=0.95,
                importance=0.8,
                embedding=[0.1, -0.25, 1e-7],
                related_memories=[uuid4()],
                custom_fields={"nested": {"a": [1, "b"]}, "emoji": "🍣"},
            ),
        ),
        MemoryEntry(
            content="expired reminder",
            memory_type=MemoryType.SHORT_TERM,
            user_id="alice",
            expires_at=now - timedelta(hours=1),
        ),
        MemoryEntry(content="Bob likes fado", memory_type=MemoryType.FACT, user_id="bob"),
    ]
    for entry in entries:
        await memory.store_memory(entry)


async def export_text(memory: MemoryBackend, user_id: str | None = None) -> str:
    buf = io.StringIO()
    await export_jsonl(memory, buf, user_id)
    return buf.getvalue()


async def import_text(memory: MemoryBackend, text: str):
    return await import_jsonl(memory, io.StringIO(text))


# ==================================================================== round trip


async def test_round_trip_is_byte_identical(make_memory: Factory) -> None:
    source = make_memory("source")
    await populate(source)
    first = await export_text(source)

    target = make_memory("target")
    counts = await import_text(target, first)
    second = await export_text(target)

    assert second == first
    lines = [json.loads(line) for line in first.splitlines()]
    assert lines[0] == {"type": "header", "format": "bruno-memstore", "version": FORMAT_VERSION}
    kinds = [line["type"] for line in lines[1:]]
    # File order: conversations, sessions, messages, memories.
    assert kinds == sorted(kinds, key=["conversation", "session", "message", "memory"].index)
    assert counts.conversations == kinds.count("conversation") == 4
    assert counts.sessions == kinds.count("session") == 2
    assert counts.messages == kinds.count("message") == 8
    assert counts.memories == kinds.count("memory") == 3
    assert counts.existing_messages == 0


async def test_imported_records_equal_the_originals(make_memory: Factory) -> None:
    source = make_memory("source")
    await populate(source)
    target = make_memory("target")
    await import_text(target, await export_text(source))

    for user, conv in (("alice", "trip"), ("bob", "bob-conv")):
        want = await source.retrieve_context(user, conversation_id=conv, limit=100)
        got = await target.retrieve_context(user, conversation_id=conv, limit=100)
        assert got == want
    ties = [
        m.content for m in await target.retrieve_messages("trip") if m.content.startswith("tie")
    ]
    assert ties == ["tie 2", "tie 1", "tie 0"]  # newest first; arrival order kept on the tie
    for user in ("alice", "bob"):
        stats_a, stats_b = await source.get_statistics(user), await target.get_statistics(user)
        stats_a.pop("backend"), stats_b.pop("backend")
        assert stats_b == stats_a
        query = MemoryQuery(user_id=user, include_expired=True, limit=100)
        assert await target.retrieve_memories(query) == await source.retrieve_memories(query)
    assert await target.get_session("trip") == await source.get_session("trip")
    assert (await target.get_session("trip")).is_active is False
    hits = await target.search("alice", "vegetarian", mode="keyword")
    assert [h.kind for h in hits] == ["memory"]
    if target.embedder is not None:  # imported records are embedded like stored ones
        near = await target.search("alice", "vegetarian", mode="vector", kinds=("memory",))
        assert [h.kind for h in near][:1] == ["memory"]


async def test_import_twice_stores_one_copy(make_memory: Factory) -> None:
    source = make_memory("source")
    await populate(source)
    text = await export_text(source)
    target = make_memory("target")
    await import_text(target, text)
    again = await import_text(target, text)
    assert again.existing_messages == again.messages == 8
    assert await export_text(target) == text
    assert (await target.get_statistics("alice"))["total_messages"] == 7


async def test_user_scoped_export(make_memory: Factory) -> None:
    source = make_memory("source")
    await populate(source)
    text = await export_text(source, "bob")
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["user_id"] == "bob"
    owners = {line.get("user_id") for line in lines[1:] if line["type"] != "message"}
    assert owners == {"bob"}
    assert [m["content"] for m in lines if m["type"] == "message"] == ["bob's note about Lisbon"]

    target = make_memory("target")
    await import_text(target, text)
    assert (await target.get_statistics("alice"))["total_messages"] == 0
    assert (await target.get_statistics("bob"))["memories"] == 1


async def test_copy_between_backends(tmp_path: Path) -> None:
    src = InMemoryStorage()
    await populate(src)
    dst = _sqlite(tmp_path / "copy.db")
    back = InMemoryStorage()
    try:
        counts = await copy(src, dst)
        assert counts.messages == 8 and counts.memories == 3
        assert (await copy(src, dst)).existing_messages == 8  # copying again is a no-op
        await copy(dst, back)
        # Each backend exports in its own record order; per-conversation order is common.
        assert canonical(await export_text(dst)) == canonical(await export_text(src))
        assert canonical(await export_text(back)) == canonical(await export_text(src))
    finally:
        await dst.shutdown()


def canonical(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """An export with each backend's own record order factored out.

    Records of every kind as a sorted list, plus each conversation's messages in file order
    (the order that must survive any copy).
    """
    records: list[str] = []
    per_conversation: dict[str, list[str]] = {}
    for line in text.splitlines():
        obj = json.loads(line)
        records.append(line)
        if obj["type"] == "message":
            per_conversation.setdefault(obj["conversation_id"], []).append(obj["id"])
    return sorted(records), per_conversation


@asynccontextmanager
async def _server_urls(engine: str) -> AsyncIterator[tuple[str, str]]:
    """Two URLs naming fresh, empty stores on a running server; removed afterwards."""
    tag = f"transfer_{uuid4().hex[:12]}"
    if engine == "postgresql":
        import asyncpg

        base = "postgresql://postgres@127.0.0.1:5432/test"
        try:
            yield f"{base}?schema={tag}_a", f"{base}?schema={tag}_b"
        finally:
            conn = await asyncpg.connect(base)
            try:
                for name in (f"{tag}_a", f"{tag}_b"):
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            finally:
                await conn.close()
    elif engine == "mysql":
        import asyncmy

        conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", password="")
        try:
            async with conn.cursor() as cur:
                for name in (f"{tag}_a", f"{tag}_b"):
                    await cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            yield (
                f"mysql://root@127.0.0.1:3306/{tag}_a",
                f"mysql://root@127.0.0.1:3306/{tag}_b",
            )
        finally:
            async with conn.cursor() as cur:
                for name in (f"{tag}_a", f"{tag}_b"):
                    await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            conn.close()
    else:
        import redis.asyncio as aioredis

        try:
            yield (
                f"redis://127.0.0.1:6379/0?prefix={tag}_a",
                f"redis://127.0.0.1:6379/0?prefix={tag}_b",
            )
        finally:
            client = aioredis.Redis(host="127.0.0.1", port=6379, db=0)
            try:
                keys = [k async for k in client.scan_iter(match=f"*{tag}*", count=1000)]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()


async def check_copy_round_trip(server: Any, again: Any) -> None:
    """Copy the populated store into ``server`` (twice: the second finds everything), back
    out to memory, and ``server``'s export into ``again``: the same records everywhere, and
    within one backend kind a byte-identical file. Both are shut down afterwards."""
    src, back = InMemoryStorage(), InMemoryStorage()
    await populate(src)
    try:
        counts = await copy(src, server)
        assert (counts.conversations, counts.messages, counts.memories) == (4, 8, 3)
        assert (await copy(src, server)).existing_messages == 8
        await copy(server, back)
        original = canonical(await export_text(src))
        assert canonical(await export_text(server)) == original
        assert canonical(await export_text(back)) == original
        exported = await export_text(server)
        await import_text(again, exported)
        assert await export_text(again) == exported
    finally:
        await server.shutdown()
        await again.shutdown()


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
async def test_copy_through_server_backends(engine: str) -> None:
    from bruno_memstore import open_memory

    async with _server_urls(engine) as (url_a, url_b):
        await check_copy_round_trip(open_memory(url_a), open_memory(url_b))


async def test_copy_to_and_from_weaviate(weaviate_fake: Any) -> None:
    """Through the fake Weaviate (tests/fakes/weaviate), driven by the official client."""
    from bruno_memstore.backends.weaviate import WeaviateMemory
    from bruno_memstore.url import MemoryURL

    tag = f"Transfer{uuid4().hex[:12]}"
    url = MemoryURL.parse(weaviate_fake.url)
    await check_copy_round_trip(
        WeaviateMemory.from_url(url, prefix=f"{tag}A"),
        WeaviateMemory.from_url(url, prefix=f"{tag}B"),
    )


async def test_copy_one_user(make_memory: Factory) -> None:
    src, dst = make_memory("src"), make_memory("dst")
    await populate(src)
    counts = await copy(src, dst, user_id="alice")
    assert counts.conversations == 3
    assert (await dst.get_statistics("bob"))["total_messages"] == 0
    assert await export_text(dst, "alice") == (await export_text(src, "alice"))


async def test_progress_reports_every_record(make_memory: Factory) -> None:
    source = make_memory("source")
    await populate(source)
    seen: dict[str, int] = {}

    def progress(kind: str, n: int) -> None:
        seen[kind] = seen.get(kind, 0) + n

    buf = io.StringIO()
    await export_jsonl(source, buf, progress=progress)
    assert seen == {"conversation": 4, "session": 2, "message": 8, "memory": 3}
    seen.clear()
    buf.seek(0)
    await import_jsonl(make_memory("target"), buf, progress=progress)
    assert seen == {"conversation": 4, "session": 2, "message": 8, "memory": 3}


class _Stream(io.StringIO):
    """A pipe: readable once, not seekable."""

    def seekable(self) -> bool:
        return False


async def test_import_from_a_stream(make_memory: Factory) -> None:
    source = make_memory("source")
    await populate(source)
    text = await export_text(source)
    target = make_memory("target")
    await import_jsonl(target, _Stream(text))
    assert await export_text(target) == text


# ==================================================================== refusals


async def _assert_nothing_written(memory: MemoryBackend) -> None:
    for user in ("alice", "bob"):
        stats = await memory.get_statistics(user)
        assert (stats["total_messages"], stats["sessions"], stats["memories"]) == (0, 0, 0)


def _line(**fields: object) -> str:
    return json.dumps(fields)


_STRAY_MESSAGE = _line(
    type="message",
    id=str(uuid4()),
    conversation_id="nowhere",
    role="user",
    content="hi",
    message_type="text",
    timestamp="2025-01-01T00:00:00",
    metadata={},
    parent_id=None,
)


@pytest.mark.parametrize(
    ("mutate", "line", "problem"),
    [
        (lambda lines: lines.insert(3, "{not json"), 4, "not JSON"),
        (
            lambda lines: lines.__setitem__(0, _line(type="header", format="other", version=1)),
            1,
            "not a bruno-memstore export",
        ),
        (
            lambda lines: lines.__setitem__(
                0, _line(type="header", format="bruno-memstore", version=99)
            ),
            1,
            "unsupported format version 99",
        ),
        (lambda lines: lines.pop(0), 1, "first line must be the format header"),
        (lambda lines: lines.append(_line(type="mystery")), None, "unknown record type"),
        (
            lambda lines: lines.append(
                _line(type="memory", content="x", memory_type="fact", user_id="bob", colour="red")
            ),
            None,
            "colour",
        ),
        (
            lambda lines: lines.append(
                _line(type="memory", content="x", memory_type="bogus", user_id="bob")
            ),
            None,
            "memory_type",
        ),
        (lambda lines: lines.append(_STRAY_MESSAGE), None, "no earlier line"),
        (
            lambda lines: lines.append(_line(type="conversation", id="trip", user_id="mallory")),
            None,
            "two owners",
        ),
    ],
    ids=[
        "not-json",
        "other-format",
        "future-version",
        "no-header",
        "unknown-type",
        "unknown-field",
        "bad-enum",
        "undeclared-conversation",
        "two-owners",
    ],
)
async def test_malformed_file_writes_nothing(
    make_memory: Factory, mutate: Callable[[list[str]], None], line: int | None, problem: str
) -> None:
    source = make_memory("source")
    await populate(source)
    lines = (await export_text(source)).splitlines()
    mutate(lines)
    target = make_memory("target")
    with pytest.raises(ImportFormatError) as info:
        await import_text(target, "\n".join(lines) + "\n")
    assert problem in str(info.value)
    assert info.value.line == (line if line is not None else len(lines))
    assert isinstance(info.value, ValueError)
    await _assert_nothing_written(target)


async def test_empty_file_is_refused(make_memory: Factory) -> None:
    with pytest.raises(ImportFormatError, match="no format header"):
        await import_text(make_memory("target"), "\n")


async def test_import_refuses_another_users_conversation(make_memory: Factory) -> None:
    source = make_memory("source")
    await populate(source)
    target = make_memory("target")
    await target.store_message(Message(role=MessageRole.USER, content="mine"), "mallory", "trip")
    with pytest.raises(OwnershipError):
        await import_text(target, await export_text(source))
    assert [m.content for m in await target.retrieve_messages("trip")] == ["mine"]


async def test_copy_into_itself_is_refused() -> None:
    memory = InMemoryStorage()
    with pytest.raises(ValueError, match="same store"):
        await copy(memory, memory)


async def test_session_lines_carry_the_whole_session(make_memory: Factory) -> None:
    source = make_memory("source")
    session = SessionContext(
        user_id="carol", state={"topic": "packing", "step": 2}, metadata={"client": "cli"}
    )
    await source.create_session("carol")  # another one, so order matters too
    await source.save_session(session)  # with its state, as an import writes it
    lines = [json.loads(x) for x in (await export_text(source)).splitlines()]
    exported = [
        x for x in lines if x["type"] == "session" and x["session_id"] == session.session_id
    ]
    assert exported and exported[0]["state"] == {"topic": "packing", "step": 2}
    target = make_memory("target")
    await import_text(target, await export_text(source))
    assert await target.get_session(session.session_id) == session


async def test_export_from_a_store_that_cannot_list_writes_nothing() -> None:
    from bruno_memstore import CapabilityError, open_memory

    memcached = open_memory("memcached://127.0.0.1:11211")
    assert not memcached.supports(Capability.LISTING)
    buf = io.StringIO()
    with pytest.raises(CapabilityError, match="listing"):
        await export_jsonl(memcached, buf)
    assert buf.getvalue() == ""
    with pytest.raises(CapabilityError):
        await copy(memcached, InMemoryStorage())


# ==================================================================== all or nothing


def _of_type(text: str, line_type: str) -> list[dict[str, Any]]:
    return [x for x in map(json.loads, text.splitlines()) if x["type"] == line_type]


async def _take(memory: MemoryBackend, what: str, text: str) -> None:
    """Make the store refuse the last record of kind ``what`` in ``text``: mallory has it."""
    mine = Message(role=MessageRole.USER, content="mallory's")
    if what == "conversation":
        await memory.store_message(mine, "mallory", _of_type(text, "conversation")[-1]["id"])
    elif what == "session":
        session_id = _of_type(text, "session")[-1]["session_id"]
        await memory.save_session(
            SessionContext(session_id=session_id, user_id="mallory", conversation_id="m-conv")
        )
    elif what == "memory":
        entry_id = _of_type(text, "memory")[-1]["id"]
        entry = MemoryEntry(id=entry_id, content="mine", user_id="mallory", memory_type="fact")
        await memory.store_memory(entry)
    else:  # the same message id with other content
        message_id = _of_type(text, "message")[-1]["id"]
        await memory.store_message(mine.model_copy(update={"id": UUID(message_id)}), "mallory", "m")


@pytest.mark.parametrize("what", ["conversation", "session", "memory", "message"])
async def test_a_refused_import_writes_nothing(make_memory: Factory, what: str) -> None:
    source = make_memory("source")
    await populate(source)
    text = await export_text(source)
    target = make_memory("target")
    await _take(target, what, text)
    before = await export_text(target)
    with pytest.raises(OwnershipError if what != "message" else ConflictError):
        await import_text(target, text)
    assert await export_text(target) == before  # no claimed, empty conversation either


async def test_what_an_import_checks_is_public(make_memory: Factory) -> None:
    """The reads and checks an import makes before writing: owners, entries, conflicts."""
    memory = make_memory("checks")
    message = Message(role=MessageRole.USER, content="hello", timestamp=T0)
    assert await memory.conversation_owner("c1") is None
    await memory.store_message(message, "alice", "c1")
    assert await memory.conversation_owner("c1") == "alice"
    entry = MemoryEntry(content="likes tea", memory_type=MemoryType.FACT, user_id="bob")
    assert await memory.get_memory(str(entry.id)) is None
    await memory.store_memory(entry)
    found = await memory.get_memory(entry.id)  # type: ignore[arg-type]
    assert found is not None and (found.user_id, found.content) == ("bob", "likes tea")

    same = message_to_record(message, "c1")
    await memory.check_conflicts([same])  # the stored message itself: no conflict
    other = message.model_copy(update={"content": "changed"})
    for record in (message_to_record(other, "c1"), message_to_record(message, "c2")):
        with pytest.raises(ConflictError):
            await memory.check_conflicts([record])
    assert [m.content for m in await memory.retrieve_messages("c1")] == ["hello"]
    assert await memory.conversation_owner("c2") is None


async def test_a_refused_stream_writes_nothing(make_memory: Factory) -> None:
    source = make_memory("source")
    await populate(source)
    text = await export_text(source)
    target = make_memory("target")
    await _take(target, "memory", text)
    before = await export_text(target)
    with pytest.raises(OwnershipError):
        await import_jsonl(target, _Stream(text))
    assert await export_text(target) == before


def _meanwhile(url: str, action: Callable[[MemoryBackend], Awaitable[None]]) -> None:
    """Run ``action`` on another store at ``url``, from another thread, to completion: a
    second writer acting while an import is under way."""
    from bruno_memstore import open_memory

    failures: list[BaseException] = []

    def run() -> None:
        async def main() -> None:
            other = open_memory(url)
            try:
                await action(other)
            finally:
                await other.shutdown()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported in the importing thread
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and not failures, failures


@asynccontextmanager
async def _shared_store(engine: str, tmp_path: Path) -> AsyncIterator[str]:
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        async with _server_urls(engine) as (url, _unused):
            yield url


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
@pytest.mark.parametrize("stage", ["conversation", "memory"])
async def test_an_import_failing_midway_removes_what_it_created(
    engine: str, stage: str, tmp_path: Path
) -> None:
    """Another writer takes a record of the file after the checks: the import fails while
    writing and removes the conversations and memory entries it created; alice's conversation
    that existed before stays, with what the import added to it."""
    from bruno_memstore import open_memory

    source = InMemoryStorage()
    await populate(source)
    text = await export_text(source)
    conversations = _of_type(text, "conversation")
    async with _shared_store(engine, tmp_path) as url:
        target = open_memory(url)
        try:
            await target.store_message(
                Message(role=MessageRole.USER, content="mine"), "alice", "trip"
            )
            fired: list[str] = []

            def progress(kind: str, _n: int) -> None:
                # After the first write of the stage before the one that will fail.
                trigger = "conversation" if stage == "conversation" else "message"
                if kind == trigger and not fired:
                    fired.append(kind)
                    _meanwhile(url, lambda other: _take(other, stage, text))

            with pytest.raises(OwnershipError):
                await import_jsonl(target, io.StringIO(text), progress)
            assert fired
            after = await export_text(target)
            kept = {(c["id"], c["user_id"]) for c in _of_type(after, "conversation")}
            if stage == "conversation":
                assert kept == {("trip", "alice"), (conversations[-1]["id"], "mallory")}
            else:
                assert kept == {("trip", "alice")}
            # Only records of conversations that existed before stay (trip's, added to it).
            assert {m["conversation_id"] for m in _of_type(after, "message")} <= {
                "trip",
                conversations[-1]["id"],
            }
            assert {x["conversation_id"] for x in _of_type(after, "session")} <= {"trip"}
            assert {m["user_id"] for m in _of_type(after, "memory")} <= {"mallory"}
            trip = [
                m["content"] for m in _of_type(after, "message") if m["conversation_id"] == "trip"
            ]
            assert "mine" in trip
            # Running it again once the other writer is gone completes it.
            if stage == "memory":
                entry_id = _of_type(text, "memory")[-1]["id"]
                await target.delete_memory(entry_id, user_id="mallory")
                await import_jsonl(target, io.StringIO(text))
                done = canonical(await export_text(target))
                assert set(canonical(text)[0]) <= set(done[0]) | {
                    x for x in canonical(text)[0] if '"conversation"' in x and "trip" in x
                }
        finally:
            await target.shutdown()


async def test_copy_to_and_from_pinecone(pinecone_fake: Any) -> None:
    """Pinecone (the fake index, driven by the official SDK) as either end of a copy."""
    from bruno_memstore import open_memory
    from bruno_memstore.backends.pinecone import PineconeMemory

    tag = uuid4().hex[:12]
    key = quote("fake-pinecone-key", safe="")
    url = f"pinecone://:{key}@bruno-memory?host={quote(pinecone_fake.host)}&namespace=a{tag}"
    server = open_memory(url, embedding_model=None)
    assert isinstance(server, PineconeMemory)
    again = PineconeMemory(
        None, host=pinecone_fake.host, api_key="fake-pinecone-key", namespace=f"b{tag}"
    )
    await check_copy_round_trip(server, again)
