"""Search latency at scale: keyword, vector and hybrid queries against 10k and 100k messages.

For each backend URL this fills a fresh store with one user's messages (LoCoMo turns, reused
with a numbered suffix until the size is reached, in conversations of 100 messages) and
times ``search(user, question, limit=10, mode=...)`` for LoCoMo questions in each mode:

* vectors are those of the default model (all-MiniLM-L6-v2, int8 ONNX): every distinct
  LoCoMo turn and question is embedded once, and a reused turn gets its vector plus a small
  deterministic perturbation, so 100,000 vectors cost seconds instead of the model's ten
  minutes, and lie where real ones do;
* query embeddings are computed before timing (the embedder caches by text), so the figures
  are the store's own search time; the model's time per question is reported on its own.

Run ``python -m benchmarks.vector_latency --help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from bruno_core.models.message import Message, MessageRole
from rich.console import Console
from rich.table import Table

from benchmarks.locomo import _DEFAULT_DATA, ContentOptions, load_samples, machine, message_content
from bruno_memstore import open_memory
from bruno_memstore.embeddings import Embedder, normalise_rows
from bruno_memstore.embeddings.local import default_embedder
from bruno_memstore.errors import MemstoreError

__all__ = ["BenchModel", "app", "measure"]

app = typer.Typer(add_completion=False)
console = Console(stderr=True)

CONVERSATION = 100
BATCH = 1000
MODES = ("keyword", "vector", "hybrid")
_SEP = " ~copy:"


class BenchModel:
    """The default model's vectors for known texts, perturbed per numbered copy."""

    model_name = "bench-minilm-onnx-perturbed"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = {_key(t): v for t, v in vectors.items()}
        self.dimension = next(iter(vectors.values())).shape[0]

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            base, _, copy = text.partition(_SEP)
            vec = self.vectors[_key(base)]
            if copy:
                rng = np.random.default_rng(int(copy))
                vec = vec + rng.normal(0.0, 0.02, self.dimension).astype(np.float32)
            out[i] = vec
        return normalise_rows(out)


def _key(text: str) -> str:
    return " ".join(text.split())  # messages may trim or re-space their content


def _texts(data: Path) -> tuple[list[str], list[str]]:
    samples = load_samples(data)
    turns = [message_content(t, ContentOptions()) for s in samples for t in s.turns]
    questions = [q.text for s in samples for q in s.questions if q.category in (1, 2, 3, 4)]
    return list(dict.fromkeys(turns)), list(dict.fromkeys(questions))


async def measure(
    url: str, size: int, model: BenchModel, turns: list[str], questions: list[str]
) -> dict[str, Any]:
    """Fill a store at ``url`` with ``size`` messages and time each mode."""
    memory = open_memory(url, embedding_model=Embedder(model))
    user = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        await memory.initialize()
        modes = [m for m in MODES if m == "keyword" or memory.embedder is not None]
        started = time.perf_counter()
        for start in range(0, size, BATCH):
            batch = []
            for n in range(start, min(size, start + BATCH)):
                text = turns[n % len(turns)]
                if n >= len(turns):
                    text = f"{text}{_SEP}{n}"
                batch.append(Message(role=MessageRole.USER, content=text))
            for c in range(0, len(batch), CONVERSATION):
                await memory.store_messages(
                    batch[c : c + CONVERSATION],
                    conversation_id=f"{user}-{(start + c) // CONVERSATION}",
                    user_id=user,
                )
        ingest = time.perf_counter() - started
        out: dict[str, Any] = {"url": url, "size": size, "ingest_s": round(ingest, 1)}
        for mode in modes:
            for q in questions[:20]:  # warm caches and connections
                await memory.search(user, q, limit=10, mode=mode)  # type: ignore[arg-type]
            times = []
            for q in questions:
                t0 = time.perf_counter()
                await memory.search(user, q, limit=10, mode=mode)  # type: ignore[arg-type]
                times.append(time.perf_counter() - t0)
            times.sort()
            out[mode] = {
                "p50_ms": round(1000 * statistics.median(times), 3),
                "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 3),
            }
        return out
    finally:
        with contextlib.suppress(MemstoreError):  # best effort clean-up of a shared store
            await memory.forget_user(user)
        await memory.shutdown()


@app.command()
def main(
    url: Annotated[list[str], typer.Option("--url", "-u", help="Memory URL (repeatable).")],
    size: Annotated[
        list[int] | None, typer.Option("--size", "-n", help="Messages (repeatable).")
    ] = None,
    queries: Annotated[int, typer.Option(help="Questions timed per mode.")] = 300,
    data: Annotated[Path, typer.Option(envvar="LOCOMO_DATA")] = _DEFAULT_DATA,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    """Keyword, vector and hybrid search p50/p95 at each size, per backend."""
    sizes = size or [10_000, 100_000]
    turns, questions = _texts(data)
    questions = questions[:queries]
    real = default_embedder()
    with console.status("embedding LoCoMo turns and questions with the default model ..."):
        t0 = time.perf_counter()
        q_vecs = real.embed_batch(questions)
        per_question_ms = 1000 * (time.perf_counter() - t0) / len(questions)
        vectors = dict(zip(turns, real.embed_batch(turns), strict=True))
        vectors.update(zip(questions, q_vecs, strict=True))
    model = BenchModel(vectors)
    rows = []
    for u in url:
        for n in sizes:
            with console.status(f"{u}: {n:,} messages ..."):
                rows.append(asyncio.run(measure(u, n, model, turns, questions)))
            console.log(rows[-1])
    table = Table(
        title=f"search p50 / p95 ms, limit 10 (query embedding {per_question_ms:.1f} ms apart)"
    )
    for col in ("backend", "messages", "ingest s", *MODES):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in rows:
        cells = [f"{r[m]['p50_ms']:.2f} / {r[m]['p95_ms']:.2f}" if m in r else "-" for m in MODES]
        table.add_row(r["url"], f"{r['size']:,}", f"{r['ingest_s']}", *cells)
    Console().print(table)
    if json_out is not None:
        result = {"machine": machine(), "query_embedding_ms": per_question_ms, "rows": rows}
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    app()
