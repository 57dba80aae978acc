"""How ``WeaviateMemory`` lays records out in Weaviate: collections, tenants, objects, filters.

Collections (``P`` is the configured prefix, a Weaviate class name's start)::

    PRegistry   no tenants: who owns each id (conversation, message, memory, session),
                and the recorded vector space
    PMessage    a tenant per user: one object per message, its vector on it
    PMemory     a tenant per user: one object per memory entry, its vector on it
    PSession    a tenant per user: one object per session

Each object keeps its whole record as the codec's document in ``doc`` (JSON text, not
indexed) beside the properties that filters, sorting and BM25 need. ``terms`` holds the
record's text as the shared analyzer's terms (:func:`~bruno_memstore.search.index_text`:
stemmed, stop words dropped), tokenized on whitespace,
so Weaviate's BM25 matches what every other backend matches.

The registry exists because ids are global (a message id is stored once, whoever wrote it)
while a user's records live in that user's tenant: a lookup by id first finds the owner.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from weaviate.classes.config import (
    Configure,
    DataType,
    Property,
    StopwordsPreset,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.query import Filter

from ...errors import InvalidArgumentError
from ...models import MemoryFilter, MemoryRecord, MessageRecord, SessionRecord
from ...search import index_text
from ..kit.codec import MEMORIES, MESSAGES, SESSIONS

__all__ = [
    "NEVER",
    "Layout",
    "RegistryKind",
    "equal",
    "exact",
    "memory_object",
    "memory_where",
    "message_object",
    "one_of",
    "registry_id",
    "session_object",
    "tenant_of",
    "unexact",
    "vector_list",
]

RegistryKind = Literal["conversation", "message", "memory", "session", "meta"]

NEVER = 2**53 - 1
"""``expires_us`` of an entry that never expires: the largest integer a JSON number holds
exactly, so "not expired" is one range filter (no null-state index needed)."""

_NAMESPACE = uuid.UUID("3b0c5a7e-1d94-5f2a-8c61-7e2f4b9d0a13")
_PREFIX = re.compile(r"[A-Z][A-Za-z0-9_]{0,63}")


def exact(value: str) -> str:
    """``value`` as stored in a ``field``-tokenized property. Weaviate trims whitespace off
    such a token before indexing and filtering, which would make ``" x"`` equal ``"x"``
    (another conversation, another user); brackets keep every value whole."""
    return f"[{value}]"


def unexact(token: Any) -> str:
    """The value :func:`exact` stored."""
    return str(token)[1:-1]


def equal(prop: str, value: str) -> Any:
    return Filter.by_property(prop).equal(exact(value))


def one_of(prop: str, values: Sequence[str]) -> Any:
    return Filter.by_property(prop).contains_any([exact(v) for v in values])


def registry_id(kind: RegistryKind, record_id: str) -> str:
    """The UUID of a record's registry object (and of its data object)."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}\x00{record_id}"))


def tenant_of(user_id: str) -> str:
    """A user's tenant name. Weaviate allows ``[A-Za-z0-9_-]{1,64}``; user ids are any text,
    so the name is a digest of the id (the id itself is kept in every record)."""
    return (
        "u" + hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()
    )


def _field(name: str) -> Property:
    return Property(name=name, data_type=DataType.TEXT, tokenization=Tokenization.FIELD)


def _int(name: str) -> Property:
    return Property(name=name, data_type=DataType.INT, index_range_filters=True)


_DOC = Property(name="doc", data_type=DataType.TEXT, index_filterable=False, index_searchable=False)
_TERMS = Property(
    name="terms",
    data_type=DataType.TEXT,
    tokenization=Tokenization.WHITESPACE,
    index_filterable=False,
)


class Layout:
    """Collection names under one prefix, and their definitions."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise InvalidArgumentError(
                "prefix", "a capital letter, then up to 63 letters, digits or '_'"
            )
        self.prefix = prefix

    @property
    def registry(self) -> str:
        return f"{self.prefix}Registry"

    @property
    def messages(self) -> str:
        return f"{self.prefix}Message"

    @property
    def memories(self) -> str:
        return f"{self.prefix}Memory"

    @property
    def sessions(self) -> str:
        return f"{self.prefix}Session"

    def tenanted(self) -> tuple[str, str, str]:
        return (self.messages, self.memories, self.sessions)

    def definitions(self) -> dict[str, dict[str, Any]]:
        """``collections.create`` arguments of every collection."""
        inverted = Configure.inverted_index(
            bm25_b=0.75, bm25_k1=1.2, stopwords_preset=StopwordsPreset.NONE
        )
        # Writes create a user's tenant; reads of a user with none find nothing.
        tenants = Configure.multi_tenancy(enabled=True, auto_tenant_creation=True)
        vectors = Configure.Vectors.self_provided(
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
        )
        return {
            self.registry: {
                "properties": [
                    _field("kind"),
                    _field("key"),
                    _field("user_id"),
                    _field("model"),
                    _int("dimension"),
                ],
                "inverted_index_config": inverted,
            },
            self.messages: {
                "properties": [
                    _field("message_id"),
                    _field("conversation_id"),
                    _field("role"),
                    _int("ts_us"),
                    _int("seq"),
                    _TERMS,
                    _DOC,
                ],
                "multi_tenancy_config": tenants,
                "vector_config": vectors,
                "inverted_index_config": inverted,
            },
            self.memories: {
                "properties": [
                    _field("memory_id"),
                    _field("conversation_id"),
                    _field("memory_type"),
                    _field("category"),
                    Property(
                        name="tags", data_type=DataType.TEXT_ARRAY, tokenization=Tokenization.FIELD
                    ),
                    Property(name="confidence", data_type=DataType.NUMBER),
                    Property(name="importance", data_type=DataType.NUMBER),
                    _int("created_us"),
                    _int("expires_us"),
                    _TERMS,
                    _DOC,
                ],
                "multi_tenancy_config": tenants,
                "vector_config": vectors,
                "inverted_index_config": inverted,
            },
            self.sessions: {
                "properties": [
                    _field("session_id"),
                    _field("conversation_id"),
                    Property(name="is_active", data_type=DataType.BOOL),
                    _int("started_us"),
                    _DOC,
                ],
                "multi_tenancy_config": tenants,
                "inverted_index_config": inverted,
            },
        }


# ----------------------------------------------------------------------------- objects


def _doc(document: dict[str, Any]) -> str:
    # ASCII escapes keep any text (lone surrogates, NUL) valid in protobuf strings.
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def message_object(rec: MessageRecord) -> dict[str, Any]:
    return {
        "message_id": exact(rec.id),
        "conversation_id": exact(rec.conversation_id),
        "role": exact(rec.role),
        "ts_us": rec.ts_us,
        "seq": rec.seq,
        "terms": index_text(rec.content),
        "doc": _doc(MESSAGES.document(rec)),
    }


def memory_object(rec: MemoryRecord) -> dict[str, Any]:
    return {
        "memory_id": exact(rec.id),
        "conversation_id": exact(rec.conversation_id or ""),
        "memory_type": exact(rec.memory_type),
        "category": exact(rec.category or ""),
        "tags": [exact(t) for t in rec.tags],
        "confidence": float(rec.confidence),
        "importance": float(rec.importance),
        "created_us": rec.created_us,
        "expires_us": NEVER if rec.expires_us is None else rec.expires_us,
        "terms": index_text(rec.content),
        "doc": _doc(MEMORIES.document(rec)),
    }


def session_object(rec: SessionRecord) -> dict[str, Any]:
    return {
        "session_id": exact(rec.session_id),
        "conversation_id": exact(rec.conversation_id),
        "is_active": rec.is_active,
        "started_us": rec.started_us,
        "doc": _doc(SESSIONS.document(rec)),
    }


def decode(kind: Literal["message", "memory", "session"], props: dict[str, Any]) -> Any:
    codec = {"message": MESSAGES, "memory": MEMORIES, "session": SESSIONS}[kind]
    return codec.from_document(json.loads(props["doc"]))


def vector_list(vector: Any) -> list[float] | None:
    if vector is None:
        return None
    return np.asarray(vector, dtype=np.float32).reshape(-1).tolist()


# ----------------------------------------------------------------------------- filters


def all_of(parts: Sequence[Any]) -> Any:
    """The conjunction of filters (``None`` when there are none)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Filter.all_of(list(parts))


def memory_where(flt: MemoryFilter, conversation_id: str | None = None) -> Any:
    """``flt`` (its user aside: that is the tenant) as a Weaviate filter, the same predicate
    as :meth:`MemoryFilter.matches`."""
    parts: list[Any] = []
    if flt.ids:
        parts.append(Filter.by_id().contains_any([registry_id("memory", i) for i in flt.ids]))
    if flt.memory_types:
        parts.append(one_of("memory_type", flt.memory_types))
    if flt.categories:
        parts.append(one_of("category", flt.categories))
    if flt.tags:
        parts.append(one_of("tags", flt.tags))
    if flt.min_confidence > 0.0:
        parts.append(Filter.by_property("confidence").greater_or_equal(flt.min_confidence))
    if flt.min_importance > 0.0:
        parts.append(Filter.by_property("importance").greater_or_equal(flt.min_importance))
    if not flt.include_expired:
        parts.append(Filter.by_property("expires_us").greater_than(flt.now_us))
    if conversation_id is not None:
        parts.append(equal("conversation_id", conversation_id))
    return all_of(parts)
