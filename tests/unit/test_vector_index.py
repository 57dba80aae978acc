"""The exact in-process vector index, its fusion partner and the append-log follower."""

from __future__ import annotations

import numpy as np
import pytest

from bruno_memstore.backends.kit.vectors import (
    AppendLogIndexes,
    UserVectorCache,
    VectorIndex,
    top_k,
)
from bruno_memstore.models import MessageRecord, SearchHit
from bruno_memstore.ranking import fuse


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_search_is_exact_and_ordered() -> None:
    vecs = unit_vectors(500)
    index = VectorIndex()
    index.put_many((i, v) for i, v in enumerate(vecs))
    query = vecs[42]
    expected = np.argsort(-(vecs @ query), kind="stable")[:10]
    found = index.search(query, 10)
    assert [k for k, _ in found] == list(expected)
    assert found[0] == (42, pytest.approx(1.0, abs=1e-5))


def test_bulk_and_single_puts_agree_and_replace() -> None:
    vecs = unit_vectors(300)
    bulk, single = VectorIndex(), VectorIndex()
    items = [(i, v, "message" if i % 3 else "memory", f"c{i % 7}") for i, v in enumerate(vecs)]
    bulk.put_many(items)
    for key, vec, kind, conv in items:
        single.put(key, vec, kind=kind, conversation=conv)
    for query in vecs[:20]:
        for options in ({}, {"kinds": ["memory"]}, {"kinds": ["message"], "conversation": "c3"}):
            assert bulk.search(query, 7, **options) == single.search(query, 7, **options)
    bulk.put_many([(5, vecs[200]), (5, vecs[201])])  # a key twice in one call: the last wins
    assert len(bulk) == 300
    assert bulk.search(vecs[201], 1)[0][0] == 5


def test_filters_apply_before_ranking() -> None:
    vecs = unit_vectors(200)
    index = VectorIndex()
    index.put_many((i, v, "message", "crowd") for i, v in enumerate(vecs[:199]))
    index.put(199, -vecs[0], kind="message", conversation="mine")  # the farthest of all
    assert [k for k, _ in index.search(vecs[0], 5, conversation="mine")] == [199]
    assert index.search(vecs[0], 5, kinds=["memory"]) == []
    assert [k for k, _ in index.search(vecs[0], 3, lambda k: k == 199)] == [199]


def test_remove_keeps_the_rest_searchable() -> None:
    vecs = unit_vectors(50)
    index = VectorIndex()
    index.put_many((i, v, "message", f"c{i % 2}") for i, v in enumerate(vecs))
    assert index.remove(0) and not index.remove(0)
    assert 0 not in index and len(index) == 49
    assert index.search(vecs[0], 1)[0][0] != 0
    assert index.search(vecs[49], 1, conversation="c1")[0][0] == 49


def test_dimension_mismatch_is_refused() -> None:
    index = VectorIndex()
    index.put("a", np.ones(4))
    with pytest.raises(ValueError):
        index.put("b", np.ones(5))
    with pytest.raises(ValueError):
        index.put_many([("c", np.ones(3))])


def test_top_k_breaks_ties_by_position() -> None:
    assert list(top_k(np.array([0.5, 0.9, 0.9, 0.1]), 3)) == [1, 2, 0]
    assert list(top_k(np.array([]), 3)) == []


def _hit(rid: str, conv: str, score: float) -> SearchHit:
    rec = MessageRecord(rid, conv, "user", rid, "text", "", int(score * 1000), "{}")
    return SearchHit("message", score, message=rec)


def test_fusion_scores_and_conversation_evidence() -> None:
    text = [_hit("a", "c1", 9.0), _hit("b", "c2", 3.0), _hit("c", "c3", 1.0)]
    near = [_hit("d", "c1", 0.8), _hit("b", "c2", 0.7), _hit("e", "c4", 0.1)]
    fused = fuse(text, near, limit=10)
    scores = {h.message.id: h.score for h in fused if h.message}
    assert set(scores) == {"a", "b", "c", "d", "e"}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert fused[0].message is not None and fused[0].message.id == "a"
    # d shares its conversation with the best keyword hit, e (its vector score alone) not.
    alone = fuse(text, near, conversation_weight=0.0, limit=10)
    plain = {h.message.id: h.score for h in alone if h.message}
    assert scores["d"] * 1.3 > plain["d"] and scores["e"] * 1.3 == pytest.approx(plain["e"])


async def test_append_log_indexes_fetch_only_the_new_vectors() -> None:
    vecs = unit_vectors(30)
    stored = [(i, vecs[i]) for i in range(20)]
    loads: list[int] = []
    deltas: list[int] = []

    async def load() -> list[tuple[int, np.ndarray]]:
        loads.append(len(stored))
        return list(stored)

    async def delta(after: int):
        deltas.append(after)
        return [(i, vecs[i]) for i in range(after, len(stored))], len(stored)

    logged = AppendLogIndexes(UserVectorCache())
    index = await logged.index("u", "epoch-1", 20, load, delta)
    assert len(index) == 20 and loads == [20]
    stored += [(i, vecs[i]) for i in range(20, 25)]
    again = await logged.index("u", "epoch-1", 25, load, delta)
    assert again is index and len(index) == 25 and loads == [20] and deltas == [20]

    async def gone(after: int):
        return None  # the log no longer reaches back: reload

    stored += [(i, vecs[i]) for i in range(25, 30)]
    fresh = await logged.index("u", "epoch-1", 30, load, gone)
    assert len(fresh) == 30 and loads == [20, 30]


def test_top_k_breaks_ties_at_the_cut_by_index() -> None:
    rng = np.random.default_rng(7)
    for _ in range(500):
        scores = rng.integers(0, 4, int(rng.integers(1, 50))).astype(np.float32)
        k = int(rng.integers(1, scores.size + 2))
        expected = sorted(range(scores.size), key=lambda i: (-scores[i], i))[:k]
        assert top_k(scores, k).tolist() == expected
