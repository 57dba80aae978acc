"""``MemoryFilter`` as SQL conditions, written once for every SQL engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...models import MemoryFilter

__all__ = ["marks", "memory_conditions"]


def marks(n: int) -> str:
    """``n`` placeholders for an ``IN (...)`` list."""
    return ",".join("?" * n)


def memory_conditions(
    flt: MemoryFilter,
    tags: Callable[[Sequence[str]], tuple[str, list[Any]]],
    conversation_id: str | None = None,
) -> tuple[str, list[Any]]:
    """Conditions on the memory alias ``m`` for every filter of ``flt`` but the owner, each
    starting with ``AND``; ``conversation_id``: only entries that name it.

    ``tags`` gives the engine's condition for "any of these tags" (tags are stored as rows,
    hashes or an array, depending on the engine).
    """
    sql: list[str] = []
    args: list[Any] = []
    if flt.ids:
        sql.append(f"AND m.id IN ({marks(len(flt.ids))})")
        args += flt.ids
    if flt.memory_types:
        sql.append(f"AND m.memory_type IN ({marks(len(flt.memory_types))})")
        args += flt.memory_types
    if flt.categories:
        sql.append(f"AND m.category IN ({marks(len(flt.categories))})")
        args += flt.categories
    if flt.tags:
        condition, values = tags(flt.tags)
        sql.append(f"AND {condition}")
        args += values
    if flt.min_confidence > 0:
        sql.append("AND m.confidence >= ?")
        args.append(flt.min_confidence)
    if flt.min_importance > 0:
        sql.append("AND m.importance >= ?")
        args.append(flt.min_importance)
    if not flt.include_expired:
        sql.append("AND (m.expires_us IS NULL OR m.expires_us > ?)")
        args.append(flt.now_us)
    if conversation_id is not None:
        sql.append("AND m.conversation_id = ?")
        args.append(conversation_id)
    return " ".join(sql) + " ", args
