"""Where ``PineconeMemory`` keeps what: namespaces, record ids, metadata, long values in parts.

A store is an index and a prefix ``P``. ``h(x)`` is 22 characters of a hash of ``x``
(:func:`~bruno_memstore.backends.kit.kv.hash_id`).

* ``P.meta``, the store's own namespace: ``space`` (model and dimension), and one pointer
  per id that is global: ``c#h(conversation)`` (its owner), ``m#h(message id)`` (owner and
  record id), ``e#h(entry id)``, ``s#h(session id)`` (owner), ``u#h(user)`` (the user has
  data: how the store lists its users).
* ``P.u.h(user)``, one namespace per user, holding only that user's records:
  ``m#h(conversation)#T#S`` a message (``T`` its timestamp, ``S`` its arrival number, both
  zero-padded, so the ids of a conversation list in ``(ts_us, seq)`` order under the prefix
  ``m#h(conversation)#``), ``e#h(id)`` a memory entry, ``s#h(id)`` a session,
  ``c#h(conversation)`` a conversation, ``p#<record id>#V#N`` the parts of a long value.

A record's value is the kit codec's row as JSON, in metadata ``d``. Pinecone limits the
metadata of one record to 40 KB, so a longer value is cut into pieces: the first stays in
``d`` if it fits, the others go to companion records ``p#<record id>#V#N`` written before the
record that names them (``n``: how many pieces in all; ``v``: the version ``V`` of this
value, new at each write, so a replaced value's parts never mix with the new ones). A value
is never cut short.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from ..kit.kv import dumps, hash_id, loads

__all__ = [
    "META_BUDGET",
    "PIECE_BYTES",
    "conversation_prefix",
    "encode",
    "join_value",
    "message_id",
    "message_order",
    "meta_namespace",
    "metadata_bytes",
    "part_id",
    "part_ids",
    "user_namespace",
]

META_BUDGET = 36_000
"""Largest metadata this backend writes on one record, in bytes of compact JSON: under
Pinecone's documented 40 KB per record, with room for the way the service counts it."""
PIECE_BYTES = 24_000  # largest piece of a value, in bytes of its JSON string
_TS_OFFSET = 1 << 62  # timestamps before 1970 are negative; ids hold them shifted


def meta_namespace(prefix: str) -> str:
    return f"{prefix}.meta"


def user_namespace(prefix: str, user_id: str) -> str:
    return f"{prefix}.u.{hash_id(user_id)}"


def conversation_prefix(conversation_id: str) -> str:
    """The id prefix of a conversation's messages in its owner's namespace."""
    return f"m#{hash_id(conversation_id)}#"


def message_id(conversation_id: str, ts_us: int, seq: int) -> str:
    return f"{conversation_prefix(conversation_id)}{ts_us + _TS_OFFSET:020d}#{seq:020d}"


def message_order(record_id: str) -> tuple[int, int]:
    """``(ts_us, seq)`` of a message record id."""
    _m, _conv, ts, seq = record_id.split("#")
    return int(ts) - _TS_OFFSET, int(seq)


def part_id(record_id: str, version: str, n: int) -> str:
    return f"p#{record_id}#{version}#{n:05d}"


def metadata_bytes(metadata: Mapping[str, Any]) -> int:
    """Size of metadata as compact JSON (how this backend counts it against the limit)."""
    return len(dumps(metadata))


def _pieces(text: str) -> list[str]:
    out: list[str] = []
    start, step = 0, PIECE_BYTES // 3
    while start < len(text):
        piece = text[start : start + step]
        while len(dumps(piece)) > PIECE_BYTES:  # escapes and wide characters take more
            piece = piece[: len(piece) // 2]
        out.append(piece)
        start += len(piece)
    return out


def encode(
    record_id: str, row: list[Any], fields: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """The records that hold a value: ``(id, metadata)`` pairs, parts first and the head
    (``record_id``: ``fields``, the first piece if it fits, and ``n``) last.

    Raises ``ValueError`` if ``fields`` alone do not fit in one record's metadata.
    """
    pieces = _pieces(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
    version = secrets.token_hex(4)
    head = {**fields, "n": len(pieces), "v": version}
    if metadata_bytes(head) > META_BUDGET:
        raise ValueError(f"its indexed fields take {metadata_bytes(head):,} bytes")
    if metadata_bytes({**head, "d": pieces[0]}) <= META_BUDGET:
        head["d"] = pieces[0]
        parts = pieces[1:]
    else:  # the first piece does not fit beside the fields: every piece is a part
        head["d0"] = False
        parts = pieces
    offset = 0 if "d0" in head else 1
    out = [(part_id(record_id, version, offset + i), {"d": piece}) for i, piece in enumerate(parts)]
    out.append((record_id, head))
    return out


def part_ids(record_id: str, metadata: Mapping[str, Any]) -> list[str]:
    """The ids of the parts a head names."""
    first = 0 if "d0" in metadata else 1
    version = str(metadata.get("v", ""))
    return [part_id(record_id, version, i) for i in range(first, int(metadata.get("n", 0)))]


def join_value(metadata: Mapping[str, Any], parts: Mapping[str, Mapping[str, Any]]) -> Any:
    """The row a head and its parts hold, or ``None`` if a part is missing."""
    pieces = [] if "d0" in metadata else [metadata.get("d", "")]
    for pid in sorted(parts):
        pieces.append(parts[pid]["d"])
    if len(pieces) != int(metadata.get("n", 0)):
        return None
    return loads("".join(pieces).encode("utf-8", "surrogatepass"))
