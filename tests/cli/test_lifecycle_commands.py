"""``export-user`` and ``forget-user`` with its erasure log, on the demo's SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from test_commands import Invoke, _stats, sqlite_url

CONTENT_WORDS = ("peanut", "Kyoto", "vegetarian")  # all in maya's messages and memories


def test_export_user_and_import_it_into_a_new_store(
    invoke: Invoke, demo_db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "maya.json"
    result = invoke(
        "export-user", "--url", sqlite_url(demo_db), "--user", "maya", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert "Exported user 'maya'" in result.stderr and "17 messages" in result.stderr
    package = json.loads(out.read_text(encoding="utf-8"))
    assert package["format"] == "bruno-memstore-user-export" and package["version"] == 1
    assert package["user_id"] == "maya"
    assert package["counts"]["messages"] == 17 and package["counts"]["memories"] == 6
    kinds = [r["type"] for r in package["records"]]
    assert kinds.count("message") == 17 and kinds.count("memory") == 6
    assert not out.with_name("maya.json.partial").exists()

    fresh = tmp_path / "fresh.db"
    imported = invoke("import", str(out), "-u", sqlite_url(fresh))
    assert imported.exit_code == 0, imported.output
    assert _stats(fresh)["total_messages"] == 17 and _stats(fresh)["memories"] == 6
    again = invoke("export-user", "-u", sqlite_url(fresh), "--user", "maya")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["records"] == package["records"]


def test_export_user_of_nobody_is_empty(invoke: Invoke, demo_db: Path) -> None:
    result = invoke("export-user", "-u", sqlite_url(demo_db), "--user", "nobody")
    assert result.exit_code == 0, result.output
    package = json.loads(result.stdout)
    assert package["records"] == [] and set(package["counts"].values()) == {0}


def _entries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def test_forget_user_writes_the_erasure_log(invoke: Invoke, demo_db: Path, tmp_path: Path) -> None:
    log = tmp_path / "audit" / "erasures.jsonl"
    log.parent.mkdir()
    args = ("forget-user", "--user", "maya", "-u", sqlite_url(demo_db), "--yes")
    result = invoke(*args, "--erasure-log", str(log))
    assert result.exit_code == 0, result.output
    assert "Erased user 'maya'" in result.stdout and "17 messages" in result.stdout
    assert _stats(demo_db)["total_messages"] == 0
    [entry] = _entries(log)
    assert entry["event"] == "forget_user" and entry["user_id"] == "maya"
    assert entry["counts"]["messages"] == 17 and entry["counts"]["memories"] == 6
    assert entry["backend"] == "sqlite" and entry["erased_at"].endswith("+00:00")
    text = log.read_text(encoding="utf-8")
    assert not [w for w in CONTENT_WORDS if w.lower() in text.lower()]
    assert (log.stat().st_mode & 0o777) == 0o600

    # Appended, never rewritten: a second erasure (through the environment) adds a line.
    second = invoke(*args, env={"BRUNO_MEMSTORE_ERASURE_LOG": str(log)})
    assert second.exit_code == 0, second.output
    first, latest = _entries(log)
    assert first == entry
    assert latest["user_id"] == "maya" and set(latest["counts"].values()) == {0}


def test_forget_user_logs_through_the_url_option(
    invoke: Invoke, demo_db: Path, tmp_path: Path
) -> None:
    log = tmp_path / "erasures.jsonl"
    url = f"{sqlite_url(demo_db)}?erasure_log={log}"
    result = invoke("forget-user", "maya", "-u", url, "--yes")
    assert result.exit_code == 0, result.output
    assert [e["user_id"] for e in _entries(log)] == ["maya"]


def test_forget_user_needs_a_user(invoke: Invoke, demo_db: Path) -> None:
    result = invoke("forget-user", "-u", sqlite_url(demo_db), "--yes")
    assert result.exit_code == 2
    assert _stats(demo_db)["total_messages"] == 17


def test_retention_dry_run_reports_then_the_run_deletes(invoke: Invoke, demo_db: Path) -> None:
    url = sqlite_url(demo_db)
    args = ("retention", "-u", url, "--user", "maya", "--keep-last", "1")
    dry = invoke(*args, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    doomed = report["totals"]["messages"]
    assert report["dry_run"] is True and doomed > 0
    assert report["users"]["maya"]["messages"] == doomed
    assert _stats(demo_db)["total_messages"] == 17  # a dry run deletes nothing
    done = invoke(*args)
    assert done.exit_code == 0, done.output
    assert f"Deleted {doomed} messages" in done.stdout
    left = _stats(demo_db)["total_messages"]
    assert left == 17 - doomed and 1 <= left <= 3  # one per conversation


def test_retention_by_age_and_without_rules(invoke: Invoke, demo_db: Path) -> None:
    url = sqlite_url(demo_db)
    assert invoke("retention", "-u", url, "--dry-run").exit_code != 0  # no policy anywhere
    assert invoke("retention", "-u", url, "--max-message-age", "soon").exit_code != 0
    kept = invoke("retention", "-u", url, "--max-conversation-age", "520w", "--dry-run")
    assert kept.exit_code == 0 and "Would delete 0 messages" in kept.stdout
    policy = invoke("retention", "-u", f"{url}?retention_keep_last=2", "--json")  # the store's
    assert policy.exit_code == 0, policy.output
    doomed = json.loads(policy.stdout)["totals"]["messages"]
    assert doomed > 0 and _stats(demo_db)["total_messages"] == 17 - doomed


def test_expire_sweeps_expired_messages(invoke: Invoke, demo_db: Path) -> None:
    result = invoke("expire", "-u", sqlite_url(demo_db))
    assert result.exit_code == 0, result.output
    assert "Deleted 0 expired records" in result.stdout and "0 conversations" in result.stdout


def _maya_conversations(db: Path) -> list[dict]:
    from bruno_memstore import open_memory

    async def listed() -> list[dict]:
        memory = open_memory(sqlite_url(db))
        try:
            return await memory.list_conversations("maya")
        finally:
            await memory.shutdown()

    return asyncio.run(listed())


def test_archive_and_restore_a_conversation(invoke: Invoke, demo_db: Path, tmp_path: Path) -> None:
    url = sqlite_url(demo_db)
    plain = _stats(demo_db)
    conv = next(c["conversation_id"] for c in _maya_conversations(demo_db))
    archive_db = tmp_path / "archive.db"
    args = ("--user", "maya", "--conversation", conv)
    moved = invoke("archive", "-u", url, *args, "--target", sqlite_url(archive_db))
    assert moved.exit_code == 0, moved.output
    assert "Archived 1 conversations" in moved.stdout
    assert {c["conversation_id"]: c["archived"] for c in _maya_conversations(demo_db)}[conv]
    stats = _stats(demo_db)
    assert stats["archived_conversations"] == 1
    assert stats["total_messages"] < plain["total_messages"]
    assert _stats(archive_db)["total_messages"] == plain["total_messages"] - stats["total_messages"]
    back = invoke("restore", "-u", url, *args, "--source", sqlite_url(archive_db))
    assert back.exit_code == 0, back.output
    assert "Restored conversation" in back.stdout
    assert _stats(demo_db)["total_messages"] == plain["total_messages"]
    assert _stats(archive_db)["total_messages"] == 0
    assert invoke("archive", "-u", url).exit_code != 0  # neither a conversation nor an age
