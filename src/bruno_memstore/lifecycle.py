"""Expiry of messages, conversations and sessions, written once for every backend.

A record's expiry travels inside the JSON the shared layer already hands every engine (a
message's ``metadata``, a session's ``metadata``), under one reserved key,
:data:`LIFECYCLE_KEY`, so no engine needs a column of its own and copies between backends
keep it. The shared layer stamps it on write, hides expired records on every read, and
strips the key before a record becomes a bruno-core model again: callers never see it.

* A message's own deadline (``"x"``): ``message_ttl`` or a call's ``ttl``. Past it the
  message is gone from every read.
* Its conversation's deadline (``"c"``): ``conversation_ttl`` after the message was written.
  A conversation is alive while one of its messages has no such deadline or one still to
  come: each write extends it, and once the conversation has been idle for
  ``conversation_ttl`` it goes whole (messages and sessions).
* A session's deadline (``"x"`` in its metadata): ``session_ttl`` or a call's ``ttl``.

Times are integer UTC microseconds, as everywhere in the records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from .errors import InvalidArgumentError
from .models import LIFECYCLE_KEY, MessageRecord, SessionRecord, load_json, to_us, utcnow

__all__ = [
    "ARCHIVE_MARKER",
    "LIFECYCLE_KEY",
    "Deadlines",
    "archive_marker",
    "check_ttl",
    "conversation_deadline",
    "message_deadlines",
    "now_us",
    "session_deadline",
    "stamp_message",
    "stamp_session",
]

_MARK = '"' + LIFECYCLE_KEY + '"'

ARCHIVE_MARKER = "bruno-memstore:archive:"
"""Prefix of the session id that records a conversation's archive state."""


def archive_marker(conversation_id: str) -> str:
    """The id of the session recording the conversation's archive state (fixed length)."""
    return ARCHIVE_MARKER + hashlib.sha256(conversation_id.encode("utf-8")).hexdigest()[:40]


def check_ttl(value: Any, argument: str) -> float | None:
    """Seconds (a positive number, or a ``timedelta``), or ``None`` for no expiry."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(argument, "expected seconds (a number or a timedelta)")
    if not value > 0 or value == float("inf"):
        raise InvalidArgumentError(argument, "must be a positive, finite number of seconds")
    return float(value)


def now_us(now: datetime | None = None) -> int:
    """``now`` (default: the clock) in UTC microseconds; naive values are UTC."""
    if now is None:
        return to_us(utcnow())
    if not isinstance(now, datetime):
        raise InvalidArgumentError("now", "expected a datetime")
    return to_us(now)


def _after(now: int, ttl: float | None) -> int | None:
    return None if ttl is None else now + round(ttl * 1_000_000)


Deadlines = tuple[int | None, int | None]
"""A message's own deadline and its conversation's (``None``: none)."""


def stamp_message(
    rec: MessageRecord, now: int, ttl: float | None, conversation_ttl: float | None
) -> None:
    """Write the message's deadlines into its metadata (nothing when both are ``None``)."""
    x, c = _after(now, ttl), _after(now, conversation_ttl)
    if x is None and c is None:
        return  # deadlines already held (a copied record) stay
    meta = load_json(rec.metadata) if rec.metadata != "{}" else {}
    meta[LIFECYCLE_KEY] = {k: v for k, v in (("x", x), ("c", c)) if v is not None}
    rec.metadata = json.dumps(meta, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def message_deadlines(rec: MessageRecord) -> Deadlines:
    """The message's own deadline and its conversation's, from its metadata."""
    if _MARK not in rec.metadata:
        return None, None
    held = load_json(rec.metadata).get(LIFECYCLE_KEY)
    if not isinstance(held, dict):
        return None, None
    x, c = held.get("x"), held.get("c")
    return (x if isinstance(x, int) else None, c if isinstance(c, int) else None)


def conversation_deadline(records: Iterable[MessageRecord]) -> int | None:
    """When a conversation holding ``records`` (all of its messages) ends: the latest of
    their conversation deadlines, or ``None`` (never) if one of them has none."""
    latest: int | None = None
    for rec in records:
        c = message_deadlines(rec)[1]
        if c is None:
            return None
        latest = c if latest is None else max(latest, c)
    return latest


# --------------------------------------------------------------------------- sessions


def stamp_session(rec: SessionRecord, now: int, ttl: float | None) -> None:
    """Write the session's deadline into the metadata of its payload."""
    if ttl is None:
        return
    payload = json.loads(rec.payload)
    meta = payload.get("metadata") or {}
    meta[LIFECYCLE_KEY] = {"x": _after(now, ttl)}
    payload["metadata"] = meta
    rec.payload = json.dumps(payload, ensure_ascii=False, allow_nan=False)


def session_deadline(rec: SessionRecord) -> int | None:
    """The session's deadline, or ``None``."""
    if _MARK not in rec.payload:
        return None
    meta = json.loads(rec.payload).get("metadata") or {}
    held = meta.get(LIFECYCLE_KEY)
    x = held.get("x") if isinstance(held, dict) else None
    return x if isinstance(x, int) else None
