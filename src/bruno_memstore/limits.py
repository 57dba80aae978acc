"""What an engine cannot store, declared once per backend and checked by the shared layer.

A backend sets :attr:`~bruno_memstore.base.MemoryBackend.limits` (a class attribute, which
an instance may narrow once it knows its server's settings). Before any write,
:class:`~bruno_memstore.base.MemoryBackend` checks every record against it and refuses what
the engine could not hold with :class:`~bruno_memstore.errors.InvalidArgumentError`, writing
nothing. Lone surrogates need no declaration: no engine can store them, and every record
refuses them when it is made (:func:`~bruno_memstore.models.check_text`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError
from .models import MemoryRecord, MessageRecord, SessionRecord

__all__ = ["NO_LIMITS", "Limits", "Record", "record_bytes"]

Record = MessageRecord | MemoryRecord | SessionRecord


@dataclass(frozen=True, slots=True)
class Limits:
    """An engine's limits on what one record may hold.

    Attributes:
        nul_in_text: whether message and memory content may hold NUL characters.
        nul_in_json: whether strings and keys inside JSON (metadata, custom fields,
            session state) may hold NUL characters.
        nul_holder: what cannot hold NUL, as errors name it (e.g. ``"PostgreSQL text"``).
        max_record_bytes: the largest size of one record's write (as the backend's
            ``_record_size`` counts it), or ``None`` for no limit.
        size_limit: the setting behind ``max_record_bytes``, as errors name it (e.g.
            ``"this server's max_allowed_packet (16777216 bytes)"``).
    """

    nul_in_text: bool = True
    nul_in_json: bool = True
    nul_holder: str = "this engine"
    max_record_bytes: int | None = None
    size_limit: str = "this engine's limit on one record"

    @property
    def forbidden_text(self) -> tuple[str, ...]:
        """Characters refused in content (for the conformance suite)."""
        return () if self.nul_in_text else ("\x00",)

    @property
    def forbidden_json_text(self) -> tuple[str, ...]:
        """Characters refused inside JSON strings and keys (for the conformance suite)."""
        return () if self.nul_in_json else ("\x00",)

    def check(self, record: Record, size: int | None = None) -> None:
        """Raise ``InvalidArgumentError`` naming the field if ``record`` breaks a limit.

        ``size`` is the record's size as the backend counts it (needed only when
        ``max_record_bytes`` is set).
        """
        if not (self.nul_in_text and self.nul_in_json):
            self._check_nul(record)
        if self.max_record_bytes is not None and size is not None and size > self.max_record_bytes:
            raise InvalidArgumentError(
                _KIND_ARGUMENT[type(record)],
                f"too large ({size:,} bytes) for {self.size_limit}; store large content elsewhere",
            )

    def _check_nul(self, record: Record) -> None:
        problem = f"contains a NUL character (\\x00), which {self.nul_holder} cannot store"
        if isinstance(record, MessageRecord):
            if not self.nul_in_text and "\x00" in record.content:
                raise InvalidArgumentError("message.content", problem)
            if not self.nul_in_json and _json_has_nul(record.metadata):
                raise InvalidArgumentError("message.metadata", problem)
        elif isinstance(record, MemoryRecord):
            if not self.nul_in_text and "\x00" in record.content:
                raise InvalidArgumentError("memory_entry.content", problem)
            if not self.nul_in_json and _json_has_nul(record.payload):
                raise InvalidArgumentError("memory_entry", problem)
        elif not self.nul_in_json and _json_has_nul(record.payload):
            raise InvalidArgumentError("session", problem)


NO_LIMITS = Limits()
"""What an engine that stores any Unicode text of any size declares."""

_KIND_ARGUMENT: dict[type, str] = {
    MessageRecord: "message",
    MemoryRecord: "memory_entry",
    SessionRecord: "session",
}


def record_bytes(record: Record) -> int:
    """The UTF-8 size of a record's stored text: a plain measure for ``_record_size``."""
    if isinstance(record, MessageRecord):
        texts = [record.content, record.metadata]
    elif isinstance(record, MemoryRecord):
        texts = [record.content, record.payload]
    else:
        texts = [record.payload]
    return sum(len(t.encode("utf-8")) for t in texts)


def _json_has_nul(text: str) -> bool:
    """Whether JSON text holds a NUL character in a key or string (``\\u0000`` escape)."""
    if "\\u0000" not in text:
        return False
    return _has_nul(json.loads(text))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
