"""Whether a store emits OpenTelemetry telemetry, and how its operations are named.

Nothing here imports OpenTelemetry: a store decides once, at construction, whether telemetry
is on (:func:`telemetry_wanted`); only then is :mod:`bruno_memstore.otel` (the ``otel`` extra)
imported and the store instrumented. A store without telemetry runs exactly the code it ran
before, so telemetry costs nothing when it is not installed or not enabled.

The public operations are named by the OpenTelemetry GenAI memory conventions
(``gen_ai.operation.name``); :data:`GENAI_OPERATIONS` is the mapping, documented in
docs/observability.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["GENAI_OPERATIONS", "TELEMETRY_ENV", "Telemetry", "telemetry_wanted"]

TELEMETRY_ENV = "BRUNO_MEMSTORE_TELEMETRY"
"""``1``/``true``/``yes``/``on`` turns telemetry on for stores built with ``telemetry=None``."""

_TRUE = frozenset({"1", "true", "yes", "on"})

GENAI_OPERATIONS: dict[str, str] = {
    # writes of new records (an identical re-store is a no-op)
    "store_message": "create_memory",
    "store_messages": "create_memory",
    "create_session": "create_memory",
    "claim_conversation": "create_memory",
    # insert or replace by id, the caller not choosing which
    "store_memory": "upsert_memory",
    "save_session": "upsert_memory",
    # changes to known records
    "end_session": "update_memory",
    "reindex": "update_memory",
    # reads: windows, ranked search, lookups, statistics, the access package
    "get_context": "search_memory",
    "retrieve_messages": "search_memory",
    "retrieve_context": "search_memory",
    "search": "search_memory",
    "search_messages": "search_memory",
    "search_memories": "search_memory",
    "retrieve_memories": "search_memory",
    "get_session": "search_memory",
    "get_memory": "search_memory",
    "get_statistics": "search_memory",
    "store_statistics": "search_memory",
    "conversation_owner": "search_memory",
    "check_conflicts": "search_memory",
    "export_user": "search_memory",
    # deletions
    "delete_memory": "delete_memory",
    "clear_history": "delete_memory",
    "clear_conversation": "delete_memory",
    "forget_user": "delete_memory",
    "purge_expired": "delete_memory",
    # the store itself
    "initialize": "create_memory_store",
    "compact": "compact_memory_store",
}
"""Public method -> ``gen_ai.operation.name`` (and span name). ``compact_memory_store`` is
this library's own value: the conventions name no maintenance operation."""


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Telemetry on, with providers of one's own (default: the global ones).

    Attributes:
        tracer_provider: an OpenTelemetry ``TracerProvider`` (``None``: the global one).
        meter_provider: an OpenTelemetry ``MeterProvider`` (``None``: the global one).
        trace_content: record query text and record content on spans (opt-in).
        engine_spans: a child span per engine call (``False``: the operations' spans only,
            half the spans for a recording SDK to make).
    """

    tracer_provider: Any = None
    meter_provider: Any = None
    trace_content: bool = False
    engine_spans: bool = True


def telemetry_wanted(telemetry: object, trace_content: object = False) -> bool:
    """Whether a store built with ``telemetry=`` emits telemetry (decided once).

    ``True`` or a :class:`Telemetry`: on; ``False``: off; ``None``: on when the environment
    variable ``BRUNO_MEMSTORE_TELEMETRY`` says so.
    """
    if not isinstance(trace_content, bool):
        raise InvalidArgumentError("trace_content", "expected a bool")
    if telemetry is None:
        return os.environ.get(TELEMETRY_ENV, "").strip().lower() in _TRUE
    if isinstance(telemetry, (bool, Telemetry)):
        return bool(telemetry) if isinstance(telemetry, bool) else True
    raise InvalidArgumentError("telemetry", "expected True, False, None or a Telemetry")
