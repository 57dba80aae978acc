"""The kit's user cache, keyword index, exact vector search and batches."""

from __future__ import annotations

import asyncio

import numpy as np

from bruno_memstore.backends.kit.batches import batches, chunks
from bruno_memstore.backends.kit.keyword_index import KeywordIndex, KeywordIndexes
from bruno_memstore.backends.kit.user_cache import UserCache
from bruno_memstore.backends.kit.vectors import MemoryKey, VectorIndex, nearest
from bruno_memstore.models import MemoryFilter, MemoryRecord, MessageRecord, SearchRequest


def message(rid: str, text: str, conversation: str = "c1", ts_us: int = 0) -> MessageRecord:
    return MessageRecord(rid, conversation, "user", text, "text", "", ts_us, "{}", None, "u", 1)


def memory(rid: str, text: str, importance: float = 0.5, conversation: str | None = None):
    return MemoryRecord(
        rid, "u", text, "fact", None, [], 1.0, importance, 0, None, conversation, "{}"
    )


# ==================================================================== user cache


async def test_a_cached_entry_is_kept_while_its_version_holds() -> None:
    cache: UserCache[list[str]] = UserCache()
    loads: list[int] = []

    async def load() -> list[str]:
        loads.append(1)
        return ["a"]

    first = await cache.get("u", 1, load)
    assert await cache.get("u", 1, load) is first and cache.loads == 1
    assert await cache.get("u", 2, load) is not first and cache.loads == 2
    assert cache.current("u") is not None  # None: any version (only this process writes)


async def test_own_writes_patch_or_drop_the_entry() -> None:
    cache: UserCache[list[str]] = UserCache()
    entry = await cache.get("u", None, _value(["a"]))
    cache.changed("u", lambda value: value.append("b"))
    assert cache.current("u") is entry and entry == ["a", "b"]
    cache.changed("u")
    assert cache.current("u") is None


async def test_a_load_that_overlapped_a_write_is_used_once_not_kept() -> None:
    cache: UserCache[list[str]] = UserCache()

    async def slow() -> list[str]:
        cache.changed("u")  # a write lands while the data is read
        return ["stale?"]

    assert await cache.get("u", None, slow) == ["stale?"]
    assert cache.current("u") is None


async def test_versions_read_from_the_value_follow_patches() -> None:
    cache: UserCache[list[str]] = UserCache(version_of=len)
    await cache.get("u", 1, _value(["a"]))
    cache.changed("u", lambda value: value.append("b"))
    assert cache.current("u", 2) == ["a", "b"] and cache.current("u", 1) is None


async def test_one_load_per_user_at_a_time_and_least_recent_users_go() -> None:
    cache: UserCache[list[str]] = UserCache(max_users=2)
    started = asyncio.Event()

    async def load() -> list[str]:
        started.set()
        await asyncio.sleep(0.01)
        return ["a"]

    got = await asyncio.gather(*(cache.get("u", 1, load) for _ in range(5)))
    assert cache.loads == 1 and all(g is got[0] for g in got)
    for user in ("v", "w"):
        await cache.get(user, 1, _value([user]))
    assert cache.current("u") is None and len(cache) == 2


def _value(value: list[str]):
    async def load() -> list[str]:
        return list(value)

    return load


# ==================================================================== keyword index


def test_keyword_search_filters_before_taking_the_best() -> None:
    index = KeywordIndex()
    index.add_messages(
        [
            message("m1", "otters otters otters", "c1", ts_us=1),
            message("m2", "otters", "c2", ts_us=2),
            message("m3", "otters", "c2", ts_us=3),
        ]
    )
    index.add_memory(memory("e1", "otters otters", importance=0.1))
    index.add_memory(memory("e2", "otters", importance=0.9, conversation="c2"))
    # m1 scores best but is in another conversation; equal scores: newest first.
    found = index.search(SearchRequest("u", "otter", conversation_id="c2", limit=3))
    assert [rid for _, rid, _ in found] == ["m3", "m2", "e2"]
    strict = MemoryFilter("u", min_importance=0.5)
    found = index.search(SearchRequest("u", "otters", frozenset({"memory"}), memory_filter=strict))
    assert [rid for _, rid, _ in found] == ["e2"]
    messages = index.search(SearchRequest("u", "otters", frozenset({"message"}), limit=1))
    assert [rid for _, rid, _ in messages] == ["m1"]
    index.remove("message", "m3")
    assert index.stamps() == (2, 1, 2, 0)


async def test_keyword_indexes_leave_out_records_deleted_meanwhile() -> None:
    indexes = KeywordIndexes()

    async def load() -> KeywordIndex:
        index = KeywordIndex()
        index.add_messages([message("m1", "kept"), message("m2", "kept too")])
        return index

    async def fetch(found):
        return {"m1": message("m1", "kept")}, {}

    hits = await indexes.search(SearchRequest("u", "kept"), None, load, fetch)
    assert [h.message.id for h in hits if h.message] == ["m1"]


# ==================================================================== exact vectors


def test_nearest_applies_kinds_conversation_and_memory_filter() -> None:
    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(4, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    messages, memories = VectorIndex(), VectorIndex()
    messages.put("m1", vecs[0], conversation="c1")
    messages.put("m2", vecs[1], conversation="c2")
    low, high = memory("e1", "", importance=0.1), memory("e2", "", importance=0.9)
    memories.put(MemoryKey(low), vecs[0])
    memories.put(MemoryKey(high), vecs[2])
    request = SearchRequest("u", "", memory_filter=MemoryFilter("u", min_importance=0.5))
    found = nearest(request, vecs[0], messages=messages, memories=memories)
    assert found[0][:2] == ("message", "m1") and {rid for _, rid, _ in found} == {"m1", "m2", "e2"}
    assert [score for _, _, score in found] == sorted((s for _, _, s in found), reverse=True)
    scoped = nearest(
        SearchRequest("u", "", frozenset({"message"}), "c2"), vecs[0], messages=messages
    )
    assert [rid for _, rid, _ in scoped] == ["m2"]


# ==================================================================== batches


async def test_batches_regroup_records_and_chunks_cut_work() -> None:
    async def records():
        for i in range(7):
            yield i

    assert [b async for b in batches(records(), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b async for b in batches(range(4), 2)] == [[0, 1], [2, 3]]
    assert [b async for b in batches([], 2)] == []
    assert list(chunks([1, 2, 3], 2)) == [[1, 2], [3]]
