"""``vectors="deferred"``: messages acknowledged before their vectors, attached from a durable
queue (``bruno_memstore.deferred_vectors``), on SQLite files, in process memory and on
MariaDB.

Model calls are counted by a wrapping model, never timed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

import _engines as engines
from _killed_writer import acknowledged_until_killed, writer_script
from bruno_memstore import open_memory
from bruno_memstore.backends.kit.vectors import vector_from_bytes
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.mysql import MySQLMemory
from bruno_memstore.backends.redis import RedisMemory
from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.backends.sqlite.schema import LATEST_VERSION
from bruno_memstore.base import MemoryBackend
from bruno_memstore.embeddings import Embedder
from bruno_memstore.embeddings.local import OnnxMiniLMEmbedder
from bruno_memstore.errors import BackendError, CapabilityError, InvalidArgumentError
from bruno_memstore.testing import make_message, new_conversation_id, new_user_id


class CountingModel:
    """The real model, counting the texts of each call; refuses texts marked ``refused``."""

    def __init__(self, inner: OnnxMiniLMEmbedder) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.dimension = inner.dimension
        self.calls: list[list[str]] = []
        self.refused: set[str] = set()
        self.lock = threading.Lock()

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        with self.lock:
            self.calls.append(list(texts))
        if self.refused.intersection(texts):
            raise RuntimeError("the model is down")
        return self.inner.embed_batch(texts)

    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


@pytest.fixture(scope="module")
def onnx() -> OnnxMiniLMEmbedder:
    model = OnnxMiniLMEmbedder()
    model.load()
    return model


@pytest.fixture
def model(onnx: OnnxMiniLMEmbedder) -> CountingModel:
    return CountingModel(onnx)


Opener = Callable[..., MemoryBackend]


@pytest.fixture(params=["sqlite", "memory", "mysql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the store of this test (the same file, or tables, each time)."""
    if request.param == "memory":
        return lambda model, **kw: InMemoryStorage(embedding_model=Embedder(model), **kw)
    if request.param == "mysql":
        url = request.getfixturevalue("mysql_url")
        tables = f"{engines.SQL_PREFIX}d{uuid.uuid4().hex[:8]}_"  # dropped after the session
        return lambda model, **kw: MySQLMemory(
            url, table_prefix=tables, embedding_model=Embedder(model), **kw
        )
    path = tmp_path / "memory.db"
    return lambda model, **kw: SQLiteMemory(path, embedding_model=Embedder(model), **kw)


@pytest_asyncio.fixture
async def deferred(opener: Opener, model: CountingModel) -> AsyncIterator[MemoryBackend]:
    memory = opener(model, vectors="deferred")
    try:
        yield memory
    finally:
        await memory.shutdown()


async def _pending(memory: MemoryBackend) -> list[str]:
    await memory._ensure_connected()
    return [rid for _key, rid, _text in await memory._without_vectors("message", 0, 10_000)]  # type: ignore[attr-defined]


def _raw_vectors(path: Path) -> dict[str, np.ndarray]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT m.id, v.vector FROM message_vectors v JOIN messages m ON m.seq = v.seq"
        ).fetchall()
    return {rid: vector_from_bytes(blob) for rid, blob in rows}


def _raw_pending(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM vector_pending").fetchone()[0])


# ------------------------------------------------------------------------------ configuration


def test_inline_is_the_default(tmp_path: Path) -> None:
    assert SQLiteMemory(tmp_path / "a.db").vectors == "inline"
    assert InMemoryStorage().vectors == "inline"


def test_the_url_option_chooses_deferred(tmp_path: Path) -> None:
    assert open_memory(f"sqlite:///{tmp_path / 'a.db'}?vectors=deferred").vectors == "deferred"
    assert open_memory("memory://?vectors=deferred").vectors == "deferred"
    with pytest.raises(InvalidArgumentError, match="vectors"):
        open_memory(f"sqlite:///{tmp_path / 'a.db'}?vectors=later")


def test_deferred_needs_a_model_and_the_queue(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="needs an embedding model"):
        SQLiteMemory(tmp_path / "a.db", embedding_model=None, vectors="deferred")
    memory = SQLiteMemory(tmp_path / "b.db", vectors="deferred")
    with pytest.raises(InvalidArgumentError, match="deferred"):
        memory.set_embedding_model(None)
    # A backend without the primitive refuses at construction: nothing is faked.
    with pytest.raises(CapabilityError, match="cannot acknowledge a message before its vector"):
        RedisMemory("redis://127.0.0.1:6379/0", vectors="deferred")


# ------------------------------------------------------------------------------ writes


async def test_a_deferred_message_is_keyword_searchable_at_once(
    deferred: MemoryBackend, model: CountingModel
) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    text = "the zebra crossed the savannah at dawn"
    model.refused.add(text)  # the background task cannot attach its vector
    message = make_message(text)
    await deferred.store_message(message, uid, conv)  # acknowledged all the same
    assert await _pending(deferred) == [str(message.id)]
    hits = await deferred.search(uid, "zebra", mode="keyword")
    assert [h.message.id for h in hits if h.message] == [message.id]
    # Hybrid search finds it by its keyword half; the vector half cannot yet.
    hybrid = await deferred.search(uid, "zebra savannah", mode="hybrid")
    assert [h.message.id for h in hybrid if h.message] == [message.id]
    assert await deferred.search(uid, "zebra savannah", mode="vector") == []
    model.refused.clear()
    await deferred.flush()
    found = await deferred.search(uid, "a striped animal on the plains", mode="vector")
    assert [h.message.id for h in found if h.message] == [message.id]


async def test_flush_attaches_the_vectors_inline_stores_write(
    tmp_path: Path, model: CountingModel
) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    messages = [make_message(f"note {i}: the {i}th walk by the river was cold") for i in range(40)]
    stores = {}
    for mode in ("inline", "deferred"):
        path = tmp_path / f"{mode}.db"
        async with SQLiteMemory(path, embedding_model=Embedder(model), vectors=mode) as memory:
            for message in messages[:20]:
                await memory.store_message(message, uid, conv)
            await memory.store_messages(messages[20:], conversation_id=conv, user_id=uid)
            await memory.flush()
            assert _raw_pending(path) == 0
        stores[mode] = _raw_vectors(path)
    assert set(stores["deferred"]) == {str(m.id) for m in messages} == set(stores["inline"])
    for rid, vec in stores["deferred"].items():
        assert float(np.dot(vec, stores["inline"][rid])) > 0.9999


async def test_flush_is_a_no_op_inline(tmp_path: Path, model: CountingModel) -> None:
    path = tmp_path / "inline.db"
    async with SQLiteMemory(path, embedding_model=Embedder(model)) as memory:
        await memory.store_message(make_message("a plain inline write"), "u", "c")
        calls = len(model.calls)
        await memory.flush()
        assert len(model.calls) == calls
    assert _raw_pending(path) == 0
    assert len(_raw_vectors(path)) == 1


async def test_a_failing_model_keeps_the_message_waiting(
    deferred: MemoryBackend, model: CountingModel
) -> None:
    uid, conv = new_user_id(), new_conversation_id()
    text = "my passport number is in the blue drawer"
    model.refused.add(text)
    message = make_message(text)
    await deferred.store_message(message, uid, conv)
    with pytest.raises(BackendError, match="the model is down") as raised:
        await deferred.flush()
    assert isinstance(raised.value.cause, RuntimeError)
    assert await _pending(deferred) == [str(message.id)]
    assert [m.id for m in await deferred.retrieve_messages(conv)] == [message.id]
    model.refused.clear()
    await deferred.flush()
    assert await _pending(deferred) == []
    found = await deferred.search(uid, "where is my passport", mode="vector")
    assert [h.message.id for h in found if h.message] == [message.id]


async def test_erasing_waiting_messages_leaves_nothing_waiting(
    deferred: MemoryBackend, model: CountingModel
) -> None:
    model.refused.update(f"secret {i}" for i in range(6))
    uid, other = new_user_id(), new_user_id()
    for i, (user, conv) in enumerate([(uid, "c1"), (uid, "c1"), (uid, "c2"), (other, "c3")]):
        await deferred.store_message(make_message(f"secret {i}"), user, f"{user}-{conv}")
    assert len(await _pending(deferred)) == 4
    await deferred.clear_history(f"{uid}-c1", keep_system_messages=False)
    assert len(await _pending(deferred)) == 2
    await deferred.forget_user(uid)
    assert len(await _pending(deferred)) == 1
    await deferred.clear_conversation(other, f"{other}-c3")
    assert await _pending(deferred) == []
    # The model still refuses them: a flush that raises nothing found nothing to embed.
    await deferred.flush()
    if isinstance(deferred, SQLiteMemory):
        assert _raw_pending(Path(deferred.db_path)) == 0


async def test_shutdown_leaves_waiting_messages_to_the_next_open(
    tmp_path: Path, model: CountingModel
) -> None:
    path = tmp_path / "memory.db"
    uid, conv = new_user_id(), new_conversation_id()
    texts = [f"the {i}th message stored before a shutdown" for i in range(10)]
    model.refused.update(texts)
    async with SQLiteMemory(path, embedding_model=Embedder(model), vectors="deferred") as memory:
        for text in texts:
            await memory.store_message(make_message(text), uid, conv)
    assert _raw_pending(path) == 10 and _raw_vectors(path) == {}
    model.refused.clear()
    model.calls.clear()
    async with SQLiteMemory(path, embedding_model=Embedder(model), vectors="deferred") as memory:
        await memory.flush()  # it acknowledged nothing: everything pending is waited for
    assert _raw_pending(path) == 0
    assert len(_raw_vectors(path)) == 10
    assert sorted(model.texts()) == sorted(texts)  # each embedded once


async def test_concurrent_writers_share_model_calls(
    deferred: MemoryBackend, model: CountingModel
) -> None:
    uid = new_user_id()
    writers, each = 32, 8

    async def writer(w: int) -> None:
        for i in range(each):
            await deferred.store_message(make_message(f"writer {w} says thing {i}"), uid, f"w{w}")

    await asyncio.gather(*(writer(w) for w in range(writers)))
    await deferred.flush()
    assert await _pending(deferred) == []
    stored = [t for t in model.texts() if t.startswith("writer ")]
    assert sorted(stored) == sorted(  # each embedded once
        f"writer {w} says thing {i}" for w in range(writers) for i in range(each)
    )
    assert len(model.calls) < writers * each  # batched: fewer calls than messages
    assert deferred._vector_queue.attached == writers * each
    found = await deferred.search(uid, "writer 3 says thing 5", mode="vector", limit=1)
    assert found[0].message is not None and found[0].message.content == "writer 3 says thing 5"


async def test_memory_entries_stay_inline(deferred: MemoryBackend, model: CountingModel) -> None:
    from bruno_memstore.testing import make_memory_entry

    uid = new_user_id()
    entry = make_memory_entry(uid, "allergic to peanuts")
    await deferred.store_memory(entry)
    assert "allergic to peanuts" in model.texts()  # embedded in the write itself
    found = await deferred.search(uid, "food allergy", mode="vector", kinds=("memory",))
    assert [r.memory.id for r in found if r.memory] == [entry.id]


# ------------------------------------------------------------------------------ a crash

_DEFERRED_WRITER = writer_script(
    """
    import threading
    from bruno_memstore.backends.sqlite import SQLiteMemory
    from bruno_memstore.embeddings.local import OnnxMiniLMEmbedder

    class Stuck:
        model_name = OnnxMiniLMEmbedder.model_name
        dimension = 384

        def embed_batch(self, texts):
            threading.Event().wait()  # never returns: nothing gets its vector
    """,
    'SQLiteMemory(path, embedding_model=Stuck(), vectors="deferred")',
)


@pytest.mark.slow
async def test_waiting_vectors_survive_a_killed_process(
    tmp_path: Path, model: CountingModel
) -> None:
    path = tmp_path / "memory.db"
    acked = await acknowledged_until_killed(_DEFERRED_WRITER, str(path), count=200)
    assert _raw_vectors(path) == {}  # killed before any vector was attached
    assert _raw_pending(path) >= len(acked)
    async with SQLiteMemory(path, embedding_model=Embedder(model), vectors="deferred") as memory:
        assert memory.schema_version == LATEST_VERSION
        await memory.flush()
    vectors = _raw_vectors(path)
    assert set(acked) <= set(vectors)
    assert _raw_pending(path) == 0
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert len(vectors) == stored
    assert len(model.texts()) == stored  # each embedded once
