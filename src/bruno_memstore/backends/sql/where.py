"""``MemoryFilter`` as SQL conditions, written once for every SQL engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...models import MemoryFilter, SearchRequest

__all__ = ["filter_values", "marks", "memory_conditions", "search_values"]


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


def filter_values(flt: MemoryFilter) -> list[Any]:
    """``flt`` as the fixed arguments of a statement of one shape for every filter (lists as
    arrays): owner, types, categories, tags, confidence, importance, expired, now."""
    return [
        flt.user_id,
        list(flt.memory_types),
        list(flt.categories),
        list(flt.tags),
        flt.min_confidence,
        flt.min_importance,
        flt.include_expired,
        flt.now_us,
    ]


def search_values(request: SearchRequest, query: Any) -> list[Any]:
    """A search as fixed arguments (``query``: the terms, or the vector): user, query, limit,
    messages?, memories?, conversation, then :func:`filter_values`."""
    kinds = request.kinds
    head = [request.user_id, query, request.limit, "message" in kinds, "memory" in kinds]
    return [*head, request.conversation_id, *filter_values(request.memories())]
