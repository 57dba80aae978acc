"""Vector search under every memory filter answers as the in-process reference does.

Another user's records, nearer to each query than anything of the searched user's, stand
around: an engine that filters inside its query neither leaks them in nor lets them crowd
the user's own records out; one that filters afterwards fails here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bruno_core.models.memory import MemoryType

from ...backends.memory import InMemoryStorage
from ...base import MemoryBackend
from ...capabilities import Capability
from ...models import MemoryFilter, SearchHit, SearchRequest, to_us, utcnow
from ..builders import at, make_memory_entry, make_message, new_conversation_id, new_user_id
from ..harness import ConformanceBase, requires

__all__ = ["VectorFilterSuite", "assert_same_ranking"]

_TOPICS = [
    "my sister adopted a small grey kitten from the animal shelter",
    "the quarterly tax return is due at the end of the month",
    "we hiked up the mountain trail and camped near the summit",
    "I am learning to bake sourdough bread with a new starter",
    "the football match went to penalties after extra time",
    "our flight to Lisbon was delayed by three hours",
]


def _hit_id(hit: SearchHit) -> tuple[str, str]:
    rec = hit.message if hit.message is not None else hit.memory
    assert rec is not None
    return (hit.kind, rec.id)


def assert_same_ranking(ours: list[SearchHit], theirs: list[SearchHit], context: Any) -> None:
    """Same scores position by position (to 1e-4), and the same records wherever a score is
    not tied with the last one returned."""
    assert len(ours) == len(theirs), context
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a.score - b.score) < 1e-4, context
    if theirs:
        bar = theirs[-1].score + 1e-4
        assert {_hit_id(h) for h in ours if h.score > bar} == {
            _hit_id(h) for h in theirs if h.score > bar
        }, context


async def _forget_vanished(
    memory: MemoryBackend, reference: MemoryBackend, expired: set[str], ours: list[SearchHit]
) -> None:
    """For an engine that deletes expired entries on its own schedule: the reference forgets
    those gone now that the search did not return. Either they were gone before it ran, or
    they ranked below what it returned, so forgetting them changes nothing it should show."""
    shown = {rec_id for kind, rec_id in map(_hit_id, ours) if kind == "memory"}
    for memory_id in sorted(expired - shown):
        if await memory._get_memory(memory_id) is None:
            await reference._delete_memory(memory_id)
            expired.discard(memory_id)


@requires(Capability.VECTORS, Capability.MEMORIES)
class VectorFilterSuite(ConformanceBase):
    """``_vector_search`` with each filter, kind, conversation and limit."""

    async def test_vector_filters_match_the_in_process_reference(
        self, memory: MemoryBackend
    ) -> None:
        embedder = memory.embedder
        assert embedder is not None
        reference = InMemoryStorage(embedding_model=embedder)
        user, other = new_user_id(), new_user_id()
        convs = [new_conversation_id(), new_conversation_id()]
        now = utcnow()
        types = [MemoryType.FACT, MemoryType.SEMANTIC, MemoryType.EPISODIC]
        expired: set[str] = set()
        for i in range(36):
            topic = _TOPICS[i % len(_TOPICS)]
            msg = make_message(f"{topic}, told on day {i}", timestamp=at(i))
            entry = make_memory_entry(
                user,
                f"note {i}: {topic}",
                memory_type=types[i % 3],
                category=["pets", "money", None][i % 3],
                tags=[f"t{i % 4}", "all"] if i % 5 else [],
                confidence=(i % 10) / 10,
                importance=((i * 7) % 10) / 10,
                expires_at=now - timedelta(hours=1) if i % 7 == 0 else None,
                conversation_id=convs[i % 2] if i % 4 == 0 else None,
            )
            for target in (memory, reference):
                await target.store_message(msg, user, convs[i % 2])
                await target.store_memory(entry)
            if entry.expires_at is not None:
                expired.add(str(entry.id))
        for topic in _TOPICS:  # nearer than anything of the user's
            await memory.store_message(make_message(topic), other, new_conversation_id())
            await memory.store_memory(make_memory_entry(other, topic, category="pets"))
        now_us = to_us(now)
        filters = [
            MemoryFilter(user, now_us=now_us),
            MemoryFilter(user, memory_types=("semantic",), now_us=now_us),
            MemoryFilter(user, categories=("pets",), now_us=now_us),
            MemoryFilter(user, tags=("t1", "t2"), now_us=now_us),
            MemoryFilter(user, min_confidence=0.5, min_importance=0.4, now_us=now_us),
            MemoryFilter(user, include_expired=True, now_us=now_us),
        ]
        # Every filter with the whole ranking (limit 80: all of the user's records), and the
        # kinds, the conversation and short limits on a few.
        shapes = [
            (frozenset({"message", "memory"}), None, 80),
            (frozenset({"memory"}), None, 80),
            (frozenset({"message", "memory"}), convs[0], 80),
            (frozenset({"message", "memory"}), None, 4),
            (frozenset({"memory"}), convs[0], 1),
        ]
        try:
            for query in ("a cat from the animal shelter", "paying taxes"):
                vector = await embedder.embed_one(query)
                for flt in filters:
                    for kinds, conv, limit in shapes:
                        request = SearchRequest(user, "", kinds, conv, limit, memory_filter=flt)
                        ours = await memory._vector_search(request, vector)  # type: ignore[attr-defined]
                        if flt.include_expired and memory.deletes_expired_itself:
                            await _forget_vanished(memory, reference, expired, ours)
                        theirs = await reference._vector_search(request, vector)
                        assert_same_ranking(ours, theirs, (query, flt, sorted(kinds), conv, limit))
        finally:
            await reference.shutdown()
