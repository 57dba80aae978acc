"""One record codec: every record kind in one field order, to and from rows and documents.

A record's *fields* are its dataclass fields in declaration order, without ``vector``
(vectors travel apart, in the engine's own form): :data:`MESSAGE_FIELDS`,
:data:`MEMORY_FIELDS`, :data:`SESSION_FIELDS`. A codec turns a record into

* a **row**: its values in one field order (a SQL ``SELECT`` list, a JSON array), and
* a **document**: a dict from stored names to values (a payload, a metadata map),

and back. Reading back converts each value to its field's type (integers, floats, booleans,
tags given as a list or as JSON text), so rows from any driver and documents from any JSON
store give equal records.

Formats already on disk keep their own order or names: :meth:`Codec.ordered` and
:meth:`Codec.renamed` describe them without another mapper, e.g. a store that keeps messages
as ``[id, conversation, owner, …]`` or metadata under short keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ...models import MemoryRecord, MessageRecord, SessionRecord, load_json

__all__ = [
    "MEMORIES",
    "MEMORY_FIELDS",
    "MESSAGES",
    "MESSAGE_FIELDS",
    "SESSIONS",
    "SESSION_FIELDS",
    "Codec",
    "codec_for",
]

R = TypeVar("R", MessageRecord, MemoryRecord, SessionRecord)
Convert = Callable[[Any], Any]


def _optional(convert: Convert) -> Convert:
    def run(value: Any) -> Any:
        return None if value is None else convert(value)

    return run


def _tags(value: Any) -> list[str]:
    """Tags stored as a list (any sequence), as JSON text, or not at all."""
    if value is None:
        return []
    if isinstance(value, str):
        return list(load_json(value))
    return list(value)


_CONVERT: dict[str, Convert] = {
    "int": int,
    "float": float,
    "bool": bool,
    "int | None": _optional(int),
    "float | None": _optional(float),
    "list[str]": _tags,
}


def _fields(record_type: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(record_type) if f.name != "vector"}


MESSAGE_FIELDS: tuple[str, ...] = tuple(_fields(MessageRecord))
"""``id, conversation_id, role, content, message_type, timestamp, ts_us, metadata,
parent_id, user_id, seq``."""
MEMORY_FIELDS: tuple[str, ...] = tuple(_fields(MemoryRecord))
"""``id, user_id, content, memory_type, category, tags, confidence, importance, created_us,
expires_us, conversation_id, payload``."""
SESSION_FIELDS: tuple[str, ...] = tuple(_fields(SessionRecord))
"""``session_id, user_id, conversation_id, is_active, started_us, payload``."""


def _row_decoder(
    record_type: type, fields: Sequence[str], convert: Sequence[Convert | None]
) -> Callable[[Sequence[Any], int, dict[str, Any]], Any]:
    """A function building the record of a row (at an offset) and the fields given apart,
    each value converted to its field's type: written out once per codec, as ``dataclasses``
    writes ``__init__``, since records are decoded by the thousand on every read."""
    value = {
        f: f"row[o + {i}]" if c is None else f"c{i}(row[o + {i}])"
        for i, (f, c) in enumerate(zip(fields, convert, strict=True))
    }
    args: list[str] = []
    for f in _fields(record_type):  # positionally while the row has every field so far
        if f not in value:
            break
        args.append(value.pop(f))
    args += [f"{f}={v}" for f, v in value.items()]
    namespace: dict[str, Any] = {"R": record_type}
    namespace.update({f"c{i}": c for i, c in enumerate(convert) if c is not None})
    exec(f"def decode(row, o, given):\n    return R({', '.join(args)}, **given)\n", namespace)
    return namespace["decode"]  # type: ignore[no-any-return]


class Codec(Generic[R]):
    """Records of one kind as rows (values in :attr:`fields` order) and documents (dicts
    keyed by stored names).

    Args:
        record_type: ``MessageRecord``, ``MemoryRecord`` or ``SessionRecord``.
        fields: which fields a row holds, in order (default: all, in declaration order).
            Fields left out are given when decoding (``from_row(row, seq=…)``) or take
            their default. Rows may hold more values after these (they are ignored).
        names: stored name of a field in documents (default: the field's own name).
        typed: convert each value read to its field's type. ``False`` for drivers that
            already return the types (rows then decode at the cost of a plain constructor
            call); documents are always converted.
    """

    __slots__ = (
        "_convert",
        "_decode",
        "_defaulted",
        "_keys",
        "_optional",
        "fields",
        "names",
        "record_type",
        "typed",
    )

    def __init__(
        self,
        record_type: type[R],
        fields: Sequence[str] | None = None,
        *,
        names: Mapping[str, str] | None = None,
        typed: bool = True,
    ) -> None:
        known = _fields(record_type)
        order = tuple(known) if fields is None else tuple(fields)
        unknown = [f for f in (*order, *(names or {})) if f not in known]
        if unknown:
            raise ValueError(f"{record_type.__name__} has no field {unknown[0]!r}")
        self.record_type = record_type
        self.fields = order
        self.names = {f: (names or {}).get(f, f) for f in order}
        self._keys = tuple(self.names[f] for f in order)
        self._convert = tuple(_CONVERT.get(str(known[f].type)) for f in order)
        # Fields a document may lack: with a default (left to it), or that may be empty.
        self._defaulted = frozenset(f for f in order if known[f].default is not dataclasses.MISSING)
        self._optional = self._defaulted | {
            f for f in order if "None" in str(known[f].type) or f == "tags"
        }
        self.typed = typed
        self._decode = _row_decoder(
            record_type, order, self._convert if typed else [None] * len(order)
        )

    def ordered(self, fields: Sequence[str], *, typed: bool | None = None) -> Codec[R]:
        """The same records as rows of ``fields``, in that order (names are kept)."""
        names = {f: n for f, n in self.names.items() if f in fields}
        return Codec(
            self.record_type, fields, names=names, typed=self.typed if typed is None else typed
        )

    def renamed(self, names: Mapping[str, str]) -> Codec[R]:
        """The same records as documents whose keys are ``names`` (field -> stored name)."""
        return Codec(self.record_type, self.fields, names={**self.names, **names}, typed=self.typed)

    # ---------------------------------------------------------------- rows

    def row(self, record: R) -> list[Any]:
        """The record's values in :attr:`fields` order (tags as a list)."""
        return [getattr(record, f) for f in self.fields]

    def from_row(self, row: Sequence[Any], offset: int = 0, **given: Any) -> R:
        """The record of ``row[offset:offset + len(fields)]``, with ``given`` fields (ones the
        row does not hold) added."""
        return self._decode(row, offset, given)  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- documents

    def document(
        self, record: R, *, omit: Sequence[str] = (), drop_none: bool = False
    ) -> dict[str, Any]:
        """The record as ``{stored name: value}``; ``omit`` leaves fields out, ``drop_none``
        leaves out fields whose value is ``None`` (for stores that refuse nulls)."""
        out: dict[str, Any] = {}
        for f, key in zip(self.fields, self._keys, strict=True):
            if f in omit:
                continue
            value = getattr(record, f)
            if value is None and drop_none:
                continue
            out[key] = list(value) if f == "tags" else value
        return out

    def from_document(self, document: Mapping[str, Any], **given: Any) -> R:
        """The record a document holds; ``given`` fields win over (and may be missing from)
        the document, and optional fields may be missing too."""
        values: dict[str, Any] = {}
        for f, key, convert in zip(self.fields, self._keys, self._convert, strict=True):
            if f in given:
                continue
            if key in document:
                value = document[key]
            elif f in self._defaulted:
                continue
            elif f in self._optional:
                value = None
            else:
                raise KeyError(key)
            values[f] = value if convert is None else convert(value)
        return self.record_type(**values, **given)


MESSAGES: Codec[MessageRecord] = Codec(MessageRecord)
"""Messages in :data:`MESSAGE_FIELDS` order and names."""
MEMORIES: Codec[MemoryRecord] = Codec(MemoryRecord)
"""Memory entries in :data:`MEMORY_FIELDS` order and names."""
SESSIONS: Codec[SessionRecord] = Codec(SessionRecord)
"""Sessions in :data:`SESSION_FIELDS` order and names."""


def codec_for(kind: str) -> Codec[Any]:
    """The codec of a record kind: ``"message"``, ``"memory"`` or ``"session"``."""
    return {"message": MESSAGES, "memory": MEMORIES, "session": SESSIONS}[kind]
