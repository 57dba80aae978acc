"""Vector and hybrid search: isolation, filters, deletion, scores, model changes.

These tests use the memory's own embedding model (the light local default unless the test
class configures another), so they check the engine's vector index for real.
"""

from __future__ import annotations

import numpy as np
import pytest
from bruno_core.models.memory import MemoryQuery
from bruno_core.models.message import MessageRole

from ...base import MemoryBackend
from ...capabilities import Capability
from ...embeddings.adapter import Embedder
from ...errors import CapabilityError, EmbeddingMismatchError, InvalidArgumentError
from ..builders import at, make_memory_entry, make_message, new_conversation_id, new_user_id
from ..harness import ConformanceBase, requires

__all__ = ["RenamedModel", "VectorSearchSuite", "VectorSpaceSuite"]

_TOPICS = [
    "My sister adopted a small grey kitten from the animal shelter",
    "The quarterly tax return is due at the end of the month",
    "We hiked up the mountain trail and camped near the summit",
    "I am learning to bake sourdough bread with a new starter",
    "The football match went to penalties after extra time",
    "Our flight to Lisbon was delayed by three hours",
]


class RenamedModel:
    """Another model as far as a store can tell: ``base``'s vectors under another name,
    optionally cut to ``dimension`` (for the model-change tests)."""

    def __init__(self, base: Embedder, name: str, dimension: int | None = None) -> None:
        self.base = base
        self.model_name = name
        self.cut = dimension

    async def embed_texts(self, texts: list[str]) -> list[list[float]]:
        rows = await self.base.embed(texts)
        return (rows[:, : self.cut] if self.cut else rows).tolist()


async def _store(memory: MemoryBackend, uid: str, texts: list[str], conv: str | None = None):
    conv = conv or new_conversation_id()
    msgs = [make_message(t, timestamp=at(i)) for i, t in enumerate(texts)]
    await memory.store_messages(msgs, conversation_id=conv, user_id=uid)
    return conv, msgs


@requires(Capability.VECTORS)
class VectorSearchSuite(ConformanceBase):
    """Nearest-neighbour search scoped to one user, fused with keywords in hybrid mode."""

    async def test_vector_mode_ranks_by_meaning(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        _, msgs = await _store(memory, uid, _TOPICS)
        for query, want in (
            ("a cat for the family", 0),
            ("paying income taxes", 1),
            ("walking in the hills", 2),
        ):
            found = await memory.search(uid, query, mode="vector", limit=3)
            assert found[0].message is not None and found[0].message.id == msgs[want].id, query

    async def test_scores_in_unit_interval_best_first(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        await _store(memory, uid, _TOPICS)
        await memory.store_memory(make_memory_entry(uid, "the user is allergic to peanuts"))
        for mode in ("keyword", "vector", "hybrid"):
            found = await memory.search(uid, "kitten shelter peanuts", mode=mode, limit=10)
            scores = [r.score for r in found]
            assert scores, mode
            assert all(0.0 <= s <= 1.0 for s in scores), (mode, scores)
            assert scores == sorted(scores, reverse=True), (mode, scores)

    async def test_hybrid_puts_exact_keyword_match_first(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        _, msgs = await _store(memory, uid, [*_TOPICS, "Gate B42 for the Lisbon flight"])
        found = await memory.search(uid, "B42", mode="hybrid", limit=5)
        assert found[0].message is not None and found[0].message.id == msgs[-1].id

    async def test_isolation_no_leak_no_starvation(self, memory: MemoryBackend) -> None:
        mine, other = new_user_id(), new_user_id()
        _, my_msgs = await _store(memory, mine, ["the kitten sleeps on the sofa"])
        # The other user holds many records nearer to the query than anything of mine.
        await _store(
            memory, other, [f"a grey kitten from the shelter, number {i}" for i in range(60)]
        )
        for mode in ("vector", "hybrid"):
            found = await memory.search(mine, "grey kitten from the shelter", mode=mode, limit=20)
            assert [r.message.id for r in found if r.message] == [my_msgs[0].id], mode
        theirs = await memory.search(other, "kitten on the sofa", mode="vector", limit=100)
        assert len(theirs) == 60
        assert my_msgs[0].id not in {r.message.id for r in theirs if r.message}

    async def test_conversation_filter(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        conv_a, msgs_a = await _store(memory, uid, ["my kitten chases string"])
        await _store(memory, uid, [f"kitten story {i}" for i in range(30)])
        found = await memory.search(
            uid, "kitten story", mode="vector", limit=10, conversation_id=conv_a
        )
        assert [r.message.id for r in found if r.message] == [msgs_a[0].id]

    async def test_memory_filters_apply_before_ranking(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        for i in range(30):
            await memory.store_memory(
                make_memory_entry(uid, f"likes grey kittens {i}", category="noise")
            )
        keep = make_memory_entry(uid, "owns a dog called Rex", category="pets")
        await memory.store_memory(keep)
        got = await memory.retrieve_memories(
            MemoryQuery(user_id=uid, query_text="grey kittens", categories=["pets"], limit=3)
        )
        assert [m.id for m in got] == [keep.id]

    async def test_similarity_threshold_by_meaning(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        near = make_memory_entry(uid, "the user adopted a grey kitten")
        far = make_memory_entry(uid, "quarterly tax return due date")
        await memory.store_memory(near)
        await memory.store_memory(far)
        loose = await memory.retrieve_memories(
            MemoryQuery(user_id=uid, query_text="grey kitten", similarity_threshold=0.0)
        )
        assert {m.id for m in loose} == {near.id, far.id}
        strict = await memory.retrieve_memories(
            MemoryQuery(user_id=uid, query_text="grey kitten", similarity_threshold=0.6)
        )
        assert [m.id for m in strict] == [near.id]

    async def test_expired_memories_not_found_by_vector(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        gone = make_memory_entry(uid, "a grey kitten", created_at=at(0), expires_at=at(1))
        await memory.store_memory(gone)
        found = await memory.search(uid, "grey kitten", mode="vector", kinds=("memory",))
        assert found == []

    async def test_deletion_removes_vectors(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        conv, _msgs = await _store(memory, uid, ["the grey kitten", "kitten toys"])
        entry = make_memory_entry(uid, "likes kittens")
        await memory.store_memory(entry)
        await memory.clear_conversation(uid, conv)
        await memory.delete_memory(str(entry.id))
        assert await memory.search(uid, "kitten", mode="vector", limit=10) == []
        assert await memory.search(uid, "kitten", mode="hybrid", limit=10) == []

    async def test_clear_history_keeps_system_vectors(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        conv = new_conversation_id()
        system = make_message("you talk about kittens", role=MessageRole.SYSTEM, timestamp=at(0))
        user = make_message("my kitten is grey", timestamp=at(1))
        await memory.store_messages([system, user], conversation_id=conv, user_id=uid)
        await memory.clear_history(conv)
        found = await memory.search(uid, "kitten", mode="vector", limit=10)
        assert [r.message.id for r in found if r.message] == [system.id]

    @requires(Capability.LISTING)
    async def test_forget_user_removes_vectors(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        await _store(memory, uid, ["grey kitten"])
        await memory.store_memory(make_memory_entry(uid, "kitten lover"))
        await memory.forget_user(uid)
        assert await memory.search(uid, "kitten", mode="vector", limit=10) == []

    async def test_replaced_memory_is_found_by_its_new_text(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        entry = make_memory_entry(uid, "quarterly tax return")
        await memory.store_memory(entry)
        entry.content = "a grey kitten"
        await memory.store_memory(entry)
        found = await memory.search(uid, "grey kitten", mode="vector", kinds=("memory",))
        assert [str(r.memory.id) for r in found if r.memory] == [str(entry.id)]
        assert found[0].score > 0.6

    async def test_restoring_embeds_once(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        conv = new_conversation_id()
        msg = make_message("a message stored twice, word-for-word unique 7c1e", timestamp=at(0))
        await memory.store_message(msg, uid, conv)
        assert memory.embedder is not None
        before = memory.embedder.computed
        await memory.store_message(msg, uid, conv)
        assert memory.embedder.computed == before

    async def test_context_strategies(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        texts = ["my kitten is called Miso", *[f"small talk number {i}" for i in range(10)]]
        _conv, msgs = await _store(memory, uid, texts)
        recent = await memory.retrieve_context(uid, "kitten name", limit=4)
        assert [m.id for m in recent] == [m.id for m in msgs[-4:]]
        hybrid = await memory.retrieve_context(uid, "kitten name", limit=4, strategy="hybrid")
        ids = [m.id for m in hybrid]
        assert msgs[0].id in ids and ids[-2:] == [m.id for m in msgs[-2:]]
        assert ids == [m.id for m in msgs if m.id in set(ids)]  # chronological
        relevant = await memory.retrieve_context(uid, "kitten name", limit=1, strategy="relevant")
        assert [m.id for m in relevant] == [msgs[0].id]

    async def test_bad_mode(self, memory: MemoryBackend) -> None:
        with pytest.raises(InvalidArgumentError):
            await memory.search(new_user_id(), "x", mode="fuzzy")  # type: ignore[arg-type]


@requires(Capability.VECTORS)
class VectorSpaceSuite(ConformanceBase):
    """The store records its model; another model is refused until ``reindex``."""

    async def _private(self, model: object | None = None) -> MemoryBackend:
        mem = self._track(await self.make_private_memory(), "make_private_memory")
        if model is not None:
            mem.set_embedding_model(model)
        return mem

    async def test_space_is_recorded(self, memory: MemoryBackend) -> None:
        mem = await self._private()
        await mem.initialize()
        assert mem.embedder is not None
        assert mem.vector_space == await mem.embedder.space()

    @requires(Capability.DURABLE, Capability.LISTING)
    async def test_model_change_is_refused_until_reindex(self, memory: MemoryBackend) -> None:
        first = await self._private()
        uid = new_user_id()
        _, msgs = await _store(first, uid, _TOPICS)
        await first.store_memory(make_memory_entry(uid, "the user adopted a kitten"))
        assert first.embedder is not None
        base = first.embedder
        for other in (RenamedModel(base, "renamed-model"), RenamedModel(base, "cut", 16)):
            await first.shutdown()
            second = await self._private(other)
            # The first call of a fresh instance is refused too (it connects, then checks).
            with pytest.raises(EmbeddingMismatchError, match="reindex"):
                await second.search(uid, "kitten", mode="vector")
            with pytest.raises(EmbeddingMismatchError, match="reindex"):
                await second.store_message(make_message("more"), uid, new_conversation_id())
            # Keyword search and reads still work.
            assert await second.search(uid, "kitten", mode="keyword")
            assert len(await second.retrieve_context(uid, limit=3)) == 3
            await second.shutdown()
        third = await self._private(RenamedModel(base, "cut", 16))
        counts = await third.reindex()
        assert counts == {"message": len(msgs), "memory": 1}
        assert third.vector_space is not None and third.vector_space.dimension == 16
        found = await third.search(uid, "walking in the hills", mode="vector", limit=1)
        assert found[0].message is not None and found[0].message.id == msgs[2].id
        await third.store_message(make_message("a new kitten photo"), uid, new_conversation_id())

    async def test_no_model_means_keyword_only(self, memory: MemoryBackend) -> None:
        mem = await self._private(None)
        mem.set_embedding_model(None)
        uid = new_user_id()
        await _store(mem, uid, ["grey kitten"])
        assert mem.search_mode == "keyword"
        assert await mem.search(uid, "kitten")
        with pytest.raises(CapabilityError):
            await mem.search(uid, "kitten", mode="vector")

    async def test_model_failure_writes_nothing(self, memory: MemoryBackend) -> None:
        class Broken:
            model_name = "broken"
            dimension = 8

            def embed_batch(self, texts: list[str]) -> np.ndarray:
                if any("boom" in t for t in texts):
                    raise RuntimeError("model crashed")
                return np.ones((len(texts), 8), dtype=np.float32)

        mem = await self._private(Broken())
        uid, conv = new_user_id(), new_conversation_id()
        with pytest.raises(Exception, match="model crashed"):
            await mem.store_messages(
                [make_message("fine"), make_message("boom")], conversation_id=conv, user_id=uid
            )
        assert await mem.retrieve_context(uid, limit=10) == []
