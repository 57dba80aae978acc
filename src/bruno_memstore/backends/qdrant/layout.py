"""How ``QdrantMemory`` lays records out in Qdrant: collections, point ids, payloads, filters.

Every record is one point; its payload holds the record's fields, so one point write is one
record write (Qdrant's unit of atomicity). Messages and memory entries carry their embedding
as the optional named vector :data:`VECTOR`; a point without it is stored and read like any
other and is simply not a vector-search candidate.

Collections (``P`` is the configured prefix)::

    P_meta            the recorded vector space (one point)
    P_conversations   conversation id -> owner
    P_sessions        one point per session
    P_messages        alias of P_messages_d<dimension> (d0: no vectors)
    P_memories        alias of P_memories_d<dimension>

Messages and memory entries sit behind aliases so that a new vector dimension can be given a
new physical collection and switched to in one alias operation.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
from qdrant_client import models as qm

from ...errors import InvalidArgumentError
from ...models import MemoryFilter

__all__ = [
    "INDEXES",
    "VECTOR",
    "Layout",
    "any_of",
    "between",
    "eq",
    "memory_where",
    "message_where",
    "point_id",
    "vector_of",
]

VECTOR = "dense"
"""Name of the embedding vector on message and memory points."""

RecordKind = Literal["message", "memory", "session", "conversation", "meta"]
_NAMESPACE = uuid.UUID("6f1d2b8e-4c3a-5e7f-9a10-b2c3d4e5f601")
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")


def point_id(kind: RecordKind, record_id: str) -> str:
    """The Qdrant point id of a record: a UUID derived from its kind and id."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}\x00{record_id}"))


class Layout:
    """Collection names under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise InvalidArgumentError(
                "prefix", "1 to 64 characters among letters, digits, '_' and '-'"
            )
        self.prefix = prefix

    @property
    def meta(self) -> str:
        return f"{self.prefix}_meta"

    @property
    def conversations(self) -> str:
        return f"{self.prefix}_conversations"

    @property
    def sessions(self) -> str:
        return f"{self.prefix}_sessions"

    @property
    def messages(self) -> str:
        return f"{self.prefix}_messages"

    @property
    def memories(self) -> str:
        return f"{self.prefix}_memories"

    def physical(self, alias: str, dimension: int) -> str:
        """The collection an alias points to when vectors have ``dimension`` (0: none)."""
        return f"{alias}_d{dimension}"

    @staticmethod
    def dimension_of(physical: str) -> int:
        """The dimension encoded in a physical collection name."""
        return int(physical.rsplit("_d", 1)[1])

    def plain(self) -> tuple[str, str, str]:
        """The collections without vectors."""
        return (self.meta, self.conversations, self.sessions)

    def with_vectors(self) -> tuple[str, str]:
        """The aliases of the collections whose points may carry a vector."""
        return (self.messages, self.memories)


# Payload indexes a server needs for the filters and orderings used (local mode has none).
_KEYWORD = qm.PayloadSchemaType.KEYWORD
_INTEGER = qm.PayloadSchemaType.INTEGER
_FLOAT = qm.PayloadSchemaType.FLOAT
_TENANT = qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True)
INDEXES: dict[str, dict[str, Any]] = {
    "meta": {},
    "conversations": {"user_id": _TENANT},
    "sessions": {
        "user_id": _TENANT,
        "conversation_id": _KEYWORD,
        "is_active": qm.PayloadSchemaType.BOOL,
        "started_us": _INTEGER,
    },
    "messages": {
        "user_id": _TENANT,
        "conversation_id": _KEYWORD,
        "role": _KEYWORD,
        "ts_us": _INTEGER,
        "seq": _INTEGER,
    },
    "memories": {
        "user_id": _TENANT,
        "conversation_id": _KEYWORD,
        "memory_type": _KEYWORD,
        "category": _KEYWORD,
        "tags": _KEYWORD,
        "confidence": _FLOAT,
        "importance": _FLOAT,
        "created_us": _INTEGER,
        "expires_us": _INTEGER,
        "seq": _INTEGER,
    },
}

# ----------------------------------------------------------------------------- filters


def eq(key: str, value: Any) -> qm.FieldCondition:
    return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))


def any_of(key: str, values: Iterable[str]) -> qm.FieldCondition:
    return qm.FieldCondition(key=key, match=qm.MatchAny(any=list(values)))


def between(key: str, low: int, high: int) -> qm.FieldCondition:
    return qm.FieldCondition(key=key, range=qm.Range(gte=low, lte=high))


def message_where(user_id: str | None, conversation_id: str | None = None) -> qm.Filter:
    """The messages of a user (its conversations), of one conversation, or both."""
    must: list[Any] = []
    if user_id is not None:
        must.append(eq("user_id", user_id))
    if conversation_id is not None:
        must.append(eq("conversation_id", conversation_id))
    return qm.Filter(must=must)


def memory_where(flt: MemoryFilter, conversation_id: str | None = None) -> qm.Filter:
    """``flt`` as a Qdrant filter: the same predicate as ``MemoryFilter.matches``."""
    must: list[Any] = [eq("user_id", flt.user_id)]
    if flt.memory_types:
        must.append(any_of("memory_type", flt.memory_types))
    if flt.categories:
        must.append(any_of("category", flt.categories))
    if flt.tags:
        must.append(any_of("tags", flt.tags))
    if flt.min_confidence > 0.0:
        must.append(qm.FieldCondition(key="confidence", range=qm.Range(gte=flt.min_confidence)))
    if flt.min_importance > 0.0:
        must.append(qm.FieldCondition(key="importance", range=qm.Range(gte=flt.min_importance)))
    if not flt.include_expired:
        must.append(
            qm.Filter(
                should=[
                    qm.IsEmptyCondition(is_empty=qm.PayloadField(key="expires_us")),
                    qm.FieldCondition(key="expires_us", range=qm.Range(gt=flt.now_us)),
                ]
            )
        )
    if conversation_id is not None:
        must.append(eq("conversation_id", conversation_id))
    return qm.Filter(must=must)


# ----------------------------------------------------------------------------- payloads
# A point's payload is its record as a document of the kit's codec (field names as keys);
# memory entries add ``seq``, their write number.


def vector_of(vector: Any) -> dict[str, list[float]]:
    """The named-vector struct of a point: the embedding, or none."""
    if vector is None:
        return {}
    return {VECTOR: np.asarray(vector, dtype=np.float32).reshape(-1).tolist()}
