"""Rights of the data subject: ``export_user`` gives every record of the user (and no other
user's), restorable by import; ``forget_user`` records the erasure, never the content."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from bruno_core.models.message import MessageRole

from ...base import MemoryBackend
from ...capabilities import Capability
from ...erasure_log import ErasureLogError, JsonlErasureLog, erasure_log
from ...errors import CapabilityError
from ...transfer import import_jsonl
from ...user_export import USER_EXPORT_FORMAT, USER_EXPORT_VERSION, package_lines
from ..builders import at, make_memory_entry, make_message, new_conversation_id, new_user_id
from ..harness import ConformanceBase, lacks, requires

__all__ = ["ErasureLogSuite", "UserExportSuite"]

_SECRET = "pangolin"  # in every record of the erased or exported user
_OTHER = "wombat"  # in every record of the other user


async def _user_with_everything(memory: MemoryBackend, uid: str, word: str) -> dict[str, Any]:
    """Two conversations with messages, a session, and (where kept) memory entries, each
    holding ``word``; returns their ids."""
    a, b = new_conversation_id(), new_conversation_id()
    in_a = [
        make_message(f"{word} at breakfast", timestamp=at(1), metadata={"note": word}),
        make_message(f"the {word} replied", role=MessageRole.ASSISTANT, timestamp=at(2)),
        make_message(f"{word} rules", role=MessageRole.SYSTEM, timestamp=at(2)),
    ]
    in_b = [make_message(f"another {word} day", timestamp=at(3))]
    await memory.store_messages(in_a, conversation_id=a, user_id=uid)
    await memory.store_messages(in_b, conversation_id=b, user_id=uid)
    session = await memory.create_session(uid, {"topic": word})
    entries = []
    if memory.supports(Capability.MEMORIES):
        entries = [
            make_memory_entry(uid, f"{word} fact {i}", tags=[word], custom_fields={"w": word})
            for i in range(2)
        ]
        for entry in entries:
            await memory.store_memory(entry)
    return {
        "conversations": {a, b, session.conversation_id},
        "messages": {str(m.id): m for m in [*in_a, *in_b]},
        "sessions": {session.session_id},
        "memories": {str(e.id) for e in entries},
    }


def _records(package: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in package["records"] if r["type"] == kind]


@requires(Capability.LISTING)
class UserExportSuite(ConformanceBase):
    """``export_user``: the data-subject access package."""

    async def test_export_user_holds_every_record_of_the_user_and_no_other(
        self, memory: MemoryBackend
    ) -> None:
        uid, other = new_user_id(), new_user_id()
        mine = await _user_with_everything(memory, uid, _SECRET)
        theirs = await _user_with_everything(memory, other, _OTHER)
        before = datetime.now(UTC)
        package = await memory.export_user(uid)

        assert package["format"] == USER_EXPORT_FORMAT
        assert package["version"] == USER_EXPORT_VERSION
        assert package["user_id"] == uid and package["backend"] == memory.backend_name
        exported_at = datetime.fromisoformat(package["exported_at"])
        assert exported_at.tzinfo is not None and exported_at >= before
        assert package["counts"] == {
            "conversations": len(_records(package, "conversation")),
            "sessions": len(_records(package, "session")),
            "messages": len(_records(package, "message")),
            "memories": len(_records(package, "memory")),
        }

        conversations = _records(package, "conversation")
        assert {c["id"] for c in conversations} == mine["conversations"]
        assert {c["user_id"] for c in conversations} == {uid}
        messages = _records(package, "message")
        assert {m["id"] for m in messages} == set(mine["messages"])
        for record in messages:
            sent = mine["messages"][record["id"]]
            assert record["content"] == sent.content and record["role"] == sent.role.value
            assert record["metadata"] == sent.metadata
            assert record["conversation_id"] in mine["conversations"]
        sessions = _records(package, "session")
        assert {s["session_id"] for s in sessions} == mine["sessions"]
        assert {s["user_id"] for s in sessions} == {uid}
        memories = _records(package, "memory")
        assert {m["id"] for m in memories} == mine["memories"]
        assert all(m["user_id"] == uid for m in memories)

        text = json.dumps(package, ensure_ascii=False, allow_nan=False)
        assert _OTHER not in text and other not in text
        for ids in (theirs["conversations"], theirs["messages"], theirs["memories"]):
            assert not [i for i in ids if i in text]

    async def test_export_user_round_trips_through_import(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        await _user_with_everything(memory, uid, _SECRET)
        package = await memory.export_user(uid)
        fresh = self._track(await self.make_private_memory(), "make_private_memory")
        fresh.search_mode = memory.search_mode
        await import_jsonl(fresh, io.StringIO("".join(package_lines(package))))
        again = await fresh.export_user(uid)
        assert again["counts"] == package["counts"]
        assert again["records"] == package["records"]

    async def test_export_user_of_an_unknown_user_is_empty(self, memory: MemoryBackend) -> None:
        package = await memory.export_user(new_user_id())
        assert package["records"] == []
        assert set(package["counts"].values()) == {0}


@lacks(Capability.LISTING)
class UserExportRefusalSuite(ConformanceBase):
    """A backend that cannot list a user's records refuses the access package."""

    async def test_export_user_is_refused(self, memory: MemoryBackend) -> None:
        with pytest.raises(CapabilityError):
            await memory.export_user(new_user_id())


@requires(Capability.LISTING)
class ErasureLogSuite(ConformanceBase):
    """``forget_user`` records who was erased, when, and how many records, never content."""

    async def test_forget_user_records_ids_time_and_counts_only(
        self, memory: MemoryBackend
    ) -> None:
        path = self.tmp_path / "erasures.jsonl"
        memory.erasure_log = erasure_log(str(path))
        assert isinstance(memory.erasure_log, JsonlErasureLog)
        uid, later = new_user_id(), new_user_id()
        mine = await _user_with_everything(memory, uid, _SECRET)
        await _user_with_everything(memory, later, _SECRET)
        before = datetime.now(UTC)
        counts = await memory.forget_user(uid)
        after = datetime.now(UTC)

        [line] = path.read_text(encoding="utf-8").splitlines()
        entry = json.loads(line)
        assert set(entry) == {
            "event",
            "format",
            "user_id",
            "erased_at",
            "backend",
            "store",
            "counts",
        }
        assert entry["event"] == "forget_user" and entry["format"] == 1
        assert entry["user_id"] == uid and entry["backend"] == memory.backend_name
        assert entry["counts"] == counts and counts["messages"] == len(mine["messages"])
        assert before <= datetime.fromisoformat(entry["erased_at"]) <= after
        assert _SECRET not in line
        for ids in (mine["messages"], mine["memories"], mine["sessions"]):
            assert not [i for i in ids if i in line]

        # Appended: the next erasure adds a line and leaves the first as it was.
        await memory.forget_user(later)
        first, second = path.read_text(encoding="utf-8").splitlines()
        assert first == line and json.loads(second)["user_id"] == later
        assert _SECRET not in second

    async def test_erasure_log_takes_a_callable(self, memory: MemoryBackend) -> None:
        entries: list[dict[str, Any]] = []

        async def keep(entry: dict[str, Any]) -> None:
            entries.append(entry)

        memory.erasure_log = erasure_log(keep)
        uid = new_user_id()
        await _user_with_everything(memory, uid, _SECRET)
        counts = await memory.forget_user(uid)
        assert [(e["user_id"], e["counts"]) for e in entries] == [(uid, counts)]
        assert _SECRET not in json.dumps(entries)

    async def test_a_log_that_fails_reports_the_erasure(self, memory: MemoryBackend) -> None:
        def broken(entry: dict[str, Any]) -> None:
            raise OSError("disk full")

        memory.erasure_log = erasure_log(broken)
        uid = new_user_id()
        mine = await _user_with_everything(memory, uid, _SECRET)
        with pytest.raises(ErasureLogError) as info:
            await memory.forget_user(uid)
        assert info.value.counts["messages"] == len(mine["messages"])
        assert (await memory.get_statistics(uid))["total_messages"] == 0
