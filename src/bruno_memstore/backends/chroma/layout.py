"""How ``ChromaMemory`` lays records out in Chroma: collection names, metadata, filters.

Collections of one store (``{prefix}`` is the store's name prefix, ``{g}`` the generation of
its vector space, see ``store``):

* ``{prefix}_meta`` — small bookkeeping records: ``schema``, ``space`` (model, dimension,
  generation), ``seq`` (the arrival numbers reserved so far) and, for a server,
  ``gen:{user}`` (a token that changes with each write touching the user's text).
* ``{prefix}_conversations`` — one record per conversation, id = conversation id,
  metadata ``user`` (the owner).
* ``{prefix}_sessions`` — id = session id, document = the ``SessionContext`` JSON.
* ``{prefix}_ids`` — where each message and memory entry lives: id ``m:{id}`` or
  ``e:{id}``, metadata ``user``. Record ids are unique across users; this finds them.
* Per user ``u`` (``{key}`` = a hash of the user id; the collection's metadata holds the id):
  ``{prefix}_u{key}_messages_g{g}`` — id = message id, document = content, embedding = the
  message's vector, metadata: conversation, role, type, timestamp, arrival number; and
  ``{prefix}_u{key}_memories_g{g}`` — id = entry id, document = content, embedding = its
  vector, metadata: the filter columns and the ``MemoryEntry`` JSON.

A user's records have collections of their own because Chroma's filtered queries cost time
in proportion to the whole collection (about 1.6 us per record, measured: 160 ms at
100,000 records even when the filter keeps ten). Scoping by collection puts the user filter
before the index is even opened, and a user's search costs what the user's records cost.

Chroma requires an embedding on every record. Records without a vector (no model, or
vectors dropped by a model change) carry a fixed placeholder and ``vec=False``; vector
search never returns them (see ``ops.vector_search``).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import InvalidArgumentError
from ...models import MemoryFilter, MemoryRecord, MessageRecord, SessionRecord
from ..kit.codec import MEMORIES, MESSAGES, SESSIONS

__all__ = [
    "NEVER",
    "all_of",
    "any_of",
    "check_prefix",
    "collection_name",
    "embeddings",
    "float_from_key",
    "float_key",
    "locator",
    "memory_conditions",
    "memory_from",
    "memory_metadata",
    "message_from",
    "message_metadata",
    "message_order",
    "rows",
    "session_from",
    "session_metadata",
    "user_collection_name",
    "user_collection_pattern",
    "user_key",
]

NEVER = 2**62
"""``exp`` of an entry that never expires: every comparison works without a missing key."""

_PREFIX = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,63}")


def check_prefix(prefix: Any) -> str:
    """A collection-name prefix Chroma accepts (letters, digits, ``._-``; starts alphanumeric)."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix) or prefix.endswith("."):
        raise InvalidArgumentError(
            "prefix",
            "expected 1-64 characters from [A-Za-z0-9._-], starting with a letter or digit, "
            "without '..'",
        )
    return prefix


def collection_name(prefix: str, kind: str) -> str:
    """The name of one of the store's shared collections."""
    return f"{prefix}_{kind}"


def user_key(user_id: str) -> str:
    """The part of a user's collection names that stands for the user (96 bits of SHA-256)."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def user_collection_name(prefix: str, user_id: str, plural: str, generation: int) -> str:
    """The name of a user's ``messages`` or ``memories`` collection."""
    return f"{prefix}_u{user_key(user_id)}_{plural}_g{generation}"


def user_collection_pattern(prefix: str) -> re.Pattern[str]:
    """Matches user collection names; groups: key, ``messages``/``memories``, generation."""
    return re.compile(rf"{re.escape(prefix)}_u([0-9a-f]{{24}})_(messages|memories)_g(\d+)")


def locator(kind: str, record_id: str) -> str:
    """The id of a record's entry in the ``ids`` collection."""
    return f"{'m' if kind == 'message' else 'e'}:{record_id}"


def embeddings(vectors: Sequence[Any], dimension: int) -> tuple[np.ndarray, list[bool]]:
    """Rows for Chroma (placeholders where a record has no vector) and which rows are real."""
    rows = np.zeros((len(vectors), dimension), dtype=np.float32)
    real: list[bool] = []
    for i, vec in enumerate(vectors):
        if vec is None:
            rows[i, 0] = 1.0
            real.append(False)
        else:
            rows[i] = np.asarray(vec, dtype=np.float32).reshape(-1)
            real.append(True)
    return rows, real


def float_key(value: float) -> int:
    """An integer that orders like ``value`` (for values >= 0): its IEEE 754 bits.

    Chroma does not round-trip every double (a server parses JSON to the nearest double or
    next to it), so a filter on a stored float can miss by one unit in the last place.
    Integers round-trip exactly, and the bits of non-negative doubles sort as the doubles.
    """
    return int(struct.unpack("<q", struct.pack("<d", float(value) + 0.0))[0])


def float_from_key(key: int) -> float:
    """The inverse of :func:`float_key`."""
    return float(struct.unpack("<d", struct.pack("<q", int(key)))[0])


# ---------------------------------------------------------------- filters


def all_of(conditions: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Chroma's ``$and`` (which refuses fewer than two operands); ``None`` for none."""
    if not conditions:
        return None
    if len(conditions) == 1:
        return dict(conditions[0])
    return {"$and": list(conditions)}


def any_of(conditions: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Chroma's ``$or`` (which refuses fewer than two operands)."""
    if len(conditions) == 1:
        return dict(conditions[0])
    return {"$or": list(conditions)}


def memory_conditions(
    flt: MemoryFilter, conversation_id: str | None = None
) -> list[dict[str, Any]]:
    """Conditions equivalent to ``flt.matches`` within the user's collection (and the
    conversation, if given): the user is the collection itself."""
    conds: list[dict[str, Any]] = []
    if conversation_id is not None:
        conds.append({"conv": conversation_id})
    if flt.memory_types:
        conds.append({"mtype": {"$in": list(flt.memory_types)}})
    if flt.categories:
        conds.append({"cat": {"$in": list(flt.categories)}})
    if flt.tags:
        tags = any_of([{"tags": {"$contains": t}} for t in dict.fromkeys(flt.tags)])
        assert tags is not None
        conds.append(tags)
    if flt.min_confidence > 0:
        conds.append({"conf": {"$gte": float_key(flt.min_confidence)}})
    if flt.min_importance > 0:
        conds.append({"imp": {"$gte": float_key(flt.min_importance)}})
    if not flt.include_expired:
        conds.append({"exp": {"$gt": int(flt.now_us)}})
    return conds


# ---------------------------------------------------------------- records
# Records are the kit codec's documents under short metadata keys; the id is the record's
# Chroma id and the content (a session's JSON) its document, so both are left out.

_MESSAGE_META = MESSAGES.renamed(
    {
        "user_id": "user",
        "conversation_id": "conv",
        "message_type": "mtype",
        "timestamp": "ts",
        "metadata": "meta",
        "parent_id": "parent",
    }
)
_MEMORY_META = MEMORIES.renamed(
    {
        "user_id": "user",
        "conversation_id": "conv",
        "memory_type": "mtype",
        "category": "cat",
        "confidence": "conf",
        "importance": "imp",
        "expires_us": "exp",
    }
)
_SESSION_META = SESSIONS.renamed(
    {"user_id": "user", "conversation_id": "conv", "is_active": "active"}
)


def message_metadata(rec: MessageRecord, has_vector: bool) -> dict[str, Any]:
    """A message's metadata (``add`` refuses ``None`` values, so absent keys are left out)."""
    meta = _MESSAGE_META.document(rec, omit=("id", "content"), drop_none=True)
    meta["vec"] = has_vector
    return meta


def message_from(rid: str, content: str | None, meta: Mapping[str, Any]) -> MessageRecord:
    """The record a stored message was made from."""
    return _MESSAGE_META.from_document(meta, id=rid, content=content or "")


def message_order(meta: Mapping[str, Any]) -> tuple[int, int]:
    """Window order: timestamp, then arrival."""
    return (int(meta["ts_us"]), int(meta["seq"]))


def memory_metadata(rec: MemoryRecord, has_vector: bool) -> dict[str, Any]:
    """An entry's metadata for ``upsert``: ``None`` removes a key an older version had.
    Scores are stored as :func:`float_key` and "never expires" as :data:`NEVER`."""
    meta = _MEMORY_META.document(rec, omit=("id", "content"))
    meta.update(
        tags=list(rec.tags) or None,
        conf=float_key(rec.confidence),
        imp=float_key(rec.importance),
        exp=NEVER if rec.expires_us is None else rec.expires_us,
        vec=has_vector,
    )
    return meta


def memory_from(rid: str, content: str | None, meta: Mapping[str, Any]) -> MemoryRecord:
    """The record a stored entry was made from."""
    exp = int(meta["exp"])
    return _MEMORY_META.from_document(
        meta,
        id=rid,
        content=content or "",
        confidence=float_from_key(meta["conf"]),
        importance=float_from_key(meta["imp"]),
        expires_us=None if exp >= NEVER else exp,
    )


def session_metadata(rec: SessionRecord) -> dict[str, Any]:
    return _SESSION_META.document(rec, omit=("session_id", "payload"))


def session_from(rid: str, payload: str | None, meta: Mapping[str, Any]) -> SessionRecord:
    return _SESSION_META.from_document(meta, session_id=rid, payload=payload or "{}")


# ---------------------------------------------------------------- results


def rows(result: Mapping[str, Any]) -> Iterable[tuple[str, str | None, Mapping[str, Any]]]:
    """``(id, document, metadata)`` of a ``get`` result (missing parts as ``None``/``{}``)."""
    ids = result.get("ids") or []
    docs = result.get("documents") or [None] * len(ids)
    metas = result.get("metadatas") or [{}] * len(ids)
    return zip(ids, docs, (m or {} for m in metas), strict=True)
