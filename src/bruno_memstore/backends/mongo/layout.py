"""Where ``MongoMemory`` keeps what: collection names, indexes, the schema-version document,
records as documents, and memory filters as queries.

Five collections, each named ``{prefix}_{kind}``:

* ``conversations``: ``{_id: conversation id, user_id}``, the conversation's claim.
* ``messages``: a message per document, ``_id`` its id; ``vector`` its float32 bytes, absent
  when it has none.
* ``memories``: an entry per document, ``_id`` its id; ``expires_at`` (a date, for the TTL
  index) beside ``expires_us`` when it expires; ``vector`` as for messages.
* ``sessions``: a session per document, ``_id`` its id.
* ``meta``: ``schema`` (the layout's version), ``space`` (the vector model and dimension)
  and ``v:{user}`` (a counter every write of the user's messages or entries bumps, the
  version the in-process keyword and vector indexes are tagged with).

Every query the backend makes names its user (or a conversation, or ids) and has an index.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING as UP
from pymongo import IndexModel

from ...models import MemoryFilter, MemoryRecord, MessageRecord, SessionRecord
from ..kit.codec import MEMORIES, MESSAGES, SESSIONS
from ..kit.vectors import vector_to_bytes

__all__ = [
    "INDEXES",
    "SCHEMA_VERSION",
    "TEXT_INDEXES",
    "Layout",
    "memory_doc",
    "memory_from",
    "memory_where",
    "message_doc",
    "message_from",
    "session_doc",
    "session_from",
]

SCHEMA_VERSION = 1

KINDS = ("conversations", "messages", "memories", "sessions", "meta")

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
"""Every query's index, by collection. Keys are ascending only: MongoDB walks an index either
way for a descending sort (and SecantusDB misreads range bounds on descending keys)."""

TEXT_INDEXES: dict[str, IndexModel] = {
    kind: IndexModel([("user_id", UP), ("content", "text")], name="text")
    for kind in ("messages", "memories")
}
"""``$text`` indexes (English stemming and stop words, MongoDB's default), prefixed by the
user: a search must name its user and reads that user's postings only."""

NO_VECTOR = {"vector": 0}
"""Projection of records without their vectors."""


class Layout:
    """The collection names of one store (``prefix``: their common first part)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        for kind in KINDS:
            setattr(self, kind, f"{prefix}_{kind}")

    conversations: str
    messages: str
    memories: str
    sessions: str
    meta: str


def _with_vector(doc: dict[str, Any], record: MessageRecord | MemoryRecord) -> dict[str, Any]:
    if record.vector is not None:
        doc["vector"] = vector_to_bytes(record.vector)
    return doc


def message_doc(rec: MessageRecord) -> dict[str, Any]:
    return _with_vector({"_id": rec.id, **MESSAGES.document(rec, omit=("id",))}, rec)


def message_from(doc: Mapping[str, Any]) -> MessageRecord:
    return MESSAGES.from_document(doc, id=doc["_id"])


def memory_doc(rec: MemoryRecord) -> dict[str, Any]:
    doc = {"_id": rec.id, **MEMORIES.document(rec, omit=("id",))}
    if rec.expires_us is not None:
        doc["expires_at"] = datetime.fromtimestamp(rec.expires_us / 1e6, UTC)
    return _with_vector(doc, rec)


def memory_from(doc: Mapping[str, Any], **given: Any) -> MemoryRecord:
    return MEMORIES.from_document(doc, id=doc["_id"], **given)


def session_doc(rec: SessionRecord) -> dict[str, Any]:
    return {"_id": rec.session_id, **SESSIONS.document(rec, omit=("session_id",))}


def session_from(doc: Mapping[str, Any]) -> SessionRecord:
    return SESSIONS.from_document(doc, session_id=doc["_id"])


def memory_where(flt: MemoryFilter, conversation_id: str | None = None) -> dict[str, Any]:
    """The query of every field of ``flt`` (as ``MemoryFilter.matches`` reads it), and of
    the conversation when given."""
    where: dict[str, Any] = {}
    if flt.user_id is not None:
        where["user_id"] = flt.user_id
    if flt.ids:
        where["_id"] = {"$in": list(flt.ids)}
    if flt.memory_types:
        where["memory_type"] = {"$in": list(flt.memory_types)}
    if flt.categories:
        where["category"] = {"$in": list(flt.categories)}
    if flt.tags:
        where["tags"] = {"$in": list(flt.tags)}
    if flt.min_confidence > 0:
        where["confidence"] = {"$gte": flt.min_confidence}
    if flt.min_importance > 0:
        where["importance"] = {"$gte": flt.min_importance}
    if not flt.include_expired:
        # Expired entries are left out by the query itself: the TTL monitor deletes them
        # only once a minute, and not at all while it is behind.
        where["$nor"] = [{"expires_us": {"$lte": flt.now_us}}]
    if conversation_id is not None:
        where["conversation_id"] = conversation_id
    return where
