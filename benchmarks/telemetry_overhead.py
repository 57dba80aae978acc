"""What OpenTelemetry costs a one-at-a-time store: ``store_message`` awaited message after
message on SQLite (``embedding_model=None``), telemetry off against on.

Two kinds of "on", neither with an exporter: "on, no SDK" is telemetry turned on in an
application that configured no OpenTelemetry SDK (the API's no-op providers: spans are not
recorded); "on, SDK" has SDK providers with nothing attached (no span processor, exporter or
metric reader): every span and metric point is made in full, then dropped; "on, SDK 1%"
samples one trace in a hundred (``ParentBased(TraceIdRatioBased(0.01))``), the usual way to
bound tracing's cost in production.

The stores (one database file each) stay open; blocks of stores on each alternate, each
setting going first in turn, so that a machine whose load drifts favours none; the table
gives the median over blocks of the time per store, and the median of the on/off ratios of
blocks run side by side. ``--engine memory`` runs the same on the in-process backend, whose
stores cost only the library's own work: the difference is then what telemetry adds, in
microseconds.

Run ``python -m benchmarks.telemetry_overhead --help``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NoOpTracerProvider
from rich.console import Console
from rich.table import Table

from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.telemetry import Telemetry
from bruno_memstore.testing import make_message

app = typer.Typer(add_completion=False)
console = Console()

SETTINGS = ("off", "on, no SDK", "on, SDK", "on, SDK 1%")


def _telemetry(setting: str) -> Any:
    if setting == "off":
        return False
    if setting == "on, no SDK":  # the API alone: what an application that set up none gets
        return Telemetry(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    if setting == "on, SDK 1%":  # one trace in a hundred recorded, the others dropped at once
        sampler = ParentBased(TraceIdRatioBased(0.01))
        return Telemetry(TracerProvider(sampler=sampler), MeterProvider())
    return Telemetry(tracer_provider=TracerProvider(), meter_provider=MeterProvider())


def _store(engine: str, path: Path, telemetry: Any) -> MemoryBackend:
    if engine == "memory":
        return InMemoryStorage(embedding_model=None, telemetry=telemetry)
    return SQLiteMemory(path, embedding_model=None, telemetry=telemetry)


async def _measure(engine: str, blocks: int, per_block: int) -> dict[str, list[float]]:
    """Seconds per ``store_message`` in each block, per setting. Both stores stay open;
    blocks of the two settings alternate (off, on / on, off), so they share the machine's
    load of the moment."""
    results: dict[str, list[float]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bruno-otel-bench-") as tmp:
        stores = {
            s: _store(engine, Path(tmp) / f"{i}.db", _telemetry(s)) for i, s in enumerate(SETTINGS)
        }
        try:
            for memory in stores.values():  # connect, create the schema, warm up
                for i in range(50):
                    await memory.store_message(make_message(f"warm {i}"), "user-1", "conv-w")
            for block in range(blocks):
                turn = block % len(SETTINGS)
                order = SETTINGS[turn:] + SETTINGS[:turn]  # each goes first in turn
                order = order if block % 2 == 0 else order[::-1]
                for setting in order:
                    memory = stores[setting]
                    batch = [
                        make_message(f"message {i} of block {block} about the weather")
                        for i in range(per_block)
                    ]
                    started = time.perf_counter()
                    for message in batch:
                        await memory.store_message(message, "user-1", f"conv-{block}")
                    results[setting].append((time.perf_counter() - started) / per_block)
        finally:
            for memory in stores.values():
                await memory.shutdown()
    return results


@app.command()
def main(
    blocks: Annotated[int, typer.Option(help="Timed blocks of each setting, interleaved.")] = 40,
    per_block: Annotated[int, typer.Option(help="Stores per block.")] = 100,
    engine: Annotated[str, typer.Option(help="'sqlite' (a file) or 'memory'.")] = "sqlite",
) -> None:
    """Median time per one-at-a-time store with telemetry off and on (no exporter)."""
    if engine not in ("sqlite", "memory"):
        raise typer.BadParameter("expected sqlite or memory", param_hint="--engine")
    results = asyncio.run(_measure(engine, blocks, per_block))
    title = f"{engine} store_message, one at a time: {blocks} blocks of {per_block} stores"
    table = Table(title=title)
    table.add_column("telemetry")
    table.add_column("median µs/store", justify="right")
    table.add_column("min-max µs/store", justify="right")
    for setting in SETTINGS:
        values = [v * 1e6 for v in results[setting]]
        table.add_row(
            setting,
            f"{statistics.median(values):.1f}",
            f"{min(values):.1f}-{max(values):.1f}",
        )
    console.print(table)
    off = results["off"]
    for setting in SETTINGS[1:]:
        on = results[setting]
        ratios = [b / a for a, b in zip(off, on, strict=True)]
        overhead = statistics.median(on) / statistics.median(off) - 1
        console.print(
            f"{setting}: overhead {overhead:+.1%} (ratio of medians); "
            f"{statistics.median(ratios) - 1:+.1%} (median of the ratios of blocks run side "
            f"by side, range {min(ratios) - 1:+.1%} to {max(ratios) - 1:+.1%})"
        )
    console.print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")


if __name__ == "__main__":
    app()
