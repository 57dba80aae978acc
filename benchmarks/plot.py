"""Charts of the recorded throughput figures (``benchmarks/results/throughput-*.json``).

Writes two PNG files:

* ``throughput.png``: messages stored per second by each backend and by its raw drivers,
  one panel per way of storing (one await per message, concurrent writers, batches);
* ``read-latency.png``: context-read latency (p50 bar, p99 mark) of each backend and its
  raw drivers, with the first user stored and with every user stored.

Run ``python -m benchmarks.plot --help``. Needs ``matplotlib``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import matplotlib
import matplotlib.pyplot as plt
import typer
from matplotlib.axes import Axes

__all__ = ["BACKENDS", "Backend", "app", "load", "plot_read_latency", "plot_throughput"]

ROOT = Path(__file__).resolve().parent
# File stem and label of each backend, in the order they are drawn.
BACKENDS = (
    ("sqlite", "SQLite"),
    ("postgres", "PostgreSQL"),
    ("mysql", "MariaDB"),
    ("redis", "Redis"),
    ("memcached", "Memcached"),
    ("memory", "memory://"),
)
# Colours by position in a backend's results: the library, its raw driver running the same
# statements, then a second baseline (sqlite3, or Redis with plain commands).
COLOURS = ("#1f5fa8", "#e8872b", "#9a9a9a")
ROLES = (
    "bruno-memstore",
    "raw driver, same statements\n(aiosqlite, asyncpg, asyncmy, redis scripts)",
    "second baseline\n(sqlite3 module, Redis plain commands)",
)


@dataclass(frozen=True)
class Backend:
    """The recorded figures of one backend: the library first, then its raw drivers."""

    label: str
    subjects: list[dict[str, Any]]
    workload: dict[str, Any]


def load(results: Path) -> list[Backend]:
    """Every ``throughput-<backend>.json`` of :data:`BACKENDS` found in ``results``."""
    out = []
    for stem, label in BACKENDS:
        path = results / f"throughput-{stem}.json"
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        for subjects in report["results"].values():
            out.append(Backend(label, subjects, report["workload"]))
    return out


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 1 else f"{value:.1f}"


def _bars(ax: Axes, backends: list[Backend], attr: str, fmt: Any, scale: float = 1.0) -> None:
    """Grouped bars of ``attr``: one group per backend, one bar per measured subject."""
    width = 0.27
    for x, backend in enumerate(backends):
        present = [s for s in backend.subjects if s.get(attr) is not None]
        offset = -(len(present) - 1) * width / 2
        for i, subject in enumerate(backend.subjects):
            value = subject.get(attr)
            if value is None:
                continue
            value *= scale
            ax.bar(x + offset, value, width, color=COLOURS[min(i, 2)], edgecolor="white")
            ax.annotate(
                fmt(value),
                (x + offset, value),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
            offset += width
    ax.set_xticks(range(len(backends)), [b.label for b in backends], fontsize=8)
    ax.set_yscale("log")
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.set_axisbelow(True)
    ax.margins(y=0.15)


def _legend(fig: Any) -> None:
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS]
    fig.legend(handles, ROLES, loc="lower center", ncol=3, fontsize=8, frameon=False)


def _labels(backends: list[Backend]) -> list[str]:
    """Backend names; a run with a smaller workload than the first says so."""
    usual = backends[0].workload
    return [b.label if b.workload == usual else f"{b.label}\n(smaller run)" for b in backends]


def plot_throughput(
    backends: list[Backend], out: Path, note: str, batch_target: float | None = None
) -> None:
    """Store throughput, msg/s on a log scale, one panel per way of storing."""
    writers = backends[0].workload["writers"]
    panels = (
        ("one await per message", "sequential_store"),
        (f"{writers} concurrent writers", "concurrent_store"),
        ("batches of 1,000 (store_messages)", "batch_store"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), sharey=True)
    for ax, (title, attr) in zip(axes, panels, strict=True):
        _bars(ax, backends, attr, _short)
        ax.set_xticks(range(len(backends)), _labels(backends), fontsize=8)
        ax.set_title(title, fontsize=10)
    if batch_target is not None:
        axes[2].axhline(batch_target, color="#c0392b", linestyle="--", linewidth=1)
        axes[2].set_ylim(top=max(axes[2].get_ylim()[1], batch_target * 2))
        axes[2].annotate(
            f"SQLite target {_short(batch_target)}/s",
            (0.02, batch_target),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            color="#c0392b",
            fontsize=8,
        )
    axes[0].set_ylabel("messages stored per second (log scale)")
    fig.suptitle(f"Store throughput, library vs raw drivers ({note})", fontsize=11)
    _legend(fig)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_read_latency(backends: list[Backend], out: Path, note: str) -> None:
    """Context-read latency: p50 bars, p99 marks, after the first user and after all."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    for ax, size in zip(axes, ("small", "large"), strict=True):
        _bars(ax, backends, f"read_{size}_p50", _ms, scale=1e3)
        width = 0.27
        for x, backend in enumerate(backends):
            present = [s for s in backend.subjects if s.get(f"read_{size}_p99") is not None]
            offset = -(len(present) - 1) * width / 2
            for subject in present:
                ax.plot(x + offset, subject[f"read_{size}_p99"] * 1e3, "k_", markersize=12)
                offset += width
        usual = backends[0].subjects[0][f"stored_{size}"]
        when = "the first user" if size == "small" else "every user"
        ax.set_title(f"after {when} is stored ({usual:,} messages)", fontsize=10)
        ticks = []
        for b in backends:
            stored = b.subjects[0][f"stored_{size}"]
            ticks.append(b.label if stored == usual else f"{b.label}\n({stored:,} messages)")
        ax.set_xticks(range(len(backends)), ticks, fontsize=8)
    axes[0].set_ylabel("retrieve_context(limit=20), ms (log scale)\nbar: p50, dash: p99")
    fig.suptitle(f"Context-read latency, library vs raw drivers ({note})", fontsize=11)
    _legend(fig)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0] if __doc__ else None)


@app.command()
def main(
    results: Annotated[Path, typer.Option(help="Folder of throughput-*.json.")] = ROOT / "results",
    out: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = ROOT.parent
    / "docs"
    / "img",
    note: Annotated[str, typer.Option(help="Shown in the titles.")] = "shared 2-core VM",
    batch_target: Annotated[
        float | None, typer.Option(help="Draw this batch-store target (msg/s); 0: none.")
    ] = 100_000,
) -> None:
    """Draw throughput.png and read-latency.png from the recorded JSON figures."""
    matplotlib.use("Agg")  # files only: no display needed
    backends = load(results)
    if not backends:
        raise typer.BadParameter(f"no throughput-*.json in {results}", param_hint="--results")
    out.mkdir(parents=True, exist_ok=True)
    plot_throughput(backends, out / "throughput.png", note, batch_target or None)
    plot_read_latency(backends, out / "read-latency.png", note)
    typer.echo(f"wrote {out / 'throughput.png'} and {out / 'read-latency.png'}")


if __name__ == "__main__":
    app()
