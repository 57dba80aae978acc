"""OpenTelemetry spans and metrics, collected with the SDK's in-memory exporter and reader, on
real stores (SQLite, and a hybrid over it for cache metrics)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from bruno_core.models.memory import MemoryQuery
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bruno_memstore import open_memory
from bruno_memstore.backends.hybrid import HybridMemory
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.errors import OwnershipError
from bruno_memstore.metrics import OPERATION_SECONDS, Meter
from bruno_memstore.otel import OtelMeter
from bruno_memstore.telemetry import GENAI_OPERATIONS, Telemetry
from bruno_memstore.testing import make_memory_entry, make_message

SECRET = "pangolin"  # in every message, memory entry and query
USER = "user-otel"


class Collected:
    """An in-memory span exporter and metric reader, with providers of their own."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def telemetry(self, *, trace_content: bool = False) -> Telemetry:
        return Telemetry(self.tracer_provider, self.meter_provider, trace_content)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def operations(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if "gen_ai.operation.name" in (s.attributes or {})]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def collected() -> Collected:
    return Collected()


@pytest.fixture
async def traced(tmp_path: Path, collected: Collected) -> AsyncIterator[SQLiteMemory]:
    memory = SQLiteMemory(tmp_path / "m.db", embedding_model=None, telemetry=collected.telemetry())
    yield memory
    await memory.shutdown()


async def _work(memory: MemoryBackend) -> None:
    """One of each kind of operation, every record and query holding SECRET."""
    await memory.store_message(make_message(f"the {SECRET} sleeps"), USER, "conv-1")
    await memory.store_memory(make_memory_entry(USER, f"{SECRET} facts", conversation_id="conv-1"))
    await memory.search(USER, SECRET)
    await memory.retrieve_memories(MemoryQuery(user_id=USER, query_text=SECRET))
    await memory.get_context(USER, "conv-1")
    await memory.clear_conversation(USER, "conv-1")
    await memory.forget_user(USER)


def _values(spans: Iterable[ReadableSpan]) -> str:
    return json.dumps([dict(s.attributes or {}) for s in spans], default=str)


async def test_one_span_per_public_operation_named_by_the_conventions(
    traced: SQLiteMemory, collected: Collected
) -> None:
    await _work(traced)
    operations = collected.operations()
    assert [(s.name, s.attributes["bruno_memstore.operation"]) for s in operations] == [
        ("create_memory", "store_message"),  # store_messages inside it makes no second span
        ("upsert_memory", "store_memory"),
        ("search_memory", "search"),
        ("search_memory", "retrieve_memories"),
        ("search_memory", "get_context"),
        ("delete_memory", "clear_conversation"),
        ("delete_memory", "forget_user"),
    ]
    for span in operations:
        attributes = span.attributes or {}
        assert attributes["gen_ai.operation.name"] == span.name
        assert span.name == GENAI_OPERATIONS[attributes["bruno_memstore.operation"]]
        assert attributes["gen_ai.memory.store.id"] == traced.describe()
        assert span.kind is SpanKind.INTERNAL  # SQLite runs in the caller's process
        assert span.parent is None and span.status.status_code is StatusCode.UNSET
    store, upsert, search, _, context, clear, forget = operations
    assert store.attributes["gen_ai.conversation.id"] == "conv-1"
    assert store.attributes["gen_ai.memory.record.count"] == 1
    assert "gen_ai.memory.record.id" in store.attributes
    assert upsert.attributes["gen_ai.conversation.id"] == "conv-1"
    assert search.attributes["gen_ai.memory.record.count"] == 2  # the message and the entry
    assert context.attributes["gen_ai.memory.record.count"] == 1
    assert context.attributes["gen_ai.conversation.id"] == "conv-1"
    assert clear.attributes["gen_ai.conversation.id"] == "conv-1"
    assert forget.attributes["gen_ai.memory.record.count"] >= 1


async def test_engine_calls_are_child_spans_with_db_attributes(
    traced: SQLiteMemory, collected: Collected
) -> None:
    await traced.store_message(make_message("hello"), USER, "conv-2")
    children = [s for s in collected.finished() if "db.operation.name" in (s.attributes or {})]
    [parent] = collected.operations()
    assert [s.attributes["db.operation.name"] for s in children] == ["append_messages"]
    for child in children:
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
        assert child.attributes["db.system.name"] == child.attributes["db.system"] == "sqlite"
        assert child.attributes["bruno_memstore.operation"] == "store_message"
        assert child.name == "append_messages"


async def test_no_query_text_or_content_unless_opted_in(
    traced: SQLiteMemory, collected: Collected
) -> None:
    await _work(traced)
    spans = collected.finished()
    text = _values(spans)
    assert SECRET not in text and USER not in text
    for span in spans:
        assert not {"gen_ai.memory.query.text", "gen_ai.memory.records", "user.id"} & set(
            span.attributes or {}
        )
        assert all(SECRET not in str(event.attributes) for event in span.events)


async def test_content_is_recorded_when_opted_in(tmp_path: Path, collected: Collected) -> None:
    memory = SQLiteMemory(
        tmp_path / "m.db", embedding_model=None, telemetry=collected.telemetry(trace_content=True)
    )
    try:
        await _work(memory)
    finally:
        await memory.shutdown()
    by_operation = {s.attributes["bruno_memstore.operation"]: s for s in collected.operations()}
    search = by_operation["search"].attributes
    assert search["gen_ai.memory.query.text"] == SECRET and search["user.id"] == USER
    returned = json.loads(search["gen_ai.memory.records"])
    assert {r["content"] for r in returned} == {f"the {SECRET} sleeps", f"{SECRET} facts"}
    assert all(0 <= r["score"] <= 1 for r in returned)
    assert by_operation["retrieve_memories"].attributes["gen_ai.memory.query.text"] == SECRET
    stored = json.loads(by_operation["store_message"].attributes["gen_ai.memory.records"])
    assert [r["content"] for r in stored] == [f"the {SECRET} sleeps"]


async def test_errors_end_their_spans_with_the_error(
    traced: SQLiteMemory, collected: Collected
) -> None:
    await traced.store_message(make_message("mine"), "owner", "conv-3")
    with pytest.raises(OwnershipError):
        await traced.store_message(make_message("not yours"), "intruder", "conv-3")
    failed = collected.operations()[-1]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "OwnershipError"
    assert [e.name for e in failed.events] == ["exception"]
    engine = [s for s in collected.finished() if s.parent is not None][-1]
    assert engine.parent.span_id == failed.context.span_id
    assert engine.status.status_code is StatusCode.ERROR
    errors = collected.points("bruno_memstore.operation.errors")
    assert [(p.attributes["error.type"], p.value) for p in errors] == [("OwnershipError", 1)]


async def test_operation_metrics_beside_prometheus(
    traced: SQLiteMemory, collected: Collected
) -> None:
    prometheus = OPERATION_SECONDS.labels("sqlite", "store_message")
    before = _histogram_count(prometheus)
    for i in range(3):
        await traced.store_message(make_message(f"m{i}"), USER, "conv-4")
    durations = {
        p.attributes["bruno_memstore.operation"]: p
        for p in collected.points("bruno_memstore.operation.duration")
    }
    point = durations["store_message"]
    assert point.count == 3 and point.sum > 0
    assert point.attributes["gen_ai.operation.name"] == "create_memory"
    assert point.attributes["db.system.name"] == "sqlite"
    assert _histogram_count(prometheus) == before + 3


def _histogram_count(child: Any) -> float:
    return next(s.value for s in child.collect()[0].samples if s.name.endswith("_count"))


async def test_hybrid_cache_hits_and_misses(tmp_path: Path, collected: Collected) -> None:
    persistent = SQLiteMemory(tmp_path / "p.db", embedding_model=None)
    memory = HybridMemory(InMemoryStorage(), persistent, telemetry=collected.telemetry())
    try:
        await memory.store_message(make_message("cached"), USER, "conv-5")
        await memory.retrieve_messages("conv-5")  # a miss fills the copy
        await memory.retrieve_messages("conv-5")  # served from it
    finally:
        await memory.shutdown()
    requests = {
        p.attributes["bruno_memstore.cache.result"]: p.value
        for p in collected.points("bruno_memstore.cache.requests")
    }
    assert requests["miss"] >= 1 and requests["hit"] >= 1
    kinds = {s.kind for s in collected.operations()}
    assert kinds == {SpanKind.CLIENT}


async def test_off_leaves_the_store_as_it_was(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BRUNO_MEMSTORE_TELEMETRY", raising=False)
    memory = SQLiteMemory(tmp_path / "m.db", embedding_model=None)
    assert not set(GENAI_OPERATIONS) & set(vars(memory))
    assert "_run" not in vars(memory) and type(memory._meter) is Meter
    monkeypatch.setenv("BRUNO_MEMSTORE_TELEMETRY", "1")
    on = SQLiteMemory(tmp_path / "n.db", embedding_model=None)
    assert set(GENAI_OPERATIONS) <= set(vars(on)) and "_run" in vars(on)
    assert isinstance(on._meter, OtelMeter)
    off = SQLiteMemory(tmp_path / "o.db", embedding_model=None, telemetry=False)
    assert "_run" not in vars(off)


def test_url_options_turn_it_on(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BRUNO_MEMSTORE_TELEMETRY", raising=False)
    url = f"sqlite:///{tmp_path}/u.db?telemetry=1&trace_content=true&context_window=7"
    memory = open_memory(url, embedding_model=None)
    assert "_run" in vars(memory) and memory.context_window == 7
    assert "_run" not in vars(open_memory(f"sqlite:///{tmp_path}/v.db", embedding_model=None))


async def test_a_sampled_out_operation_records_nothing(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    memory = SQLiteMemory(
        tmp_path / "m.db",
        embedding_model=None,
        telemetry=Telemetry(tracer_provider=provider, trace_content=True),
    )
    try:
        await memory.store_message(make_message(f"the {SECRET}"), USER, "conv-6")
        assert [m.content for m in await memory.retrieve_messages("conv-6")] == [f"the {SECRET}"]
    finally:
        await memory.shutdown()
    assert exporter.get_finished_spans() == ()


async def test_engine_spans_can_be_left_out(tmp_path: Path, collected: Collected) -> None:
    telemetry = Telemetry(collected.tracer_provider, collected.meter_provider, engine_spans=False)
    memory = SQLiteMemory(tmp_path / "m.db", embedding_model=None, telemetry=telemetry)
    try:
        await memory.store_message(make_message("hello"), USER, "conv-7")
    finally:
        await memory.shutdown()
    assert [s.name for s in collected.finished()] == ["create_memory"]
    assert collected.points("bruno_memstore.operation.duration")  # metrics still recorded
