"""Concurrent embedding requests share model calls: the real default model, a real SQLite store.

A wrapping model holds its first call until the test has queued the others behind it, so
which requests share a call is decided by the code, not by timing; it records every call's
texts, and fails the calls it is told to.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from bruno_core.models.message import Message, MessageRole

from bruno_memstore import open_memory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.embeddings import Embedder
from bruno_memstore.embeddings.local import OnnxMiniLMEmbedder, length_groups
from bruno_memstore.errors import BackendError

WORDS = "the puppy painted a sunrise over quiet lake while bank rates rose again in spring".split()


def _texts(n: int, salt: str) -> list[str]:
    """Distinct sentences of 2 to 40 words (so the model's length groups differ)."""
    return [
        f"{salt} {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(2 + i * 3 % 39))
        for i in range(n)
    ]


class GatedModel:
    """The real model behind a gate (its first call waits), counting calls, failing on cue."""

    def __init__(self, inner: OnnxMiniLMEmbedder) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.dimension = inner.dimension
        self.calls: list[list[str]] = []
        self.fail_calls: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        first = not self.gate.is_set()
        if first:
            assert self.gate.wait(timeout=120), "the test never opened the gate"
        index = len(self.calls)
        self.calls.append(list(texts))
        if index in self.fail_calls:
            raise RuntimeError(f"model call {index} broke")
        return self.inner.embed_batch(texts)


@pytest.fixture(scope="module")
def onnx() -> OnnxMiniLMEmbedder:
    model = OnnxMiniLMEmbedder()
    model.load()
    return model


@pytest_asyncio.fixture
async def gated(
    onnx: OnnxMiniLMEmbedder, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[MemoryBackend, GatedModel, Path]]:
    model = GatedModel(onnx)
    batch_size = getattr(request, "param", 64)
    path = tmp_path / "memory.db"
    memory = open_memory(
        f"sqlite:///{path}", embedding_model=Embedder(model, batch_size=batch_size)
    )
    await memory.store_message(_message("connects the store"), "u", "setup")
    model.calls.clear()
    yield memory, model, path
    await memory.shutdown()


def _message(text: str) -> Message:
    return Message(role=MessageRole.USER, content=text)


async def _until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (they only need a few loop turns)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


async def _held_then_released(
    memory: MemoryBackend, model: GatedModel, first: str, rest: list[str]
) -> list[object]:
    """Store ``first`` (its call held at the gate), queue ``rest`` behind it, then release."""
    embedder = memory.embedder
    assert embedder is not None
    model.gate.clear()
    before = embedder.batcher.calls
    lead = asyncio.create_task(memory.store_message(_message(first), "u", "c"))
    await _until(lambda: embedder.batcher.calls > before)  # the lead's call has started
    followers = [asyncio.create_task(memory.store_message(_message(t), "u", "c")) for t in rest]
    await _until(lambda: embedder.batcher.waiting() == len(rest))
    model.gate.set()
    return await asyncio.gather(lead, *followers, return_exceptions=True)


def _stored_vectors(path: Path) -> dict[str, np.ndarray]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT m.content, v.vector FROM messages m JOIN message_vectors v ON v.seq = m.seq"
        ).fetchall()
    return {content: np.frombuffer(blob, dtype="<f4") for content, blob in rows}


def _stored_contents(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT content FROM messages")}


async def test_concurrent_stores_share_a_call_and_keep_the_vectors_of_lone_ones(
    gated: tuple[MemoryBackend, GatedModel, Path], onnx: OnnxMiniLMEmbedder
) -> None:
    memory, model, path = gated
    first, *rest = _texts(33, "shared")
    results = await _held_then_released(memory, model, first, rest)
    assert not [r for r in results if isinstance(r, BaseException)]
    # The lead alone, then the 32 that queued behind it in one call, in arrival order.
    assert model.calls == [[first], rest]
    stored = _stored_vectors(path)
    for text in [first, *rest]:
        alone = onnx.embed_batch([text])[0]  # one text per call: no padding
        assert float(stored[text] @ alone) > 0.9999, text
        np.testing.assert_allclose(stored[text], alone, atol=1e-5)


@pytest.mark.parametrize("gated", [8], indirect=True)
async def test_a_merged_call_holds_at_most_batch_size_texts(
    gated: tuple[MemoryBackend, GatedModel, Path],
) -> None:
    memory, model, path = gated
    first, *rest = _texts(21, "limit")
    results = await _held_then_released(memory, model, first, rest)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert [len(c) for c in model.calls] == [1, 8, 8, 4]
    assert [t for c in model.calls for t in c] == [first, *rest]  # arrival order
    assert {first, *rest} <= _stored_contents(path)


@pytest.mark.parametrize("gated", [16], indirect=True)
async def test_a_failing_call_fails_its_callers_only_and_writes_nothing_for_them(
    gated: tuple[MemoryBackend, GatedModel, Path],
) -> None:
    memory, model, path = gated
    model.fail_calls = {1}  # the first merged call (after the lead's)
    first, *rest = _texts(33, "failing")
    results = await _held_then_released(memory, model, first, rest)
    assert [len(c) for c in model.calls] == [1, 16, 16]
    failed, fine = results[1:17], [results[0], *results[17:]]
    assert not [r for r in fine if isinstance(r, BaseException)]
    for err in failed:
        assert isinstance(err, BackendError)
        assert str(err) == (
            f"[sqlite/store_message] the embedding model {OnnxMiniLMEmbedder.model_name!r} "
            "failed: RuntimeError: model call 1 broke; nothing was written"
        )
        assert isinstance(err.cause, RuntimeError)
    stored = _stored_contents(path)
    assert not stored & set(rest[:16])
    assert {first, *rest[16:]} <= stored
    # The next request runs as usual.
    await memory.store_message(_message("after the failure"), "u", "c")
    assert "after the failure" in _stored_contents(path)


async def test_a_cancelled_waiter_leaves_the_others_their_vectors(
    gated: tuple[MemoryBackend, GatedModel, Path],
) -> None:
    memory, model, _path = gated
    embedder = memory.embedder
    assert embedder is not None
    model.gate.clear()
    before = embedder.batcher.calls
    lead = asyncio.create_task(embedder.embed(["lead text"]))
    await _until(lambda: embedder.batcher.calls > before)
    waiters = [asyncio.create_task(embedder.embed([f"waiter {i}"])) for i in range(3)]
    await _until(lambda: embedder.batcher.waiting() == 3)
    waiters[1].cancel()
    model.gate.set()
    await lead
    kept = [await waiters[0], await waiters[2]]
    with pytest.raises(asyncio.CancelledError):
        await waiters[1]
    assert model.calls == [["lead text"], ["waiter 0", "waiter 2"]]
    assert all(v.shape == (1, OnnxMiniLMEmbedder.dimension) for v in kept)


def test_length_groups_bound_size_and_padding() -> None:
    lengths = [10, 40, 11, 12, 41, 10, 90, 39, 11, 10]
    groups = length_groups(lengths, max_group=3, spread=4)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        sizes = [lengths[i] for i in group]
        assert len(group) <= 3
        assert max(sizes) - min(sizes) <= 4
    assert [sorted(lengths[i] for i in g) for g in groups] == [
        [10, 10, 10],
        [11, 11, 12],
        [39, 40, 41],
        [90],
    ]


def test_mixed_lengths_in_one_call_give_the_vectors_of_lone_texts(
    onnx: OnnxMiniLMEmbedder,
) -> None:
    texts = [*_texts(40, "mixed"), "word " * 400]  # the last one is truncated
    together = onnx.embed_batch(texts)
    alone = np.stack([onnx.embed_batch([t])[0] for t in texts])
    assert np.sum(together * alone, axis=1).min() > 0.9999
    np.testing.assert_allclose(together, alone, atol=1e-5)


async def test_a_search_query_shares_the_call_of_the_stores_it_waits_with(
    gated: tuple[MemoryBackend, GatedModel, Path],
) -> None:
    memory, model, _path = gated
    embedder = memory.embedder
    assert embedder is not None
    await memory.store_message(_message("my grey kitten is called Miso"), "u", "c")
    model.calls.clear()
    model.gate.clear()
    before = embedder.batcher.calls
    lead = asyncio.create_task(memory.store_message(_message("lead message"), "u", "c"))
    await _until(lambda: embedder.batcher.calls > before)
    stores = [
        asyncio.create_task(memory.store_message(_message(f"queued message {i}"), "u", "c"))
        for i in range(3)
    ]
    search = asyncio.create_task(memory.search("u", "kitten name", mode="hybrid"))
    await _until(lambda: embedder.batcher.waiting() == 4)
    model.gate.set()
    await asyncio.gather(lead, *stores)
    hits = await search
    assert model.calls == [
        ["lead message"],
        ["queued message 0", "queued message 1", "queued message 2", "kitten name"],
    ]
    assert hits and hits[0].message is not None
    assert hits[0].message.content == "my grey kitten is called Miso"
