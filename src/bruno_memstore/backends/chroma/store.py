"""One Chroma store as a process holds it: client, collections, vector space, arrival numbers.

Every ``ChromaMemory`` of a process on the same location and prefix shares one
:class:`ChromaStore` (reference-counted), so its writer thread serialises all of the
process's writes to that store, and its text indexes see all of them.

**Vector space and generations.** A collection's vectors all have one dimension, fixed by
its first record, and Chroma cannot drop vectors while keeping records. So the users'
record collections carry a *generation* in their name, recorded with the model in the
``space`` meta record. Changing the space (``reindex``, or a first model on a store written
without one) records the new space (the switch), then copies every user collection into the
new generation with placeholder vectors and deletes the old one. Copies use ``add``, which
skips ids already present, so a copy interrupted by a crash is finished at the next connect
without overwriting anything newer.

**Arrival numbers.** Each message gets ``seq = max(previous + 1, time.time_ns())``: strictly
increasing within the process, and close to arrival order between processes (for a server
with several writers). Before using numbers beyond the reserved ceiling the writer stores a
new ceiling a few seconds ahead (``seq`` meta record); a restarted process starts above the
stored ceiling, so numbers keep increasing even if the clock was set back.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None  # type: ignore[assignment]

from ...embeddings.adapter import VectorSpace
from ...errors import BackendError
from ..kit.keyword_index import KeywordIndex, KeywordIndexes
from ..kit.threads import GroupRunner, Writer
from .layout import (
    collection_name,
    rows,
    user_collection_name,
    user_collection_pattern,
)

__all__ = ["HNSW", "HNSW_KEYS", "ChromaStore", "acquire", "not_found", "release"]

SCHEMA_VERSION = 1
_SEQ_AHEAD = 10_000_000_000  # nanoseconds of arrival numbers reserved per ceiling write
_COPY_PAGE = 5000
PLURAL = {"message": "messages", "memory": "memories"}
ONE = [[1.0]]  # the embedding of bookkeeping records (their collections have dimension 1)
HNSW = {"ef_construction": 200, "max_neighbors": 32, "ef_search": 200}
"""Index settings of the users' record collections, where Chroma's defaults (100, 16, 100)
found 0.65-0.74 of the exact ten nearest among 100,000 MiniLM vectors and these 0.99, at
about 1 ms a query either way (inserting costs up to a third more)."""
HNSW_KEYS = frozenset(HNSW)


class StoredSpace(NamedTuple):
    space: VectorSpace
    generation: int


class ChromaStore:
    """A process's handle on one store (see the module docstring).

    Args:
        key: identifies the store in the process registry.
        connect: builds the Chroma client (blocking).
        prefix: collection-name prefix.
        shared: other processes may write the store too (a server).
        readers: threads for reads.
        run_writes: runs the jobs the writer thread took from its queue together.
    """

    def __init__(
        self,
        key: Hashable,
        connect: Callable[[], Any],
        prefix: str,
        *,
        shared: bool,
        readers: int,
        run_writes: GroupRunner,
        directory: str | None = None,
        hnsw: dict[str, int] | None = None,
    ) -> None:
        self.key = key
        self.directory = directory
        self.hnsw = {**HNSW, **(hnsw or {})}
        self.prefix = prefix
        self.shared = shared
        self.refs = 0
        self.text = KeywordIndexes(max_users=32)
        self._connect = connect
        self._readers_count = readers
        self._run_writes = run_writes
        self.client: Any = None
        self.meta: Any = None
        self.conversations: Any = None
        self.sessions: Any = None
        self.ids: Any = None
        self._handles: dict[tuple[str, str], Any] = {}  # (user, kind) -> current collection
        self._handles_lock = threading.Lock()
        self.generation = 0
        self.dimension = 1
        self.max_batch = 1000
        self._seq_last = 0
        self._seq_ceiling = 0
        self.writer: Writer[ChromaStore] | None = None
        self.readers: ThreadPoolExecutor | None = None
        self._unstarted: Writer[ChromaStore] | None = None
        self._start_lock = threading.Lock()

    # ---------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Connect, create missing collections, finish an interrupted space change."""
        if self.directory is not None:
            lock_directory(self.directory)
        try:
            self.client = self._connect()
            self.max_batch = max(1, min(int(self.client.get_max_batch_size()), 5000))
            self.meta = self._collection(collection_name(self.prefix, "meta"))
            self.conversations = self._collection(collection_name(self.prefix, "conversations"))
            self.sessions = self._collection(collection_name(self.prefix, "sessions"))
            self.ids = self._collection(collection_name(self.prefix, "ids"))
            self._check_schema()
            stored = self.stored_space()
            self.generation = stored.generation if stored else 0
            self.dimension = stored.space.dimension if stored else 1
            self._finish_space_changes()
            got = self.meta.get(ids=["seq"], include=["metadatas"])
            ceiling = int(got["metadatas"][0]["ceiling"]) if got["ids"] else 0
            self._seq_last = self._seq_ceiling = ceiling
        except BaseException:
            self._close_client()
            if self.directory is not None:
                unlock_directory(self.directory)
            raise
        self.writer = self._unstarted = Writer(
            f"bruno-memstore-chroma-writer-{self.prefix}",
            lambda: self,
            run_group=self._run_writes,
            closer=lambda _store: None,
        )
        self.readers = ThreadPoolExecutor(
            self._readers_count, thread_name_prefix=f"bruno-memstore-chroma-reader-{self.prefix}"
        )

    async def start(self) -> None:
        """Start the writer thread, once (writes queued before it starts wait for it)."""
        with self._start_lock:
            writer, self._unstarted = self._unstarted, None
        if writer is not None:
            await writer.start()

    def close(self) -> None:
        """Finish queued writes, stop the threads, release the client (blocking)."""
        writer, self.writer = self.writer, None
        if writer is not None and writer.alive:
            writer.stop_nowait()
            writer.join()
        if self.readers is not None:
            self.readers.shutdown(wait=True)
            self.readers = None
        self._close_client()
        if self.directory is not None:
            unlock_directory(self.directory)

    def _close_client(self) -> None:
        client, self.client = self.client, None
        close = getattr(client, "close", None)
        if close is not None:
            close()

    def _collection(
        self, name: str, metadata: dict[str, Any] | None = None, *, records: bool = False
    ) -> Any:
        # No embedding function: Chroma's default one would download a model. Every record
        # brings its own vector (or a placeholder). Bookkeeping collections hold a constant
        # one-dimensional vector; their index settings do not matter.
        hnsw: dict[str, Any] = {"space": "cosine", **(self.hnsw if records else {})}
        return self.client.get_or_create_collection(
            name, embedding_function=None, configuration={"hnsw": hnsw}, metadata=metadata
        )

    def _check_schema(self) -> None:
        self.meta.add(ids=["schema"], embeddings=ONE, metadatas=[{"version": SCHEMA_VERSION}])
        got = self.meta.get(ids=["schema"], include=["metadatas"])
        version = int(got["metadatas"][0]["version"])
        if version > SCHEMA_VERSION:
            raise BackendError(
                f"this store was written by a newer bruno-memstore (layout {version}, this "
                f"version reads up to {SCHEMA_VERSION}); upgrade bruno-memstore"
            )

    # ---------------------------------------------------------------- user collections

    def user_records(self, user_id: str, kind: str, *, create: bool = False) -> Any:
        """The user's current ``"message"`` or ``"memory"`` collection; ``None`` when it does
        not exist (unless ``create``)."""
        key = (user_id, kind)
        with self._handles_lock:
            found = self._handles.get(key)
        if found is not None:
            return found
        name = user_collection_name(self.prefix, user_id, PLURAL[kind], self.generation)
        if create:
            meta = {"user": user_id, "kind": PLURAL[kind]}
            found = self._collection(name, meta, records=True)
        else:
            found = self._existing(name)
            if found is None:
                return None
        with self._handles_lock:
            self._handles[key] = found
        return found

    def forget_handles(self, user_id: str | None = None) -> None:
        """Drop cached collection handles (a user's, or all), e.g. after a deletion."""
        with self._handles_lock:
            if user_id is None:
                self._handles.clear()
            else:
                for kind in PLURAL:
                    self._handles.pop((user_id, kind), None)

    def refresh(self) -> None:
        """Re-read the recorded space and forget every handle (another process may have
        deleted collections or changed the space)."""
        stored = self.stored_space()
        if stored is not None and stored.generation != self.generation:
            self.generation, self.dimension = stored.generation, stored.space.dimension
        self.forget_handles()

    def user_collections(self, kind: str, user_id: str | None = None) -> list[tuple[str, Any]]:
        """``(user, collection)`` of every user's current collection of ``kind`` (or one
        user's)."""
        if user_id is not None:
            found = self.user_records(user_id, kind)
            return [(user_id, found)] if found is not None else []
        out = []
        for name, user, plural, generation in self._user_collection_names():
            if plural == PLURAL[kind] and generation == self.generation:
                found = self._existing(name)
                if found is not None:
                    out.append((user, found))
        return sorted(out, key=lambda pair: pair[0])

    def _user_collection_names(self) -> list[tuple[str, str, str, int]]:
        """``(name, user, plural, generation)`` of every user collection of the store."""
        pattern = user_collection_pattern(self.prefix)
        out = []
        for collection in self.client.list_collections():
            name = collection if isinstance(collection, str) else collection.name
            match = pattern.fullmatch(name)
            if match is None:
                continue
            meta = getattr(collection, "metadata", None) or {}
            user = meta.get("user")
            if isinstance(user, str):
                out.append((name, user, match.group(2), int(match.group(3))))
        return out

    # ---------------------------------------------------------------- vector space

    def stored_space(self) -> StoredSpace | None:
        got = self.meta.get(ids=["space"], include=["metadatas"])
        if not got["ids"]:
            return None
        meta = got["metadatas"][0]
        return StoredSpace(VectorSpace(meta["model"], int(meta["dim"])), int(meta["gen"]))

    def claim_space(self, space: VectorSpace, *, replace: bool) -> VectorSpace:
        """Record ``space`` (writer thread). Without ``replace``, a recorded one wins."""
        current = self.stored_space()
        if current is not None and not replace:
            self._follow(current)
            return current.space
        old = current.generation if current is not None else self.generation
        new = old + 1
        record = {"model": space.model, "dim": int(space.dimension), "gen": new}
        if replace:
            self.meta.upsert(ids=["space"], embeddings=ONE, metadatas=[record])
        else:
            # Insert-if-absent: when processes race to record the first space, one wins.
            self.meta.add(ids=["space"], embeddings=ONE, metadatas=[record])
            winner = self.stored_space()
            assert winner is not None
            if winner.space != space or winner.generation != new:
                self._follow(winner)
                return winner.space
        self._follow(StoredSpace(space, new))
        return space

    def _follow(self, stored: StoredSpace) -> None:
        """Use the recorded generation, finishing any copy into it."""
        if stored.generation != self.generation:
            self.generation = stored.generation
            self.dimension = stored.space.dimension
            self.forget_handles()
        self._finish_space_changes()

    def _copy(self, source_name: str, user_id: str, kind: str) -> None:
        """Copy a user collection into the current generation with placeholder vectors,
        then delete it."""
        source = self._existing(source_name)
        if source is None:
            return
        target = self.user_records(user_id, kind, create=True)
        placeholder = [1.0] + [0.0] * (self.dimension - 1)
        ids = source.get(include=[])["ids"]
        for start in range(0, len(ids), _COPY_PAGE):
            got = source.get(
                ids=ids[start : start + _COPY_PAGE], include=["documents", "metadatas"]
            )
            part, docs, metas = [], [], []
            for rid, doc, meta in rows(got):
                part.append(rid)
                docs.append(doc)
                metas.append({**meta, "vec": False})
            if part:
                target.add(
                    ids=part, documents=docs, metadatas=metas, embeddings=[placeholder] * len(part)
                )
        self._drop(source_name)

    def _finish_space_changes(self) -> None:
        """Copy older generations' collections into the current one (a change the writer
        or a crash left unfinished); drop those of generations never recorded."""
        for name, user, plural, generation in self._user_collection_names():
            if generation > self.generation:
                self._drop(name)
            elif generation < self.generation:
                self._copy(name, user, "message" if plural == "messages" else "memory")

    def _existing(self, name: str) -> Any:
        try:
            return self.client.get_collection(name, embedding_function=None)
        except Exception as exc:
            if not_found(exc):
                return None
            raise

    def drop(self, name: str) -> None:
        """Delete a collection (no error when it is gone already)."""
        self._drop(name)

    def _drop(self, name: str) -> None:
        try:
            self.client.delete_collection(name)
        except Exception as exc:
            if not not_found(exc):
                raise

    # ---------------------------------------------------------------- arrival numbers

    def next_seqs(self, count: int) -> range:
        """``count`` new arrival numbers, increasing (writer thread only)."""
        start = max(self._seq_last + 1, time.time_ns())
        end = start + count - 1
        if end > self._seq_ceiling:
            ceiling = end + _SEQ_AHEAD
            self.meta.upsert(ids=["seq"], embeddings=ONE, metadatas=[{"ceiling": ceiling}])
            self._seq_ceiling = ceiling
        self._seq_last = end
        return range(start, end + 1)

    # ---------------------------------------------------------------- text tokens (server)

    def read_token(self, user_id: str) -> str | None:
        """The stored token of the user's text (a server), ``None`` in embedded mode."""
        if not self.shared:
            return None
        got = self.meta.get(ids=[f"gen:{user_id}"], include=["metadatas"])
        return str(got["metadatas"][0]["token"]) if got["ids"] else ""

    def text_changed(
        self, user_id: str, patch: Callable[[KeywordIndex], object] | None = None
    ) -> None:
        """After a write touching the user's text (writer thread): patch the cached keyword
        index in place, or, for a server (or without ``patch``), drop it."""
        self.text.changed(user_id, None if self.shared else patch)

    def bump_tokens(self, user_ids: list[str]) -> None:
        """Tell other processes that these users' text changed (a server; writer thread)."""
        if not self.shared or not user_ids:
            return
        users = list(dict.fromkeys(user_ids))
        self.meta.upsert(
            ids=[f"gen:{u}" for u in users],
            embeddings=ONE * len(users),
            metadatas=[{"token": uuid.uuid4().hex} for _ in users],
        )


def not_found(exc: BaseException) -> bool:
    """Whether a Chroma error says a collection does not exist."""
    return type(exc).__name__ == "NotFoundError" or "does not exist" in str(exc)


# -------------------------------------------------------------------- directory locks

LOCK_FILE = "bruno-memstore.lock"
_locks_guard = threading.Lock()
_locks: dict[str, list[int]] = {}  # directory -> [file descriptor, references]


def lock_directory(directory: str) -> None:
    """Hold an exclusive ``flock`` on the embedded directory for this process.

    Chroma's embedded engine keeps each index in the memory of the process that opened it,
    so two processes writing one directory corrupt it; the lock makes the second one fail
    at connect instead. Instances within one process share the lock.
    """
    with _locks_guard:
        held = _locks.get(directory)
        if held is not None:
            held[1] += 1
            return
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BackendError(
                f"the Chroma directory {directory} is in use by another process (pid "
                f"{holder}); an embedded directory serves one process at a time: use a "
                "Chroma server (chroma+http://...) for several"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _locks[directory] = [fd, 1]


def unlock_directory(directory: str) -> None:
    with _locks_guard:
        held = _locks.get(directory)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _locks[directory]
            os.close(held[0])  # closing the descriptor releases the lock


# -------------------------------------------------------------------- process registry

_registry_lock = threading.Lock()
_stores: dict[Hashable, ChromaStore] = {}


def acquire(key: Hashable, build: Callable[[], ChromaStore]) -> ChromaStore:
    """The open store for ``key``, opened with ``build()`` on first use (blocking)."""
    with _registry_lock:
        store = _stores.get(key)
        if store is None:
            store = build()
            store.open()
            _stores[key] = store
        store.refs += 1
        return store


def release(store: ChromaStore) -> None:
    """Drop one reference; the last one closes the store (blocking)."""
    with _registry_lock:
        store.refs -= 1
        if store.refs > 0:
            return
        if _stores.get(store.key) is store:
            del _stores[store.key]
    store.close()
