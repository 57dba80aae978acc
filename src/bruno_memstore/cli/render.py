"""Rich renderables for what the command prints: statistics, search results, memories, demo."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bruno_core.models.memory import MemoryEntry
from bruno_core.models.message import Message
from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ..demo import DemoReport
from ..models import SearchResult
from ..transfer import TransferCounts

__all__ = [
    "backends_table",
    "counts_table",
    "demo_renderables",
    "human_bytes",
    "memories_table",
    "messages_table",
    "search_table",
    "stats_table",
    "transfer_progress",
]

_ROLE_STYLE = {"user": "cyan", "assistant": "green", "system": "magenta"}


_PLURAL = {
    "conversation": "conversations",
    "session": "sessions",
    "message": "messages",
    "memory": "memories",
}


def _title(title: str | None) -> Text | None:
    # Plain text: a query or URL in a title must not be read as rich markup.
    return Text(title, style="bold") if title else None


def stats_table(stats: dict[str, Any], title: str | None = None) -> Table:
    """``get_statistics`` or ``store_statistics`` as a two-column table."""
    table = Table(title=_title(title), box=box.SIMPLE_HEAD, show_header=False)
    table.add_column("statistic", style="bold")
    table.add_column("value")
    for key, value in stats.items():
        if isinstance(value, dict):
            shown = ", ".join(f"{k}: {_figure(k, v)}" for k, v in value.items()) or "-"
        else:
            shown = _figure(key, value)
        table.add_row(key.replace("_", " "), shown)
    return table


def backends_table(figures: dict[str, dict[str, Any]], source: str) -> Table:
    """Per-backend figures read from a Prometheus endpoint (``stats --metrics``)."""
    table = Table(title=_title(source), box=box.SIMPLE_HEAD)
    for name in ("backend", "operations", "errors", "cache hit rate", "storage", "records"):
        table.add_column(name, justify="left" if name in ("backend", "records") else "right")
    for backend, f in figures.items():
        records = f.get("records", {})
        table.add_row(
            backend,
            str(f.get("operations", 0)),
            str(f.get("errors", 0)),
            _figure("hit_rate", f.get("cache_hit_rate")),
            _figure("storage_bytes", f.get("storage_bytes")),
            ", ".join(f"{k}: {v}" for k, v in records.items()) or "-",
        )
    return table


def _figure(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "storage_bytes":
        return human_bytes(int(value))
    if key.endswith("rate"):
        return f"{value:.1%}"
    return str(value)


def human_bytes(n: int) -> str:
    """``163840`` as ``160.0 KiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def search_table(results: Sequence[SearchResult], title: str | None = None) -> Table:
    """Ranked search results: rank, score, kind, where the record lives, its text."""
    table = Table(title=_title(title), box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("score", justify="right")
    table.add_column("kind")
    table.add_column("from", style="dim")
    table.add_column("content", ratio=1)
    for rank, result in enumerate(results, start=1):
        if result.message is not None:
            msg = result.message
            source = f"{msg.role.value} in {msg.conversation_id}"
        else:
            assert result.memory is not None
            entry = result.memory
            source = f"{entry.memory_type.value}/{entry.metadata.category or '-'}"
        kind_style = "yellow" if result.kind == "memory" else "blue"
        table.add_row(
            str(rank),
            f"{result.score:.2f}",
            Text(result.kind, style=kind_style),
            source,
            result.content,
        )
    if not results:
        table.add_row("", "", "", "", Text("no match", style="dim"))
    return table


def memories_table(entries: Sequence[MemoryEntry], title: str | None = None) -> Table:
    """Memory entries: type, category, tags, importance, expiry, content."""
    table = Table(title=_title(title), box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("type")
    table.add_column("category")
    table.add_column("tags", style="dim")
    table.add_column("imp.", justify="right")
    table.add_column("expires", style="dim")
    table.add_column("content", ratio=1)
    for entry in entries:
        meta = entry.metadata
        expires = "-"
        if entry.expires_at is not None:
            expires = (
                "expired" if entry.is_expired() else entry.expires_at.isoformat(" ", "minutes")
            )
        table.add_row(
            entry.memory_type.value,
            meta.category or "-",
            ", ".join(meta.tags) or "-",
            f"{meta.importance:.1f}",
            expires,
            entry.content,
        )
    if not entries:
        table.add_row("", "", "", "", "", Text("nothing", style="dim"))
    return table


def messages_table(messages: Sequence[Message], title: str | None = None) -> Table:
    """Messages in the order given: position, role, text."""
    table = Table(title=_title(title), box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("role")
    table.add_column("content", ratio=1)
    for i, msg in enumerate(messages, start=1):
        role = msg.role.value
        table.add_row(str(i), Text(role, style=_ROLE_STYLE.get(role, "")), msg.content)
    return table


def counts_table(counts: TransferCounts, verb: str) -> Table:
    """How many records of each kind a transfer moved."""
    table = Table(box=box.SIMPLE_HEAD, show_header=True)
    table.add_column("record")
    table.add_column(verb, justify="right")
    for name in ("conversations", "sessions", "messages", "memories"):
        table.add_row(name, str(getattr(counts, name)))
    if counts.existing_messages:
        table.add_row(Text("  already stored", style="dim"), str(counts.existing_messages))
    return table


_MODE_TITLES = {
    "hybrid": "hybrid: BM25 and embedding similarity fused",
    "keyword": "BM25, best = 1.00",
    "vector": "embedding similarity",
}


def plural(kind: str) -> str:
    """``"memory"`` -> ``"memories"``: the plural of a record kind."""
    return _PLURAL.get(kind, kind)


@contextmanager
def transfer_progress(
    console: Console, label: str, total: int | None = None
) -> Iterator[Callable[[str, int], None]]:
    """A progress bar on ``console`` (when it is a terminal), driven as a transfer callback."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[kind]}", style="dim"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task(label, total=total, kind="")

        def advance(kind: str, n: int) -> None:
            progress.update(task, advance=n, kind=_PLURAL.get(kind, kind))

        yield advance


def demo_renderables(report: DemoReport, where: str, reopened: dict[str, Any] | None) -> list[Any]:
    """Everything ``bruno-memstore demo`` prints, in order."""
    turns = sum(len(s.turns) for s in report.sessions)
    intro = Text.assemble(
        ("BaseAssistant", "bold"),
        " from bruno-core with a scripted offline LLM, on ",
        (where, "bold"),
        f"\nUser {report.user_id!r} plans a trip to Japan over {len(report.sessions)} sessions "
        f"({turns} turns, {report.llm_calls} LLM calls).",
    )
    out: list[Any] = [Panel(intro, title="bruno-memstore demo", border_style="blue")]

    sessions = Table(box=box.SIMPLE_HEAD, title="Sessions", title_justify="left")
    sessions.add_column("day")
    sessions.add_column("conversation", no_wrap=True)
    sessions.add_column("topic", ratio=1)
    sessions.add_column("turns", justify="right")
    sessions.add_column("facts kept", justify="right")
    for s in report.sessions:
        sessions.add_row(s.day, s.conversation_id, s.topic, str(len(s.turns)), str(len(s.facts)))
    out.append(sessions)

    out.append(
        Panel(
            messages_table(report.last_context),
            title="What the assistant saw for the last turn (oldest first)",
            subtitle="the system note was recalled from memory entries with importance >= 0.8",
            border_style="green",
        )
    )

    out.append(
        Panel(
            Group(*(search_table(res, title=f"search: {q!r}") for q, res in report.searches)),
            title="Ranked search over messages and memory entries "
            f"({_MODE_TITLES.get(report.search_mode, report.search_mode)})",
            border_style="yellow",
        )
    )

    expiry = Text(
        f"{report.all_memories} entries stored, {report.visible_memories} visible: expired "
        f"entries are hidden unless include_expired=True; purge_expired() then deleted "
        f"{report.purged}.",
        style="dim",
    )
    out.append(
        Panel(
            Group(
                memories_table(report.stored, title="Stored with store_memory()"),
                *(memories_table(entries, title=label) for label, entries in report.recalls),
                expiry,
            ),
            title="Memory entries",
            border_style="magenta",
        )
    )

    out.append(
        Panel(
            stats_table(report.statistics),
            title=f"get_statistics({report.user_id!r})",
            border_style="cyan",
        )
    )
    if reopened is None:
        closing = f"{where} is not durable: nothing survives the process."
    else:
        closing = (
            f"Reopened {where}: {reopened['total_messages']} messages, "
            f"{reopened['memories']} memory entries and {reopened['conversations']} "
            "conversations are on disk."
        )
    out.append(Text(f"{closing} The demo took {report.seconds * 1000:.0f} ms.", style="bold"))
    return out
