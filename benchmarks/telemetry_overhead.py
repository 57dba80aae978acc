"""What OpenTelemetry costs a one-at-a-time store: ``store_message`` awaited message after
message on SQLite (``embedding_model=None``), telemetry off against on.

"On" is a store built with ``telemetry=Telemetry(tracer_provider, meter_provider)`` where
both are SDK providers with nothing attached (no span processor, no exporter, no metric
reader): spans and metric points are made and dropped, which is the cost the library itself
adds. Both stores (two database files) stay open; blocks of stores on each alternate, in an
order that alternates too (off, on / on, off), so that a machine whose load drifts favours
neither; the table gives the median over blocks of the time per store, and the median of the
on/off ratios of blocks run side by side.

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


async def _measure(blocks: int, per_block: int) -> dict[str, list[float]]:
    """Seconds per ``store_message`` in each block, per setting. Both stores stay open;
    blocks of the two settings alternate (off, on / on, off), so they share the machine's
    load of the moment."""
    results: dict[str, list[float]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bruno-otel-bench-") as tmp:
        stores = {
            s: SQLiteMemory(Path(tmp) / f"{s}.db", embedding_model=None, telemetry=_telemetry(s))
            for s in SETTINGS
        }
        try:
            for memory in stores.values():  # connect, create the schema, warm up
                for i in range(50):
                    await memory.store_message(make_message(f"warm {i}"), "user-1", "conv-w")
            for block in range(blocks):
                order = SETTINGS if block % 2 == 0 else SETTINGS[::-1]
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
) -> None:
    """Median time per one-at-a-time store with telemetry off and on (no exporter)."""
    results = asyncio.run(_measure(blocks, per_block))
    off, on = results["off"], results["on"]
    ratios = [b / a for a, b in zip(off, on, strict=True)]
    table = Table(title=f"store_message, one at a time: {blocks} blocks of {per_block} stores")
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
        f"{statistics.median(ratios) - 1:+.1%} (median of per-block-pair ratios, "
        f"range {min(ratios) - 1:+.1%} to {max(ratios) - 1:+.1%})"
    )
    console.print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")


if __name__ == "__main__":
    app()
