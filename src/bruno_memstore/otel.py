"""OpenTelemetry spans and metrics for a store (the ``otel`` extra).

Imported only by a store whose telemetry is on (see :mod:`bruno_memstore.telemetry`).
:func:`instrument` then puts, on that one instance:

* a wrapper around each public operation: one span named by the GenAI memory conventions
  (``search_memory``, ``create_memory``, ``upsert_memory``, ``update_memory``,
  ``delete_memory``, ``create_memory_store``), with ``gen_ai.operation.name``,
  ``gen_ai.memory.store.id``, ``gen_ai.conversation.id``, ``gen_ai.memory.record.id`` and
  ``gen_ai.memory.record.count`` where they apply; ``gen_ai.memory.query.text`` and
  ``gen_ai.memory.records`` (and ``user.id``) only with ``trace_content``. An operation
  called by another (``store_message`` by way of ``store_messages``) makes no second span;
* a wrapper around ``_run``, the one path of every engine call: a child span per call,
  with ``db.system.name`` (and the older ``db.system``), ``db.operation.name`` (the
  primitive, e.g. ``append_messages``) and ``bruno_memstore.operation``; made only under a
  recording span (the operation's), since a child of a dropped span is dropped too;
* a meter that records, beside the Prometheus metrics, the OpenTelemetry instruments
  ``bruno_memstore.operation.duration``, ``bruno_memstore.operation.errors`` and
  ``bruno_memstore.cache.requests``.

Errors end their span with status ``ERROR``, the exception recorded and ``error.type`` set to
its class name.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from types import CodeType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import __version__
from .metrics import STORE_KINDS, Meter
from .telemetry import GENAI_OPERATIONS, Telemetry

if TYPE_CHECKING:
    from .base import MemoryBackend

__all__ = ["DB_SYSTEMS", "OtelMeter", "instrument"]

SCOPE = "bruno_memstore"
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The conventions' opt-in for content: ``true`` acts as ``trace_content=True``."""

DB_SYSTEMS: dict[str, str] = {
    "sqlite": "sqlite",
    "postgres": "postgresql",
    "mysql": "mysql",
    "redis": "redis",
    "memcached": "memcached",
    "chroma": "chroma",
    "qdrant": "qdrant",
    "memory": "bruno_memstore.memory",
    "hybrid": "bruno_memstore.hybrid",
}
"""``backend_name`` -> ``db.system.name`` (the conventions' value where one exists)."""

_IN_PROCESS = frozenset({"memory", "sqlite"})  # engines in the caller's process: INTERNAL spans
_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "bruno_memstore_otel_operation", default=False
)
_PRIMITIVES: dict[CodeType, str] = {}


def instrument(
    memory: MemoryBackend,
    telemetry: object,
    *,
    trace_content: bool,
    describe: Callable[[], str],
    run: Callable[..., Any],
) -> tuple[OtelMeter, Callable[..., Any]]:
    """Wrap ``memory``'s public operations in spans (its telemetry is on); return the meter
    it should record with and its ``_run`` (``run``) wrapped in engine-call spans.

    ``describe`` gives the store's redacted address (``gen_ai.memory.store.id``), read at
    the first span: a backend sets its address after the base is built.
    """
    config = telemetry if isinstance(telemetry, Telemetry) else Telemetry()
    content = (
        trace_content
        or config.trace_content
        or os.environ.get(CONTENT_ENV, "").strip().lower() == "true"
    )
    tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=config.tracer_provider)
    system = DB_SYSTEMS.get(memory.backend_name, memory.backend_name)
    kind = SpanKind.INTERNAL if memory.backend_name in _IN_PROCESS else SpanKind.CLIENT
    store = _StoreId(describe)
    for name, operation in GENAI_OPERATIONS.items():
        method = getattr(memory, name, None)
        if method is not None and inspect.iscoroutinefunction(method):
            traced = _operation(method, name, operation, tracer, kind, store, content)
            setattr(memory, name, traced)
    meter = OtelMeter(memory.backend_name, system, config.meter_provider)
    return meter, _engine_calls(run, tracer, kind, system) if config.engine_spans else run


class _StoreId:
    """``gen_ai.memory.store.id``, read once, at first use."""

    __slots__ = ("_describe", "_value")

    def __init__(self, describe: Callable[[], str]) -> None:
        self._describe = describe
        self._value: str | None = None

    def get(self) -> str:
        if self._value is None:
            self._value = self._describe()
        return self._value


# ==================================================================== public operations


def _operation(
    method: Callable[..., Any],
    name: str,
    operation: str,
    tracer: trace.Tracer,
    kind: SpanKind,
    store: _StoreId,
    content: bool,
) -> Callable[..., Any]:
    read_arguments = _argument_reader(method)
    fixed: dict[str, str] = {}  # known before the call: built once, at the first call

    @functools.wraps(method)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        if _INSIDE.get():
            return await method(*args, **kwargs)
        if not fixed:
            fixed.update(
                {
                    "gen_ai.operation.name": operation,
                    "gen_ai.memory.store.id": store.get(),
                    "bruno_memstore.operation": name,
                }
            )
        inside = _INSIDE.set(True)
        span = tracer.start_span(operation, kind=kind, attributes=fixed)
        given: dict[str, Any] | None = None
        if span.is_recording():  # nothing more is read or built for a span that is dropped
            given = read_arguments(args, kwargs)
            more: dict[str, Any] = {}
            _argument_attributes(name, given, more, content)
            if more:
                span.set_attributes(more)
        # A span without a context (no SDK configured) leaves the caller's context as it is.
        token = (
            otel_context.attach(trace.set_span_in_context(span))
            if span.get_span_context().is_valid
            else None
        )
        try:
            result = await method(*args, **kwargs)
            if given is not None:
                _result_attributes(name, given, result, span, content)
            return result
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
            span.end()
            _INSIDE.reset(inside)

    return traced


def _argument_reader(
    method: Callable[..., Any],
) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """A function naming a call's arguments (what ``Signature.bind`` does, without its
    checks: the method itself refuses a bad call)."""
    parameters = list(inspect.signature(method).parameters.values())
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = next((p.name for p in parameters if p.kind is p.VAR_POSITIONAL), None)
    count = len(named)

    def read(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        given = dict(zip(named, args, strict=False))
        if rest is not None:
            given[rest] = args[count:]
        if kwargs:
            given.update(kwargs)
        return given

    return read


def _failed(span: trace.Span, exc: BaseException) -> None:
    """End-of-span error recording, as the conventions ask."""
    if not span.is_recording():
        return
    span.set_attribute("error.type", type(exc).__qualname__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))


def _argument_attributes(
    name: str, given: Mapping[str, Any], out: dict[str, Any], content: bool
) -> None:
    """What the call's arguments say: its conversation, its record, and (opted in) its
    user and query text."""
    conversation = given.get("conversation_id")
    user = given.get("user_id")
    if name == "store_message":
        positional = given.get("args", ())
        if len(positional) == 2:
            user, conversation = positional
        elif len(positional) == 1:
            conversation = positional[0]
    message = given.get("message")
    if message is not None:
        out["gen_ai.memory.record.id"] = str(getattr(message, "id", ""))
    entry = given.get("memory_entry")
    if entry is not None:
        out["gen_ai.memory.record.id"] = str(getattr(entry, "id", ""))
        conversation = getattr(entry, "conversation_id", None)
        user = getattr(entry, "user_id", None)
    if "memory_id" in given:
        out["gen_ai.memory.record.id"] = str(given["memory_id"])
    session = given.get("session")
    if session is not None:
        conversation = getattr(session, "conversation_id", None)
        user = getattr(session, "user_id", None)
    if isinstance(conversation, str):
        out["gen_ai.conversation.id"] = conversation
    if not content:
        return
    query = given.get("query")
    if name == "retrieve_memories" and query is not None:
        user = getattr(query, "user_id", None)
        query = getattr(query, "query_text", None)
    if isinstance(query, str):
        out["gen_ai.memory.query.text"] = query
    if isinstance(user, str):
        out["user.id"] = user
    written = _written_records(given)
    if written:
        out["gen_ai.memory.records"] = json.dumps(written, ensure_ascii=False, default=str)


def _written_records(given: Mapping[str, Any]) -> list[dict[str, Any]]:
    items: Sequence[Any] = ()
    if given.get("message") is not None:
        items = [given["message"]]
    elif isinstance(given.get("messages"), Sequence):
        items = given["messages"]
    elif given.get("memory_entry") is not None:
        items = [given["memory_entry"]]
    return [{"id": str(getattr(i, "id", "")), "content": getattr(i, "content", "")} for i in items]


def _result_attributes(
    name: str, given: Mapping[str, Any], result: Any, span: trace.Span, content: bool
) -> None:
    """How many records the call touched (and, opted in, the records it returned)."""
    count: int | None = None
    if name == "store_messages" and isinstance(given.get("messages"), Sequence):
        count = len(given["messages"])
    elif name in ("store_message", "store_memory", "save_session", "create_session"):
        count = 1
    elif isinstance(result, bool):
        count = None
    elif isinstance(result, int):
        count = result
    elif isinstance(result, list):
        count = len(result)
    elif isinstance(result, dict) and name == "forget_user":
        count = sum(v for v in result.values() if isinstance(v, int))
    elif isinstance(result, dict) and name == "export_user":
        count = sum(result["counts"].values())
    elif name == "get_context":
        count = len(result.messages)
        span.set_attribute("gen_ai.conversation.id", result.conversation_id)
    if count is not None:
        span.set_attribute("gen_ai.memory.record.count", count)
    if content and isinstance(result, list) and result:
        records = [_read_record(item) for item in result]
        span.set_attribute(
            "gen_ai.memory.records", json.dumps(records, ensure_ascii=False, default=str)
        )


def _read_record(item: Any) -> dict[str, Any]:
    """A returned record in the conventions' memory-record shape."""
    score = getattr(item, "score", None)
    inner = getattr(item, "message", None) or getattr(item, "memory", None)
    record = inner if inner is not None and score is not None else item
    out: dict[str, Any] = {
        "id": str(getattr(record, "id", "")),
        "content": getattr(record, "content", ""),
    }
    if isinstance(score, (int, float)):
        out["score"] = float(score)
    return out


# ==================================================================== engine calls


def _engine_calls(
    run: Callable[..., Any], tracer: trace.Tracer, kind: SpanKind, system: str
) -> Callable[..., Any]:
    known: dict[tuple[str, str], dict[str, str]] = {}

    @functools.wraps(run)
    async def traced_run(operation: str, call: Callable[[], Any]) -> Any:
        if not trace.get_current_span().is_recording():
            # Under a span that is dropped (sampled out, or no SDK), a child would be too.
            return await run(operation, call)
        primitive = _primitive(call)
        attributes = known.get((primitive, operation))
        if attributes is None:
            attributes = known[(primitive, operation)] = {
                "db.system.name": system,
                "db.system": system,
                "db.operation.name": primitive,
                "bruno_memstore.operation": operation,
            }
        span = tracer.start_span(primitive, kind=kind, attributes=attributes)
        token = (
            otel_context.attach(trace.set_span_in_context(span))
            if span.get_span_context().is_valid
            else None
        )
        try:
            return await run(operation, call)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
            span.end()

    return traced_run


def _primitive(call: Callable[[], Any]) -> str:
    """The primitive a ``_run`` call makes: ``self._read_window`` in a lambda, or a bound
    primitive, without its underscore."""
    code = getattr(call, "__code__", None)
    if code is None or getattr(call, "__name__", "") != "<lambda>":
        return getattr(call, "__name__", "call").lstrip("_") or "call"
    found = _PRIMITIVES.get(code)
    if found is None:
        names = [n for n in code.co_names if n.startswith("_") and not n.startswith("__")]
        found = _PRIMITIVES[code] = names[-1].lstrip("_") if names else "call"
    return found


# ==================================================================== metrics


class OtelMeter(Meter):
    """The Prometheus meter, also recording OpenTelemetry instruments."""

    __slots__ = ("_attrs", "_cache", "_duration", "_errors", "_records", "_storage", "_system")

    def __init__(self, backend: str, system: str, provider: Any = None) -> None:
        super().__init__(backend)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider=provider)
        self._system = system
        self._duration = meter.create_histogram(
            "bruno_memstore.operation.duration",
            unit="s",
            description="Duration of the engine calls of public memory operations.",
        )
        self._errors = meter.create_counter(
            "bruno_memstore.operation.errors",
            unit="{error}",
            description="Failed memory operations, by error class.",
        )
        self._cache = meter.create_counter(
            "bruno_memstore.cache.requests",
            unit="{request}",
            description="Cache tier lookups of a hybrid memory, by result (hit or miss).",
        )
        self._storage = meter.create_gauge(
            "bruno_memstore.storage.size",
            unit="By",
            description="Bytes used by a backend's store, as last measured.",
        )
        self._records = meter.create_gauge(
            "bruno_memstore.records",
            unit="{record}",
            description="Records in a backend's store by kind, as last counted.",
        )
        self._attrs: dict[str, dict[str, str]] = {}

    def _for(self, operation: str) -> dict[str, str]:
        attrs = self._attrs.get(operation)
        if attrs is None:
            attrs = self._attrs[operation] = {
                "db.system.name": self._system,
                "bruno_memstore.operation": operation,
                "gen_ai.operation.name": GENAI_OPERATIONS.get(operation, operation),
            }
        return attrs

    def observe(self, operation: str, seconds: float) -> None:
        super().observe(operation, seconds)
        self._duration.record(seconds, self._for(operation))

    def error(self, operation: str, exc: BaseException) -> None:
        super().error(operation, exc)
        self._errors.add(1, {**self._for(operation), "error.type": type(exc).__qualname__})

    def cache(self, hit: bool) -> None:
        super().cache(hit)
        result = "hit" if hit else "miss"
        self._cache.add(1, {"db.system.name": self._system, "bruno_memstore.cache.result": result})

    def storage(self, nbytes: int) -> None:
        super().storage(nbytes)
        self._storage.set(nbytes, {"db.system.name": self._system})

    def records(self, counts: Mapping[str, int]) -> None:
        super().records(counts)
        for kind in STORE_KINDS:
            attrs = {"db.system.name": self._system, "bruno_memstore.record.kind": kind}
            self._records.set(counts.get(kind, 0), attrs)
