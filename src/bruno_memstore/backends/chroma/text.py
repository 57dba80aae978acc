"""BM25 over one user's records, loaded from Chroma and kept while they are unchanged.

Chroma's own document filter (``$contains``) matches substrings and does not rank, so
full-text search uses :class:`~bruno_memstore.search.BM25Index` (the same analysis and
formula as every other backend) over the user's messages and memory entries.

An index is loaded once per user and kept, tagged with a *mark*:

* a local generation, bumped by this process's writer after every write that touches the
  user's text. In embedded mode (one process owns the directory) the writer also applies the
  change to a current index in place, so searches after writes need no reload.
* for a server, also a token stored in Chroma (``gen:{user}`` in the meta collection) that
  every process replaces after such a write. A search reads it first and reloads when it
  differs, so other processes' writes are seen. Writers there drop the index instead of
  patching it: without compare-and-set, a patch cannot know it saw every other writer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ...models import MemoryRecord
from ...search import BM25Index

__all__ = ["TextCache", "UserText"]

Mark = tuple[int, str | None]


@dataclass(slots=True)
class UserText:
    """One user's loaded index and what the filters need about each document."""

    mark: Mark = (0, None)
    index: BM25Index = field(default_factory=BM25Index)
    messages: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (conv, ts_us)
    memories: dict[str, MemoryRecord] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_message(self, rid: str, content: str, conversation_id: str, ts_us: int) -> None:
        self.index.add(("message", rid), content)
        self.messages[rid] = (conversation_id, ts_us)

    def add_memory(self, rec: MemoryRecord) -> None:
        self.index.add(("memory", rec.id), rec.content)
        self.memories[rec.id] = rec

    def remove(self, kind: str, rid: str) -> None:
        self.index.remove((kind, rid))
        (self.messages if kind == "message" else self.memories).pop(rid, None)  # type: ignore[attr-defined]


Change = Callable[[UserText], None]


class TextCache:
    """Loaded :class:`UserText` by user (least recently used dropped beyond ``max_users``).

    Args:
        shared: other processes write too (a server): marks include the stored token and
            writers drop indexes rather than patch them.
    """

    def __init__(self, *, shared: bool, max_users: int = 32) -> None:
        self.shared = shared
        self.max_users = max_users
        self.loads = 0  # indexes built from the engine, for tests and tuning
        self._lock = threading.Lock()
        self._gens: dict[str, int] = {}
        self._entries: OrderedDict[str, UserText] = OrderedDict()

    def lookup(self, user_id: str, token: str | None) -> tuple[Mark, UserText | None]:
        """The current mark and the user's index if it is current."""
        with self._lock:
            mark = (self._gens.get(user_id, 0), token)
            entry = self._entries.get(user_id)
            if entry is not None and entry.mark == mark:
                self._entries.move_to_end(user_id)
                return mark, entry
            return mark, None

    def install(self, user_id: str, entry: UserText) -> None:
        """Keep a freshly loaded index, unless a write landed since its mark was read."""
        with self._lock:
            self.loads += 1
            if self._gens.get(user_id, 0) != entry.mark[0]:
                return
            self._entries[user_id] = entry
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)

    def changed(self, user_id: str, change: Change | None = None) -> None:
        """After a write touching the user's text: bump the generation, then patch a current
        index with ``change`` (embedded mode) or drop it (a server, or no ``change``)."""
        with self._lock:
            gen = self._gens.get(user_id, 0)
            self._gens[user_id] = gen + 1
            entry = self._entries.get(user_id)
            if entry is None:
                return
            if change is None or self.shared or entry.mark[0] != gen:
                del self._entries[user_id]
                return
            with entry.lock:
                change(entry)
                entry.mark = (gen + 1, entry.mark[1])

    def forget(self, user_id: str) -> None:
        self.changed([user_id])

    def clear(self) -> None:
        with self._lock:
            for user_id in self._entries:
                self._gens[user_id] = self._gens.get(user_id, 0) + 1
            self._entries.clear()
