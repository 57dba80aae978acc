"""``bruno-memstore``: demo, inspect, search, export/import/copy, retention, GDPR access and
erasure.

Every command takes the store as a URL (``--url``/``-u``, or ``BRUNO_MEMSTORE_URL``).
Results go to stdout; progress, summaries and errors go to stderr, so ``export -o -`` pipes
clean JSON Lines. Errors print one line and exit with status 1; URLs are always redacted.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn, TypeVar
from urllib.parse import quote

import structlog
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import __version__
from ..base import MemoryBackend
from ..capabilities import REQUIRED, Capability
from ..erasure_log import ERASURE_LOG_ENV
from ..errors import MemstoreError, MissingDependencyError
from ..registry import extra_of, known_schemes, open_memory, resolve
from ..transfer import TransferCounts, copy, export_jsonl, import_jsonl
from ..url import redact_url
from ..user_export import is_user_package, package_lines, write_package
from . import render, scrape

__all__ = ["app"]

T = TypeVar("T")

DEFAULT_URL = "sqlite:///bruno_memory.db"
URL_ENV = "BRUNO_MEMSTORE_URL"

app = typer.Typer(
    name="bruno-memstore",
    help="Memory stores for bruno-core assistants: demo, inspect, search, move and erase data.",
    no_args_is_help=True,
    add_completion=False,
    # Locals may hold connection URLs with passwords: never print them in a traceback.
    pretty_exceptions_show_locals=False,
)
out = Console()
err = Console(stderr=True)

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        "-u",
        envvar=URL_ENV,
        help="Memory URL, e.g. sqlite:///memory.db, postgresql://user@host/db, redis://host.",
    ),
]
UserOption = Annotated[str, typer.Option("--user", help="The user whose data to use.")]


# ==================================================================== plumbing


class _Failure(Exception):
    """An expected failure: print the message, exit 1."""


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body; turn known errors into one line on stderr and exit 1."""
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except (MemstoreError, _Failure, OSError, ImportError) as exc:
        # OSError: a file that cannot be opened; ImportError: a backend that cannot load.
        _fail(str(exc))


def _say(console: Console, message: str) -> None:
    """Print a plain line: user ids and URLs are not markup, and the line is not broken."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with status 1."""
    err.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@asynccontextmanager
async def _opened(url: str, **options: Any) -> AsyncIterator[MemoryBackend]:
    memory = open_memory(url, **options)
    try:
        yield memory
    finally:
        await memory.shutdown()


def _where(url: str) -> str:
    return redact_url(url)


def _quiet_framework_logs(verbose: bool) -> None:
    # bruno-core logs every message at INFO through structlog's default stdout printer,
    # which would drown the output (and corrupt `export -o -`). Keep warnings, on stderr.
    level = logging.DEBUG if verbose else logging.WARNING
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _version(value: bool) -> None:
    if value:
        out.print(f"bruno-memstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show bruno-core's log lines (on stderr).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Memory stores for bruno-core assistants."""
    _quiet_framework_logs(verbose)


# ==================================================================== demo


@app.command()
def demo(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db", help="SQLite file to keep the demo in (default: a temporary file, removed)."
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", "-u", help="Run on this memory URL instead of a SQLite file."),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Erase the demo user's earlier demo data first.")
    ] = False,
) -> None:
    """Run bruno-core's BaseAssistant over a scripted three-day conversation and show the memory.

    Offline and deterministic: the LLM is scripted. By default the store is a fresh SQLite
    file, the embedded default backend.
    """
    from ..demo import DEMO_USER, run_demo

    if db is not None and url is not None:
        raise typer.BadParameter("give --db or --url, not both")

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="bruno-memstore-demo-") as tmp:
            target = url or _sqlite_url(db if db is not None else Path(tmp) / "demo.db")
            where = _where(target)
            async with _opened(target) as memory:
                if await _has_user_data(memory, DEMO_USER):
                    if not reset:
                        raise _Failure(
                            f"{where} already holds data for user {DEMO_USER!r}; use a new "
                            "file, or --reset to erase that user's data first"
                        )
                    await memory.forget_user(DEMO_USER)
                report = await run_demo(memory)
            reopened = None
            if memory.supports(Capability.DURABLE):
                # A fresh handle on the same store: what was acknowledged is really there.
                async with _opened(target) as again:
                    reopened = await again.get_statistics(DEMO_USER)
            for part in render.demo_renderables(report, where, reopened):
                out.print(part)
            if db is None and url is None:
                out.print("[dim]The temporary SQLite file was removed; pass --db to keep it.[/]")

    _run(main)


def _sqlite_url(path: Path) -> str:
    # sqlite:/// + an absolute path gives four slashes, as SQLAlchemy spells it; '#', '?'
    # and '%' in the path are escaped (a '#' would otherwise be refused).
    return f"sqlite:///{quote(str(path.resolve()), safe='/:')}"


async def _has_user_data(memory: MemoryBackend, user_id: str) -> bool:
    stats = await memory.get_statistics(user_id)
    return bool(stats["total_messages"] or stats["sessions"] or stats["memories"])


# ==================================================================== inspect


@app.command()
def stats(
    user: Annotated[
        str | None,
        typer.Option("--user", help="One user's counts; without it, the whole store's."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            help="Instead, read a running application's Prometheus endpoint "
            "(http://host:port/metrics): operations, errors, cache hit rate and storage "
            "per backend.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Counts for one user, or for the whole store with its storage use (and, for a hybrid
    store, its cache tier's)."""
    if metrics is not None:
        try:
            figures = scrape.backend_figures(scrape.read_endpoint(metrics))
        except (OSError, ValueError) as exc:
            _fail(f"cannot read metrics from {redact_url(metrics)}: {exc}")
        if as_json:
            typer.echo(json.dumps(figures, indent=2))
        elif not figures:
            _say(out, f"{redact_url(metrics)} serves no bruno-memstore metrics")
        else:
            out.print(render.backends_table(figures, redact_url(metrics)))
        return

    async def main() -> dict[str, Any]:
        async with _opened(url) as memory:
            if user is None:
                return await memory.store_statistics()
            return await memory.get_statistics(user)

    result = _run(main)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        title = Text.assemble((user, "bold"), " @ ") if user else Text("store @ ")
        out.print(Text.assemble(title, _where(url)), highlight=False)
        out.print(render.stats_table(result))


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for (words, any order).")],
    user: UserOption,
    url: UrlOption = DEFAULT_URL,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 10,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind", "-k", help="Only 'message' or 'memory' results (repeatable; default both)."
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            "-m",
            help="'keyword', 'vector' or 'hybrid' (default: the store's best: hybrid where it "
            "keeps vectors).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Relevance-ranked search of one user's messages and memory entries."""
    if mode not in (None, "keyword", "vector", "hybrid"):
        raise typer.BadParameter(
            f"{mode!r}: expected keyword, vector or hybrid", param_hint="--mode"
        )
    kinds = tuple(kind) if kind else ("message", "memory")
    for k in kinds:
        if k not in ("message", "memory"):
            raise typer.BadParameter(f"{k!r}: expected 'message' or 'memory'", param_hint="--kind")

    async def main() -> None:
        async with _opened(url) as memory:
            results = await memory.search(user, query, limit=limit, kinds=kinds, mode=mode)  # type: ignore[arg-type]
        if as_json:
            rows = [_result_json(r) for r in results]
            typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        else:
            out.print(render.search_table(results, title=f"{query!r} for {user!r}"))

    _run(main)


def _result_json(result: Any) -> dict[str, Any]:
    item = result.message if result.message is not None else result.memory
    return {
        "kind": result.kind,
        "score": round(result.score, 6),
        "record": json.loads(item.model_dump_json()),
    }


# ==================================================================== transfer


@app.command("export")
def export_(
    url: UrlOption = DEFAULT_URL,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's data (default: everyone's).")
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="File to write, or '-' for stdout.")
    ] = "-",
) -> None:
    """Write the store (or one user's data) as JSON Lines."""

    def export_to(fp: IO[str]) -> TransferCounts:
        async def main() -> TransferCounts:
            async with _opened(url) as memory:
                with render.transfer_progress(err, "exporting") as progress:
                    return await export_jsonl(memory, fp, user, progress)

        return _run(main)

    if output == "-":
        with _utf8(sys.stdout) as stream:
            counts = export_to(stream)
    else:
        path = Path(output)
        partial = path.with_name(path.name + ".partial")
        try:
            with _open_or_exit(partial, "w") as fp:
                counts = export_to(fp)
            # Whole or nothing: the file appears only once every record is written.
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    target = "stdout" if output == "-" else output
    _say(err, f"Exported {counts.total} records from {_where(url)} to {target}")
    err.print(render.counts_table(counts, "exported"))


@app.command("import")
def import_(
    file: Annotated[str, typer.Argument(help="A JSON Lines export, or '-' for stdin.")],
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Load a JSON Lines export, or an export-user document (idempotent: importing twice
    stores one copy)."""

    def import_from(fp: IO[str], total: int | None) -> TransferCounts:
        async def main() -> TransferCounts:
            async with _opened(url) as memory:
                with render.transfer_progress(err, "importing", total) as progress:
                    return await import_jsonl(memory, fp, progress)

        return _run(main)

    if file == "-":
        with _utf8(sys.stdin) as stream:
            counts = import_from(stream, None)
    else:
        with _open_or_exit(Path(file), "r") as fp:
            package = _user_package(fp)
            if package is not None:
                lines = io.StringIO("".join(package_lines(package)))
                counts = import_from(lines, len(package["records"]))
            else:
                records = max(sum(1 for line in fp if line.strip()) - 1, 0)  # minus the header
                fp.seek(0)
                counts = import_from(fp, records)
    _say(err, f"Imported {counts.total} records into {_where(url)}")
    err.print(render.counts_table(counts, "imported"))


def _user_package(fp: IO[str]) -> dict[str, Any] | None:
    """The ``export-user`` document ``fp`` holds, or ``None`` for a JSON Lines export (``fp``
    is then back at its start)."""
    first = fp.readline()
    fp.seek(0)
    try:
        value = json.loads(first)
    except json.JSONDecodeError:
        pass
    else:  # a whole JSON value on the first line: a compact document, or JSON Lines
        return value if is_user_package(value) else None
    try:
        document = json.load(fp)
    except json.JSONDecodeError:
        document = None
    if is_user_package(document):
        return document  # type: ignore[return-value]
    fp.seek(0)
    return None


@contextmanager
def _utf8(stream: IO[str]) -> Iterator[IO[str]]:
    """``stream`` as UTF-8 text with ``\\n`` line ends, whatever the locale says."""
    raw = getattr(stream, "buffer", None)
    if raw is None:
        yield stream
        return
    stream.flush()
    wrapper = io.TextIOWrapper(raw, encoding="utf-8", newline="\n", write_through=True)
    try:
        yield wrapper
    finally:
        wrapper.flush()
        wrapper.detach()  # the standard stream keeps its buffer


def _open_or_exit(path: Path, mode: str) -> IO[str]:
    try:
        return path.open(mode, encoding="utf-8", newline="\n" if "w" in mode else None)
    except OSError as exc:
        _fail(str(exc))


@app.command("copy")
def copy_(
    src_url: Annotated[str, typer.Argument(metavar="SRC_URL", help="Memory URL to read.")],
    dst_url: Annotated[str, typer.Argument(metavar="DST_URL", help="Memory URL to write.")],
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's data (default: everyone's).")
    ] = None,
) -> None:
    """Copy everything (or one user's data) from one store to another, any two backends."""
    if src_url == dst_url:
        raise typer.BadParameter("SRC_URL and DST_URL are the same store")

    async def main() -> TransferCounts:
        async with _opened(src_url) as src, _opened(dst_url) as dst:
            with render.transfer_progress(err, "copying") as progress:
                return await copy(src, dst, user, progress)

    counts = _run(main)
    _say(out, f"Copied {counts.total} records from {_where(src_url)} to {_where(dst_url)}")
    out.print(render.counts_table(counts, "copied"))


# ==================================================================== retention and erasure


@app.command()
def expire(url: UrlOption = DEFAULT_URL) -> None:
    """Delete what has expired: messages, conversations and sessions past their TTL, and
    memory entries past their expiry time."""

    async def main() -> dict[str, int]:
        async with _opened(url) as memory:
            return await memory.sweep()

    counts = _run(main)
    total = counts["messages"] + counts["memories"]
    detail = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    _say(out, f"Deleted {total} expired records from {_where(url)}: {detail}")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(text: str | None, option: str) -> float | None:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h``, ``30d`` or ``2w``."""
    if text is None:
        return None
    value = text.strip().lower()
    scale = _DURATION_UNITS.get(value[-1:])
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise typer.BadParameter(
            f"expected a duration such as 30d or 12h, got {text!r}", param_hint=option
        ) from None
    if not seconds > 0:
        raise typer.BadParameter("must be positive", param_hint=option)
    return seconds


@app.command()
def retention(
    url: UrlOption = DEFAULT_URL,
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", help="Keep the newest N messages of each conversation."),
    ] = None,
    max_message_age: Annotated[
        str | None,
        typer.Option("--max-message-age", help="Delete messages older than this (30d, 12h, ...)."),
    ] = None,
    max_conversation_age: Annotated[
        str | None,
        typer.Option(
            "--max-conversation-age",
            help="Delete conversations whose newest message is older than this.",
        ),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's data.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would go; delete nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Apply a retention policy: keep the last N messages, drop old messages or conversations.

    Without rules on the command line, the store's own policy (``?retention_keep_last=...``
    on its URL) is applied.
    """
    rules: dict[str, Any] = {
        "keep_last": keep_last,
        "max_message_age": _duration(max_message_age, "--max-message-age"),
        "max_conversation_age": _duration(max_conversation_age, "--max-conversation-age"),
    }
    given = {k: v for k, v in rules.items() if v is not None}

    async def main() -> dict[str, Any]:
        async with _opened(url) as memory:
            return await memory.apply_retention(given or None, dry_run=dry_run, user_id=user)

    report = _run(main)
    if as_json:
        out.print_json(json.dumps(report))
        return
    totals = report["totals"]
    verb = "Would delete" if dry_run else "Deleted"
    _say(
        out,
        f"{verb} {totals['messages']} messages ({totals['conversations']} whole conversations) "
        f"from {_where(url)}",
    )
    for uid, tally in sorted(report["users"].items()):
        out.print(f"  {uid}: {tally['messages']} messages, {tally['conversations']} conversations")


@app.command("archive")
def archive_(
    url: UrlOption = DEFAULT_URL,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's conversations.")
    ] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="Archive this conversation (needs --user).")
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Archive conversations idle this long (30d, 12h, ...)."),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Move the archived records to this store URL.")
    ] = None,
) -> None:
    """Archive conversations: out of context windows and default search, kept and listed."""
    if (conversation is None) == (older_than is None):
        raise typer.BadParameter("give --conversation (with --user) or --older-than")
    if conversation is not None and user is None:
        raise typer.BadParameter("--conversation needs --user")
    age = _duration(older_than, "--older-than")

    async def main() -> int:
        async with _opened(url) as memory:
            if conversation is not None:
                assert user is not None
                done = await memory.archive_conversation(user, conversation, target=target)
                return int(done)
            if target is not None:
                raise typer.BadParameter("--target moves one --conversation at a time")
            return await memory.archive(user, older_than=age)

    count = _run(main)
    _say(out, f"Archived {count} conversations in {_where(url)}")


@app.command()
def restore(
    url: UrlOption = DEFAULT_URL,
    user: Annotated[str, typer.Option("--user", help="The conversation's owner.")] = "",
    conversation: Annotated[str, typer.Option("--conversation", help="The conversation.")] = "",
    source: Annotated[
        str | None, typer.Option("--source", help="The store URL it was moved to.")
    ] = None,
) -> None:
    """Bring an archived conversation back."""
    if not user or not conversation:
        raise typer.BadParameter("--user and --conversation are required")

    async def main() -> bool:
        async with _opened(url) as memory:
            return await memory.restore_conversation(user, conversation, source=source)

    done = _run(main)
    verb = "Restored" if done else "Nothing to restore:"
    _say(out, f"{verb} conversation {conversation!r} of {user!r} in {_where(url)}")


ErasureLogOption = Annotated[
    str | None,
    typer.Option(
        "--erasure-log",
        envvar=ERASURE_LOG_ENV,
        help="Append a record of the erasure (user id, time, counts; never content) to this "
        "JSON Lines file.",
    ),
]


@app.command("forget-user")
def forget_user(
    user_arg: Annotated[
        str | None, typer.Argument(metavar="[USER]", help="The user to erase (or --user).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    user: Annotated[str | None, typer.Option("--user", help="The user to erase.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    log: ErasureLogOption = None,
) -> None:
    """Erase every message, conversation, session and memory entry of a user.

    With --erasure-log (or the store's own ?erasure_log= option) the erasure is recorded for
    audits: who, when, how many records; never what they held.
    """
    if user is not None and user_arg is not None and user != user_arg:
        raise typer.BadParameter("give the user once: as USER or as --user")
    who = user if user is not None else user_arg
    if who is None:
        raise typer.BadParameter("name the user to erase: --user ID", param_hint="--user")
    if not yes:
        if not sys.stdin.isatty():
            # Piped input is not a person answering: a stray 'y' must not erase a user.
            _fail("forget-user asks for confirmation on a terminal; without one, pass --yes")
        typer.confirm(
            f"Erase everything stored for user {who!r} in {_where(url)}? This cannot be undone",
            abort=True,
            err=True,
        )

    async def main() -> tuple[dict[str, int], str | None]:
        options = {} if log is None else {"erasure_log": log}
        async with _opened(url, **options) as memory:
            counts = await memory.forget_user(who)
            return counts, None if memory.erasure_log is None else repr(memory.erasure_log)

    counts, logged = _run(main)
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    _say(out, f"Erased user {who!r} from {_where(url)}: {summary}")
    if logged is not None:
        _say(err, f"Recorded in {logged}")


@app.command("export-user")
def export_user(
    user: UserOption,
    url: UrlOption = DEFAULT_URL,
    output: Annotated[
        str, typer.Option("--out", "-o", help="File to write, or '-' for stdout.")
    ] = "-",
) -> None:
    """Write every record of one user as one JSON document (a data-subject access request).

    The document (docs/lifecycle.md) holds the user's conversations, sessions, messages and
    memory entries; `bruno-memstore import` reads it back into any store.
    """

    async def main() -> dict[str, Any]:
        async with _opened(url) as memory:
            return await memory.export_user(user)

    package = _run(main)
    if output == "-":
        with _utf8(sys.stdout) as stream:
            write_package(package, stream)
    else:
        path = Path(output)
        partial = path.with_name(path.name + ".partial")
        try:
            with _open_or_exit(partial, "w") as fp:
                write_package(package, fp)
            os.replace(partial, path)  # whole or nothing
        finally:
            partial.unlink(missing_ok=True)
    counts = ", ".join(f"{n} {kind}" for kind, n in package["counts"].items())
    target = "stdout" if output == "-" else output
    _say(err, f"Exported user {user!r} from {_where(url)} to {target}: {counts}")


@app.command()
def compact(url: UrlOption = DEFAULT_URL) -> None:
    """Erase what deleted records left in the engine's files, and reclaim their space.

    PostgreSQL and MariaDB/MySQL rewrite the store's tables (writes to a table wait while it
    is rewritten); see docs/backends for what each engine keeps until then.
    """

    async def main() -> None:
        async with _opened(url) as memory:
            await memory.compact()

    _run(main)
    _say(out, f"Compacted {_where(url)}")


# ==================================================================== schema and backends


@app.command()
def reindex(
    url: UrlOption = DEFAULT_URL,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Embedding model: 'default' (all-MiniLM-L6-v2 int8 ONNX), 'minilm' "
            "(sentence-transformers; the embeddings extra), 'minilm-onnx', 'static', or a model "
            "name.",
        ),
    ] = "default",
) -> None:
    """Re-embed every message and memory entry with MODEL; it becomes the store's model.

    Run it after changing the embedding model (the store refuses vector work until then),
    or to embed records stored while no model was configured. Stop writers first.
    """

    async def main() -> dict[str, int]:
        async with _opened(url, embedding_model=model) as memory:
            with render.transfer_progress(err, "Re-embedding") as advance:
                counts = await memory.reindex(progress=advance)
            space = memory.vector_space
            return {**counts, "_space": space}  # type: ignore[dict-item]

    counts = _run(main)
    space = counts.pop("_space")
    summary = ", ".join(f"{n} {render.plural(kind)}" for kind, n in counts.items())
    _say(out, f"Re-embedded {summary} in {_where(url)} with {space.model} ({space.dimension}-d)")


@app.command()
def migrate(url: UrlOption = DEFAULT_URL) -> None:
    """Create or upgrade the store's schema (opening a store does this), and report it.

    A Redis store whose keys are in key layout 1 has them renamed first: stop every process
    using the store before.
    """

    async def main() -> tuple[str, Any]:
        async with _opened(url) as memory:
            move_keys = getattr(memory, "migrate_key_layout", None)
            if move_keys is not None:
                moved = await move_keys()
                if moved:
                    _say(err, f"Moved {moved} keys to Redis key layout 2")
            await memory.initialize()
            version = getattr(memory, "schema_version", None)
            if callable(version):
                version = version()
                if asyncio.iscoroutine(version):
                    version = await version
            return type(memory).__name__, version

    name, version = _run(main)
    detail = f"schema version {version}" if version is not None else "no versioned schema"
    _say(out, f"{name} at {_where(url)} is ready ({detail})")


@app.command()
def backends() -> None:
    """List the URL schemes this installation knows, with their extra and whether usable."""
    table = Table(title="Memory URL schemes", title_justify="left")
    table.add_column("scheme")
    table.add_column("class")
    table.add_column("extra")
    table.add_column("installed")
    table.add_column("promises", style="dim")
    for scheme in known_schemes():
        extra = extra_of(scheme)
        try:
            cls = resolve(scheme)
        except MissingDependencyError as exc:
            if exc.package.startswith("bruno_memstore"):
                status = Text("no: not in this version", style="red")
            else:
                status = Text(f"no: pip install 'bruno-memstore[{exc.extra}]'", style="red")
            table.add_row(scheme, "", exc.extra, status, "")
            continue
        except ImportError as exc:
            mine = isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith(
                "bruno_memstore"
            )
            status = "no: not in this version" if mine else f"no: {exc}"
            table.add_row(scheme, "", extra or "-", Text(status, style="red"), "")
            continue
        promises = sorted(c.value for c in getattr(cls, "capabilities", ()) if c not in REQUIRED)
        table.add_row(
            scheme,
            cls.__name__,
            extra or "-",
            Text("yes", style="green"),
            ", ".join(promises),
        )
    out.print(table)
