"""Search quality on LoCoMo: how often ``search_messages`` finds the turns that answer a question.

LoCoMo (Maharana et al., ACL 2024) holds long two-person conversations, many sessions each,
and questions whose ``evidence`` names the turns holding the answer. For each conversation
this benchmark opens a fresh memory, stores every turn as a bruno-core ``Message`` of one user
(one conversation per session), then asks each question of categories 1-4 through
``search_messages(question, user_id=..., limit=20)`` and measures:

* evidence recall@k (k = 5, 10, 20): the fraction of the question's evidence turns found in
  the top k, averaged over questions (a question with three evidence turns, two found,
  counts 2/3);
* query latency (p50, p95) of ``search_messages``.

``--matrix`` measures every mode under every storage layout and cross-validates the
constants of hybrid ranking (:mod:`benchmarks.locomo_layouts`).

``--ablation`` also measures what each step of the shared text analysis
(:mod:`bruno_memstore.search`) contributes, by ranking the same messages with
:class:`~bruno_memstore.search.BM25Index` exactly as ``memory://`` does.

Run ``python -m benchmarks.locomo --help``. The data is not part of this repository: get
``data/locomo10.zip`` from the LoCoMo authors' repository and pass the JSON with ``--data``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from bruno_core.models.message import Message, MessageRole
from rich.console import Console
from rich.table import Table

from bruno_memstore import open_memory
from bruno_memstore.errors import MemstoreError, MissingDependencyError
from bruno_memstore.models import to_us
from bruno_memstore.ranking import (
    DEFAULT_CONVERSATION_WEIGHT,
    DEFAULT_VECTOR_WEIGHT,
    candidate_count,
)
from bruno_memstore.search import DEFAULT_ANALYZER, Analyzer, BM25Index, date_words

__all__ = [
    "CATEGORIES",
    "BackendReport",
    "ContentOptions",
    "Question",
    "Sample",
    "Scores",
    "Turn",
    "Variant",
    "ablation_variants",
    "answerable",
    "app",
    "build_sessions",
    "clean_evidence",
    "load_samples",
    "message_content",
    "message_id",
    "parse_session_date",
    "run_ablation",
    "run_backend",
    "vocabulary_gap",
]

KS = (5, 10, 20)
SEARCH_LIMIT = 20
TURN_SPACING = timedelta(seconds=5)
# The released data numbers categories this way (category 5, adversarial, has no answer).
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo_dev.json"
_NAMESPACE = uuid.UUID("6f1c52a4-6f53-4a55-9d8e-3c1f0f3b8a11")
_SESSION_KEY = re.compile(r"session_(\d+)")
_EVIDENCE = re.compile(r"D:?(\d+):(\d+)")

# Piped output (CI logs, files) gets room for the tables instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


# ====================================================================== data


@dataclass(frozen=True, slots=True)
class Turn:
    """One utterance of a LoCoMo conversation."""

    dia_id: str
    speaker: str
    text: str
    caption: str | None
    session: int
    when: datetime


@dataclass(frozen=True, slots=True)
class Question:
    """A question and the turns that answer it."""

    text: str
    category: int
    evidence: tuple[str, ...]


@dataclass(slots=True)
class Sample:
    """One LoCoMo conversation: its turns in order and its questions."""

    index: int
    speaker_a: str
    speaker_b: str
    turns: list[Turn]
    questions: list[Question]
    dropped_evidence: int = 0  # evidence ids naming no turn of the conversation


def parse_session_date(text: str) -> datetime:
    """``"9:15 am on 3 March, 2021"`` -> ``datetime(2021, 3, 3, 9, 15)``."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")


def clean_evidence(items: Iterable[str]) -> list[str]:
    """Normalise evidence ids: split ``"D3:4; D5:1"``, repair ``"D:7:2"``, drop ``"D"``."""
    out: list[str] = []
    for item in items:
        for piece in re.split(r"[;,\s]+", str(item)):
            match = _EVIDENCE.fullmatch(piece)
            if match:
                out.append(f"D{match.group(1)}:{match.group(2)}")
    return list(dict.fromkeys(out))


def load_samples(path: Path) -> list[Sample]:
    """Read LoCoMo JSON (a list of samples, each either flat or under ``"conversation"``)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    samples: list[Sample] = []
    for index, item in enumerate(raw):
        conv = item.get("conversation", item)
        sessions = sorted(
            (int(m.group(1)), key)
            for key in conv
            if (m := _SESSION_KEY.fullmatch(key)) and isinstance(conv[key], list)
        )
        turns: list[Turn] = []
        for number, key in sessions:
            start = parse_session_date(conv[f"{key}_date_time"])
            for pos, t in enumerate(conv[key]):
                turns.append(
                    Turn(
                        dia_id=t["dia_id"],
                        speaker=t["speaker"],
                        text=t["text"],
                        caption=t.get("blip_caption") or None,
                        session=number,
                        when=start + pos * TURN_SPACING,
                    )
                )
        known = {t.dia_id for t in turns}
        questions: list[Question] = []
        dropped = 0
        for qa in item["qa"]:
            evidence = clean_evidence(qa.get("evidence", []))
            kept = tuple(e for e in evidence if e in known)
            dropped += len(evidence) - len(kept)
            questions.append(Question(qa["question"], int(qa["category"]), kept))
        samples.append(
            Sample(index, conv["speaker_a"], conv["speaker_b"], turns, questions, dropped)
        )
    return samples


@dataclass(frozen=True, slots=True)
class ContentOptions:
    """How a turn becomes message content."""

    speaker: bool = True  # "Maya: ..." as a chat transcript line
    caption: bool = True  # the shared photo's caption, "[image: ...]"
    date: bool = False  # prototype: the session date in words


def message_content(turn: Turn, options: ContentOptions) -> str:
    """The text stored for a turn."""
    text = f"{turn.speaker}: {turn.text}" if options.speaker else turn.text
    if options.caption and turn.caption:
        text = f"{text} [image: {turn.caption}]"
    if options.date:
        text = f"{text}\n{date_words(turn.when)}"
    return text


def message_id(prefix: str, turn: Turn) -> uuid.UUID:
    """The id of a turn's message: the same for the same prefix, new for a new prefix."""
    return uuid.uuid5(_NAMESPACE, f"{prefix}/{turn.dia_id}")


def build_sessions(
    sample: Sample, options: ContentOptions, prefix: str, *, per_session: bool = True
) -> list[tuple[str, list[Message]]]:
    """The sample's messages, grouped by conversation id.

    ``per_session``: each session its own conversation (``{prefix}-session-{n}``), or the
    whole history one conversation (``{prefix}-all``). ``parent_id`` links each turn to the
    one before it in its conversation (across sessions in the second case). ``prefix``
    starts every conversation id and seeds the message ids, so that runs sharing a store
    never collide.
    """
    grouped: dict[str, list[Message]] = {}
    previous: dict[str, uuid.UUID] = {}
    for turn in sample.turns:
        conv = f"{prefix}-session-{turn.session}" if per_session else f"{prefix}-all"
        role = MessageRole.USER if turn.speaker == sample.speaker_a else MessageRole.ASSISTANT
        metadata: dict[str, Any] = {"dia_id": turn.dia_id, "speaker": turn.speaker}
        if turn.caption:
            metadata["image_caption"] = turn.caption
        msg = Message(
            id=message_id(prefix, turn),
            role=role,
            content=message_content(turn, options),
            timestamp=turn.when,
            metadata=metadata,
            parent_id=previous.get(conv),
            conversation_id=conv,
        )
        previous[conv] = msg.id
        grouped.setdefault(conv, []).append(msg)
    return list(grouped.items())


# ====================================================================== scoring


@dataclass(slots=True)
class Scores:
    """Per-question recall and latency, aggregated on demand."""

    recall: dict[int, list[tuple[int, float]]] = field(
        default_factory=lambda: {k: [] for k in KS}
    )  # k -> [(category, recall)]
    latencies: list[float] = field(default_factory=list)
    skipped: int = 0  # questions without usable evidence
    found: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KS, 0))
    evidence: int = 0  # evidence turns over all questions

    def add(self, question: Question, ranked: Sequence[str], seconds: float | None) -> None:
        self.evidence += len(question.evidence)
        for k in KS:
            top = set(ranked[:k])
            found = sum(e in top for e in question.evidence)
            self.found[k] += found
            self.recall[k].append((question.category, found / len(question.evidence)))
        if seconds is not None:
            self.latencies.append(seconds)

    def mean(self, k: int, category: int | None = None) -> float:
        values = [r for c, r in self.recall[k] if category is None or c == category]
        return 100.0 * statistics.fmean(values) if values else float("nan")

    def share(self, k: int) -> float:
        """Evidence turns found in the top ``k``, % of all evidence turns (not per question)."""
        return 100.0 * self.found[k] / self.evidence if self.evidence else float("nan")

    def count(self, category: int | None = None) -> int:
        return sum(1 for c, _ in self.recall[KS[0]] if category is None or c == category)

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def summary(self) -> dict[str, Any]:
        return {
            "questions": self.count(),
            "skipped_without_evidence": self.skipped,
            "recall": {
                str(k): {
                    "all": round(self.mean(k), 2),
                    **{str(c): round(self.mean(k, c), 2) for c in CATEGORIES},
                }
                for k in KS
            },
            "evidence_found": {str(k): round(self.share(k), 2) for k in KS},
            "evidence_turns": self.evidence,
            "per_category_questions": {str(c): self.count(c) for c in CATEGORIES},
            "latency_ms": {
                "p50": round(self.percentile_ms(0.50), 3),
                "p95": round(self.percentile_ms(0.95), 3),
            }
            if self.latencies
            else None,
        }


def answerable(sample: Sample, scores: Scores | None = None) -> list[Question]:
    """The sample's questions of categories 1-4 that name at least one turn (the others of
    categories 1-4 are counted in ``scores.skipped``)."""
    out: list[Question] = []
    for q in sample.questions:
        if q.category not in CATEGORIES:
            continue
        if not q.evidence:
            if scores is not None:
                scores.skipped += 1
            continue
        out.append(q)
    return out


# ====================================================================== backends


@dataclass(slots=True)
class BackendReport:
    """What one backend scored in one search mode."""

    url: str
    scores: Scores
    mode: str = "default"
    messages: int = 0
    ingest_seconds: float = 0.0
    embed_latencies: list[float] = field(default_factory=list)  # one question, uncached

    @property
    def label(self) -> str:
        return f"{self.url} [{self.mode}]"

    def embed_p50_ms(self) -> float:
        if not self.embed_latencies:
            return float("nan")
        return 1000.0 * statistics.median(self.embed_latencies)

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "mode": self.mode,
            "messages": self.messages,
            "ingest_messages_per_second": round(self.messages / self.ingest_seconds, 1)
            if self.ingest_seconds
            else None,
            "query_embedding_p50_ms": round(self.embed_p50_ms(), 3)
            if self.embed_latencies
            else None,
            **self.scores.summary(),
        }


MODES = ("keyword", "vector", "hybrid")


async def run_backend(
    url: str,
    samples: Sequence[Sample],
    options: ContentOptions,
    progress: Callable[[str], None] | None = None,
    repeat: int = 1,
    modes: Sequence[str] = MODES,
) -> list[BackendReport]:
    """Store each sample in a fresh memory from ``url`` and ask its questions in each mode.

    ``{n}`` in the URL is replaced by the sample's number, giving each conversation its own
    store; without it, one store is shared and each sample gets its own user (removed with
    ``forget_user`` afterwards, where the backend supports it). With ``repeat`` > 1 every
    question is asked that many times, for steadier latency figures. Modes the backend cannot
    serve (vector modes without vectors) are left out. Query latency excludes embedding the
    question, which is timed on its own (``embed_latencies``).
    """
    reports: dict[str, BackendReport] = {}
    run = uuid.uuid4().hex[:8]
    messages = 0
    ingest = 0.0
    embed_latencies: list[float] = []
    for sample in samples:
        memory = open_memory(url.replace("{n}", str(sample.index)))
        user = f"locomo-{run}-{sample.index}"
        try:
            await memory.initialize()
            usable = [m for m in modes if m == "keyword" or memory.embedder is not None]
            for m in usable:
                reports.setdefault(m, BackendReport(url, Scores(), m))
            started = time.perf_counter()
            for conversation_id, msgs in build_sessions(sample, options, user):
                await memory.store_messages(msgs, conversation_id=conversation_id, user_id=user)
                messages += len(msgs)
            ingest += time.perf_counter() - started
            questions = answerable(sample)
            if memory.embedder is not None:
                for question in questions:  # embedded once here, then served from the cache
                    t0 = time.perf_counter()
                    await memory.embedder.embed_one(question.text)
                    embed_latencies.append(time.perf_counter() - t0)
            for mode in usable:
                report = reports[mode]
                report.scores.skipped += len(sample.questions) - len(questions)
                for round_ in range(repeat):
                    for question in questions:
                        t0 = time.perf_counter()
                        found = await memory.search(
                            user,
                            question.text,
                            limit=SEARCH_LIMIT,
                            kinds=("message",),
                            mode=mode,  # type: ignore[arg-type]
                        )
                        elapsed = time.perf_counter() - t0
                        if round_:
                            report.scores.latencies.append(elapsed)
                            continue
                        ranked = [str(r.message.metadata.get("dia_id")) for r in found if r.message]
                        report.scores.add(question, ranked, elapsed)
        finally:
            # Leave a shared store as it was, also after a failure (best effort: backends
            # without listing cannot forget, and an engine that failed may fail again).
            with contextlib.suppress(MemstoreError):
                await memory.forget_user(user)
            await memory.shutdown()
        if progress is not None:
            progress(f"{url}: conversation {sample.index} done")
    for report in reports.values():
        report.messages, report.ingest_seconds = messages, ingest
        report.embed_latencies = embed_latencies if report.mode != "keyword" else []
    return list(reports.values())


# ====================================================================== ablation


@dataclass(frozen=True, slots=True)
class Variant:
    """One ablation row: an analysis, index parameters and content options."""

    name: str
    analyzer: Analyzer = DEFAULT_ANALYZER
    content: ContentOptions = ContentOptions()
    dated: bool = False  # index the date in words alongside the content (the proposal)
    k1: float = 1.2
    b: float = 0.75


def ablation_variants() -> list[Variant]:
    """The previous analysis, each step added in turn, each step removed, and extras."""
    off = {
        "contractions": False,
        "base_forms": False,
        "numbers": False,
        "fold_diacritics": False,
        "cjk_bigrams": False,
    }
    steps = ["contractions", "base_forms", "numbers", "fold_diacritics"]
    variants = [Variant("previous analysis", Analyzer(**off))]
    on: dict[str, bool] = dict(off)
    for step in steps:
        on[step] = True
        variants.append(Variant(f"+ {step.replace('_', ' ')}", Analyzer(**on)))
    full = DEFAULT_ANALYZER
    variants += [
        Variant("full analysis (default)", full),
        Variant("full - stemming", Analyzer(stemmer=None)),
        Variant("full - stop words", Analyzer(stop_words=())),
        Variant("full - contractions", Analyzer(contractions=False)),
        Variant("full - base forms", Analyzer(base_forms=False)),
        Variant("full - numbers", Analyzer(numbers=False)),
        Variant("full, Porter stemmer", Analyzer(stemmer="porter")),
        Variant("full + date words (proposal)", full, dated=True),
        Variant("content: no speaker name", full, ContentOptions(speaker=False)),
        Variant("content: no image caption", full, ContentOptions(caption=False)),
        Variant("full, BM25 b=0.5", full, b=0.5),
        Variant("full, BM25 k1=0.9", full, k1=0.9),
    ]
    return variants


def run_ablation(samples: Sequence[Sample], variant: Variant) -> Scores:
    """Rank every question with ``BM25Index`` exactly as ``memory://`` does."""
    scores = Scores()
    for sample in samples:
        index = BM25Index(variant.k1, variant.b, analyzer=variant.analyzer)
        order: dict[str, int] = {}
        for turn in sample.turns:
            index.add(
                turn.dia_id,
                message_content(turn, variant.content),
                when=turn.when if variant.dated else None,
            )
            # Score ties break newest first, as in every backend (turn times are distinct).
            order[turn.dia_id] = -to_us(turn.when)
        for question in answerable(sample, scores):
            found = index.search(question.text)
            ranked = sorted(found, key=lambda d, f=found: (-f[d], order[d]))
            scores.add(question, ranked[:SEARCH_LIMIT], None)
    return scores


@dataclass(frozen=True, slots=True)
class FusionVariant:
    """One row of the fusion ablation: how keyword and vector candidates are combined."""

    name: str
    method: str = "fuse"  # "fuse" (bruno_memstore.ranking.fuse), "rrf", "keyword", "vector"
    vector_weight: float = DEFAULT_VECTOR_WEIGHT
    conversation_weight: float = DEFAULT_CONVERSATION_WEIGHT
    candidates: int = candidate_count(SEARCH_LIMIT)
    dated: bool = False


def fusion_variants() -> list[FusionVariant]:
    """The shipped fusion, each of its parts removed, its neighbours, and what lost."""
    return [
        FusionVariant("keyword only (BM25)", "keyword"),
        FusionVariant("vector only (MiniLM int8)", "vector"),
        FusionVariant("reciprocal-rank fusion, k = 60", "rrf"),
        FusionVariant("weighted mean, no conversation evidence", conversation_weight=0.0),
        FusionVariant("shipped: weighted mean + conversation evidence"),
        FusionVariant("  vector weight 0.3", vector_weight=0.3),
        FusionVariant("  vector weight 0.5", vector_weight=0.5),
        FusionVariant("  conversation weight 0.2", conversation_weight=0.2),
        FusionVariant("  conversation weight 0.4", conversation_weight=0.4),
        FusionVariant("  30 candidates a side", candidates=30),
        FusionVariant("  200 candidates a side", candidates=200),
        FusionVariant("shipped + the date in words indexed", dated=True),
    ]


def run_fusion_ablation(samples: Sequence[Sample], variants: Sequence[FusionVariant]) -> list:
    """Rank every question with ``BM25Index`` and exact cosine, fused per variant.

    Vectors come from the default local model (all-MiniLM-L6-v2, int8 ONNX).
    """
    from bruno_memstore.embeddings.local import default_embedder
    from bruno_memstore.models import MessageRecord, SearchHit
    from bruno_memstore.ranking import fuse

    model = default_embedder()
    per_variant = [Scores() for _ in variants]
    options = ContentOptions()
    for sample in samples:
        texts = [message_content(t, options) for t in sample.turns]
        turn_vecs = model.embed_batch(texts)
        questions = answerable(sample)
        question_vecs = model.embed_batch([q.text for q in questions])
        records = {
            t.dia_id: MessageRecord(
                t.dia_id, f"session-{t.session}", "user", "", "text", "", to_us(t.when), "{}"
            )
            for t in sample.turns
        }
        indexes = {}
        for dated in {v.dated for v in variants}:
            index = BM25Index()
            for turn, text in zip(sample.turns, texts, strict=True):
                index.add(turn.dia_id, text, when=turn.when if dated else None)
            indexes[dated] = index
        for question, qvec in zip(questions, question_vecs, strict=True):
            cosines = turn_vecs @ qvec
            by_vector = sorted(range(len(texts)), key=lambda i: (-cosines[i], -i))
            for variant, scores in zip(variants, per_variant, strict=True):
                bm25 = indexes[variant.dated].search(question.text)
                by_text = sorted(bm25, key=lambda d: (-bm25[d], -records[d].ts_us))
                n = variant.candidates
                if variant.method == "keyword":
                    ranked = by_text
                elif variant.method == "vector":
                    ranked = [sample.turns[i].dia_id for i in by_vector]
                elif variant.method == "rrf":
                    rrf: dict[str, float] = {}
                    for ids in (by_text[:n], [sample.turns[i].dia_id for i in by_vector[:n]]):
                        for rank, dia in enumerate(ids):
                            rrf[dia] = rrf.get(dia, 0.0) + 1.0 / (60 + rank)
                    ranked = sorted(rrf, key=lambda d: -rrf[d])
                else:
                    text_hits = [SearchHit("message", bm25[d], records[d]) for d in by_text[:n]]
                    vector_hits = [
                        SearchHit("message", float(cosines[i]), records[sample.turns[i].dia_id])
                        for i in by_vector[:n]
                    ]
                    fused = fuse(
                        text_hits,
                        vector_hits,
                        vector_weight=variant.vector_weight,
                        conversation_weight=variant.conversation_weight,
                        limit=SEARCH_LIMIT,
                    )
                    ranked = [h.message.id for h in fused if h.message is not None]
                scores.add(question, ranked[:SEARCH_LIMIT], None)
    return list(zip(variants, per_variant, strict=True))


def vocabulary_gap(samples: Sequence[Sample], k: int = 10) -> tuple[int, int]:
    """Of the evidence turns the default analysis misses in the top ``k``: how many, and how
    many share no term with the question other than the speakers' names (out of reach of
    any keyword search)."""
    options = ContentOptions()
    missed = unreachable = 0
    for sample in samples:
        index = BM25Index()
        texts: dict[str, list[str]] = {}
        order: dict[str, int] = {}
        for turn in sample.turns:
            content = message_content(turn, options)
            index.add(turn.dia_id, content)
            texts[turn.dia_id] = DEFAULT_ANALYZER.terms(content)
            order[turn.dia_id] = -to_us(turn.when)
        names = set(DEFAULT_ANALYZER.terms(f"{sample.speaker_a} {sample.speaker_b}"))
        for question in answerable(sample):
            found = index.search(question.text)
            top = set(sorted(found, key=lambda d, f=found: (-f[d], order[d]))[:k])
            asked = set(DEFAULT_ANALYZER.terms(question.text)) - names
            for dia_id in question.evidence:
                if dia_id not in top:
                    missed += 1
                    unreachable += not asked & set(texts[dia_id])
    return missed, unreachable


# ====================================================================== output


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def backend_table(report: BackendReport) -> Table:
    s = report.scores
    table = Table(
        title=f"{report.label}  (p50 {s.percentile_ms(0.5):.2f} ms, "
        f"p95 {s.percentile_ms(0.95):.2f} ms)"
    )
    table.add_column("questions")
    table.add_column("n", justify="right")
    for k in KS:
        table.add_column(f"recall@{k} %", justify="right")
    table.add_row("all (1-4)", str(s.count()), *(_fmt(s.mean(k)) for k in KS), style="bold")
    for c, name in CATEGORIES.items():
        table.add_row(f"{c} {name}", str(s.count(c)), *(_fmt(s.mean(k, c)) for k in KS))
    return table


def summary_table(reports: Sequence[BackendReport]) -> Table:
    table = Table(title="LoCoMo evidence recall, categories 1-4")
    table.add_column("backend", overflow="fold")
    table.add_column("mode")
    for k in KS:
        table.add_column(f"R@{k} %", justify="right")
    table.add_column("query p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    table.add_column("embed p50 ms", justify="right")
    table.add_column("ingest msg/s", justify="right")
    for r in reports:
        s = r.scores
        rate = r.messages / r.ingest_seconds if r.ingest_seconds else float("nan")
        table.add_row(
            r.url,
            r.mode,
            *(_fmt(s.mean(k)) for k in KS),
            f"{s.percentile_ms(0.5):.2f}",
            f"{s.percentile_ms(0.95):.2f}",
            _fmt(r.embed_p50_ms()),
            f"{rate:,.0f}",
        )
    return table


def ablation_table(
    rows: Sequence[tuple[Any, Scores]],
    title: str = "Analysis ablation (BM25Index, ranked as memory://)",
) -> Table:
    table = Table(title=title)
    table.add_column("variant", no_wrap=True)
    for k in KS:
        table.add_column(f"R@{k} %", justify="right")
    for c in CATEGORIES:
        table.add_column(f"R@10 c{c}", justify="right")
    for variant, s in rows:
        table.add_row(
            variant.name, *(_fmt(s.mean(k)) for k in KS), *(_fmt(s.mean(10, c)) for c in CATEGORIES)
        )
    return table


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
    }


# ====================================================================== command


@app.command()
def main(
    url: Annotated[
        list[str] | None,
        typer.Option(
            "--url",
            "-u",
            help="Memory URL to measure (repeatable; '{n}' becomes the conversation number). "
            "Default: memory:// and a fresh SQLite file per conversation in a temporary folder.",
        ),
    ] = None,
    data: Annotated[
        Path,
        typer.Option(envvar="LOCOMO_DATA", help="LoCoMo JSON (a list of samples)."),
    ] = _DEFAULT_DATA,
    quick: Annotated[bool, typer.Option(help="Only the first conversation.")] = False,
    repeat: Annotated[
        int, typer.Option(min=1, help="Ask every question this many times (latency samples).")
    ] = 1,
    speaker: Annotated[
        bool, typer.Option(help="Store turns as 'Speaker: text' transcript lines.")
    ] = True,
    captions: Annotated[
        bool, typer.Option(help="Append the caption of a shared photo to its turn.")
    ] = True,
    dates: Annotated[
        bool, typer.Option(help="Prototype: append the session date in words to each turn.")
    ] = False,
    ablation: Annotated[
        bool, typer.Option(help="Also measure each step of the text analysis.")
    ] = False,
    fusion_ablation: Annotated[
        bool, typer.Option(help="Also measure the parts of hybrid ranking and what lost.")
    ] = False,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode", "-m", help="Search mode to measure (repeatable; default: all three)."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every figure to this JSON file.")
    ] = None,
    matrix: Annotated[
        bool,
        typer.Option(
            help="Measure every layout (store each / one store, sessions / one conversation, "
            "captions / none) on each URL, then cross-validate the ranking constants."
        ),
    ] = False,
    tune: Annotated[
        bool, typer.Option(help="With --matrix: cross-validate the constants (last URL).")
    ] = True,
    realistic_only: Annotated[
        bool,
        typer.Option(
            help="With --matrix: only the realistic layout (one store, one "
            "conversation per user, no captions)."
        ),
    ] = False,
    candidates_cache: Annotated[
        Path | None,
        typer.Option(help="With --matrix: keep the candidates here; with no --url, tune from it."),
    ] = None,
    grid: Annotated[
        str,
        typer.Option(help="With --matrix: the constants tried, 'full' or 'refined'."),
    ] = "full",
) -> None:
    """Evidence recall@5/10/20 and query latency of search on LoCoMo, per search mode."""
    if not data.is_file():
        raise typer.BadParameter(f"no LoCoMo file at {data}; pass --data", param_hint="--data")
    samples = load_samples(data)
    if quick:
        samples = samples[:1]
    options = ContentOptions(speaker=speaker, caption=captions, date=dates)
    modes = tuple(mode) if mode else MODES
    for m in modes:
        if m not in MODES:
            raise typer.BadParameter(f"{m!r}: expected one of {', '.join(MODES)}", "--mode")
    if matrix:
        from .locomo_layouts import GRIDS, LAYOUTS, REALISTIC, run_matrix

        if grid not in GRIDS:
            raise typer.BadParameter(f"{grid!r}: expected one of {', '.join(GRIDS)}", "--grid")

        tmp = Path(tempfile.mkdtemp(prefix="locomo-"))
        try:
            if url is None and candidates_cache is not None and candidates_cache.is_file():
                urls: list[str] = []
            else:
                urls = url or ["memory://", f"sqlite:///{tmp}/locomo-{{n}}.db"]
            layouts = (REALISTIC,) if realistic_only else LAYOUTS
            figures = run_matrix(
                urls, samples, modes, console, tune, candidates_cache, layouts, grid
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if json_out is not None:
            figures["machine"] = machine()
            json_out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        return
    tmp = Path(tempfile.mkdtemp(prefix="locomo-"))
    urls = url or ["memory://", f"sqlite:///{tmp}/locomo-{{n}}.db"]
    result: dict[str, Any] = {
        "machine": machine(),
        "data": {
            "file": data.name,
            "conversations": len(samples),
            "turns": sum(len(s.turns) for s in samples),
            "dropped_evidence_ids": sum(s.dropped_evidence for s in samples),
        },
        "content": asdict(options),
        "repeat": repeat,
        "backends": [],
    }
    reports: list[BackendReport] = []
    try:
        for u in urls:
            try:
                with console.status(f"running {u} ..."):
                    done = asyncio.run(run_backend(u, samples, options, console.log, repeat, modes))
            except (MissingDependencyError, ModuleNotFoundError) as exc:
                console.print(f"[yellow]skipping {u}: {exc}[/yellow]")
                continue
            for report in done:
                reports.append(report)
                console.print(backend_table(report))
                result["backends"].append(report.summary())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if reports:
        console.print(summary_table(reports))
    if ablation:
        rows = []
        with console.status("ablation ..."):
            for variant in ablation_variants():
                rows.append((variant, run_ablation(samples, variant)))
        console.print(ablation_table(rows))
        result["ablation"] = [{"variant": v.name, **s.summary()} for v, s in rows]
        missed, unreachable = vocabulary_gap(samples)
        console.print(
            f"evidence turns missed in the top 10: {missed}; sharing no word with the "
            f"question but the speakers' names: {unreachable} ({100 * unreachable / missed:.0f}%)"
        )
        result["vocabulary_gap"] = {"missed_at_10": missed, "no_shared_term": unreachable}
    if fusion_ablation:
        with console.status("fusion ablation ..."):
            fusion_rows = run_fusion_ablation(samples, fusion_variants())
        console.print(ablation_table(fusion_rows, "Hybrid ranking ablation (memory:// ranking)"))
        result["fusion_ablation"] = [{"variant": v.name, **s.summary()} for v, s in fusion_rows]
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"figures written to {json_out}")


if __name__ == "__main__":
    # Run the imported module, not ``__main__``: pickled candidates (``--candidates-cache``)
    # then name ``benchmarks.locomo`` classes and load from anywhere.
    from benchmarks.locomo import app as imported_app

    imported_app()
