"""Export, import and copy a memory store as JSON Lines, between any two backends.

The file is one JSON object per line, each with a ``"type"``:

* ``header``: first line, ``{"type": "header", "format": "bruno-memstore", "version": 1}``
  (plus ``"user_id"`` when the export was scoped to one user);
* ``conversation``: ``{"id", "user_id"}``, the conversation and its owner;
* ``session``: the ``SessionContext`` fields;
* ``message``: the ``Message`` fields, timestamps as exact ISO-8601 text;
* ``memory``: the ``MemoryEntry`` fields.

They come in that order: conversations, sessions, messages (oldest first within each
conversation, in the store's own order, so ties keep their arrival order), memories. An
export imported into an empty store exports again byte for byte. Importing is idempotent:
messages are keyed by id, sessions and memories are replaced by id. Progress is reported
through a plain callback, so this module needs nothing beyond the library itself.

An import is checked whole before it writes (see :func:`import_jsonl`), and undoes what it
created when a write fails anyway.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, TypeVar

from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryEntry
from bruno_core.models.message import Message
from pydantic import BaseModel, ValidationError

from .capabilities import Capability
from .errors import InvalidArgumentError, OwnershipError
from .lifecycle import ARCHIVE_MARKER
from .models import (
    MemoryRecord,
    MessageRecord,
    SessionRecord,
    check_id,
    memory_to_record,
    message_to_record,
    session_to_record,
)

if TYPE_CHECKING:
    from .base import MemoryBackend  # base imports this module (MemoryBackend.export_user)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ImportFormatError",
    "ProgressCallback",
    "TransferCounts",
    "copy",
    "export_jsonl",
    "import_jsonl",
    "iter_export",
]

FORMAT = "bruno-memstore"
FORMAT_VERSION = 1

ProgressCallback = Callable[[str, int], None]
"""Called as ``progress(kind, n)`` after ``n`` more records of ``kind`` were transferred;
``kind`` is ``"conversation"``, ``"session"``, ``"message"`` or ``"memory"``."""

_M = TypeVar("_M", bound=BaseModel)
log = logging.getLogger(__name__)

_MESSAGE_BATCH = 500  # messages written per store_messages call (one transaction)
_EXPORT_KINDS = (
    ("conversations", "conversation"),
    ("sessions", "session"),
    ("messages", "message"),
    ("memories", "memory"),
)
_MESSAGE_FIELDS = (
    "id",
    "conversation_id",
    "role",
    "content",
    "message_type",
    "timestamp",
    "metadata",
    "parent_id",
)


class ImportFormatError(InvalidArgumentError):
    """A line of an import file is not a valid record; ``line`` says which (1-based)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__("file", f"line {line}: {problem}")
        self.line = line


@dataclass(slots=True)
class TransferCounts:
    """Records transferred, by kind.

    Attributes:
        existing_messages: on import, messages that were already stored (same id, same
            content) and so were skipped; they are included in ``messages``.
    """

    conversations: int = 0
    sessions: int = 0
    messages: int = 0
    memories: int = 0
    existing_messages: int = 0

    @property
    def total(self) -> int:
        """All records, every kind."""
        return self.conversations + self.sessions + self.messages + self.memories

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict."""
        return asdict(self)


# ==================================================================== export


async def iter_export(
    memory: MemoryBackend,
    user_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield the export as JSON-ready dicts: the header, then every record in file order.

    Args:
        memory: the store to read (it must declare ``Capability.LISTING``).
        user_id: only this user's records (default: every user's).
        progress: called after each batch read from the store.
    """
    memory.require(Capability.LISTING, "export")  # before the header is written
    if user_id is not None:
        user_id = check_id(user_id, "user_id")
    header: dict[str, Any] = {"type": "header", "format": FORMAT, "version": FORMAT_VERSION}
    if user_id is not None:
        header["user_id"] = user_id
    yield header
    for kind, line_type in _EXPORT_KINDS:
        async for batch in memory.export_batches(kind, user_id):
            for item in batch:
                yield _export_item(line_type, item)
            if progress is not None and batch:
                progress(line_type, len(batch))


def _export_item(line_type: str, item: object) -> dict[str, Any]:
    if line_type == "conversation":
        conversation_id, owner = item  # type: ignore[misc]
        return {"type": "conversation", "id": conversation_id, "user_id": owner}
    if line_type == "session":
        assert isinstance(item, SessionRecord)
        return {"type": "session", **json.loads(item.payload)}
    if line_type == "message":
        assert isinstance(item, MessageRecord)
        return {
            "type": "message",
            "id": item.id,
            "conversation_id": item.conversation_id,
            "role": item.role,
            "content": item.content,
            "message_type": item.message_type,
            "timestamp": item.timestamp,
            "metadata": json.loads(item.metadata),
            "parent_id": item.parent_id,
        }
    assert isinstance(item, MemoryRecord)
    return {"type": "memory", **json.loads(item.payload)}


def _dumps(obj: dict[str, Any]) -> str:
    # Compact and key order kept, so the same store always gives the same bytes.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


async def export_jsonl(
    memory: MemoryBackend,
    fp: IO[str],
    user_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> TransferCounts:
    """Write the store (or one user's part of it) to ``fp`` as JSON Lines.

    Args:
        memory: the store to read.
        fp: a text file open for writing (UTF-8 recommended).
        user_id: only this user's conversations, sessions, messages and memories.
        progress: called as ``progress(kind, n)`` after each batch.

    Returns:
        How many records of each kind were written.
    """
    counts = TransferCounts()
    async for obj in iter_export(memory, user_id, progress):
        fp.write(_dumps(obj))
        fp.write("\n")
        _count(counts, obj["type"])
    return counts


_COUNTERS = {
    "conversation": "conversations",
    "session": "sessions",
    "message": "messages",
    "memory": "memories",
}


def _count(counts: TransferCounts, line_type: str, n: int = 1) -> None:
    name = _COUNTERS.get(line_type)
    if name is not None:
        setattr(counts, name, getattr(counts, name) + n)


# ==================================================================== import


@dataclass(slots=True)
class _Conversation:
    id: str
    owner: str


@dataclass(slots=True)
class _MessageItem:
    message: Message
    conversation_id: str
    record: MessageRecord  # the message as it will be stored (validated)


_Item = _Conversation | SessionContext | _MessageItem | MemoryEntry


class _Parser:
    """Turns export dicts into validated items; tracks conversation owners for messages."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.seen_header = False

    def parse(self, obj: Any, line: int) -> _Item | None:
        """The item one line holds (``None`` for the header)."""
        if not isinstance(obj, dict):
            raise ImportFormatError(line, "expected a JSON object")
        fields = dict(obj)
        line_type = fields.pop("type", None)
        if not self.seen_header:
            if line_type != "header":
                raise ImportFormatError(line, "the first line must be the format header")
            self._check_header(fields, line)
            self.seen_header = True
            return None
        try:
            if line_type == "conversation":
                return self._conversation(fields, line)
            if line_type == "session":
                session = _model(SessionContext, fields, line)
                session_to_record(session)  # every check save_session makes, before any write
                self._claim(session.conversation_id, session.user_id, line)
                return session
            if line_type == "message":
                return self._message(fields, line)
            if line_type == "memory":
                entry = _model(MemoryEntry, fields, line)
                memory_to_record(entry)  # every check store_memory makes, before any write
                return entry
        except InvalidArgumentError as exc:
            if isinstance(exc, ImportFormatError):
                raise
            raise ImportFormatError(line, exc.message) from None
        raise ImportFormatError(line, f"unknown record type {line_type!r}")

    @staticmethod
    def _check_header(fields: dict[str, Any], line: int) -> None:
        if fields.get("format") != FORMAT:
            raise ImportFormatError(
                line, f"not a {FORMAT} export (format={fields.get('format')!r})"
            )
        version = fields.get("version")
        if version != FORMAT_VERSION:
            raise ImportFormatError(
                line, f"unsupported format version {version!r}; this library reads {FORMAT_VERSION}"
            )

    def _conversation(self, fields: dict[str, Any], line: int) -> _Conversation:
        _exact_keys(fields, {"id", "user_id"}, line)
        conversation_id = check_id(fields["id"], "id")
        owner = check_id(fields["user_id"], "user_id")
        self._claim(conversation_id, owner, line)
        return _Conversation(conversation_id, owner)

    def _claim(self, conversation_id: str, owner: str, line: int) -> None:
        known = self.owners.setdefault(conversation_id, owner)
        if known != owner:
            raise ImportFormatError(
                line, f"conversation {conversation_id!r} is given two owners ({known!r}, {owner!r})"
            )

    def _message(self, fields: dict[str, Any], line: int) -> _MessageItem:
        _exact_keys(fields, set(_MESSAGE_FIELDS), line)
        conversation_id = check_id(fields["conversation_id"], "conversation_id")
        if conversation_id not in self.owners:
            raise ImportFormatError(
                line, f"message of conversation {conversation_id!r}, which no earlier line declares"
            )
        stamp = fields["timestamp"]
        if not isinstance(stamp, str):
            raise ImportFormatError(line, "timestamp must be ISO-8601 text")
        try:
            # Parsed here, not by pydantic, so the text comes back exactly as written.
            fields["timestamp"] = datetime.fromisoformat(stamp)
        except ValueError:
            raise ImportFormatError(line, f"bad timestamp {stamp!r}") from None
        message = _model(Message, fields, line)
        return _MessageItem(message, conversation_id, message_to_record(message, conversation_id))


def _exact_keys(fields: dict[str, Any], expected: set[str], line: int) -> None:
    missing = sorted(expected - fields.keys())
    extra = sorted(fields.keys() - expected)
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unknown {', '.join(extra)}"] if extra else []
        raise ImportFormatError(line, "; ".join(parts))


def _model(cls: type[_M], fields: dict[str, Any], line: int) -> _M:
    # Unknown fields would be dropped silently by pydantic; refuse them so nothing is lost.
    extra = sorted(fields.keys() - cls.model_fields.keys())
    if extra:
        raise ImportFormatError(line, f"unknown {cls.__name__} field(s): {', '.join(extra)}")
    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or cls.__name__
        raise ImportFormatError(line, f"{where}: {first['msg']}") from None


@dataclass(slots=True)
class _Plan:
    """What a checked import will create: conversations and memory entries not yet stored."""

    new_conversations: set[str] = field(default_factory=set)
    new_memories: set[str] = field(default_factory=set)


class _Writer:
    """Writes items into a store, batching consecutive messages of one conversation.

    With a :class:`_Plan` it remembers what it created, so that :meth:`undo` can remove it.
    """

    def __init__(
        self, memory: MemoryBackend, progress: ProgressCallback | None, plan: _Plan | None = None
    ) -> None:
        self.memory = memory
        self.progress = progress
        self.plan = plan
        self.counts = TransferCounts()
        self.owners: dict[str, str] = {}
        self._pending: list[Message] = []
        self._pending_conv: str | None = None
        self._created: dict[str, set[str]] = {}  # new conversation -> message ids written
        self._created_memories: list[str] = []

    async def write(self, item: _Item) -> None:
        if isinstance(item, _MessageItem):
            if item.conversation_id != self._pending_conv or len(self._pending) >= _MESSAGE_BATCH:
                await self.flush()
                self._pending_conv = item.conversation_id
            self._pending.append(item.message)
            return
        await self.flush()
        memory = self.memory
        if isinstance(item, _Conversation):
            self.owners[item.id] = item.owner
            # Claimed before its records: keeps the destination's conversation order (and
            # empty conversations) as exported.
            await memory.claim_conversation(item.id, item.owner)
            self._track(item.id)
            self._tick("conversation", 1)
        elif isinstance(item, SessionContext):
            self.owners.setdefault(item.conversation_id, item.user_id)
            await memory.save_session(item)
            self._track(item.conversation_id)
            self._tick("session", 1)
        else:
            await memory.store_memory(item)
            if self.plan is not None and str(item.id) in self.plan.new_memories:
                self._created_memories.append(str(item.id))
            self._tick("memory", 1)

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, conv = self._pending, self._pending_conv
        assert conv is not None
        self._pending = []
        new = await self.memory.store_messages(
            batch, conversation_id=conv, user_id=self.owners[conv]
        )
        self._track(conv, batch)
        self.counts.existing_messages += len(batch) - new
        self._tick("message", len(batch))

    def _tick(self, kind: str, n: int) -> None:
        _count(self.counts, kind, n)
        if self.progress is not None:
            self.progress(kind, n)

    def _track(self, conversation_id: str, messages: Iterable[Message] = ()) -> None:
        """Note a write made into a conversation this import creates (each write is atomic:
        one that failed wrote nothing)."""
        if self.plan is not None and conversation_id in self.plan.new_conversations:
            self._created.setdefault(conversation_id, set()).update(str(m.id) for m in messages)

    async def undo(self) -> None:
        """Remove the memory entries and conversations (with their messages and sessions)
        this import created. A conversation holding a message the import did not write (or
        no longer its owner's) was written by someone else meanwhile, and stays."""
        memory = self.memory
        for memory_id in self._created_memories:
            await memory.delete_memory(memory_id)
        for conv, written in self._created.items():
            owner = await memory.conversation_owner(conv)
            stored = await memory.retrieve_messages(conv)
            if owner == self.owners[conv] and all(str(m.id) in written for m in stored):
                await memory.clear_history(conv, keep_system_messages=False)


def _parse_lines(lines: Iterable[str]) -> Iterable[tuple[int, Any]]:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(number, f"not JSON ({exc.msg})") from None


def _items(fp: IO[str]) -> Iterator[_Item]:
    """The file's records, validated, in file order (the header checked and left out)."""
    parser = _Parser()
    for number, obj in _parse_lines(fp):
        item = parser.parse(obj, number)
        if item is not None:
            yield item
    if not parser.seen_header:
        raise ImportFormatError(1, "empty file: no format header")


@contextmanager
def _seekable(fp: IO[str]) -> Iterator[IO[str]]:
    """``fp``, or for a stream (stdin) a temporary copy of it, so it can be read thrice."""
    if fp.seekable():
        yield fp
        return
    with tempfile.SpooledTemporaryFile(
        max_size=16 << 20, mode="w+", encoding="utf-8", newline=""
    ) as copy:
        for line in fp:
            copy.write(line)
        copy.seek(0)
        yield copy  # type: ignore[misc]


async def _check_against(memory: MemoryBackend, items: Iterable[_Item]) -> _Plan:
    """Everything the store could refuse, checked before the first write: the owner of each
    conversation, session and memory entry, stored messages with the file's ids, and the
    engine's own refusals. Returns what the import will create."""
    owners: dict[str, str] = {}
    sessions: dict[str, str] = {}
    memories: dict[str, str] = {}
    batch: list[MessageRecord] = []
    for item in items:
        if isinstance(item, _Conversation):
            owners[item.id] = item.owner
        elif isinstance(item, SessionContext):
            memory.check_storable([session_to_record(item)])
            owners.setdefault(item.conversation_id, item.user_id)
            sessions[item.session_id] = item.user_id
        elif isinstance(item, _MessageItem):
            batch.append(item.record)
            if len(batch) >= _MESSAGE_BATCH:
                await _check_messages(memory, batch)
                batch = []
        else:
            memory.require(Capability.MEMORIES, "store_memory")
            record = memory_to_record(item)
            memory.check_storable([record])
            memories[record.id] = record.user_id
    await _check_messages(memory, batch)
    plan = _Plan()
    for conv, owner in owners.items():
        stored = await memory.conversation_owner(conv)
        if stored is None:
            plan.new_conversations.add(conv)
        elif stored != owner:
            _refuse(memory, f"conversation {conv!r} belongs to another user")
    for session_id, user in sessions.items():
        session = await memory.get_session(session_id)
        if session is not None and session.user_id != user:
            _refuse(memory, f"session {session_id!r} belongs to another user")
    for memory_id, user in memories.items():
        entry = await memory.get_memory(memory_id)
        if entry is None:
            plan.new_memories.add(memory_id)
        elif entry.user_id != user:
            _refuse(memory, f"memory {memory_id} belongs to another user")
    return plan


async def _check_messages(memory: MemoryBackend, records: list[MessageRecord]) -> None:
    """Refuse records the engine cannot hold, and ids that name a different stored message."""
    if not records:
        return
    memory.check_storable(records)
    await memory.check_conflicts(records)


def _refuse(memory: MemoryBackend, problem: str) -> None:
    raise OwnershipError(problem, backend=memory.backend_name, operation="import")


async def import_jsonl(
    memory: MemoryBackend,
    fp: IO[str],
    progress: ProgressCallback | None = None,
) -> TransferCounts:
    """Load a JSON Lines export into ``memory``.

    All or nothing, as far as the store allows. Before the first write the whole file is
    checked (a stream, such as stdin, is first copied to a temporary file), and so is
    everything the store could refuse: each conversation's, session's and memory entry's
    owner, stored messages with the file's ids, the engine's own limits. A refusal writes
    nothing. If a write fails anyway (the engine, or another writer claiming a conversation
    meanwhile), the conversations this import created are deleted again with their messages
    and sessions, and so are the memory entries it created; what it added to conversations
    that existed before, and the sessions and entries it replaced, stay. Importing the same
    file twice stores one copy of everything, so running it again completes it.

    Args:
        memory: the destination store.
        fp: a text file open for reading.
        progress: called as ``progress(kind, n)`` as records are written.

    Returns:
        How many records of each kind were read and written.

    Raises:
        ImportFormatError: a line is malformed (its number is in the message).
        OwnershipError: a conversation, session or memory entry in the file belongs to
            another user in ``memory``.
        ConflictError: a message id in the file names a different stored message.
    """
    with _seekable(fp) as source:
        start = source.tell()
        for _item in _items(source):
            pass
        await memory.initialize()
        source.seek(start)
        plan = await _check_against(memory, _items(source))
        source.seek(start)
        writer = _Writer(memory, progress, plan)
        try:
            for item in _items(source):
                await writer.write(item)
            await writer.flush()
        except BaseException as exc:
            try:
                await writer.undo()
            except Exception as failed:
                log.warning("import: could not undo a failed import: %s", failed)
                exc.add_note(
                    f"the import could not remove what it had written ({failed}); "
                    "running it again completes it"
                )
            raise
    return writer.counts


async def copy(
    src: MemoryBackend,
    dst: MemoryBackend,
    user_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> TransferCounts:
    """Copy every record (or one user's) from ``src`` into ``dst``, any two backends.

    Records pass through the same validation as an import; copying again is a no-op.

    Returns:
        How many records of each kind were copied.
    """
    if src is dst:
        raise InvalidArgumentError("dst", "source and destination are the same store")
    await dst.initialize()
    parser = _Parser()
    writer = _Writer(dst, progress)
    number = 0
    async for obj in iter_export(src, user_id):
        number += 1
        item = parser.parse(obj, number)
        if item is not None:
            await writer.write(item)
    await writer.flush()
    return writer.counts


async def copy_conversation(
    src: MemoryBackend,
    dst: MemoryBackend,
    user_id: str,
    conversation_id: str,
    progress: ProgressCallback | None = None,
) -> TransferCounts:
    """Copy one conversation of ``user_id`` (its claim, sessions and messages) from ``src``
    into ``dst``, as :func:`copy` copies a store; copying again is a no-op.

    Records pass through the same validation as an import. The archive's move uses this
    (docs/lifecycle.md): copy first, delete after, so an interrupted move loses nothing.
    """
    if src is dst:
        raise InvalidArgumentError("dst", "source and destination are the same store")
    user_id = check_id(user_id, "user_id")
    conversation_id = check_id(conversation_id, "conversation_id")
    await dst.initialize()
    parser = _Parser()
    writer = _Writer(dst, progress)
    number = 0
    async for obj in iter_export(src, user_id):
        kind = obj["type"]
        if (
            kind == "memory"
            or (kind == "conversation" and obj["id"] != conversation_id)
            or (kind in ("session", "message") and obj["conversation_id"] != conversation_id)
        ):
            continue
        if kind == "session" and str(obj["session_id"]).startswith(ARCHIVE_MARKER):
            continue  # the archive state is the source store's own
        number += 1
        item = parser.parse(obj, number)
        if item is not None:
            await writer.write(item)
    await writer.flush()
    return writer.counts
