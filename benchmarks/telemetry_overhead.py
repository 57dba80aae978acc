"""What OpenTelemetry costs a one-at-a-time store: ``store_message`` awaited message after
message on SQLite (``embedding_model=None``), telemetry off against on.

"On" is a store built with ``telemetry=Telemetry(tracer_provider, meter_provider)`` where
both are SDK providers with nothing attached (no span processor, no exporter, no metric
reader): spans and metric points are made and dropped, which is the cost the library itself
adds. Each round runs every setting once, on a fresh database, in an order that alternates
(off, on / on, off) so that a machine whose load drifts favours neither; the table gives the
median over rounds of the time per store and of each round's on/off ratio.

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
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from rich.console import Console
from rich.table import Table

from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.telemetry import Telemetry
from bruno_memstore.testing import make_message

app = typer.Typer(add_completion=False)
console = Console()

SETTINGS = ("off", "on")


def _telemetry(setting: str) -> Any:
    if setting == "off":
        return False
    return Telemetry(tracer_provider=TracerProvider(), meter_provider=MeterProvider())


async def _store_one_at_a_time(path: Path, setting: str, messages: int) -> float:
    """Seconds per ``store_message`` over ``messages`` stores (after a warm-up of 50)."""
    memory = SQLiteMemory(path, embedding_model=None, telemetry=_telemetry(setting))
    batch = [make_message(f"message {i} about the weather") for i in range(messages + 50)]
    try:
        for message in batch[:50]:
            await memory.store_message(message, "user-1", "conv-warm")
        started = time.perf_counter()
        for i, message in enumerate(batch[50:]):
            await memory.store_message(message, "user-1", f"conv-{i // 100}")
        return (time.perf_counter() - started) / messages
    finally:
        await memory.shutdown()


async def _measure(messages: int, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bruno-otel-bench-") as tmp:
        for round_no in range(rounds):
            order = SETTINGS if round_no % 2 == 0 else SETTINGS[::-1]
            for setting in order:
                path = Path(tmp) / f"{setting}-{round_no}.db"
                results[setting].append(await _store_one_at_a_time(path, setting, messages))
    return results


@app.command()
def main(
    messages: Annotated[int, typer.Option(help="Stores timed per run.")] = 2000,
    rounds: Annotated[int, typer.Option(help="Runs of each setting, interleaved.")] = 9,
) -> None:
    """Median time per one-at-a-time store with telemetry off and on (no exporter)."""
    results = asyncio.run(_measure(messages, rounds))
    off, on = results["off"], results["on"]
    ratios = [b / a for a, b in zip(off, on, strict=True)]
    table = Table(title=f"store_message, one at a time: {messages} stores x {rounds} rounds")
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
    overhead = statistics.median(on) / statistics.median(off) - 1
    console.print(
        f"overhead: {overhead:+.1%} (ratio of medians); "
        f"{statistics.median(ratios) - 1:+.1%} (median of per-round ratios, "
        f"range {min(ratios) - 1:+.1%} to {max(ratios) - 1:+.1%})"
    )
    console.print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")


if __name__ == "__main__":
    app()
