"""Rows as records: every SQL engine selects a record's columns in its dataclass's field order.

A dialect's select lists (:class:`~.dialect.Source`) name, in order, the expressions that
give each field, so a row maps to a record here, once, whatever the schema calls them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ...models import MemoryRecord, MessageRecord, SessionRecord

__all__ = [
    "MEMORY_FIELDS",
    "MESSAGE_FIELDS",
    "SESSION_FIELDS",
    "json_tags",
    "memory_record",
    "message_record",
    "session_record",
]

MESSAGE_FIELDS = (
    "id",
    "conversation_id",
    "role",
    "content",
    "message_type",
    "timestamp",
    "ts_us",
    "metadata",
    "parent_id",
    "user_id",
    "seq",
)
MEMORY_FIELDS = (
    "id",
    "user_id",
    "content",
    "memory_type",
    "category",
    "tags",
    "confidence",
    "importance",
    "created_us",
    "expires_us",
    "conversation_id",
    "payload",
)
SESSION_FIELDS = ("session_id", "user_id", "conversation_id", "is_active", "started_us", "payload")


def message_record(row: Sequence[Any], at: int = 0) -> MessageRecord:
    """The message in ``row[at:at + 11]``."""
    return MessageRecord(*row[at : at + 11])


def json_tags(value: Any) -> list[str]:
    """Tags stored as JSON text (the engines without an array type)."""
    return list(json.loads(value))


def memory_record(
    row: Sequence[Any], at: int = 0, tags: Callable[[Any], list[str]] = json_tags
) -> MemoryRecord:
    """The memory entry in ``row[at:at + 12]``; ``tags`` decodes the stored tags."""
    r = row[at : at + 12]
    return MemoryRecord(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        tags(r[5]),
        float(r[6]),
        float(r[7]),
        int(r[8]),
        None if r[9] is None else int(r[9]),
        r[10],
        r[11],
    )


def session_record(row: Sequence[Any]) -> SessionRecord:
    """The session in ``row[:6]``."""
    return SessionRecord(row[0], row[1], row[2], bool(row[3]), int(row[4]), row[5])
