"""The data-subject access package: every record of one user, as one JSON document.

``await memory.export_user(user_id)`` returns (``bruno-memstore export-user`` writes)::

    {
      "format": "bruno-memstore-user-export",
      "version": 1,
      "exported_at": "2026-12-06T03:40:00.123456+00:00",
      "user_id": "maya",
      "backend": "sqlite",
      "counts": {"conversations": 3, "sessions": 2, "messages": 17, "memories": 6},
      "records": [{"type": "conversation", ...}, {"type": "session", ...}, ...]
    }

``records`` are the records of the JSON Lines export (:mod:`bruno_memstore.transfer`), in
its shapes and kinds' order: the user's conversations, sessions, messages (all of their
conversations) and memory entries. The order does not depend on the engine: each kind is
sorted by id, and messages by conversation id, each conversation's in their stored order.
:func:`package_lines` turns a package back into an import file, so ``bruno-memstore import``
(or :func:`~bruno_memstore.transfer.import_jsonl`) restores the user in any store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from .errors import InvalidArgumentError
from .transfer import FORMAT, FORMAT_VERSION, TransferCounts, iter_export

if TYPE_CHECKING:
    from .base import MemoryBackend

__all__ = [
    "USER_EXPORT_FORMAT",
    "USER_EXPORT_VERSION",
    "build_user_package",
    "is_user_package",
    "package_lines",
    "write_package",
]

USER_EXPORT_FORMAT = "bruno-memstore-user-export"
USER_EXPORT_VERSION = 1

_COUNTED = {
    "conversation": "conversations",
    "session": "sessions",
    "message": "messages",
    "memory": "memories",
}


async def build_user_package(memory: MemoryBackend, user_id: str) -> dict[str, Any]:
    """Every record of ``user_id`` in ``memory``, in the documented envelope."""
    exported_at = datetime.now(UTC).isoformat()
    counts = TransferCounts()
    records: list[dict[str, Any]] = []
    async for obj in iter_export(memory, user_id):
        kind = obj["type"]
        if kind == "header":
            continue
        records.append(obj)
        name = _COUNTED[kind]
        setattr(counts, name, getattr(counts, name) + 1)
    records.sort(key=_place)  # stable: a conversation's messages keep their order
    tally = counts.as_dict()
    del tally["existing_messages"]
    return {
        "format": USER_EXPORT_FORMAT,
        "version": USER_EXPORT_VERSION,
        "exported_at": exported_at,
        "user_id": user_id,
        "backend": memory.backend_name,
        "counts": tally,
        "records": records,
    }


def _place(obj: Mapping[str, Any]) -> tuple[int, str]:
    """Where a record goes in the package: by kind, then by id (messages: conversation)."""
    kind = obj["type"]
    key = obj.get("conversation_id") if kind == "message" else obj.get("id", obj.get("session_id"))
    return _KINDS.index(kind), str(key or "")


_KINDS = tuple(_COUNTED)


def is_user_package(value: object) -> bool:
    """Whether ``value`` (parsed JSON) is a user export package."""
    return isinstance(value, Mapping) and value.get("format") == USER_EXPORT_FORMAT


def package_lines(package: Mapping[str, Any]) -> Iterator[str]:
    """The package as a JSON Lines import file (the header line first), line by line.

    Raises:
        InvalidArgumentError: not a package of a version this library reads.
    """
    if not is_user_package(package):
        raise InvalidArgumentError("package", f"not a {USER_EXPORT_FORMAT} document")
    if package.get("version") != USER_EXPORT_VERSION:
        raise InvalidArgumentError(
            "package",
            f"unsupported version {package.get('version')!r}; this library reads "
            f"{USER_EXPORT_VERSION}",
        )
    records = package.get("records")
    if not isinstance(records, list):
        raise InvalidArgumentError("package", "records must be a list")
    header = {"type": "header", "format": FORMAT, "version": FORMAT_VERSION}
    if isinstance(package.get("user_id"), str):
        header["user_id"] = package["user_id"]
    for obj in (header, *records):
        yield json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def write_package(package: Mapping[str, Any], fp: IO[str]) -> None:
    """Write the package as readable JSON (UTF-8 text, two-space indent)."""
    json.dump(package, fp, ensure_ascii=False, allow_nan=False, indent=2)
    fp.write("\n")
