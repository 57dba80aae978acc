"""The single-table layout: every item's keys and attributes (see docs/backends/dynamodb.md).

Table keys ``pk`` (partition) and ``sk`` (sort), both strings; one global secondary index,
``by_owner`` (``gpk``, ``gsk``, all attributes projected), lists a user's records (their
messages newest last).

* conversation claim: ``C#cid`` / ``#``; ``o`` owner, ``n`` last seq, ``gpk`` ``U#owner``,
  ``gsk`` ``C#cid``
* message: ``C#cid`` / ``M#ts#seq``; ``r`` the codec's row (JSON bytes), ``id``, ``role``,
  ``o`` owner, ``gpk`` ``U#owner``, ``gsk`` ``M#ts#seq#cid``; a row above
  :data:`PART_BYTES` is cut: ``r`` holds its first part, ``np`` says how many follow, each
  an item ``C#cid`` / ``P#ts#seq#i`` (outside the messages' ``M#`` range)
* message id guard: ``M#id`` / ``#``; ``c`` its conversation, ``k`` its message's ``sk``
* memory entry: ``E#id`` / ``#``; ``r``, ``o``, ``gpk``, ``gsk`` ``E#id``, ``x`` expiry
  (microseconds), ``ttl`` (seconds, DynamoDB's TTL attribute)
* session: ``S#id`` / ``#``; ``r``, ``o``, ``gpk``, ``gsk`` ``S#id``, or ``M$id`` for the
  sessions that hold a conversation's archive state: those sort right above the owner's
  messages, so a user's window and its archive markers are one ``Query``
* vector space: ``V#space`` / ``#``; ``r`` the model and dimension

Messages and memory entries keep their vector (if any) in ``v`` (float32 bytes).

A message's sort key orders a conversation by ``(ts_us, seq)``, and its index key the owner's
messages the same way: the newest ``N`` of either are one descending ``Query`` with ``Limit`` N.
"""

from __future__ import annotations

from typing import Any

from ...lifecycle import ARCHIVE_MARKER
from ..kit.kv import dumps, loads
from ..kit.vectors import vector_to_bytes

__all__ = [
    "HEAD",
    "INDEX",
    "MARKS",
    "attr",
    "claim_key",
    "decode",
    "guard_key",
    "key",
    "message_items",
    "message_sk",
    "owner_keys",
    "part_keys",
    "row_bytes",
    "session_owner_keys",
    "table_spec",
]

MARKS = "M$"  # the index prefix of archive markers: above the owner's messages (``M#``)
PART_BYTES = 380_000  # bytes of a row per item (DynamoDB's item limit is 400 KB)
HEAD = "#"  # the sort key of every item that is alone in its partition
INDEX = "by_owner"
_TS_OFFSET = 1 << 62  # timestamps before 1970 are negative: shifted to sort as text


def key(kind: str, record_id: str, sk: str = HEAD) -> dict[str, Any]:
    """The primary key of an item: ``kind`` is ``C``, ``M``, ``E`` or ``S``."""
    return {"pk": {"S": f"{kind}#{record_id}"}, "sk": {"S": sk}}


def claim_key(conversation_id: str) -> dict[str, Any]:
    return key("C", conversation_id)


def guard_key(message_id: str) -> dict[str, Any]:
    return key("M", message_id)


def message_sk(ts_us: int, seq: int) -> str:
    """A message's sort key: ``(ts_us, seq)`` as fixed-width text."""
    return f"M#{ts_us + _TS_OFFSET:020d}#{seq:012d}"


def message_items(conversation_id: str, rec: Any, row: bytes) -> list[dict[str, Any]]:
    """The items of a message: its parts (if its row is cut), then its head, listed under
    its owner (``rec.user_id``, the conversation's) in the owner index."""
    sk = message_sk(rec.ts_us, rec.seq)
    cuts = [row[i : i + PART_BYTES] for i in range(0, len(row), PART_BYTES)] or [b""]
    parts = [
        {**key("C", conversation_id, f"P{sk[1:]}#{i:04d}"), "r": {"B": cut}}
        for i, cut in enumerate(cuts[1:], start=1)
    ]
    head = {
        **key("C", conversation_id, sk),
        "r": {"B": cuts[0]},
        "id": {"S": rec.id},
        "role": {"S": rec.role},
        **owner_keys("M", rec.user_id, f"{sk[2:]}#{conversation_id}"),
    }
    if parts:
        head["np"] = {"N": str(len(parts))}
    if rec.vector is not None:
        head["v"] = {"B": vector_to_bytes(rec.vector)}
    return [*parts, head]


def part_keys(head: dict[str, Any]) -> list[dict[str, Any]]:
    """The keys of a message head's parts, in order."""
    count = int(head["np"]["N"]) if "np" in head else 0
    sk = head["sk"]["S"]
    return [{"pk": head["pk"], "sk": {"S": f"P{sk[1:]}#{i:04d}"}} for i in range(1, count + 1)]


def owner_keys(kind: str, owner: str, record_id: str) -> dict[str, Any]:
    """The attributes that list a record under its owner in the ``by_owner`` index."""
    return {"o": {"S": owner}, "gpk": {"S": f"U#{owner}"}, "gsk": {"S": f"{kind}#{record_id}"}}


def session_owner_keys(owner: str, session_id: str) -> dict[str, Any]:
    """:func:`owner_keys` of a session: an archive marker is listed under ``M$``."""
    keys = owner_keys("S", owner, session_id)
    if session_id.startswith(ARCHIVE_MARKER):
        keys["gsk"] = {"S": MARKS + session_id}
    return keys


def row_bytes(row: list[Any]) -> bytes:
    return dumps(row)


def attr(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (str, int, bytes)."""
    if isinstance(value, bytes):
        return {"B": value}
    if isinstance(value, int):
        return {"N": str(value)}
    return {"S": value}


def decode(item: dict[str, Any], name: str = "r") -> Any:
    """The value of attribute ``name``: a row (``r``), a string or an int."""
    value = item[name]
    if "B" in value:
        return loads(value["B"])
    if "N" in value:
        return int(value["N"])
    return value["S"]


def table_spec(table: str) -> dict[str, Any]:
    """``CreateTable`` arguments: the keys, the owner index, on-demand billing."""
    strings = ("pk", "sk", "gpk", "gsk")
    return {
        "TableName": table,
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in strings],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": INDEX,
                "KeySchema": [
                    {"AttributeName": "gpk", "KeyType": "HASH"},
                    {"AttributeName": "gsk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
