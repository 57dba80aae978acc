"""LoCoMo under every storage layout, and ranking constants chosen by cross-validation.

How a conversation is laid out in the store changes what search sees:

* **store**: a fresh store per LoCoMo conversation, or all conversations in one store (one
  user each), as a service with many users has; keyword statistics (idf) then come from
  everyone's messages;
* **conversations**: each LoCoMo session its own conversation id, or the user's whole
  history one conversation, as an assistant that never starts a new one keeps it;
* **captions**: a shared photo's caption appended to its turn, or not.

:func:`run_layout` stores the dev conversations in one layout through a real backend, asks
every question in each search mode, and keeps each question's keyword and vector candidates
(the backend's own, ``CANDIDATES`` a side) so that :func:`cross_validate` can re-rank them
under any fusion constants without touching the store again. Turn and question vectors come
from :class:`CachedModel`: the default model, each text embedded once and kept on disk, so
every layout after the first costs no model time.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from bruno_core.models.message import Message

from bruno_memstore import open_memory
from bruno_memstore.embeddings import Embedder, normalise_rows
from bruno_memstore.embeddings.local import default_embedder
from bruno_memstore.errors import MemstoreError
from bruno_memstore.models import MessageRecord, SearchHit, SearchRequest
from bruno_memstore.ranking import (
    DEFAULT_CONVERSATION_WEIGHT,
    DEFAULT_DATE_WEIGHT,
    DEFAULT_NEIGHBOUR_WEIGHT,
    DEFAULT_SESSION_GAP_US,
    DEFAULT_TIME_WEIGHT,
    DEFAULT_VECTOR_WEIGHT,
    DateSpec,
    asks_when,
    candidate_count,
    fuse,
    query_dates,
)
from bruno_memstore.search import bounded_query, clipped_query

from .locomo import (
    CATEGORIES,
    SEARCH_LIMIT,
    ContentOptions,
    Question,
    Sample,
    Scores,
    Turn,
    answerable,
    build_sessions,
    message_content,
    message_id,
)

__all__ = [
    "CANDIDATES",
    "LAYOUTS",
    "REALISTIC",
    "CachedModel",
    "Candidates",
    "FusionConfig",
    "Layout",
    "cross_validate",
    "layout_messages",
    "run_layout",
]

CANDIDATES = 200  # candidates kept a side: enough for every count tried
_CACHE = Path.home() / ".cache" / "bruno-memstore-bench"


# ====================================================================== layouts


@dataclass(frozen=True, slots=True)
class Layout:
    """How the LoCoMo conversations are stored."""

    shared_store: bool  # all conversations in one store, one user each
    per_session: bool  # each session its own conversation id
    captions: bool  # the shared photo's caption appended to its turn

    @property
    def name(self) -> str:
        return " / ".join(
            (
                "one store" if self.shared_store else "store each",
                "session = conversation" if self.per_session else "one conversation",
                "captions" if self.captions else "no captions",
            )
        )

    @property
    def key(self) -> str:
        return "".join(
            (
                "shared" if self.shared_store else "each",
                "-sessions" if self.per_session else "-single",
                "-captions" if self.captions else "-plain",
            )
        )


LAYOUTS = tuple(
    Layout(store, session, caption)
    for store, session, caption in itertools.product((False, True), repeat=3)
)
REALISTIC = Layout(shared_store=True, per_session=False, captions=False)
FAVOURABLE = Layout(shared_store=False, per_session=True, captions=True)


def layout_messages(sample: Sample, layout: Layout, prefix: str) -> list[tuple[str, list[Message]]]:
    """The sample's messages by conversation id, as ``layout`` stores them."""
    options = ContentOptions(caption=layout.captions)
    return build_sessions(sample, options, prefix, per_session=layout.per_session)


# ====================================================================== vectors


class CachedModel:
    """The default model with every vector kept on disk, keyed by a hash of the text.

    The layouts store the same texts over and over (with and without captions, under other
    ids); each is embedded once, in this run or an earlier one.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._model = default_embedder()
        self.model_name = self._model.model_name
        self.dimension = self._model.dimension
        self.path = path or _CACHE / f"{self.model_name}.npz"
        self._vectors: dict[str, np.ndarray] = {}
        self.computed = 0
        if self.path.is_file():
            with np.load(self.path) as stored:
                keys, rows = stored["keys"], stored["rows"]
                self._vectors = {str(k): rows[i] for i, k in enumerate(keys)}
        self._loaded = len(self._vectors)

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        missing = list(
            dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in self._vectors)
        )
        if missing:
            for start in range(0, len(missing), 64):
                part = missing[start : start + 64]
                for text, row in zip(part, self._model.embed_batch(part), strict=True):
                    self._vectors[self._key(text)] = row
            self.computed += len(missing)
        out = np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, self.dimension))
        return normalise_rows(out)

    def save(self) -> None:
        if len(self._vectors) == self._loaded:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._vectors))
        rows = np.stack(list(self._vectors.values())).astype(np.float32)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, rows=rows)
        tmp.replace(self.path)
        self._loaded = len(self._vectors)


# ====================================================================== one layout


@dataclass(slots=True, repr=False)
class Candidates:
    """One question's candidates from the store, best first, with the record each names."""

    sample: int
    question: Question
    text: list[SearchHit]
    vector: list[SearchHit]
    dia: dict[str, str]  # message id -> dia_id
    dates: list[DateSpec] = field(default_factory=list)  # the dates the question names
    asks_time: bool = False  # the question asks when


@dataclass(slots=True, repr=False)
class LayoutRun:
    """What one layout gave on one backend: scores per mode and the cached candidates."""

    url: str
    layout: Layout
    scores: dict[str, Scores] = field(default_factory=dict)
    candidates: list[Candidates] = field(default_factory=list)
    messages: int = 0
    ingest_seconds: float = 0.0


async def run_layout(
    url: str,
    samples: Sequence[Sample],
    layout: Layout,
    model: CachedModel,
    modes: Sequence[str] = ("keyword", "vector", "hybrid"),
    progress: Callable[[str], None] | None = None,
) -> LayoutRun:
    """Store ``samples`` at ``url`` as ``layout`` says and ask every question in each mode.

    ``{n}`` in the URL becomes the conversation number for a store each, ``shared`` for the
    one store. Each question's raw candidates (``CANDIDATES`` a side) are kept.
    """
    run = LayoutRun(url, layout, {m: Scores() for m in modes})
    tag = uuid.uuid4().hex[:8]
    groups: list[list[Sample]] = [list(samples)] if layout.shared_store else [[s] for s in samples]
    for group in groups:
        n = "shared" if layout.shared_store else str(group[0].index)
        memory = open_memory(url.replace("{n}", n), embedding_model=Embedder(model))
        users = {s.index: f"locomo-{tag}-{s.index}" for s in group}
        records: dict[str, MessageRecord] = {}
        try:
            await memory.initialize()
            for sample in group:
                started = time.perf_counter()
                for conv, msgs in layout_messages(sample, layout, users[sample.index]):
                    await memory.store_messages(
                        msgs, conversation_id=conv, user_id=users[sample.index]
                    )
                    run.messages += len(msgs)
                run.ingest_seconds += time.perf_counter() - started
            for sample in group:
                user = users[sample.index]
                dia = {str(message_id(user, t)): t.dia_id for t in sample.turns}
                for question in answerable(sample):
                    for mode in modes:
                        t0 = time.perf_counter()
                        found = await memory.search(
                            user,
                            question.text,
                            limit=SEARCH_LIMIT,
                            kinds=("message",),
                            mode=mode,  # type: ignore[arg-type]
                        )
                        elapsed = time.perf_counter() - t0
                        ranked = [str(r.message.metadata.get("dia_id")) for r in found if r.message]
                        run.scores[mode].add(question, ranked, elapsed)
                    run.candidates.append(
                        await _candidates(memory, user, sample, question, dia, records)
                    )
                if progress is not None:
                    progress(f"{url} {layout.name}: conversation {sample.index} done")
        finally:
            for user in users.values():
                with contextlib.suppress(MemstoreError):
                    await memory.forget_user(user)
            await memory.shutdown()
    model.save()
    return run


async def _candidates(
    memory: Any,
    user: str,
    sample: Sample,
    question: Question,
    dia: dict[str, str],
    records: dict[str, MessageRecord],
) -> Candidates:
    """The backend's own keyword and vector candidates for ``question``, as hybrid asks."""
    request = SearchRequest(
        user_id=user,
        query=bounded_query(question.text),
        kinds=frozenset({"message"}),
        limit=CANDIDATES,
    )
    vector = (await memory.embedder.embed([clipped_query(question.text)]))[0]
    text_hits = await memory._run("search", lambda: memory._text_search(request))
    vector_hits = await memory._run("search", lambda: memory._vector_search(request, vector))
    return Candidates(
        sample.index, question, _bare(text_hits, records), _bare(vector_hits, records), dia
    )


def _bare(hits: Sequence[SearchHit], records: dict[str, MessageRecord]) -> list[SearchHit]:
    """Hits without their records' vectors and metadata (ranking reads neither), each
    record kept once (``records``, by id) however many questions find it."""
    out: list[SearchHit] = []
    for h in hits:
        if h.message is None:
            continue
        rec = records.get(h.message.id)
        if rec is None:
            rec = records[h.message.id] = replace(h.message, vector=None, metadata="")
        out.append(SearchHit(h.kind, h.score, rec))
    return out


def prepare(runs: Iterable[LayoutRun], samples: Sequence[Sample]) -> None:
    """What ranking reads of each question (its dates, whether it asks when), and each
    record's content where a cache kept none, rebuilt from the turns."""
    turns = {s.index: {t.dia_id: t for t in s.turns} for s in samples}
    for run in runs:
        options = ContentOptions(caption=run.layout.captions)
        records: dict[str, MessageRecord] = {}
        for c in run.candidates:
            c.dates = query_dates(c.question.text)
            c.asks_time = asks_when(c.question.text)
            own = turns[c.sample]
            c.text, c.vector = (
                [_with_content(h, records, own, c.dia, options) for h in hits]
                for hits in (c.text, c.vector)
            )


def _with_content(
    hit: SearchHit,
    records: dict[str, MessageRecord],
    turns: dict[str, Turn],
    dia: dict[str, str],
    options: ContentOptions,
) -> SearchHit:
    assert hit.message is not None
    rec = records.get(hit.message.id)
    if rec is None:
        rec = hit.message
        if not rec.content:
            rec = replace(rec, content=message_content(turns[dia[rec.id]], options))
        records[rec.id] = rec
    return SearchHit(hit.kind, hit.score, rec)


# ====================================================================== fusion constants


@dataclass(frozen=True, slots=True)
class FusionConfig:
    """The constants of hybrid ranking (see :func:`bruno_memstore.ranking.fuse`)."""

    vector_weight: float = DEFAULT_VECTOR_WEIGHT
    conversation_weight: float = DEFAULT_CONVERSATION_WEIGHT
    neighbour_weight: float = DEFAULT_NEIGHBOUR_WEIGHT
    session_gap_us: int | None = DEFAULT_SESSION_GAP_US
    candidates: int = candidate_count(SEARCH_LIMIT)
    date_weight: float = DEFAULT_DATE_WEIGHT
    time_weight: float = DEFAULT_TIME_WEIGHT

    @property
    def label(self) -> str:
        gap = "none" if self.session_gap_us is None else f"{self.session_gap_us / 60e6:g} min"
        extra = f", w_time {self.time_weight:g}" if self.time_weight else ""
        return (
            f"w_vec {self.vector_weight:g}, w_conv {self.conversation_weight:g}, "
            f"w_nb {self.neighbour_weight:g}, gap {gap}, w_date {self.date_weight:g}, "
            f"{self.candidates} cand.{extra}"
        )


def rank(c: Candidates, config: FusionConfig) -> list[str]:
    """The dia ids hybrid search returns for ``c`` under ``config``."""
    n = config.candidates
    fused = fuse(
        c.text[:n],
        c.vector[:n],
        vector_weight=config.vector_weight,
        conversation_weight=config.conversation_weight,
        neighbour_weight=config.neighbour_weight,
        session_gap_us=config.session_gap_us,
        dates=c.dates,
        date_weight=config.date_weight,
        asks_time=c.asks_time,
        time_weight=config.time_weight,
        limit=SEARCH_LIMIT,
    )
    return [c.dia[h.message.id] for h in fused if h.message is not None]


def recall_at(question: Question, ranked: Sequence[str], k: int = 10) -> float:
    top = set(ranked[:k])
    return sum(e in top for e in question.evidence) / len(question.evidence)


@dataclass(slots=True)
class Table:
    """recall@10 of every question under every config and layout: ``[layout][config]`` ->
    array over the layout's questions; ``groups[layout]``: each question's conversation."""

    configs: list[FusionConfig]
    recall: dict[str, list[np.ndarray]] = field(default_factory=dict)
    groups: dict[str, np.ndarray] = field(default_factory=dict)


def score_table(runs: Iterable[LayoutRun], configs: Sequence[FusionConfig]) -> Table:
    table = Table(list(configs))
    for run in runs:
        key = run.layout.key
        table.groups[key] = np.array([c.sample for c in run.candidates])
        table.recall[key] = [
            np.array([recall_at(c.question, rank(c, cfg)) for c in run.candidates])
            for cfg in configs
        ]
    return table


@dataclass(slots=True)
class CVResult:
    """Leave-one-conversation-out figures of one family of configs."""

    in_sample: dict[str, float]  # layout -> recall@10 % of the config best on all conversations
    in_sample_config: FusionConfig
    cv: dict[str, float]  # layout -> held-out recall@10 %, questions pooled over folds
    fold_figures: dict[str, list[float]]  # layout -> held-out recall@10 % of each fold
    chosen: list[FusionConfig]  # the config chosen in each fold

    def spread(self, layout: str) -> float:
        figures = self.fold_figures[layout]
        return statistics.pstdev(figures) if len(figures) > 1 else 0.0


def cross_validate(
    table: Table, allowed: Callable[[FusionConfig], bool] = lambda c: True
) -> CVResult:
    """Choose constants on all conversations but one, measure on that one, for each one.

    The objective is recall@10 averaged over the layouts (every layout counts alike), so
    one set of constants must serve every layout, as the shipped defaults do.
    """
    layouts = list(table.recall)
    idx = [i for i, c in enumerate(table.configs) if allowed(c)]
    convs = sorted(set(np.concatenate(list(table.groups.values())).tolist()))

    def best(mask_of: Callable[[str], np.ndarray]) -> int:
        def objective(i: int) -> float:
            return statistics.fmean(
                float(table.recall[lay][i][mask_of(lay)].mean()) for lay in layouts
            )

        return max(idx, key=lambda i: (objective(i), -i))

    everything = best(lambda lay: np.ones_like(table.groups[lay], dtype=bool))
    in_sample = {lay: 100 * float(table.recall[lay][everything].mean()) for lay in layouts}
    held: dict[str, np.ndarray] = {lay: np.zeros(len(table.groups[lay])) for lay in layouts}
    folds: dict[str, list[float]] = {lay: [] for lay in layouts}
    chosen: list[FusionConfig] = []
    for conv in convs:
        i = best(lambda lay, conv=conv: table.groups[lay] != conv)
        chosen.append(table.configs[i])
        for lay in layouts:
            out = table.groups[lay] == conv
            held[lay][out] = table.recall[lay][i][out]
            folds[lay].append(100 * float(table.recall[lay][i][out].mean()))
    cv = {lay: 100 * float(held[lay].mean()) for lay in layouts}
    return CVResult(in_sample, table.configs[everything], cv, folds, chosen)


_GAP = 30 * 60_000_000


def config_grid(kind: str = "full") -> list[FusionConfig]:
    """The combinations of constants tried: ``"full"``, the first broad grid (without time
    evidence), or ``"refined"``, the grid around its choice that picked the shipped ones."""
    if kind == "full":
        return [
            FusionConfig(vw, cw, nw, gap, n, dw, 0.0)
            for vw in (0.3, 0.4, 0.5)
            for cw in (0.0, 0.2, 0.4)
            for nw in (0.0, 0.15, 0.3)
            for gap in ((None,) if cw == 0.0 else (None, _GAP))
            for n in (50, 80, 200)
            for dw in (0.0, 0.2)
        ]
    if kind == "refined":
        weights = [
            FusionConfig(0.4, cw, nw, _GAP, 200, dw, 0.0)
            for cw in (0.6, 0.8)
            for nw in (0.3, 0.45)
            for dw in (0.4, 0.5, 0.6, 0.8)
        ]
        timed = [
            FusionConfig(0.4, 0.6, 0.3, _GAP, 200, dw, tw)
            for dw in (0.6, 0.8, 1.0, 1.2)
            for tw in (0.0, 0.2, 0.3, 0.4)
        ]
        return list({c.label: c for c in weights + timed}.values())
    raise ValueError(f"unknown grid {kind!r}: expected 'full' or 'refined'")


GRIDS = ("full", "refined")


def save_candidates(runs: Sequence[LayoutRun], path: Path) -> None:
    """Keep the candidates for re-tuning later (pickle, next to the embedding cache)."""
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(runs))


def load_candidates(path: Path, samples: Sequence[Sample]) -> list[LayoutRun]:
    import pickle

    runs: list[LayoutRun] = pickle.loads(path.read_bytes())  # our own cache file
    prepare(runs, samples)
    return runs


def summary(run: LayoutRun) -> dict[str, Any]:
    return {
        "url": run.url,
        "layout": run.layout.name,
        "messages": run.messages,
        "modes": {m: s.summary() for m, s in run.scores.items()},
    }


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2)


# ====================================================================== the whole matrix


def ablation_rows(
    runs: Sequence[LayoutRun], chosen: FusionConfig
) -> list[tuple[str, FusionConfig]]:
    """The chosen constants, and each component of hybrid ranking switched off in turn."""
    del runs
    return [
        ("hybrid, chosen constants", chosen),
        ("  without vectors (keyword side only)", replace(chosen, vector_weight=0.0)),
        ("  without keywords (vector side only)", replace(chosen, vector_weight=1.0)),
        ("  without episode evidence", replace(chosen, conversation_weight=0.0)),
        ("  episodes = whole conversations (no time gap)", replace(chosen, session_gap_us=None)),
        ("  without neighbour evidence", replace(chosen, neighbour_weight=0.0)),
        ("  without the query's dates", replace(chosen, date_weight=0.0)),
        ("  without time evidence", replace(chosen, time_weight=0.0)),
        ("  50 candidates a side", replace(chosen, candidates=50)),
        ("  200 candidates a side", replace(chosen, candidates=200)),
        (
            "previous default (0.4, 0.3, no gap, no neighbours, 80)",
            FusionConfig(0.4, 0.3, 0.0, None, 80, 0.0, 0.0),
        ),
        (
            "previous default (0.4, 0.6, 0.3, 30 min, dates 0.4, no time evidence)",
            FusionConfig(0.4, 0.6, 0.3, _GAP, 200, 0.4, 0.0),
        ),
    ]


CV_FAMILIES: dict[str, Callable[[FusionConfig], bool]] = {
    "every constant tuned": lambda c: True,
    "without episode evidence (w_conv = 0)": lambda c: c.conversation_weight == 0.0,
    "episodes = whole conversations (no gap)": lambda c: c.session_gap_us is None,
    "without neighbour evidence (w_nb = 0)": lambda c: c.neighbour_weight == 0.0,
    "previous components (no gap, no neighbours)": lambda c: (
        c.session_gap_us is None and c.neighbour_weight == 0.0
    ),
    "without time evidence (w_time = 0)": lambda c: c.time_weight == 0.0,
}


def run_matrix(
    urls: Sequence[str],
    samples: Sequence[Sample],
    modes: Sequence[str],
    console: Any,
    tune: bool = True,
    cache: Path | None = None,
    layouts: Sequence[Layout] = LAYOUTS,
    grid_kind: str = "full",
) -> dict[str, Any]:
    """Every layout on every URL; then constants cross-validated on the last URL's candidates.

    ``cache``: where the candidates are kept; when it exists and ``urls`` is empty, the
    tuning runs on it without storing anything.
    """
    import asyncio

    from rich.table import Table as RichTable

    model = CachedModel()
    runs: list[LayoutRun] = []
    out: dict[str, Any] = {"layouts": []}
    for url in urls:
        for layout in layouts:
            with console.status(f"{url}: {layout.name} ..."):
                run = asyncio.run(run_layout(url, samples, layout, model, modes))
            runs.append(run)
            out["layouts"].append(summary(run))
    if runs:
        table = RichTable(title="LoCoMo dev, recall@10 % per question / evidence turns found @10 %")
        table.add_column("layout", no_wrap=True)
        table.add_column("backend", overflow="fold")
        for m in modes:
            table.add_column(m, justify="right")
        table.add_column("hybrid p50 ms", justify="right")
        for run in runs:
            table.add_row(
                run.layout.name,
                run.url,
                *(f"{run.scores[m].mean(10):.1f} / {run.scores[m].share(10):.1f}" for m in modes),
                f"{run.scores['hybrid'].percentile_ms(0.5):.2f}" if "hybrid" in run.scores else "-",
            )
        console.print(table)
        console.print(f"embedding: {model.computed} texts embedded, the rest from {model.path}")
    tuned_url = urls[-1] if urls else "cache"
    if runs and cache is not None:
        save_candidates([r for r in runs if r.url == tuned_url], cache)
    if not tune:
        return out
    if not runs and cache is not None:
        runs = load_candidates(cache, samples)
        tuned_url = runs[0].url
    tuning = [r for r in runs if r.url == tuned_url]
    prepare(tuning, samples)
    grid = config_grid(grid_kind)
    with console.status(f"ranking {len(grid)} configs x {len(tuning)} layouts ..."):
        started = time.perf_counter()
        scored = score_table(tuning, grid)
        seconds = time.perf_counter() - started
    console.print(f"{len(grid)} configs scored in {seconds:.0f} s from cached candidates")
    out["tuning"] = {
        "url": tuned_url,
        "grid": grid_kind,
        "configs": len(grid),
        "seconds": round(seconds, 1),
    }
    cv_table = RichTable(title=f"Leave-one-conversation-out, recall@10 % ({tuned_url})")
    cv_table.add_column("constants", no_wrap=True)
    cv_table.add_column("layout", no_wrap=True)
    cv_table.add_column("in-sample", justify="right")
    cv_table.add_column("CV", justify="right")
    cv_table.add_column("fold sd", justify="right")
    cv_table.add_column("folds", no_wrap=True)
    out["cv"] = {}
    results: dict[str, CVResult] = {}
    for family, allowed in CV_FAMILIES.items():
        if not any(allowed(c) for c in grid):
            continue  # the grid holds no config of this family
        result = cross_validate(scored, allowed)
        results[family] = result
        out["cv"][family] = {
            "in_sample_config": result.in_sample_config.label,
            "chosen_per_fold": [c.label for c in result.chosen],
            "layouts": {
                run.layout.name: {
                    "in_sample": round(result.in_sample[run.layout.key], 2),
                    "cv": round(result.cv[run.layout.key], 2),
                    "fold_sd": round(result.spread(run.layout.key), 2),
                    "folds": [round(f, 1) for f in result.fold_figures[run.layout.key]],
                }
                for run in tuning
            },
        }
        for run in tuning:
            key = run.layout.key
            cv_table.add_row(
                family,
                run.layout.name,
                f"{result.in_sample[key]:.1f}",
                f"{result.cv[key]:.1f}",
                f"{result.spread(key):.1f}",
                " ".join(f"{f:.0f}" for f in result.fold_figures[key]),
            )
        console.print(f"{family}: in-sample choice {result.in_sample_config.label}")
        for conv, cfg in enumerate(result.chosen):
            console.print(f"   fold {conv}: {cfg.label}")
    console.print(cv_table)
    chosen = results["every constant tuned"].in_sample_config
    realistic = next(r for r in tuning if r.layout == REALISTIC)
    ab = RichTable(title=f"Ablation under the realistic layout ({REALISTIC.name}), in-sample")
    ab.add_column("variant", no_wrap=True)
    for k in (5, 10, 20):
        ab.add_column(f"R@{k}", justify="right")
    ab.add_column("found@10", justify="right")
    for c in CATEGORIES:
        ab.add_column(f"c{c}@10", justify="right")
    out["ablation"] = []
    for name, cfg in ablation_rows(tuning, chosen):
        s = Scores()
        for cand in realistic.candidates:
            s.add(cand.question, rank(cand, cfg), None)
        ab.add_row(
            name,
            *(f"{s.mean(k):.1f}" for k in (5, 10, 20)),
            f"{s.share(10):.1f}",
            *(f"{s.mean(10, c):.1f}" for c in CATEGORIES),
        )
        out["ablation"].append({"variant": name, "config": cfg.label, **s.summary()})
    console.print(ab)
    return out
