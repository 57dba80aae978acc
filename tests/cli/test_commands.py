"""Every ``bruno-memstore`` command, run in process through typer's CliRunner."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from bruno_core.models.memory import MemoryEntry, MemoryType
from typer.testing import Result

from bruno_memstore.models import utcnow
from bruno_memstore.testing import make_message

Invoke = Callable[..., Result]

DEMO_SECTIONS = (
    "bruno-memstore demo",
    "Sessions",
    "What the assistant saw for the last turn (oldest first)",
    "Ranked search over messages and memory entries",
    "Memory entries",
    "get_statistics('maya')",
    "Reopened",
)


def sqlite_url(path: Path) -> str:
    """The memory URL of a SQLite file (absolute path: four slashes)."""
    return f"sqlite:///{path.resolve()}"


def _open(path: Path):
    from bruno_memstore.backends.sqlite import SQLiteMemory

    return SQLiteMemory(str(path))


def _stats(path: Path, user: str = "maya") -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        memory = _open(path)
        try:
            return await memory.get_statistics(user)
        finally:
            await memory.shutdown()

    return asyncio.run(read())


def _clean_failure(result: Any) -> None:
    """Exit status 1, one error line, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ")


# ==================================================================== demo


def test_demo_runs_the_assistant_and_keeps_the_data(invoke: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "trip.db"
    result = invoke("demo", "--db", str(path))
    assert result.exit_code == 0, result.output
    for section in DEMO_SECTIONS:
        assert section in result.stdout
    assert "Notes from earlier sessions" in result.stdout  # the recalled system note
    assert "17 messages" in result.stdout
    assert "deleted 1" in result.stdout  # the expired to-do was purged
    stats = _stats(path)
    assert (stats["total_messages"], stats["conversations"], stats["sessions"]) == (17, 3, 3)
    assert (stats["memories"], stats["active_sessions"]) == (6, 1)
    assert stats["messages_by_role"] == {"user": 8, "assistant": 8, "system": 1}


def test_demo_refuses_to_mix_with_earlier_data(invoke: Invoke, demo_db: Path) -> None:
    again = invoke("demo", "--db", str(demo_db))
    _clean_failure(again)
    assert "already holds data for user 'maya'" in again.stderr
    assert _stats(demo_db)["total_messages"] == 17
    reset = invoke("demo", "--db", str(demo_db), "--reset")
    assert reset.exit_code == 0, reset.output
    assert _stats(demo_db)["total_messages"] == 17  # replaced, not doubled


def test_demo_on_a_url(invoke: Invoke) -> None:
    result = invoke("demo", "--url", "memory://")
    assert result.exit_code == 0, result.output
    assert "memory:// is not durable" in result.stdout


# ==================================================================== inspect


def test_stats(invoke: Invoke, demo_db: Path) -> None:
    table = invoke("stats", "--user", "maya", "-u", sqlite_url(demo_db))
    assert table.exit_code == 0, table.output
    assert "total messages" in table.stdout and "17" in table.stdout
    as_json = invoke("stats", "--user", "maya", "--url", sqlite_url(demo_db), "--json")
    data = json.loads(as_json.stdout)
    assert (data["total_messages"], data["memories"], data["backend"]) == (17, 6, "sqlite")


def test_stats_of_the_whole_store(invoke: Invoke, demo_db: Path) -> None:
    as_json = invoke("stats", "--url", sqlite_url(demo_db), "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert {k: data[k] for k in ("users", "messages", "memories", "sessions")} == {
        "users": 1,
        "messages": 17,
        "memories": 6,
        "sessions": 3,
    }
    assert data["storage_bytes"] == demo_db.stat().st_size  # checkpointed at close
    table = invoke("stats", "-u", sqlite_url(demo_db))
    assert table.exit_code == 0, table.output
    assert "store @" in table.stdout and "storage bytes" in table.stdout
    assert "KiB" in table.stdout


def test_stats_reads_a_running_applications_metrics(invoke: Invoke, tmp_path: Path) -> None:
    from prometheus_client import REGISTRY, start_http_server

    from bruno_memstore.backends.hybrid import HybridMemory
    from bruno_memstore.backends.memory import InMemoryStorage

    async def serve_reads() -> None:
        memory = HybridMemory(InMemoryStorage(), _open(tmp_path / "app.db"))
        async with memory:
            await memory.store_message(make_message("hi"), conversation_id="c", user_id="u")
            for _ in range(3):
                await memory.retrieve_context("u", conversation_id="c")
            await memory.store_statistics()

    asyncio.run(serve_reads())
    server, thread = start_http_server(0, addr="127.0.0.1")
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/metrics"
        result = invoke("stats", "--metrics", endpoint, "--json")
        table = invoke("stats", "--metrics", endpoint)
    finally:
        server.shutdown()
        thread.join(5)
    assert result.exit_code == 0, result.output
    hybrid = json.loads(result.stdout)["hybrid"]

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"backend": "hybrid", **labels})

    hits = sample("bruno_memstore_cache_requests_total", result="hit")
    misses = sample("bruno_memstore_cache_requests_total", result="miss")
    assert hits is not None and misses is not None and hits >= 2 and misses >= 1
    assert (hybrid["cache_hits"], hybrid["cache_misses"]) == (hits, misses)
    assert hybrid["cache_hit_rate"] == hits / (hits + misses)
    assert hybrid["storage_bytes"] == sample("bruno_memstore_storage_bytes") > 0
    assert hybrid["records"]["messages"] == sample("bruno_memstore_records", kind="messages")
    assert table.exit_code == 0 and "cache hit rate" in table.stdout and "hybrid" in table.stdout


def test_stats_from_unreachable_metrics_fails_cleanly(invoke: Invoke) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _clean_failure(invoke("stats", "--metrics", f"http://u:secret@127.0.0.1:{port}/metrics"))
    result = invoke("stats", "--metrics", f"http://u:secret@127.0.0.1:{port}/metrics")
    assert "secret" not in result.stderr
    _clean_failure(invoke("stats", "--metrics", "ftp://example/metrics"))


def test_url_from_the_environment(invoke: Invoke, demo_db: Path) -> None:
    result = invoke(
        "stats", "--user", "maya", "--json", env={"BRUNO_MEMSTORE_URL": sqlite_url(demo_db)}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_messages"] == 17


def test_search_ranks_messages_and_memories(invoke: Invoke, demo_db: Path) -> None:
    url = sqlite_url(demo_db)
    result = invoke("search", "peanut allergy", "--user", "maya", "-u", url, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert 0.5 < rows[0]["score"] <= 1.0  # hybrid (the default): fused scores in [0, 1]
    assert {r["kind"] for r in rows} == {"memory", "message"}
    assert "peanut allergy" in rows[0]["record"]["content"]
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)

    only = invoke("search", "peanut", "--user", "maya", "-u", url, "-k", "memory", "--json")
    kinds = [r["kind"] for r in json.loads(only.stdout)]
    assert kinds and set(kinds) == {"memory"}
    two = invoke("search", "Kyoto", "--user", "maya", "-u", url, "--limit", "2", "--json")
    assert len(json.loads(two.stdout)) == 2

    table = invoke("search", "ryokan", "--user", "maya", "-u", url, "--mode", "keyword")
    assert "score" in table.stdout and "1.00" in table.stdout  # keyword: best = 1.00
    meaning = invoke("search", "which hotel did we reserve", "--user", "maya", "-u", url, "--json")
    assert "Ryokan Sakura" in json.loads(meaning.stdout)[0]["record"]["content"]
    vector = invoke("search", "ryokan", "--user", "maya", "-u", url, "-m", "vector", "--json")
    assert all(0.0 <= r["score"] <= 1.0 for r in json.loads(vector.stdout))
    bad = invoke("search", "ryokan", "--user", "maya", "-u", url, "-m", "fuzzy")
    assert bad.exit_code == 2
    other = invoke("search", "ryokan", "--user", "someone-else", "-u", url, "--json")
    assert json.loads(other.stdout) == []  # scoped to one user


def test_search_rejects_an_unknown_kind(invoke: Invoke, demo_db: Path) -> None:
    result = invoke("search", "x", "--user", "maya", "-u", sqlite_url(demo_db), "-k", "file")
    assert result.exit_code == 2
    assert "expected 'message' or 'memory'" in result.output


# ==================================================================== export / import / copy


def test_export_import_round_trip(invoke: Invoke, demo_db: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    exported = invoke("export", "-u", sqlite_url(demo_db), "-o", str(first))
    assert exported.exit_code == 0, exported.output
    assert "Exported" in exported.stderr and exported.stdout == ""
    assert not (tmp_path / "first.jsonl.partial").exists()

    target = tmp_path / "target.db"
    imported = invoke("import", str(first), "-u", sqlite_url(target))
    assert imported.exit_code == 0, imported.output
    assert "Imported" in imported.stderr
    invoke("export", "-u", sqlite_url(target), "-o", str(second))
    assert second.read_bytes() == first.read_bytes()

    again = invoke("import", str(first), "-u", sqlite_url(target))
    assert again.exit_code == 0 and "already stored" in again.stderr
    assert _stats(target)["total_messages"] == 17

    to_stdout = invoke("export", "-u", sqlite_url(demo_db))
    assert to_stdout.stdout.encode() == first.read_bytes()
    header = json.loads(first.read_text().splitlines()[0])
    assert header == {"type": "header", "format": "bruno-memstore", "version": 1}


def test_import_from_stdin_and_user_export(invoke: Invoke, demo_db: Path, tmp_path: Path) -> None:
    text = invoke("export", "-u", sqlite_url(demo_db), "--user", "maya").stdout
    assert json.loads(text.splitlines()[0])["user_id"] == "maya"
    target = tmp_path / "piped.db"
    result = invoke("import", "-", "-u", sqlite_url(target), input=text)
    assert result.exit_code == 0, result.output
    assert _stats(target)["memories"] == 6
    nobody = invoke("export", "-u", sqlite_url(demo_db), "--user", "nobody").stdout
    assert len(nobody.splitlines()) == 1  # the header alone


def test_import_of_a_bad_file_fails_cleanly(invoke: Invoke, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"header","format":"bruno-memstore","version":1}\n{oops\n')
    target = tmp_path / "target.db"
    result = invoke("import", str(bad), "-u", sqlite_url(target))
    _clean_failure(result)
    assert "line 2" in result.stderr
    missing = invoke("import", str(tmp_path / "nope.jsonl"), "-u", sqlite_url(target))
    _clean_failure(missing)
    assert "nope.jsonl" in missing.stderr


def test_import_refused_by_an_owner_writes_nothing(
    invoke: Invoke, demo_db: Path, tmp_path: Path
) -> None:
    from bruno_core.models.message import Message, MessageRole

    text = invoke("export", "-u", sqlite_url(demo_db)).stdout
    lines = [json.loads(line) for line in text.splitlines()]
    last = [x["id"] for x in lines if x["type"] == "conversation"][-1]
    target = tmp_path / "taken.db"

    async def take() -> None:
        memory = _open(target)
        try:
            await memory.store_message(Message(role=MessageRole.USER, content="x"), "eve", last)
        finally:
            await memory.shutdown()

    asyncio.run(take())
    for source in ("file", "stdin"):
        if source == "file":
            path = tmp_path / "all.jsonl"
            path.write_text(text, encoding="utf-8")
            result = invoke("import", str(path), "-u", sqlite_url(target))
        else:
            result = invoke("import", "-", "-u", sqlite_url(target), input=text)
        _clean_failure(result)
        assert "belongs to another user" in result.stderr
        stats = _stats(target)
        assert (stats["conversations"], stats["total_messages"], stats["memories"]) == (0, 0, 0)
        assert _stats(target, "eve")["conversations"] == 1


def test_export_to_an_unwritable_place(invoke: Invoke, demo_db: Path, tmp_path: Path) -> None:
    result = invoke("export", "-u", sqlite_url(demo_db), "-o", str(tmp_path / "no" / "x.jsonl"))
    _clean_failure(result)


def test_copy_between_stores(invoke: Invoke, demo_db: Path, tmp_path: Path) -> None:
    dst = tmp_path / "copy.db"
    result = invoke("copy", sqlite_url(demo_db), sqlite_url(dst), "--user", "maya")
    assert result.exit_code == 0, result.output
    assert "Copied" in result.stdout
    a = invoke("export", "-u", sqlite_url(demo_db)).stdout
    b = invoke("export", "-u", sqlite_url(dst)).stdout
    assert a == b and a.count('"type":"message"') == 17
    same = invoke("copy", sqlite_url(dst), sqlite_url(dst))
    assert same.exit_code == 2 and "same store" in same.output


# ==================================================================== retention and erasure


def test_expire_purges_expired_entries(invoke: Invoke, demo_db: Path) -> None:
    async def add() -> None:
        memory = _open(demo_db)
        try:
            await memory.store_memory(
                MemoryEntry(
                    content="stale",
                    memory_type=MemoryType.SHORT_TERM,
                    user_id="maya",
                    expires_at=utcnow() - timedelta(seconds=5),
                )
            )
        finally:
            await memory.shutdown()

    asyncio.run(add())
    assert _stats(demo_db)["memories"] == 7
    first = invoke("expire", "-u", sqlite_url(demo_db))
    assert first.exit_code == 0 and "Deleted 1 expired" in first.stdout
    assert _stats(demo_db)["memories"] == 6
    assert "Deleted 0 expired" in invoke("expire", "-u", sqlite_url(demo_db)).stdout


def test_forget_user_without_yes_and_no_stdin_deletes_nothing(
    invoke: Invoke, demo_db: Path
) -> None:
    result = invoke("forget-user", "maya", "-u", sqlite_url(demo_db))
    assert result.exit_code == 1
    assert "without one, pass --yes" in result.output
    assert _stats(demo_db)["total_messages"] == 17


def test_forget_user_does_not_take_piped_answers(invoke: Invoke, demo_db: Path) -> None:
    # Input that is not a terminal is refused whatever it says (the question goes unasked).
    for answer in ("y\n", "yes\n", "n\n"):
        result = invoke("forget-user", "maya", "-u", sqlite_url(demo_db), input=answer)
        assert result.exit_code == 1
        assert "pass --yes" in result.output
        assert "Erase everything" not in result.output
    assert _stats(demo_db)["total_messages"] == 17


def test_forget_user_with_yes(invoke: Invoke, demo_db: Path) -> None:
    result = invoke("forget-user", "maya", "-u", sqlite_url(demo_db), "--yes", input="n\n")
    assert result.exit_code == 0, result.output
    assert "Erased user 'maya'" in result.stdout
    stats = _stats(demo_db)
    assert (stats["total_messages"], stats["sessions"], stats["memories"]) == (0, 0, 0)
    search = invoke("search", "peanut", "--user", "maya", "-u", sqlite_url(demo_db), "--json")
    assert json.loads(search.stdout) == []


def test_compact(invoke: Invoke, demo_db: Path) -> None:
    result = invoke("compact", "-u", sqlite_url(demo_db))
    assert result.exit_code == 0, result.output
    assert "Compacted" in result.stdout
    assert _stats(demo_db)["total_messages"] == 17


# ==================================================================== schema, backends, errors


def test_migrate_creates_the_schema(invoke: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    result = invoke("migrate", "-u", sqlite_url(path))
    assert result.exit_code == 0, result.output
    assert "SQLiteMemory" in result.stdout and "is ready" in result.stdout
    assert path.exists() and path.stat().st_size > 0


def test_migrate_moves_redis_keys_of_key_layout_1(invoke: Invoke) -> None:
    from urllib.parse import quote

    import redis
    from bruno_core.models.message import Message, MessageRole

    from bruno_memstore.backends.redis import RedisMemory

    base = f"cli-{uuid4().hex[:10]}"
    prefix = f"{base}:tenant"
    url = f"redis://127.0.0.1:6379/0?prefix={quote(prefix)}"

    async def write_layout_1() -> None:
        memory = RedisMemory(url)
        memory.keys.prefix = prefix  # the names key layout 1 gave
        try:
            await memory.store_message(Message(role=MessageRole.USER, content="hi"), "maya", "c")
        finally:
            await memory.shutdown()

    try:
        asyncio.run(write_layout_1())
        refused = invoke("stats", "--user", "maya", "-u", url)
        _clean_failure(refused)
        assert "bruno-memstore migrate" in refused.stderr
        result = invoke("migrate", "-u", url)
        assert result.exit_code == 0, result.output
        assert "Moved" in result.stderr and "key layout 2" in result.stderr
        assert "RedisMemory" in result.stdout and "is ready" in result.stdout
        stats = invoke("stats", "--user", "maya", "-u", url, "--json")
        assert json.loads(stats.stdout)["total_messages"] == 1
    finally:
        with redis.Redis.from_url("redis://127.0.0.1:6379/0") as client:
            for pattern in (f"{base}*", f"{{{base}*"):
                keys = list(client.scan_iter(match=pattern, count=1000))
                if keys:
                    client.delete(*keys)


def test_backends_lists_schemes_extras_and_status(invoke: Invoke) -> None:
    result = invoke("backends")
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells
        for line in result.stdout.splitlines()
        if (cells := [c.strip() for c in line.strip("│┃ ").split("│")]) and len(cells) >= 4
    }
    assert rows["memory"][1:4] == ["InMemoryStorage", "-", "yes"]
    assert rows["sqlite"][1:4] == ["SQLiteMemory", "-", "yes"]
    assert rows["postgresql"][2] == "postgres" and rows["redis"][2] == "redis"


def test_unknown_scheme_lists_the_known_ones(invoke: Invoke) -> None:
    result = invoke("stats", "--user", "x", "-u", "nosuch://host/db")
    _clean_failure(result)
    assert "unknown scheme 'nosuch'" in result.stderr
    assert "known schemes:" in result.stderr and "sqlite" in result.stderr
    typo = invoke("stats", "--user", "x", "-u", "sqlit:///x.db")
    _clean_failure(typo)
    assert "Did you mean 'sqlite'?" in typo.stderr


def test_errors_never_show_passwords(invoke: Invoke) -> None:
    for url in ("postgresql://bob:s3cret@127.0.0.1:1/db", "redis://:s3cret@127.0.0.1:1/0"):
        result = invoke("stats", "--user", "x", "-u", url)
        _clean_failure(result)
        assert "s3cret" not in result.output


def test_malformed_url(invoke: Invoke) -> None:
    result = invoke("stats", "--user", "x", "-u", "no-scheme-here")
    _clean_failure(result)
    assert "expected 'scheme://...'" in result.stderr


def test_help_and_version(invoke: Invoke) -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in (
        "demo",
        "stats",
        "search",
        "export",
        "import",
        "copy",
        "expire",
        "forget-user",
        "migrate",
        "backends",
    ):
        assert command in result.stdout
    assert invoke("--version").stdout.strip() == "bruno-memstore 0.1.0"


def test_copy_to_postgresql_redacts_the_password(invoke: Invoke, demo_db: Path) -> None:
    import asyncpg

    schema = f"cli_{uuid4().hex[:12]}"
    # The server trusts local connections, so the password is accepted and ignored.
    url = f"postgresql://postgres:s3cret@127.0.0.1:5432/test?schema={schema}"
    try:
        result = invoke("copy", sqlite_url(demo_db), url, "--user", "maya")
        assert result.exit_code == 0, result.output
        assert "postgresql://postgres:***@127.0.0.1:5432/test" in result.stdout
        stats = invoke("stats", "--user", "maya", "-u", url, "--json")
        assert json.loads(stats.stdout)["total_messages"] == 17
        table = invoke("stats", "--user", "maya", "-u", url)
        migrate = invoke("migrate", "-u", url)
        assert migrate.exit_code == 0 and "PostgresMemory" in migrate.stdout
        for output in (result.output, stats.output, table.output, migrate.output):
            assert "s3cret" not in output
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())


def test_reindex_switches_the_model_and_mismatch_names_it(invoke: Invoke, demo_db: Path) -> None:
    url = sqlite_url(demo_db)
    done = invoke("reindex", "-u", url, "--model", "static")
    assert done.exit_code == 0, done.output
    assert "tokenlearn-static-64d-int8 (64-d)" in done.stdout
    assert "17 messages" in done.stdout and "memories" in done.stdout
    # The default model now differs from the store's: vector work is refused, naming the fix.
    refused = invoke("search", "hotel", "--user", "maya", "-u", url, "-m", "vector")
    assert refused.exit_code == 1
    assert "reindex" in refused.output and "tokenlearn-static-64d-int8" in refused.output
    keyword = invoke("search", "ryokan", "--user", "maya", "-u", url, "-m", "keyword", "--json")
    assert keyword.exit_code == 0 and json.loads(keyword.stdout)
    back = invoke("reindex", "-u", url)
    assert back.exit_code == 0 and "all-MiniLM-L6-v2-onnx-int8 (384-d)" in back.stdout
    found = invoke("search", "which hotel did we reserve", "--user", "maya", "-u", url, "--json")
    assert "Ryokan Sakura" in json.loads(found.stdout)[0]["record"]["content"]
