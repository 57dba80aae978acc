"""``DbmMemory``: a complete backend over the standard library's ``dbm.dumb`` key-value file.

The worked example of ``docs/adding-a-backend.md``, which explains each part. Every primitive
is one :func:`atomic` step, run under the file's lock; its writes apply together at its end.
Values are JSON under prefixed keys: ``m:``, ``e:``, ``s:`` + id (a message, memory entry or
session: the kit codec's row, then the vector as hex), ``c:`` + id (a conversation: ``[owner,
[message ids]]``), ``u:`` + id (a user's ids by kind and version), ``n`` (the write counter)
and ``space`` (the vector space).
"""

from __future__ import annotations

import asyncio
import dbm.dumb
import functools
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bruno_memstore import registry
from bruno_memstore.backends.kit.codec import MEMORIES, MESSAGES, SESSIONS, Codec
from bruno_memstore.backends.kit.hits import ranked_hits
from bruno_memstore.backends.kit.keyword_index import KeywordIndex
from bruno_memstore.backends.kit.user_cache import UserCache
from bruno_memstore.backends.kit.vectors import (
    MemoryKey,
    VectorIndex,
    nearest,
    vector_from_bytes,
    vector_to_bytes,
)
from bruno_memstore.base import MemoryBackend
from bruno_memstore.capabilities import DATABASE, Capability
from bruno_memstore.embeddings.adapter import VectorSpace
from bruno_memstore.errors import InvalidArgumentError, OwnershipError
from bruno_memstore.limits import NO_LIMITS, Limits
from bruno_memstore.models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
    memory_sort_key,
)
from bruno_memstore.primitives import (
    AppendResult,
    ExportKind,
    VectorPrimitives,
    memory_taken,
    session_taken,
)
from bruno_memstore.url import MemoryURL

__all__ = ["DbmFile", "DbmMemory", "Step", "atomic", "register"]

CODECS: dict[str, Codec[Any]] = {"m": MESSAGES, "e": MEMORIES, "s": SESSIONS}


def stored(codec: Codec[Any], record: Any) -> list[Any]:
    """A record's value: the codec's row, then its vector as hex float32 (or None)."""
    vector = getattr(record, "vector", None)
    return [*codec.row(record), None if vector is None else vector_to_bytes(vector).hex()]


def in_order(records: Any) -> list[MessageRecord]:
    return sorted(records, key=lambda r: (r.ts_us, r.seq))


class Step:
    """One atomic step over the file: reads see the step's writes, applied at its end."""

    def __init__(self, db: Any) -> None:
        self.db, self.writes = db, {}  # writes: key -> JSON value, or None to delete

    def get(self, key: str) -> Any:
        raw = self.writes[key] if key in self.writes else self.db.get(key)
        return json.loads(raw) if isinstance(raw, bytes) else raw  # stored, or written here

    def put(self, key: str, value: Any) -> None:
        self.writes[key] = value

    def keys(self, prefix: str) -> list[str]:
        """Keys stored under ``prefix`` when the step began."""
        return sorted(k.decode() for k in self.db if k.startswith(prefix.encode()))

    def commit(self) -> None:
        for key, value in self.writes.items():
            if value is not None:
                self.db[key] = json.dumps(value)
            elif key in self.db:
                del self.db[key]
        if self.writes:
            self.db.sync()

    def record(self, kind: str, rid: str) -> Any:
        """The record under ``<kind>:<rid>`` (kind ``m``, ``e`` or ``s``), or None."""
        value = self.get(f"{kind}:{rid}")
        if value is None:
            return None
        rec = CODECS[kind].from_row(value)
        if kind != "s" and value[-1] is not None:
            rec.vector = vector_from_bytes(bytes.fromhex(value[-1]))
        return rec

    def tick(self) -> int:
        """The next number of the file's write counter (arrival order, user versions)."""
        self.put("n", n := (self.get("n") or 0) + 1)
        return n

    def user(self, user_id: str) -> dict[str, Any]:
        return self.get("u:" + user_id) or {"c": [], "e": [], "s": [], "v": 0}

    def ids(self, user_id: str | None, kind: str) -> list[str]:
        """The user's ids of a kind (``c``, ``e`` or ``s``), or every user's."""
        if user_id is not None:
            return list(self.user(user_id)[kind])
        return [k[2:] for k in self.keys(kind + ":")]

    def note(self, user_id: str, kind: str = "", rid: str = "", add: bool = True) -> None:
        """Bump the user's version; with ``kind``, add ``rid`` to (or drop it from) a list."""
        user = self.user(user_id)
        if kind:
            user[kind] = [i for i in user[kind] if i != rid] + ([rid] if add else [])
        user["v"] = self.tick()
        self.put("u:" + user_id, user if user["c"] or user["e"] or user["s"] else None)

    def window(self, conversation_id: str) -> list[MessageRecord]:
        conv = self.get("c:" + conversation_id)
        return in_order(self.record("m", i) for i in (conv[1] if conv else []))


class DbmFile:
    """An open ``dbm.dumb`` file and its lock, shared by every instance on the path."""

    _open: ClassVar[dict[str, DbmFile]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path, self.users, self.lock = path, 0, threading.Lock()
        self.db = dbm.dumb.open(path, "c")  # noqa: SIM115 (closed by the last release)

    @classmethod
    def acquire(cls, path: str) -> DbmFile:
        with cls._guard:
            file = cls._open.get(path) or cls._open.setdefault(path, cls(path))
            file.users += 1
            return file

    def release(self) -> None:
        with self._guard, self.lock:
            self.users -= 1
            if self.users == 0:
                del self._open[self.path]
                self.db.close()

    def run(self, fn: Callable[[Step], Any]) -> Any:
        with self.lock:
            step = Step(self.db)
            result = fn(step)
            step.commit()
            return result


def atomic(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The primitive ``fn(self, step, *args)`` as an async method running it as one step."""

    @functools.wraps(fn)
    async def primitive(self: DbmMemory, *args: Any, **kwargs: Any) -> Any:
        assert self.file is not None
        return await asyncio.to_thread(self.file.run, lambda s: fn(self, s, *args, **kwargs))

    return primitive


@dataclass
class UserView:
    """One user's records and search indexes, loaded once per version of the user's data."""

    messages: dict[str, MessageRecord] = field(default_factory=dict)
    memories: dict[str, MemoryRecord] = field(default_factory=dict)
    keywords: KeywordIndex = field(default_factory=KeywordIndex)
    message_vectors: VectorIndex = field(default_factory=VectorIndex)
    memory_vectors: VectorIndex = field(default_factory=VectorIndex)

    def load(self, s: Step, user_id: str) -> UserView:
        for rec in [m for c in s.ids(user_id, "c") for m in s.window(c)]:
            self.messages[rec.id] = rec
            self.keywords.add_message(rec)
            if rec.vector is not None:
                self.message_vectors.put(rec.id, rec.vector, conversation=rec.conversation_id)
        for rec in [s.record("e", i) for i in s.ids(user_id, "e")]:
            self.memories[rec.id] = rec
            self.keywords.add_memory(rec)
            if rec.vector is not None:
                self.memory_vectors.put(MemoryKey(rec), rec.vector)
        return self


class DbmMemory(MemoryBackend, VectorPrimitives):
    """Memory in a ``dbm.dumb`` file (``path`` plus ``.dat``, ``.dir``, ``.bak``)."""

    backend_name: ClassVar[str] = "dbm"
    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {Capability.VECTORS}
    limits: Limits = NO_LIMITS  # JSON text in a byte file: any Unicode text, any size

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(**options)
        self.path = str(Path(path).resolve())
        self.file: DbmFile | None = None
        self.views: UserCache[UserView] = UserCache()  # loaded search indexes, by user

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> DbmMemory:
        """``dbm:///relative/path`` or ``dbm:////absolute/path``."""
        if url.host or url.username or url.port or not url.path[1:]:
            raise InvalidArgumentError("url", "use dbm:///relative/path or dbm:////absolute/path")
        url.check_options(set())
        return cls(url.path[1:], **options)

    def describe(self) -> str:
        return f"dbm:///{self.path}"

    async def _connect(self) -> None:
        self.file = await asyncio.to_thread(DbmFile.acquire, self.path)

    async def _close(self) -> None:
        file, self.file = self.file, None
        self.views.clear()
        if file is not None:
            await asyncio.to_thread(file.release)

    # ---------------------------------------------------------------- messages

    @atomic
    def _conversation_owner(self, s: Step, conversation_id: str) -> str | None:
        conv = s.get("c:" + conversation_id)
        return None if conv is None else conv[0]

    @atomic
    def _append_messages(
        self,
        s: Step,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        owner, ids = s.get("c:" + conversation_id) or [user_id, []]
        if enforce_owner and owner != user_id:
            raise OwnershipError(f"conversation {conversation_id!r} belongs to another user")
        existing = frozenset(r.id for r in records if s.get("m:" + r.id) is not None)
        fresh = [r for r in records if r.id not in existing]
        if fresh or not records:  # a write whose records are all stored claims nothing
            for rec in fresh:
                rec.seq, rec.user_id = s.tick(), owner
                s.put("m:" + rec.id, stored(MESSAGES, rec))
            s.put("c:" + conversation_id, [owner, ids + [r.id for r in fresh]])
            s.note(owner, "c", conversation_id)
        return AppendResult(owner, existing)

    @atomic
    def _get_messages(self, s: Step, ids: Sequence[str]) -> list[MessageRecord]:
        return [r for r in (s.record("m", i) for i in ids) if r is not None]

    @atomic
    def _read_window(
        self, s: Step, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        if conversation_id is None:
            convs = s.ids(user_id, "c")
        else:
            conv = s.get("c:" + conversation_id)
            convs = [conversation_id] if conv and user_id in (None, conv[0]) else []
        found = in_order(r for c in convs for r in s.window(c))
        return found if limit is None else found[-limit:]

    @atomic
    def _delete_messages(self, s: Step, conversation_id: str, keep_roles: frozenset[str]) -> int:
        owner, ids = s.get("c:" + conversation_id) or [None, []]
        gone = {i for i in ids if s.record("m", i).role not in keep_roles}
        for rid in gone:
            s.put("m:" + rid, None)
        if owner is not None and keep_roles:
            s.put("c:" + conversation_id, [owner, [i for i in ids if i not in gone]])
            s.note(owner)
        elif owner is not None:  # the conversation goes, with its sessions
            s.put("c:" + conversation_id, None)
            s.note(owner, "c", conversation_id, add=False)
            for sid in s.ids(owner, "s"):
                if s.record("s", sid).conversation_id == conversation_id:
                    s.put("s:" + sid, None)
                    s.note(owner, "s", sid, add=False)
        return len(gone)

    # ---------------------------------------------------------------- memories and sessions

    @atomic
    def _put_memory(self, s: Step, record: MemoryRecord) -> None:
        old = s.record("e", record.id)
        if old is not None and old.user_id != record.user_id:
            raise memory_taken(record.id)
        s.put("e:" + record.id, stored(MEMORIES, record))
        s.note(record.user_id, "e", record.id)

    @atomic
    def _query_memories(self, s: Step, flt: MemoryFilter) -> list[MemoryRecord]:
        found = [s.record("e", i) for i in flt.ids or s.ids(flt.user_id, "e")]
        return sorted((r for r in found if r and flt.matches(r)), key=memory_sort_key)[: flt.limit]

    @atomic
    def _delete_memory(self, s: Step, memory_id: str, user_id: str | None = None) -> bool:
        old = s.record("e", memory_id)
        if old is not None and user_id not in (None, old.user_id):
            raise memory_taken(memory_id)
        if old is not None:
            s.put("e:" + memory_id, None)
            s.note(old.user_id, "e", memory_id, add=False)
        return old is not None

    @atomic
    def _put_session(self, s: Step, record: SessionRecord) -> None:
        old, user = s.record("s", record.session_id), record.user_id
        if old is not None and old.user_id != user:
            raise session_taken(record.session_id)
        owner, ids = s.get("c:" + record.conversation_id) or [user, []]
        if owner != user:
            raise OwnershipError(f"conversation {record.conversation_id!r} belongs to another user")
        s.put("c:" + record.conversation_id, [owner, ids])
        s.put("s:" + record.session_id, stored(SESSIONS, record))
        s.note(user, "c", record.conversation_id)
        s.note(user, "s", record.session_id)

    @atomic
    def _get_session(self, s: Step, session_id: str) -> SessionRecord | None:
        return s.record("s", session_id)

    @atomic
    def _everything(self, s: Step, kind: ExportKind, user_id: str | None) -> list[Any]:
        if kind == "conversations":
            return [(c, s.get("c:" + c)[0]) for c in s.ids(user_id, "c")]
        if kind == "messages":
            return [m for c in s.ids(user_id, "c") for m in s.window(c)]
        prefix = "e" if kind == "memories" else "s"
        return [s.record(prefix, i) for i in s.ids(user_id, prefix)]

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        items = await self._everything(kind, user_id)
        for start in range(0, len(items), 500):
            yield items[start : start + 500]

    # ---------------------------------------------------------------- search, over the kit

    async def _view(self, user_id: str) -> UserView:
        """The user's records and indexes, loaded again only after the user's data changed."""
        version = await self._version(user_id)
        return await self.views.get(user_id, version, lambda: self._load(user_id))

    @atomic
    def _version(self, s: Step, user_id: str) -> int:
        return int(s.user(user_id)["v"])

    @atomic
    def _load(self, s: Step, user_id: str) -> UserView:
        return UserView().load(s, user_id)

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        view = await self._view(request.user_id)
        return ranked_hits(view.keywords.search(request), view.messages, view.memories)

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        view = await self._view(request.user_id)
        found = nearest(
            request, vector, messages=view.message_vectors, memories=view.memory_vectors
        )
        return ranked_hits(found, view.messages, view.memories)

    @atomic
    def _claim_vector_space(
        self, s: Step, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        held = s.get("space")
        if space is None or (held is not None and not replace):
            return None if held is None else VectorSpace(*held)
        if replace:  # every vector goes, so every user's indexes are stale
            for key in s.keys("m:") + s.keys("e:"):
                if (value := s.get(key))[-1] is not None:
                    s.put(key, [*value[:-1], None])
            for key in s.keys("u:"):
                s.note(key[2:])
        s.put("space", list(space))
        return space

    @atomic
    def _put_vectors(self, s: Step, kind: str, items: Sequence[Any]) -> None:
        prefix = "m" if kind == "message" else "e"
        for rid, vector in items:
            if (rec := s.record(prefix, rid)) is not None:
                rec.vector = vector
                s.put(f"{prefix}:{rid}", stored(CODECS[prefix], rec))
                s.note(rec.user_id)


def register() -> None:
    """Make ``dbm://`` URLs open :class:`DbmMemory` (an installed package declares an
    entry point instead; see docs/adding-a-backend.md)."""
    registry.register("dbm", DbmMemory)
