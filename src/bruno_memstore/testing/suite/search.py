"""Relevance-ranked search over a user's messages and memory entries."""

from __future__ import annotations

import random
from datetime import timedelta, timezone
from typing import ClassVar

import pytest
from bruno_core.models.message import MessageRole

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import InvalidArgumentError
from ...search import MAX_QUERY_CHARS, MAX_QUERY_TERMS, bounded_query, terms
from ..builders import at, make_memory_entry, make_message, new_conversation_id, new_user_id
from ..harness import ConformanceBase, requires
from .roundtrip import assert_same_message

__all__ = ["SearchSuite"]

_FILLER = [
    "The weather forecast says rain tomorrow and wind on the coast",
    "Meeting notes about the quarterly budget and the hiring plan",
    "My favourite colour is teal and I like the sea",
    "The train to the city leaves at nine in the morning",
    "Remember to water the plants on the balcony every week",
    "The library closes early on public holidays in the summer",
]


async def _store(memory: MemoryBackend, uid: str, texts: list[str]) -> tuple[str, list]:
    conv = new_conversation_id()
    msgs = [make_message(t, timestamp=at(i)) for i, t in enumerate(texts)]
    await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
    return conv, msgs


def _fresh_word() -> str:
    """A made-up word no other test stores: some engines weigh a term by its frequency in
    the whole store (MariaDB's FULLTEXT, a shared database), which other tests' words
    would otherwise change."""
    letters = "bcdfghjklmnpqrstvwz"
    return "".join(random.choice(letters) + random.choice("aeiou") for _ in range(5))


def _check_scores(scores: list[float]) -> None:
    assert scores, "expected at least one result"
    assert all(0.0 <= s <= 1.0 for s in scores), scores
    assert scores == sorted(scores, reverse=True), scores
    assert scores[0] == pytest.approx(1.0)


@requires(Capability.FULL_TEXT)
class SearchSuite(ConformanceBase):
    """BM25-family ranking, stemming, stop words, kinds, scores and scoping."""

    suite_search_mode: ClassVar[str] = "keyword"

    async def test_a_huge_query_is_bounded_and_still_finds(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        _, msgs = await _store(memory, uid, ["Quokkas live on Rottnest island", *_FILLER])
        # 10,000 distinct words (the first two match the message), over 100,000 characters.
        pasted = " ".join(["quokka", "rottnest", *(f"zqword{i:05d}x" for i in range(9_998))])
        assert len(pasted) > 10 * MAX_QUERY_CHARS
        kept = bounded_query(pasted)
        assert len(kept) <= MAX_QUERY_CHARS
        assert len(set(terms(kept))) == MAX_QUERY_TERMS  # what every backend searches by
        found = await memory.search_messages(pasted, user_id=uid)
        assert [m.id for m in found] == [msgs[0].id]
        assert (await memory.search(uid, pasted, limit=3))[0].message is not None
        # A match on a term past the bound is not looked for: the rest is ignored.
        late = " ".join([*(f"zq{i:05d}y" for i in range(MAX_QUERY_TERMS)), "quokka"])
        assert await memory.search_messages(late, user_id=uid) == []
        tail = " ".join(late.split()[-3:])
        assert [m.id for m in await memory.search_messages(tail, user_id=uid)] == [msgs[0].id]

    async def test_more_query_terms_rank_higher(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        texts = [
            "The solar eclipse was visible from the north",
            "A panel discussion about city transport",
            "Booked the solar panel installation for next Tuesday",
            *_FILLER,
        ]
        _, msgs = await _store(memory, uid, texts)
        found = await memory.search_messages("solar panel installation", user_id=uid)
        assert found[0].id == msgs[2].id
        assert {m.id for m in found} >= {msgs[0].id, msgs[1].id, msgs[2].id}

    async def test_rarer_terms_rank_higher(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        often, once = _fresh_word(), _fresh_word()
        days = ("one", "two", "three", "four")
        common = [f"I had a {often} with lunch on day {d}" for d in days]
        rare = f"I saw a {once} with lunch on day five"
        _, msgs = await _store(memory, uid, [*common, rare, *_FILLER])
        found = await memory.search_messages(f"{often} {once}", user_id=uid)
        assert found[0].id == msgs[4].id
        assert {m.id for m in found} == {m.id for m in msgs[:5]}

    async def test_stemming(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        _, msgs = await _store(
            memory, uid, ["She runs along the river", "The cats were sleeping", *_FILLER]
        )
        assert [m.id for m in await memory.search_messages("running", user_id=uid)] == [msgs[0].id]
        assert [m.id for m in await memory.search_messages("cat sleeps", user_id=uid)] == [
            msgs[1].id
        ]

    async def test_case_and_punctuation_do_not_matter(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        _, msgs = await _store(memory, uid, ["Visiting KYOTO, Japan!", *_FILLER])
        for query in ("kyoto", "Kyoto?", "KYOTO japan", "'kyoto'"):
            found = await memory.search_messages(query, user_id=uid)
            assert [m.id for m in found] == [msgs[0].id], query

    async def test_stop_words_do_not_match_everything(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        texts = [*_FILLER, "The zebra and the giraffe of the savannah"]
        _, msgs = await _store(memory, uid, texts)
        noise = await memory.search_messages("the and of to", user_id=uid)
        assert len(noise) < len(texts)
        mixed = await memory.search_messages("the zebra and of the", user_id=uid)
        assert [m.id for m in mixed] == [msgs[-1].id]

    async def test_metacharacters_in_queries_are_plain_text(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        _, msgs = await _store(memory, uid, ["order 66 was executed", *_FILLER])
        for query in (
            "'; DROP TABLE messages;--",
            'order" OR "1"="1',
            "NEAR(order 66)",
            "order*",
            "%order%",
            "_rder",
            "(order",
            "]]",
            "\\",
            "-order +66",
            "😀",
        ):
            found = await memory.search_messages(query, user_id=uid)
            assert all(m.id == msgs[0].id for m in found), query
        assert [m.id for m in await memory.search_messages("order", user_id=uid)] == [msgs[0].id]

    async def test_no_match_and_empty_queries(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        await _store(memory, uid, _FILLER)
        assert await memory.search_messages("xylophone", user_id=uid) == []
        assert await memory.search_messages("", user_id=uid) == []
        assert await memory.search_messages("   ", user_id=uid) == []
        assert await memory.search(uid, "!!! ???") == []

    async def test_scores_are_normalised_best_first(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        texts = ["tea", "tea and more tea, green tea", "coffee or tea", *_FILLER]
        await _store(memory, uid, texts)
        results = await memory.search(uid, "green tea")
        _check_scores([r.score for r in results])
        assert all(r.kind == "message" and r.message is not None for r in results)
        assert len(results) == 3

    async def test_limit(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        await _store(memory, uid, [f"kettle number {i}" for i in range(12)])
        assert len(await memory.search_messages("kettle", user_id=uid, limit=5)) == 5
        assert len(await memory.search_memories(uid, "kettle", limit=3)) == 3
        assert len(await memory.search(uid, "kettle", limit=20)) == 12

    async def test_conversation_scope(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        conv_a, in_a = await _store(memory, uid, ["violin lesson on monday"])
        _, in_b = await _store(memory, uid, ["violin concert on friday"])
        everywhere = await memory.search(uid, "violin")
        assert {r.message.id for r in everywhere if r.message} == {in_a[0].id, in_b[0].id}
        scoped = await memory.search(uid, "violin", conversation_id=conv_a)
        assert [r.message.id for r in scoped if r.message] == [in_a[0].id]

    async def test_search_messages_requires_a_user(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        await _store(memory, uid, ["a searchable trombone"])
        with pytest.raises(InvalidArgumentError) as info:
            await memory.search_messages("trombone")
        assert info.value.argument == "user_id"
        with pytest.raises(ValueError):
            await memory.search_messages("trombone", None)

    async def test_relevant_context_strategy(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        texts = ["we talked about sailing", *_FILLER, "sailing boats need wind", "last words"]
        _, msgs = await _store(memory, uid, texts)
        relevant = await memory.retrieve_context(uid, "sailing", limit=5, strategy="relevant")
        # The matches, oldest first.
        assert [m.id for m in relevant] == [msgs[0].id, msgs[-2].id]
        recent = await memory.retrieve_context(uid, "sailing", limit=2)
        assert [m.id for m in recent] == [msgs[-2].id, msgs[-1].id]

    async def test_results_are_the_stored_messages(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msg = make_message(
            "the narwhal 😀 said '; DROP TABLE x;--",
            role=MessageRole.ASSISTANT,
            timestamp=at(0).replace(tzinfo=timezone(timedelta(hours=9))),
            metadata={"nested": {"k": [1, None]}},
        )
        await memory.store_message(msg, uid, conv)
        (found,) = await memory.search_messages("narwhal", user_id=uid)
        assert_same_message(found, msg, conv)

    async def test_unicode_words(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        _, msgs = await _store(memory, uid, ["Ich trinke gern Kaffee in München", *_FILLER])
        found = await memory.search_messages("münchen", user_id=uid)
        assert [m.id for m in found] == [msgs[0].id]

    async def test_deleted_text_is_not_found(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        conv, _ = await _store(memory, uid, ["the harpsichord is out of tune"])
        assert len(await memory.search_messages("harpsichord", user_id=uid)) == 1
        await memory.clear_conversation(uid, conv)
        assert await memory.search_messages("harpsichord", user_id=uid) == []


@requires(Capability.FULL_TEXT, Capability.MEMORIES)
class MixedSearchSuite(ConformanceBase):
    """Search covers messages and memory entries, and says which kind each result is."""

    suite_search_mode: ClassVar[str] = "keyword"

    async def test_kinds(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        _, msgs = await _store(memory, uid, ["I went hiking in the Alps", *_FILLER])
        entry = make_memory_entry(uid, "The user enjoys hiking trips")
        await memory.store_memory(entry)
        results = await memory.search(uid, "hiking")
        assert {r.kind for r in results} == {"message", "memory"}
        for r in results:
            if r.kind == "message":
                assert r.message is not None and r.message.id == msgs[0].id
                assert r.memory is None
            else:
                assert r.memory is not None and r.memory.id == entry.id
                assert r.message is None
        _check_scores([r.score for r in results])
        only = await memory.search(uid, "hiking", kinds=("memory",))
        assert [r.kind for r in only] == ["memory"]
        assert [m.id for m in await memory.search_messages("hiking", user_id=uid)] == [msgs[0].id]

    async def test_search_memories_tags_each_result(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        _, msgs = await _store(memory, uid, ["my dog is called Biscuit"])
        entry = make_memory_entry(uid, "The user's dog is named Biscuit", category="pets")
        await memory.store_memory(entry)
        found = await memory.search_memories(uid, "biscuit dog")
        assert len(found) == 2
        by_kind = {e.metadata.custom_fields["search"]["kind"]: e for e in found}
        assert set(by_kind) == {"message", "memory"}
        assert str(by_kind["message"].id) == str(msgs[0].id)
        assert by_kind["message"].content == msgs[0].content
        assert by_kind["message"].user_id == uid
        assert by_kind["memory"].id == entry.id
        assert by_kind["memory"].metadata.category == "pets"
        _check_scores([e.metadata.custom_fields["search"]["score"] for e in found])

    async def test_expired_memories_are_not_found(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        past = at(0).replace(year=2000)
        await memory.store_memory(make_memory_entry(uid, "an expired marmalade", expires_at=past))
        assert await memory.search_memories(uid, "marmalade") == []
        assert await memory.search(uid, "marmalade") == []
