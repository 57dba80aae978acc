"""Internal records that backends store, and their conversion to and from bruno-core models.

Records are plain slotted dataclasses: the shared layer validates and serialises once, so a
backend only moves strings and numbers. Timestamps travel twice: as exact ISO-8601 text (the
round trip is exact, naive stays naive, offsets are kept) and as integer UTC microseconds (the
sort key; naive datetimes are read as UTC, as bruno-core creates them with ``utcnow()``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import orjson
from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryEntry, MemoryMetadata, MemoryType
from bruno_core.models.message import Message, MessageRole, MessageType
from pydantic import TypeAdapter, ValidationError

from .errors import InvalidArgumentError

__all__ = [
    "DEFAULT_USER",
    "MAX_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "MAX_LIMIT",
    "MemoryFilter",
    "MemoryRecord",
    "MessageRecord",
    "SearchHit",
    "SearchRequest",
    "SearchResult",
    "SessionRecord",
    "check_id",
    "check_json_depth",
    "check_limit",
    "check_text",
    "dump_json",
    "hit_order",
    "memory_sort_key",
    "memory_to_record",
    "message_to_record",
    "record_to_memory",
    "record_to_message",
    "record_to_session",
    "records_to_messages",
    "session_to_record",
    "to_us",
    "utcnow",
]

DEFAULT_USER = "default"
"""Owner given to a conversation first written without a user (bruno-core's own default)."""

MAX_ID_LENGTH = 255
MAX_LIMIT = 10_000
"""The largest ``limit`` any read accepts (``retrieve_messages(limit=None)`` reads a whole
conversation; the user's whole history is read with ``export_batches``, in pages)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def utcnow() -> datetime:
    """Naive UTC now, the convention bruno-core's models use."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_us(value: datetime) -> int:
    """Integer microseconds since the epoch; naive values are taken as UTC."""
    delta = value - (_NAIVE_EPOCH if value.tzinfo is None else _EPOCH)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def check_text(value: str, argument: str) -> str:
    """Refuse a string that is not Unicode text: one holding a lone surrogate, which has no
    UTF-8 form, so no engine could store it. Every backend checks this here, up front."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgumentError(
                argument, f"holds a lone surrogate at index {exc.start} (not valid Unicode text)"
            ) from None
    return value


def check_id(value: Any, argument: str) -> str:
    """Validate a user, conversation or session id: a non-empty string of printable text."""
    if not isinstance(value, str):
        raise InvalidArgumentError(argument, f"expected a string, got {type(value).__name__}")
    if not value or not value.strip():
        raise InvalidArgumentError(argument, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgumentError(argument, f"longer than {MAX_ID_LENGTH} characters")
    if "\x00" in value:
        raise InvalidArgumentError(argument, "must not contain NUL characters")
    return check_text(value, argument)


def check_limit(
    value: Any,
    argument: str = "limit",
    *,
    allow_none: bool = False,
    maximum: int = MAX_LIMIT,
) -> int | None:
    """Validate a result limit: an int from 1 to ``maximum`` (``None`` allowed when
    ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(argument, f"expected an int, got {type(value).__name__}")
    if value < 1:
        raise InvalidArgumentError(argument, f"must be at least 1, got {value}")
    if value > maximum:
        raise InvalidArgumentError(argument, f"must be at most {maximum:,}, got {value:,}")
    return value


MAX_JSON_DEPTH = 100
"""The deepest nesting of objects and lists accepted in free-form JSON (message metadata,
memory ``custom_fields``, session metadata and state); the value itself is level 1."""


def check_json_depth(value: Any, argument: str) -> None:
    """Refuse ``value`` if its dicts and lists nest deeper than :data:`MAX_JSON_DEPTH`.

    Walks level by level, without recursion, so any depth (or a cycle) is refused cleanly.
    """
    level, depth = [value], 0
    while level:
        containers = [v for v in level if isinstance(v, (dict, list, tuple))]
        if not containers:
            return
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise InvalidArgumentError(
                argument, f"nests objects and lists deeper than {MAX_JSON_DEPTH} levels"
            )
        level = [x for c in containers for x in (c.values() if isinstance(c, dict) else c)]


def load_json(text: str | bytes) -> Any:
    """The value of JSON text exactly as :func:`json.loads` reads it, parsed by orjson
    where that gives the same (a few times faster on the small documents records hold).

    orjson reads integers beyond 64 bits as floats, so text with a run of 19 digits goes
    to :mod:`json`; so does what orjson refuses (NaN, lone surrogates).
    """
    long_number = _LONG_TEXT if isinstance(text, str) else _LONG_BYTES
    # Shorter than a long number, it holds none (most metadata): no scan.
    if len(text) < 19 or long_number.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


_LONG_TEXT = re.compile(r"\d{19}")
_LONG_BYTES = re.compile(rb"\d{19}")


# ``json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))``, with the
# encoder it would build made once.
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


_SCALARS = frozenset({str, int, float, bool, type(None)})


def dump_json(value: Any, argument: str) -> str:
    """Serialise JSON that reads back equal to ``value``, or raise naming ``argument``.

    Rejects what would silently change on the way back: NaN/Infinity, non-string keys,
    tuples, sets and other non-JSON types; nesting deeper than :data:`MAX_JSON_DEPTH`; and
    strings, keys included, at any depth that are not Unicode text (see :func:`check_text`).
    """
    if isinstance(value, dict) and not value:
        return "{}"
    # One flat object of plain scalars under text keys (most metadata) reads back equal:
    # neither its depth nor the round trip needs checking.
    flat = (
        type(value) is dict
        and all(type(k) is str for k in value)
        and all(type(v) in _SCALARS for v in value.values())
    )
    if not flat:
        check_json_depth(value, argument)
    try:
        text = _ENCODE(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(argument, f"not JSON-serialisable: {exc}") from None
    if not flat and load_json(text) != value:
        raise InvalidArgumentError(
            argument, "does not survive a JSON round trip (tuple, non-string key, or similar)"
        )
    return check_text(text, argument)


# --------------------------------------------------------------------------- messages


@dataclass(slots=True)
class MessageRecord:
    """One stored message, as every backend keeps it."""

    id: str
    conversation_id: str
    role: str
    content: str
    message_type: str
    timestamp: str  # exact ISO-8601 text
    ts_us: int  # sort key: UTC microseconds
    metadata: str  # JSON text
    parent_id: str | None = None
    user_id: str | None = None  # the conversation's owner (filled on read where known)
    seq: int = 0  # arrival order, assigned by the backend
    vector: Any = None  # unit float32 embedding of ``content`` (set on write when configured)


def message_to_record(message: Any, conversation_id: str) -> MessageRecord:
    """Validate a bruno-core ``Message`` and turn it into a record (nothing is written here)."""
    if not isinstance(message, Message):
        raise InvalidArgumentError(
            "message", f"expected bruno_core Message, got {type(message).__name__}"
        )
    role = message.role
    if not isinstance(role, MessageRole):
        try:
            role = MessageRole(role)
        except ValueError:
            raise InvalidArgumentError("message.role", f"unknown role {role!r}") from None
    mtype = message.message_type
    if not isinstance(mtype, MessageType):
        try:
            mtype = MessageType(mtype)
        except ValueError:
            raise InvalidArgumentError("message.message_type", f"unknown type {mtype!r}") from None
    content = message.content
    if not isinstance(content, str) or not content.strip():
        raise InvalidArgumentError("message.content", "must be a non-empty string")
    check_text(content, "message.content")
    if not isinstance(message.id, UUID):
        raise InvalidArgumentError("message.id", "must be a UUID")
    if message.conversation_id is not None and message.conversation_id != conversation_id:
        raise InvalidArgumentError(
            "conversation_id",
            f"message.conversation_id is {message.conversation_id!r}, "
            f"but it is being stored into {conversation_id!r}",
        )
    ts = message.timestamp
    if not isinstance(ts, datetime):
        raise InvalidArgumentError("message.timestamp", "must be a datetime")
    if not isinstance(message.metadata, dict):
        raise InvalidArgumentError("message.metadata", "must be a dict")
    return MessageRecord(
        id=str(message.id),
        conversation_id=conversation_id,
        role=role.value,
        content=content,
        message_type=mtype.value,
        timestamp=ts.isoformat(),
        ts_us=to_us(ts),
        metadata=dump_json(message.metadata, "message.metadata"),
        parent_id=str(message.parent_id) if message.parent_id is not None else None,
    )


LIFECYCLE_KEY = "bruno_memstore:lifecycle"
"""The metadata key holding a record's deadlines (see :mod:`bruno_memstore.lifecycle`);
reserved: it is stripped from every message and session a caller reads."""


def user_metadata(text: str) -> dict[str, Any]:
    """A record's metadata JSON as its caller stored it (without :data:`LIFECYCLE_KEY`)."""
    meta = load_json(text) if text != "{}" else {}
    if LIFECYCLE_KEY in meta:
        del meta[LIFECYCLE_KEY]
    return meta


def record_to_message(rec: MessageRecord) -> Message:
    """Rebuild the bruno-core ``Message`` a record was made from."""
    return records_to_messages([rec])[0]


def records_to_messages(records: Sequence[MessageRecord]) -> list[Message]:
    """Rebuild the bruno-core ``Message`` objects the records were made from.

    The messages are exactly those ``Message(**fields)`` validation gives: the ids of all the
    records are parsed at once by pydantic-core's UUID validator, the rest of each field is
    checked here as ``Message``'s own validation would (roles and types by value, content
    stripped and not empty, metadata a JSON object) and the instance is filled in directly.
    A record that fails any check, and every record if bruno-core's ``Message`` has other
    fields or validators than these, goes through ``Message(...)`` itself (raising as it
    does). The timestamp goes through ``fromisoformat`` so its tzinfo is a plain
    ``datetime.timezone``, as stored.
    """
    if not _DIRECT:
        return [_validated(r) for r in records]
    parents = [r.parent_id for r in records if r.parent_id is not None]
    try:
        uuids = _UUIDS.validate_python([r.id for r in records] + parents)
    except ValidationError:
        return [_validated(r) for r in records]
    parent_ids = iter(uuids[len(records) :])
    roles, types, metadata, stamp = _ROLES.get, _TYPES.get, user_metadata, datetime.fromisoformat
    new, put, fields = _new, _set, _FIELDS_SET.copy
    out: list[Message] = []
    for rec, mid in zip(records, uuids, strict=False):
        role = roles(rec.role)
        mtype = types(rec.message_type)
        content = rec.content
        text = content.strip() if type(content) is str else ""
        meta = metadata(rec.metadata)
        conv = rec.conversation_id
        parent = None if rec.parent_id is None else next(parent_ids)
        if (
            role is None
            or mtype is None
            or not text
            or type(meta) is not dict
            or (conv is not None and type(conv) is not str)
        ):
            out.append(_validated(rec))
            continue
        message = new(Message)
        put(
            message,
            "__dict__",
            {
                "id": mid,
                "role": role,
                "content": text,
                "message_type": mtype,
                "timestamp": stamp(rec.timestamp),
                "metadata": meta,
                "parent_id": parent,
                "conversation_id": conv,
            },
        )
        put(message, "__pydantic_fields_set__", fields())
        put(message, "__pydantic_extra__", None)
        put(message, "__pydantic_private__", None)
        out.append(message)
    return out


def _validated(rec: MessageRecord) -> Message:
    """``Message`` built and validated by pydantic from a record's fields."""
    return Message(
        id=rec.id,
        role=rec.role,
        content=rec.content,
        message_type=rec.message_type,
        timestamp=datetime.fromisoformat(rec.timestamp),
        metadata=user_metadata(rec.metadata),
        parent_id=rec.parent_id,
        conversation_id=rec.conversation_id,
    )


_MESSAGE_FIELDS = (
    "id",
    "role",
    "content",
    "message_type",
    "timestamp",
    "metadata",
    "parent_id",
    "conversation_id",
)
_FIELDS_SET = set(_MESSAGE_FIELDS)
_UUIDS: TypeAdapter[list[UUID]] = TypeAdapter(list[UUID])
_ROLES = {r.value: r for r in MessageRole}
_TYPES = {t.value: t for t in MessageType}
_new = object.__new__
_set = object.__setattr__


def _fills_directly() -> bool:
    """Whether ``Message`` is the model :func:`records_to_messages` fills in itself: these
    fields, no constraint but the content's length, one validator (content stripped, not
    empty), no private attributes or extras."""
    decorators = Message.__pydantic_decorators__
    validators = decorators.field_validators
    constraints = {
        name: [repr(c) for c in f.metadata]
        for name, f in Message.model_fields.items()
        if f.metadata
    }
    return (
        tuple(Message.model_fields) == _MESSAGE_FIELDS
        and constraints == {"content": ["MinLen(min_length=1)"]}
        and list(validators) == ["content_not_empty"]
        and validators["content_not_empty"].info.fields == ("content",)
        and not (
            decorators.validators
            or decorators.root_validators
            or decorators.model_validators
            or Message.__private_attributes__
        )
        and Message.__pydantic_post_init__ is None
        and Message.model_config.get("extra") in (None, "ignore")
    )


_DIRECT = _fills_directly()


# --------------------------------------------------------------------------- memories


@dataclass(slots=True)
class MemoryRecord:
    """One memory entry: the exact entry as JSON plus the columns queries filter on."""

    id: str
    user_id: str
    content: str
    memory_type: str
    category: str | None
    tags: list[str]
    confidence: float
    importance: float
    created_us: int
    expires_us: int | None
    conversation_id: str | None
    payload: str  # MemoryEntry JSON, the source of truth on read
    vector: Any = None  # unit float32 embedding of ``content`` (set on write when configured)


def memory_to_record(entry: Any) -> MemoryRecord:
    """Validate a bruno-core ``MemoryEntry`` and turn it into a record."""
    if not isinstance(entry, MemoryEntry):
        raise InvalidArgumentError(
            "memory_entry", f"expected bruno_core MemoryEntry, got {type(entry).__name__}"
        )
    check_id(entry.user_id, "memory_entry.user_id")
    if entry.conversation_id is not None:
        check_id(entry.conversation_id, "memory_entry.conversation_id")
    if not isinstance(entry.content, str) or not entry.content.strip():
        raise InvalidArgumentError("memory_entry.content", "must be a non-empty string")
    check_text(entry.content, "memory_entry.content")
    try:
        mtype = MemoryType(entry.memory_type)
    except ValueError:
        raise InvalidArgumentError(
            "memory_entry.memory_type", f"unknown type {entry.memory_type!r}"
        ) from None
    meta = entry.metadata
    if not isinstance(meta, MemoryMetadata):
        raise InvalidArgumentError("memory_entry.metadata", "must be a MemoryMetadata")
    _check_strings(meta.source, "memory_entry.metadata.source")
    if meta.category is not None:
        _check_strings(meta.category, "memory_entry.metadata.category")
    _check_strings(meta.tags, "memory_entry.metadata.tags")
    dump_json(meta.custom_fields, "memory_entry.metadata.custom_fields")
    for name in ("confidence", "importance"):
        v = getattr(meta, name)
        if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise InvalidArgumentError(f"memory_entry.metadata.{name}", "must be in [0, 1]")
    try:
        payload = entry.model_dump_json()
    except Exception as exc:  # pydantic serialisation errors
        raise InvalidArgumentError("memory_entry", f"cannot be serialised: {exc}") from None
    return MemoryRecord(
        id=str(entry.id),
        user_id=entry.user_id,
        content=entry.content,
        memory_type=mtype.value,
        category=meta.category,
        tags=list(dict.fromkeys(meta.tags)),
        confidence=float(meta.confidence),
        importance=float(meta.importance),
        created_us=to_us(entry.created_at),
        expires_us=to_us(entry.expires_at) if entry.expires_at is not None else None,
        conversation_id=entry.conversation_id,
        payload=payload,
    )


def _check_strings(value: Any, argument: str) -> None:
    """A string, or a list of strings, each checked by :func:`check_text`."""
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, str):
            raise InvalidArgumentError(argument, f"expected text, got {type(item).__name__}")
        check_text(item, argument)


def record_to_memory(rec: MemoryRecord) -> MemoryEntry:
    """Rebuild the stored ``MemoryEntry``."""
    return MemoryEntry.model_validate_json(rec.payload)


@dataclass(slots=True)
class MemoryFilter:
    """Every ``MemoryQuery`` filter except the text, in engine-neutral form.

    ``user_id`` ``None`` (any user) and ``ids`` (only these entries) are used by the shared
    layer alone, to read one entry by id over ``_query_memories``; every public read names
    its user and no ids.
    """

    user_id: str | None
    memory_types: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # any of these tags
    min_confidence: float = 0.0
    min_importance: float = 0.0
    include_expired: bool = False
    now_us: int = 0
    limit: int = 10
    ids: tuple[str, ...] = ()  # only these entries (all when empty)

    def matches(self, rec: MemoryRecord) -> bool:
        """The one Python predicate, for backends that filter in process."""
        return (
            (self.user_id is None or rec.user_id == self.user_id)
            and (not self.ids or rec.id in self.ids)
            and (not self.memory_types or rec.memory_type in self.memory_types)
            and (not self.categories or rec.category in self.categories)
            and (not self.tags or any(t in self.tags for t in rec.tags))
            and rec.confidence >= self.min_confidence
            and rec.importance >= self.min_importance
            and (self.include_expired or rec.expires_us is None or rec.expires_us > self.now_us)
        )


def memory_sort_key(rec: MemoryRecord) -> tuple[float, int, str]:
    """Order of unranked memory results: most important, then newest, then id."""
    return (-rec.importance, -rec.created_us, rec.id)


# --------------------------------------------------------------------------- sessions


@dataclass(slots=True)
class SessionRecord:
    """One session: the exact ``SessionContext`` as JSON plus lookup columns."""

    session_id: str
    user_id: str
    conversation_id: str
    is_active: bool
    started_us: int
    payload: str


def session_to_record(session: SessionContext) -> SessionRecord:
    """Turn a ``SessionContext`` into a record."""
    check_id(session.session_id, "session_id")
    check_id(session.user_id, "user_id")
    check_id(session.conversation_id, "conversation_id")
    dump_json(session.metadata, "metadata")
    dump_json(session.state, "state")
    return SessionRecord(
        session_id=session.session_id,
        user_id=session.user_id,
        conversation_id=session.conversation_id,
        is_active=session.is_active,
        started_us=to_us(session.started_at),
        payload=session.model_dump_json(),
    )


def record_to_session(rec: SessionRecord) -> SessionContext:
    """Rebuild the stored ``SessionContext``."""
    session = SessionContext.model_validate_json(rec.payload)
    session.metadata.pop(LIFECYCLE_KEY, None)
    return session


# --------------------------------------------------------------------------- search


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One search of one user's records, as the shared layer hands it to an engine.

    Attributes:
        user_id: whose records; no other user's may be read, scored or returned.
        query: the words to match (already bounded, see
            :func:`~bruno_memstore.search.bounded_query`); empty for a vector search.
        kinds: ``"message"`` and/or ``"memory"``.
        conversation_id: only records of this conversation (memory entries: those that
            name it), when given.
        limit: at most this many hits.
        memory_filter: the filters memory hits must pass; ``None``: the user's entries
            that have not expired.
    """

    user_id: str
    query: str
    kinds: frozenset[str] = frozenset({"message", "memory"})
    conversation_id: str | None = None
    limit: int = 10
    memory_filter: MemoryFilter | None = None

    def with_limit(self, limit: int) -> SearchRequest:
        """The same request for ``limit`` hits."""
        return replace(self, limit=limit)

    def memories(self) -> MemoryFilter:
        """The filter memory hits pass: ``memory_filter``, or the user's unexpired entries."""
        if self.memory_filter is not None:
            return self.memory_filter
        return MemoryFilter(user_id=self.user_id, now_us=to_us(utcnow()))

    def admits_message(self, rec: MessageRecord) -> bool:
        """Whether a message of this user may be a hit (its conversation, if one is given)."""
        return self.conversation_id is None or rec.conversation_id == self.conversation_id

    def admits_memory(self, rec: MemoryRecord, flt: MemoryFilter | None = None) -> bool:
        """Whether a memory entry may be a hit: it passes ``flt`` (default
        :meth:`memories`) and names the conversation, if one is given."""
        return (flt or self.memories()).matches(rec) and (
            self.conversation_id is None or rec.conversation_id == self.conversation_id
        )


@dataclass(slots=True)
class SearchHit:
    """A backend's raw search answer: which record, and its engine score (higher is better)."""

    kind: Literal["message", "memory"]
    score: float
    message: MessageRecord | None = None
    memory: MemoryRecord | None = None


def hit_order(hit: SearchHit) -> tuple[float, int, str]:
    """Order of ranked hits: best score, then newest, then id."""
    if hit.message is not None:
        return (-hit.score, -hit.message.ts_us, hit.message.id)
    assert hit.memory is not None
    return (-hit.score, -hit.memory.created_us, hit.memory.id)


@dataclass(slots=True)
class SearchResult:
    """A ranked search result as users see it.

    Attributes:
        kind: ``"message"`` or ``"memory"``: which kind of record matched.
        score: relevance in [0, 1], 1.0 for the best match of the query.
        message: the matching ``Message`` when ``kind == "message"``.
        memory: the matching ``MemoryEntry`` when ``kind == "memory"``.
    """

    kind: Literal["message", "memory"]
    score: float
    message: Message | None = None
    memory: MemoryEntry | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def content(self) -> str:
        """The matching text."""
        if self.message is not None:
            return self.message.content
        assert self.memory is not None
        return self.memory.content
