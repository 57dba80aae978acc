"""Writes and searches on SQLite with the default embedding model, and the model's batch sizes.

``benchmarks.throughput`` opens its stores without a model; here every stored message is
embedded by the default model (all-MiniLM-L6-v2, int8 ONNX), as it is by default. On a fresh
SQLite store this measures:

* **one at a time** — ``store_message`` awaited message after message: p50 and rate;
* **concurrent** — ``--writers`` tasks calling ``store_message`` at once: rate of messages
  acknowledged (their embedding requests share model calls, ``docs/embeddings.md``);
* **until attached** — after each of those two, the time ``flush()`` takes until every
  stored message has its vector, and the concurrent rate counted to that point (a store
  with ``vectors="inline"`` has nothing to wait for);
* **hybrid search** — ``search(user, query, limit=10)`` p50 over the stored messages, each
  query new to the model (so its embedding is part of the time);
* **model batches** — ``embed_batch`` of the model alone for 1 to 64 texts a call: time per
  call, texts/s and CPU time per text.

The store figures are taken for three stores over the same loaded model, alternating in
``--rounds`` rounds so that other load on the machine weighs on all alike: an embedder that
sends each text to the model in a call of its own (the behaviour before concurrent requests
were merged), the default one, and the default one with ``vectors="deferred"`` (messages
acknowledged before their vectors, attached by the store's background task). Figures are
medians over the rounds.

Messages are the chat-like sentences of ``benchmarks.throughput`` (8 to 30 words, 14 to 75
tokens), every one distinct, so the embedder's cache never answers; the model table also
has short replies (2 to 9 words), where per-call work weighs more. Run
``python -m benchmarks.embedded_writes --help``.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from bruno_core.models.message import Message, MessageRole
from rich.console import Console
from rich.table import Table

from benchmarks.throughput import TextMaker, machine
from bruno_memstore import open_memory
from bruno_memstore.embeddings import Embedder
from bruno_memstore.embeddings.local import OnnxMiniLMEmbedder

__all__ = ["VARIANTS", "app", "batch_table", "measure_stores", "short_texts"]

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])
console = Console()

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
# How the store's embedder calls the model (each text in a call of its own, as before
# requests were merged, or concurrent requests merged up to 64 texts a call: the default),
# and when a stored message gets its vector (in the write, or shortly after it).
VARIANTS: dict[str, tuple[int, str]] = {
    "one text per call": (1, "inline"),
    "merged calls": (64, "inline"),
    "deferred vectors": (64, "deferred"),
}


def _p50_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1e3


def short_texts(n: int, seed: int) -> list[str]:
    """Short chat replies (2 to 9 common words, 4 to 13 tokens), every one distinct."""
    rng = random.Random(seed)
    words = "ok thanks see you tomorrow the meeting is at noon I like tea please call me".split()
    return [" ".join(rng.choices(words, k=rng.randint(2, 9))) + f" {i}" for i in range(n)]


def _messages(kind: str, n: int, seed: int) -> list[Message]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    if kind == "chat":
        return TextMaker(seed).messages(n, start)
    roles = (MessageRole.USER, MessageRole.ASSISTANT)
    return [
        Message(role=roles[i % 2], content=text, timestamp=start + timedelta(milliseconds=i))
        for i, text in enumerate(short_texts(n, seed))
    ]


async def measure_stores(
    path: Path,
    embedder: Embedder,
    *,
    texts: str,
    sequential: int,
    writers: int,
    concurrent: int,
    searches: int,
    seed: int,
    vectors: str = "inline",
) -> dict[str, float]:
    """One-at-a-time and concurrent store figures, each followed by ``flush()``, then hybrid
    search, on a fresh store."""
    memory = open_memory(f"sqlite:///{path}", embedding_model=embedder, vectors=vectors)
    try:
        await memory.store_messages(_messages(texts, 8, seed + 1), conversation_id="w", user_id="u")
        lat = []
        began = time.perf_counter()
        for msg in _messages(texts, sequential, seed + 2):
            t0 = time.perf_counter()
            await memory.store_message(msg, "u", "c1")
            lat.append(time.perf_counter() - t0)
        seq_rate = sequential / (time.perf_counter() - began)
        t0 = time.perf_counter()
        await memory.flush()
        seq_flush = time.perf_counter() - t0

        many = _messages(texts, concurrent, seed + 3)
        per = [many[w::writers] for w in range(writers)]

        async def writer(w: int, msgs: list[Message]) -> None:
            for msg in msgs:
                await memory.store_message(msg, "u", f"w{w}")

        calls_before = embedder.batcher.calls
        began = time.perf_counter()
        await asyncio.gather(*(writer(w, msgs) for w, msgs in enumerate(per)))
        acked = time.perf_counter()
        await memory.flush()
        attached = time.perf_counter()
        conc_rate = concurrent / (acked - began)
        calls = embedder.batcher.calls - calls_before

        maker = TextMaker(seed + 4)
        queries: list[str] = []
        while len(queries) < searches:
            q = maker.query()
            if q not in queries:
                queries.append(q)
        search_lat = []
        for q in queries:
            t0 = time.perf_counter()
            await memory.search("u", q, limit=10, mode="hybrid")
            search_lat.append(time.perf_counter() - t0)
    finally:
        await memory.shutdown()
    return {
        "one_p50_ms": _p50_ms(lat),
        "one_rate": seq_rate,
        "one_flush_s": seq_flush,
        "concurrent_rate": conc_rate,
        "concurrent_flush_s": attached - acked,
        "concurrent_attached_rate": concurrent / (attached - began),
        "concurrent_model_calls": calls,
        "hybrid_p50_ms": _p50_ms(search_lat),
    }


def batch_table(
    model: OnnxMiniLMEmbedder, sets: dict[str, Sequence[str]], sizes: Sequence[int]
) -> list[dict[str, Any]]:
    """The model alone: for each batch size and text set, time per call, texts/s and CPU
    time per text."""
    rows: list[dict[str, Any]] = [{"batch": size} for size in sizes]
    for name, texts in sets.items():
        model.embed_batch(list(texts[:8]))
        for row, size in zip(rows, sizes, strict=True):
            n = max(size * 4, 128)
            work = [texts[i % len(texts)] for i in range(n)]
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for i in range(0, n, size):
                model.embed_batch(work[i : i + size])
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            row[name] = {
                "call_ms": wall / (n / size) * 1e3,
                "texts_per_s": n / wall,
                "cpu_ms_per_text": cpu / n * 1e3,
            }
    return rows


_MEASURES = (
    ("one at a time: store p50", "one_p50_ms", "{:.1f} ms"),
    ("one at a time: rate", "one_rate", "{:,.0f} msg/s"),
    ("one at a time: then flush()", "one_flush_s", "{:.2f} s"),
    ("concurrent writers: rate acknowledged", "concurrent_rate", "{:,.0f} msg/s"),
    ("concurrent writers: then flush()", "concurrent_flush_s", "{:.2f} s"),
    ("concurrent writers: rate with vectors", "concurrent_attached_rate", "{:,.0f} msg/s"),
    ("concurrent writers: model calls", "concurrent_model_calls", "{:,.0f}"),
    ("hybrid search p50", "hybrid_p50_ms", "{:.1f} ms"),
)


def _tables(stores: dict[str, dict[str, float]], batches: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    table.add_column("measure")
    for name in stores:
        table.add_column(name, justify="right")
    for label, key, fmt in _MEASURES:
        table.add_row(label, *(fmt.format(figures[key]) for figures in stores.values()))
    console.print(table)
    if not batches:
        return
    model = Table(title="The default model alone, by texts per call")
    model.add_column("texts per call", justify="right")
    sets = [k for k in batches[0] if k != "batch"]
    for name in sets:
        for col in ("ms per call", "texts/s", "CPU ms per text"):
            model.add_column(f"{name}: {col}", justify="right")
    for row in batches:
        cells = [str(row["batch"])]
        for name in sets:
            f = row[name]
            cells += [
                f"{f['call_ms']:.1f}",
                f"{f['texts_per_s']:,.0f}",
                f"{f['cpu_ms_per_text']:.2f}",
            ]
        model.add_row(*cells)
    console.print(model)


@app.command()
def main(
    sequential: Annotated[int, typer.Option(help="Messages stored one at a time.")] = 200,
    writers: Annotated[int, typer.Option(help="Concurrent writer tasks.")] = 32,
    concurrent: Annotated[int, typer.Option(help="Messages stored by the writers.")] = 640,
    searches: Annotated[int, typer.Option(help="Hybrid searches timed.")] = 100,
    rounds: Annotated[int, typer.Option(help="Rounds, alternating the stores.")] = 3,
    variants: Annotated[
        str, typer.Option(help=f"Stores measured, comma-separated: {', '.join(VARIANTS)}.")
    ] = ",".join(VARIANTS),
    texts: Annotated[str, typer.Option(help="Messages: 'chat' sentences or 'short' replies.")] = (
        "chat"
    ),
    batches: Annotated[bool, typer.Option(help="Measure the model's batch sizes.")] = True,
    seed: Annotated[int, typer.Option(help="Text generator seed.")] = 7,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write figures here.")] = None,
) -> None:
    """Measure stores and searches on SQLite with the default model, and its batch sizes."""
    if texts not in ("chat", "short"):
        raise typer.BadParameter("expected 'chat' or 'short'", param_hint="--texts")
    chosen = {name.strip(): VARIANTS.get(name.strip()) for name in variants.split(",")}
    if not chosen or None in chosen.values():
        raise typer.BadParameter(f"expected names among {', '.join(VARIANTS)}", "--variants")
    model = OnnxMiniLMEmbedder()
    model.load()  # loading is not part of any figure
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = list(chosen.items())
            for k, (name, how) in enumerate(order if r % 2 == 0 else order[::-1]):
                assert how is not None
                batch_size, vectors = how
                figures = asyncio.run(
                    measure_stores(
                        Path(tmp) / f"bench-{r}-{k}.db",
                        Embedder(model, batch_size=batch_size),
                        texts=texts,
                        sequential=sequential,
                        writers=writers,
                        concurrent=concurrent,
                        searches=searches,
                        seed=seed + 10 * (len(order) * r + k),
                        vectors=vectors,
                    )
                )
                runs[name].append(figures)
    stores = {
        name: {key: statistics.median(f[key] for f in figs) for key in figs[0]}
        for name, figs in runs.items()
    }
    sets = {"chat": TextMaker(seed + 1).messages(256, datetime(2026, 1, 1, tzinfo=UTC))}
    text_sets = {"chat": [m.content for m in sets["chat"]], "short": short_texts(256, seed)}
    table = batch_table(model, text_sets, BATCH_SIZES) if batches else []
    title = f"SQLite, default model, {texts} messages, {writers} writers (median of {rounds})"
    _tables(stores, table, title)
    result: dict[str, Any] = {
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "texts": texts,
        "writers": writers,
        "stores": stores,
        "rounds": runs,
        "batches": table,
    }
    console.print(f"load average: {result['machine'].get('load average', '?')}")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    app()
