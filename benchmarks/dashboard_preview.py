"""The Grafana dashboard's six panels, drawn from a short real workload without Grafana.

Runs an assistant-like load for ``--seconds`` (writers storing messages, readers reading
context windows through a hybrid store, searches on SQLite, a few refused writes, and
``store_statistics()`` every few seconds), samples the process's Prometheus registry once a
second, computes each panel's query by hand (rates over ``--window`` seconds, latency
percentiles from the histogram buckets, the hit rate, the gauges), and writes
``docs/img/dashboard.png``. The queries themselves are in ``docs/grafana/bruno-memstore.json``.

Run ``python -m benchmarks.dashboard_preview --help``. Needs ``matplotlib``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import matplotlib
import typer
from bruno_core.models.message import Message, MessageRole
from prometheus_client import REGISTRY

from bruno_memstore.backends.hybrid import HybridMemory
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.errors import OwnershipError

__all__ = ["app"]

ROOT = Path(__file__).resolve().parents[1]
Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]

app = typer.Typer(add_completion=False)


def _snapshot() -> Sample:
    out: Sample = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("bruno_memstore_"):
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _select(sample: Sample, name: str, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        labels: v
        for (n, labels), v in sample.items()
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    }


def _by(values: dict[tuple[tuple[str, str], ...], float], *keys: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, v in values.items():
        d = dict(labels)
        out[" ".join(d[k] for k in keys)] += v
    return out


def _rate(now: Sample, then: Sample, seconds: float, name: str, *keys: str, **match: str):
    a, b = _by(_select(now, name, **match), *keys), _by(_select(then, name, **match), *keys)
    return {k: (v - b.get(k, 0.0)) / seconds for k, v in a.items()}


def _quantile(now: Sample, then: Sample, q: float) -> dict[str, float]:
    """``histogram_quantile`` over the bucket increases, per backend and operation."""
    grown: dict[str, list[tuple[float, float]]] = defaultdict(list)
    before = _select(then, "bruno_memstore_operation_seconds_bucket")
    for labels, v in _select(now, "bruno_memstore_operation_seconds_bucket").items():
        d = dict(labels)
        key = f"{d['backend']} {d['operation']}"
        grown[key].append((float(d["le"]), v - before.get(labels, 0.0)))
    out = {}
    for key, buckets in grown.items():
        buckets.sort()
        total = buckets[-1][1]
        if total <= 0:
            continue
        rank, low, below = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    out[key] = low
                else:
                    share = (rank - below) / (count - below) if count > below else 0.0
                    out[key] = low + (le - low) * share
                break
            low, below = le, count
    return out


async def _load(seconds: float, db: Path) -> None:
    rng = random.Random(7)
    words = "tea kyoto train ryokan museum allergy peanut budget ticket garden".split()
    hybrid = HybridMemory(InMemoryStorage(), SQLiteMemory(db / "hybrid.db", embedding_model=None))
    plain = SQLiteMemory(db / "plain.db", embedding_model=None)
    started = time.monotonic()
    deadline = started + seconds

    def conversation(i: int) -> str:
        # A new conversation every 5 s: its first read misses the cache, the next ones hit.
        return f"conv-{i}-{int((time.monotonic() - started) // 5)}"

    async with hybrid, plain:
        for i in range(4):  # each writer's conversation is claimed before the intruder tries
            for memory in (hybrid, plain):
                await memory.store_message(
                    Message(role=MessageRole.USER, content="hello"),
                    conversation_id=f"conv-{i}-0",
                    user_id=f"user-{i}",
                )

        async def writer(i: int) -> None:
            while time.monotonic() < deadline:
                text = " ".join(rng.choices(words, k=8))
                for memory in (hybrid, plain):
                    await memory.store_message(
                        Message(role=MessageRole.USER, content=text),
                        conversation_id=conversation(i),
                        user_id=f"user-{i}",
                    )
                # Busier in the middle third of the run.
                left = deadline - time.monotonic()
                await asyncio.sleep(0.01 if seconds / 3 < left < 2 * seconds / 3 else 0.05)

        async def reader(i: int) -> None:
            while time.monotonic() < deadline:
                await hybrid.retrieve_context(f"user-{i}", conversation_id=conversation(i))
                await plain.search(f"user-{i}", rng.choice(words))
                await asyncio.sleep(0.02)

        async def intruder() -> None:
            while time.monotonic() < deadline:
                with contextlib.suppress(OwnershipError):
                    await plain.store_message(
                        Message(role=MessageRole.USER, content="not mine"),
                        conversation_id="conv-0-0",
                        user_id="someone-else",
                    )
                await asyncio.sleep(0.5)

        async def measure() -> None:
            while time.monotonic() < deadline:
                for memory in (hybrid, plain):
                    await memory.store_statistics()
                await asyncio.sleep(3)

        await asyncio.gather(
            *(writer(i) for i in range(4)), *(reader(i) for i in range(4)), intruder(), measure()
        )


@app.command()
def main(
    seconds: Annotated[float, typer.Option(help="How long the workload runs.")] = 60.0,
    window: Annotated[float, typer.Option(help="Rate window in seconds.")] = 10.0,
    out: Annotated[Path, typer.Option(help="Where the picture goes.")] = ROOT
    / "docs"
    / "img"
    / "dashboard.png",
) -> None:
    """Run the workload, sample the metrics every second, draw the six panels."""
    samples: list[tuple[float, Sample]] = []

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            load = asyncio.create_task(_load(seconds, Path(tmp)))
            start = time.monotonic()
            while not load.done():
                samples.append((time.monotonic() - start, _snapshot()))
                await asyncio.sleep(1.0)
            await load
            samples.append((time.monotonic() - start, _snapshot()))

    asyncio.run(run())
    _draw(samples, window, out)
    typer.echo(f"wrote {out} ({len(samples)} samples)")


def _draw(samples: list[tuple[float, Sample]], window: float, out: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(1, round(window))
    series: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))

    def add(panel: str, t: float, values: dict[str, float]) -> None:
        for key, v in values.items():
            series[panel][key].append((t, v))

    for i in range(step, len(samples)):
        (t, now), (t0, then) = samples[i], samples[i - step]
        span = t - t0
        add("Operations per second", t, _rate(now, then, span, _COUNT, "backend", "operation"))
        for q in (0.5, 0.99):
            p = _quantile(now, then, q)
            add(
                "Latency by operation (ms)",
                t,
                {f"p{int(q * 100)} {k}": v * 1e3 for k, v in p.items()},
            )
        add(
            "Errors per second", t, _rate(now, then, span, _ERRORS, "backend", "operation", "error")
        )
        hits = _rate(now, then, span, _CACHE, "backend", result="hit")
        every = _rate(now, then, span, _CACHE, "backend")
        add("Hybrid cache hit rate", t, {k: hits.get(k, 0.0) / v for k, v in every.items() if v})
        add(
            "Storage (KiB)",
            t,
            {k: v / 1024 for k, v in _by(_select(now, _STORAGE), "backend").items()},
        )
        add("Records by kind", t, _by(_select(now, _RECORDS, kind="messages"), "backend", "kind"))

    fig, axes = plt.subplots(3, 2, figsize=(13, 10), constrained_layout=True)
    for ax, name in zip(axes.flat, _PANELS, strict=True):
        lines = series.get(name, {})
        busiest = sorted(lines.items(), key=lambda kv: -max(v for _, v in kv[1]))[:6]
        for key, points in busiest:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=key, linewidth=1.4)
        ax.set_title(name, loc="left", fontsize=11)
        ax.set_xlabel("seconds", fontsize=8)
        ax.grid(alpha=0.3)
        if name == "Hybrid cache hit rate":
            ax.set_ylim(0, 1.05)
        if busiest:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("bruno-memstore dashboard panels (computed from a real run)", fontsize=12)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


_COUNT = "bruno_memstore_operation_seconds_count"
_ERRORS = "bruno_memstore_operation_errors_total"
_CACHE = "bruno_memstore_cache_requests_total"
_STORAGE = "bruno_memstore_storage_bytes"
_RECORDS = "bruno_memstore_records"
_PANELS = (
    "Operations per second",
    "Latency by operation (ms)",
    "Errors per second",
    "Hybrid cache hit rate",
    "Storage (KiB)",
    "Records by kind",
)

if __name__ == "__main__":
    app()
