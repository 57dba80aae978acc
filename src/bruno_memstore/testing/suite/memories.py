"""Memory entries: every ``MemoryQuery`` field, expiry, replacement, round trip."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar
from uuid import uuid4

import pytest
from bruno_core.models.memory import MemoryEntry, MemoryQuery, MemoryType
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import InvalidArgumentError, OwnershipError
from ...models import utcnow
from ..builders import at, make_memory_entry, new_conversation_id, new_user_id
from ..harness import ConformanceBase, applies_when, requires
from ..strategies import PROPERTY_SETTINGS, memory_entries

__all__ = ["MemoryEntrySuite", "MemoryTextQuerySuite"]


def _ids(entries: list[MemoryEntry]) -> set[str]:
    return {str(e.id) for e in entries}


@requires(Capability.MEMORIES)
class MemoryEntrySuite(ConformanceBase):
    """``store_memory``, ``retrieve_memories`` filters, ``delete_memory``, ``purge_expired``."""

    async def test_round_trip(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entry = make_memory_entry(
            uid,
            "The user's sister lives in Zürich 🇨🇭 and says '; DROP TABLE x;--",
            memory_type=MemoryType.LONG_TERM,
            category="family",
            tags=["family", "travel", "ünïcode"],
            confidence=0.75,
            importance=0.25,
            conversation_id=new_conversation_id(),
            custom_fields={"source_msg": 3, "nested": {"a": [1, None, "x"]}},
            expires_at=utcnow() + timedelta(days=30),
        )
        await memory.store_memory(entry)
        (got,) = await memory.retrieve_memories(MemoryQuery(user_id=uid))
        assert got == entry
        assert got.metadata.custom_fields == {"source_msg": 3, "nested": {"a": [1, None, "x"]}}

    @PROPERTY_SETTINGS
    @given(data=st.data())
    async def test_entries_round_trip_and_filter_exactly(
        self, memory: MemoryBackend, data: st.DataObject
    ) -> None:
        uid = new_user_id()
        drawn = data.draw(memory_entries(uid, self.memory_forbidden_text()), label="entry")
        entry = drawn.model_copy(update={"id": uuid4()})
        await memory.store_memory(entry)
        everything = MemoryQuery(user_id=uid, include_expired=True)
        assert await memory.retrieve_memories(everything) == [entry]
        meta = entry.metadata
        if meta.category is not None:
            q = everything.model_copy(update={"categories": [meta.category]})
            assert await memory.retrieve_memories(q) == [entry]
            other = meta.category.swapcase() if meta.category.swapcase() != meta.category else None
            for near in (other, meta.category + " ", meta.category + "%", meta.category[:-1]):
                if near and near != meta.category:
                    q = everything.model_copy(update={"categories": [near]})
                    assert await memory.retrieve_memories(q) == [], repr(near)
        for tag in meta.tags:
            q = everything.model_copy(update={"tags": [tag]})
            assert await memory.retrieve_memories(q) == [entry], repr(tag)
        for near in {t + " " for t in meta.tags} | {t + "%" for t in meta.tags}:
            if near not in meta.tags:
                q = everything.model_copy(update={"tags": [near]})
                assert await memory.retrieve_memories(q) == [], repr(near)
        q = everything.model_copy(
            update={"min_confidence": meta.confidence, "min_importance": meta.importance}
        )
        assert await memory.retrieve_memories(q) == [entry]
        q = everything.model_copy(update={"memory_types": [entry.memory_type]})
        assert await memory.retrieve_memories(q) == [entry]

    @applies_when(
        lambda cls: bool(cls.memory_forbidden_text(cls)),
        "the backend declares no forbidden text for memory entries",
    )
    async def test_forbidden_text_in_entries_is_refused(self, memory: MemoryBackend) -> None:
        forbidden = self.memory_forbidden_text()
        uid = new_user_id()
        for bad in forbidden:
            variants: list[dict[str, Any]] = [
                {"content": f"content{bad}here"},
                {"category": f"cat{bad}"},
                {"tags": ["ok", f"tag{bad}"]},
                {"custom_fields": {"k": f"v{bad}"}},
            ]
            for fields in variants:
                try:
                    entry = make_memory_entry(uid, **{"content": "fine", **fields})
                except ValidationError:
                    continue  # bruno-core's model already refuses it (e.g. lone surrogates)
                with pytest.raises(InvalidArgumentError) as info:
                    await memory.store_memory(entry)
                assert info.value.argument.startswith("memory_entry"), info.value.argument
        assert await memory.retrieve_memories(MemoryQuery(user_id=uid, include_expired=True)) == []
        assert (await memory.get_statistics(uid))["memories"] == 0

    async def test_reading_does_not_write(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entry = make_memory_entry(uid)
        await memory.store_memory(entry)
        for _ in range(3):
            (got,) = await memory.retrieve_memories(MemoryQuery(user_id=uid))
        assert got.metadata.access_count == 0
        assert got.last_accessed == entry.last_accessed

    async def test_filter_by_type(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        fact = make_memory_entry(uid, "a fact", memory_type=MemoryType.FACT)
        episode = make_memory_entry(uid, "an episode", memory_type=MemoryType.EPISODIC)
        skill = make_memory_entry(uid, "a skill", memory_type=MemoryType.PROCEDURAL)
        for e in (fact, episode, skill):
            await memory.store_memory(e)
        q = MemoryQuery(user_id=uid, memory_types=[MemoryType.FACT])
        assert _ids(await memory.retrieve_memories(q)) == {str(fact.id)}
        q = MemoryQuery(user_id=uid, memory_types=[MemoryType.FACT, MemoryType.PROCEDURAL])
        assert _ids(await memory.retrieve_memories(q)) == {str(fact.id), str(skill.id)}
        q = MemoryQuery(user_id=uid, memory_types=[MemoryType.SEMANTIC])
        assert await memory.retrieve_memories(q) == []

    async def test_filter_by_category(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        food = make_memory_entry(uid, "likes ramen", category="food")
        music = make_memory_entry(uid, "likes jazz", category="music")
        none = make_memory_entry(uid, "no category")
        for e in (food, music, none):
            await memory.store_memory(e)
        q = MemoryQuery(user_id=uid, categories=["food"])
        assert _ids(await memory.retrieve_memories(q)) == {str(food.id)}
        q = MemoryQuery(user_id=uid, categories=["food", "music"])
        assert _ids(await memory.retrieve_memories(q)) == {str(food.id), str(music.id)}
        q = MemoryQuery(user_id=uid, categories=["Food"])  # exact, case-sensitive
        assert await memory.retrieve_memories(q) == []

    async def test_filter_by_tags_matches_any(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        red = make_memory_entry(uid, "red", tags=["colour", "warm"])
        blue = make_memory_entry(uid, "blue", tags=["colour", "cold"])
        plain = make_memory_entry(uid, "untagged")
        for e in (red, blue, plain):
            await memory.store_memory(e)
        assert _ids(await memory.retrieve_memories(MemoryQuery(user_id=uid, tags=["warm"]))) == {
            str(red.id)
        }
        both = MemoryQuery(user_id=uid, tags=["warm", "cold"])
        assert _ids(await memory.retrieve_memories(both)) == {str(red.id), str(blue.id)}
        shared = MemoryQuery(user_id=uid, tags=["colour"])
        assert _ids(await memory.retrieve_memories(shared)) == {str(red.id), str(blue.id)}
        # A tag is matched whole, not as a substring.
        assert await memory.retrieve_memories(MemoryQuery(user_id=uid, tags=["col"])) == []

    async def test_min_confidence_and_importance(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        grid = {
            (c, i): make_memory_entry(uid, f"c{c} i{i}", confidence=c, importance=i)
            for c in (0.2, 0.5, 0.9)
            for i in (0.1, 0.5, 1.0)
        }
        for e in grid.values():
            await memory.store_memory(e)

        async def ids(**kw: float) -> set[str]:
            return _ids(await memory.retrieve_memories(MemoryQuery(user_id=uid, limit=50, **kw)))

        assert await ids(min_confidence=0.5) == {
            str(e.id) for (c, _), e in grid.items() if c >= 0.5
        }
        assert await ids(min_importance=0.5) == {
            str(e.id) for (_, i), e in grid.items() if i >= 0.5
        }
        both = await ids(min_confidence=0.9, min_importance=1.0)
        assert both == {str(grid[(0.9, 1.0)].id)}

    async def test_limit_and_order_without_text(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entries = [
            make_memory_entry(uid, "low old", importance=0.1, created_at=at(0)),
            make_memory_entry(uid, "high old", importance=0.9, created_at=at(1)),
            make_memory_entry(uid, "high new", importance=0.9, created_at=at(2)),
            make_memory_entry(uid, "mid", importance=0.5, created_at=at(3)),
            make_memory_entry(uid, "low new", importance=0.1, created_at=at(4)),
        ]
        for e in entries:
            await memory.store_memory(e)
        got = await memory.retrieve_memories(MemoryQuery(user_id=uid))
        assert [e.content for e in got] == ["high new", "high old", "mid", "low new", "low old"]
        top = await memory.retrieve_memories(MemoryQuery(user_id=uid, limit=2))
        assert [e.content for e in top] == ["high new", "high old"]

    async def test_expired_entries(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        now = utcnow()
        gone = make_memory_entry(uid, "expired yesterday", expires_at=now - timedelta(days=1))
        soon = make_memory_entry(uid, "expires next year", expires_at=now + timedelta(days=365))
        never = make_memory_entry(uid, "never expires")
        for e in (gone, soon, never):
            await memory.store_memory(e)
        visible = await memory.retrieve_memories(MemoryQuery(user_id=uid))
        assert _ids(visible) == {str(soon.id), str(never.id)}
        everything = await memory.retrieve_memories(MemoryQuery(user_id=uid, include_expired=True))
        if memory.deletes_expired_itself:  # the engine may have deleted it already
            assert {str(soon.id), str(never.id)} <= _ids(everything) <= _ids([gone, soon, never])
            await memory.purge_expired()
        else:
            assert _ids(everything) == {str(gone.id), str(soon.id), str(never.id)}
            assert await memory.purge_expired() >= 1
        after = await memory.retrieve_memories(MemoryQuery(user_id=uid, include_expired=True))
        assert _ids(after) == {str(soon.id), str(never.id)}
        assert (await memory.get_statistics(uid))["memories"] == 2

    async def test_replace_by_id(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entry = make_memory_entry(uid, "favourite fruit is mango", category="food")
        await memory.store_memory(entry)
        newer = entry.model_copy(deep=True)
        newer.update_content("favourite fruit is papaya")
        newer.metadata.category = "diet"
        await memory.store_memory(newer)
        (got,) = await memory.retrieve_memories(MemoryQuery(user_id=uid))
        assert got == newer
        assert await memory.retrieve_memories(MemoryQuery(user_id=uid, categories=["food"])) == []
        assert (await memory.get_statistics(uid))["memories"] == 1

    async def test_another_users_id_is_refused(self, memory: MemoryBackend) -> None:
        alice, bob = new_user_id(), new_user_id()
        entry = make_memory_entry(alice, "alice's entry")
        await memory.store_memory(entry)
        with pytest.raises(OwnershipError):
            await memory.store_memory(entry.model_copy(update={"user_id": bob}))
        with pytest.raises(PermissionError):  # OwnershipError is a PermissionError
            await memory.store_memory(entry.model_copy(update={"user_id": bob}))
        (kept,) = await memory.retrieve_memories(MemoryQuery(user_id=alice))
        assert kept == entry
        assert await memory.retrieve_memories(MemoryQuery(user_id=bob)) == []

    async def test_delete(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        keep = make_memory_entry(uid, "stays")
        drop = make_memory_entry(uid, "goes")
        await memory.store_memory(keep)
        await memory.store_memory(drop)
        await memory.delete_memory(str(drop.id))
        assert _ids(await memory.retrieve_memories(MemoryQuery(user_id=uid))) == {str(keep.id)}
        await memory.delete_memory(str(drop.id))  # deleting again is a no-op
        await memory.delete_memory(str(keep.id), user_id=uid)
        assert await memory.retrieve_memories(MemoryQuery(user_id=uid, include_expired=True)) == []
        assert (await memory.get_statistics(uid))["memories"] == 0


@requires(Capability.MEMORIES, Capability.FULL_TEXT)
class MemoryTextQuerySuite(ConformanceBase):
    """``query_text`` ranks entries; ``similarity_threshold`` drops weak matches."""

    suite_search_mode: ClassVar[str] = "keyword"

    async def _entries(self, memory: MemoryBackend, uid: str) -> dict[str, MemoryEntry]:
        entries = {
            "both": make_memory_entry(uid, "loves jazz music concerts", category="music"),
            "jazz": make_memory_entry(uid, "once heard jazz on a cruise ship at night"),
            "music": make_memory_entry(uid, "plays music", memory_type=MemoryType.EPISODIC),
            "other": make_memory_entry(uid, "allergic to peanuts", category="health"),
        }
        for e in entries.values():
            await memory.store_memory(e)
        return entries

    async def test_query_text_ranks(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entries = await self._entries(memory, uid)
        got = await memory.retrieve_memories(MemoryQuery(user_id=uid, query_text="jazz music"))
        assert got[0].id == entries["both"].id
        assert _ids(got) == {str(entries[k].id) for k in ("both", "jazz", "music")}

    async def test_similarity_threshold(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entries = await self._entries(memory, uid)
        strict = MemoryQuery(user_id=uid, query_text="jazz music", similarity_threshold=1.0)
        assert _ids(await memory.retrieve_memories(strict)) == {str(entries["both"].id)}
        loose = MemoryQuery(user_id=uid, query_text="jazz music", similarity_threshold=0.0)
        assert len(await memory.retrieve_memories(loose)) == 3

    async def test_query_text_honours_filters(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entries = await self._entries(memory, uid)
        typed = MemoryQuery(
            user_id=uid, query_text="jazz music", memory_types=[MemoryType.EPISODIC]
        )
        assert _ids(await memory.retrieve_memories(typed)) == {str(entries["music"].id)}
        by_cat = MemoryQuery(user_id=uid, query_text="music", categories=["music"])
        assert _ids(await memory.retrieve_memories(by_cat)) == {str(entries["both"].id)}
        limited = MemoryQuery(user_id=uid, query_text="jazz music", limit=1)
        assert [e.id for e in await memory.retrieve_memories(limited)] == [entries["both"].id]

    async def test_query_text_skips_expired_unless_asked(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        old = make_memory_entry(uid, "expired kumquat", expires_at=utcnow() - timedelta(hours=1))
        await memory.store_memory(old)
        q = MemoryQuery(user_id=uid, query_text="kumquat")
        assert await memory.retrieve_memories(q) == []
        q = MemoryQuery(user_id=uid, query_text="kumquat", include_expired=True)
        found = _ids(await memory.retrieve_memories(q))
        # Unless the engine deleted it already on its own schedule.
        assert found == {str(old.id)} or (memory.deletes_expired_itself and not found)

    async def test_replaced_text_is_reindexed(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entry = make_memory_entry(uid, "drives a tractor")
        await memory.store_memory(entry)
        await memory.store_memory(entry.model_copy(update={"content": "rides a bicycle"}))
        assert await memory.retrieve_memories(MemoryQuery(user_id=uid, query_text="tractor")) == []
        assert await memory.search_memories(uid, "tractor") == []
        found = await memory.retrieve_memories(MemoryQuery(user_id=uid, query_text="bicycle"))
        assert _ids(found) == {str(entry.id)}
