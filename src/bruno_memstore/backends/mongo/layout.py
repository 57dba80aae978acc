"""Where ``MongoMemory`` keeps what: collections, their indexes, the layout's version, and
records as documents.

Collections ``{prefix}_{kind}``: ``conversations`` (``{_id, user_id}``, the claim),
``messages``, ``memories`` and ``sessions`` (a record per document, ``_id`` its id, ``vector``
its float32 bytes and absent without one, ``expires_at`` a date for the TTL index), and
``meta``: ``schema`` (the layout's version), ``space`` (the vector model) and ``v:{user}``
(a counter bumped after every write of the user's messages or entries).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING as UP
from pymongo import IndexModel

from ...models import MemoryFilter, MemoryRecord, MessageRecord, SessionRecord
from ..kit.codec import MEMORIES, MESSAGES, SESSIONS, Codec
from ..kit.vectors import vector_to_bytes

__all__ = ["INDEXES", "NO_VECTOR", "SCHEMA_VERSION", "TEXT_INDEXES", "Layout"]
__all__ += ["decode", "document", "memory_where"]

SCHEMA_VERSION = 1

INDEXES: dict[str, list[IndexModel]] = {
    "conversations": [IndexModel([("user_id", UP)], name="by_user")],
    "messages": [
        IndexModel([("conversation_id", UP), ("ts_us", UP), ("seq", UP)], name="by_conversation"),
        IndexModel([("user_id", UP), ("ts_us", UP), ("seq", UP)], name="by_user"),
    ],
    "memories": [
        IndexModel([("user_id", UP), ("importance", UP), ("created_us", UP)], name="by_user"),
        IndexModel([("expires_at", UP)], name="expiry", expireAfterSeconds=0),
        IndexModel([("expires_us", UP)], name="by_expiry", sparse=True),
    ],
    "sessions": [
        IndexModel([("user_id", UP), ("started_us", UP)], name="by_user"),
        IndexModel([("conversation_id", UP)], name="by_conversation"),
    ],
}
"""Every query's index. Keys are ascending only: MongoDB walks an index either way for a
descending sort (and SecantusDB misreads range bounds on descending keys)."""

TEXT_INDEXES = {
    kind: IndexModel([("user_id", UP), ("content", "text")], name="text")
    for kind in ("messages", "memories")
}
"""``$text`` indexes (MongoDB's English analysis), prefixed by the user: a search names its
user and reads that user's postings only."""

NO_VECTOR = {"vector": 0}


class Layout:
    """The collection names of one store."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        for kind in ("conversations", "messages", "memories", "sessions", "meta"):
            setattr(self, kind, f"{prefix}_{kind}")

    conversations: str
    messages: str
    memories: str
    sessions: str
    meta: str


def document(rec: MessageRecord | MemoryRecord | SessionRecord) -> dict[str, Any]:
    """The record's document."""
    if isinstance(rec, SessionRecord):
        return {"_id": rec.session_id, **SESSIONS.document(rec, omit=("session_id",))}
    codec: Codec[Any] = MESSAGES if isinstance(rec, MessageRecord) else MEMORIES
    doc = {"_id": rec.id, **codec.document(rec, omit=("id",))}
    if rec.vector is not None:
        doc["vector"] = vector_to_bytes(rec.vector)
    if isinstance(rec, MemoryRecord) and rec.expires_us is not None:
        doc["expires_at"] = datetime.fromtimestamp(rec.expires_us / 1e6, UTC)
    return doc


def decode(codec: Codec[Any], doc: Mapping[str, Any], **given: Any) -> Any:
    """The record a document holds (``given`` fields win)."""
    key = "session_id" if codec is SESSIONS else "id"
    return codec.from_document(doc, **{key: doc["_id"]}, **given)


def memory_where(flt: MemoryFilter, conversation_id: str | None = None) -> dict[str, Any]:
    """The query of every field of ``flt`` (as ``MemoryFilter.matches`` reads it), and of
    the conversation when given."""
    where: dict[str, Any] = {} if flt.user_id is None else {"user_id": flt.user_id}
    for field, values in (
        ("_id", flt.ids),
        ("memory_type", flt.memory_types),
        ("category", flt.categories),
        ("tags", flt.tags),
    ):
        if values:
            where[field] = {"$in": list(values)}
    if flt.min_confidence > 0:
        where["confidence"] = {"$gte": flt.min_confidence}
    if flt.min_importance > 0:
        where["importance"] = {"$gte": flt.min_importance}
    if not flt.include_expired:
        # In the query: the TTL monitor deletes expired entries once a minute at best.
        where["$nor"] = [{"expires_us": {"$lte": flt.now_us}}]
    if conversation_id is not None:
        where["conversation_id"] = conversation_id
    return where
