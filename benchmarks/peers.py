"""bruno-memstore beside its peers and the engines' minimal raw drivers, in one run.

Per engine (SQLite, PostgreSQL, Redis), on the same seeded chat data (``peer_systems.data``)
and one system after another, phase by phase:

* **store, one await per message**: messages/s into an empty store (time-capped; the rest
  is loaded untimed), with the client CPU per message;
* **store, 32 writers**: 32 tasks storing at once, each its own conversations in order;
* **last 20**: p50 of reading a random conversation's newest 20 messages, each result
  compared with the data;
* **search**: p50 of a one-word search of one user's messages (limit 10), each hit checked
  to hold the word and the count checked against the data.

Every store phase ends with the whole data set read back and compared. Systems: ours
(``SQLiteMemory`` / ``PostgresMemory`` / ``RedisMemory`` with ``embedding_model=None``),
bruno-memory 0.1.5, LangChain's chat histories, and the raw drivers (aiosqlite, asyncpg,
redis.asyncio). The peers' dependencies clash with ours, so each system runs in a worker
process (``peer_systems.worker``) started with the interpreter of its own virtualenv
(``scripts/bench-peers-setup.sh`` makes them); ours runs with this interpreter on the
checkout's ``src``. Each system has its own SQLite file, PostgreSQL database and Redis
database number (8 and up; the tests use the low ones).

Run ``python -m benchmarks.peers --help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from benchmarks.peer_systems.worker import PHASES, Params
from benchmarks.throughput import machine

ROOT = Path(__file__).resolve().parents[1]
VENVS = Path(os.environ.get("BRUNO_PEERS_VENVS", "/tmp/bruno-memstore-peers"))
ENGINES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "redis": "Redis"}
GROUPS = ("ours", "raw", "bruno-memory", "langchain")
PEERS = ("bruno-memory", "langchain")


@dataclass(frozen=True)
class System:
    """One measured system: a library on an engine, and the interpreter that runs it."""

    name: str
    engine: str  # a key of ENGINES
    group: str  # one of GROUPS
    adapter: str  # module:Class under benchmarks.peer_systems
    venv: str | None  # a virtualenv under VENVS; None: this interpreter, on the checkout
    redis_db: int | None = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")

    @property
    def python(self) -> str:
        return sys.executable if self.venv is None else str(VENVS / self.venv / "bin" / "python")


SYSTEMS = (
    System("bruno-memstore SQLiteMemory", "sqlite", "ours", "ours:OursSQLite", None),
    # bruno-memory commits in WAL mode with synchronous=NORMAL (no fsync per commit): this
    # row is ours at that same durability, for a like-for-like ratio.
    System(
        "bruno-memstore SQLiteMemory synchronous=normal",
        "sqlite",
        "ours",
        "ours:OursSQLiteNormal",
        None,
    ),
    System("raw aiosqlite", "sqlite", "raw", "raw:RawAiosqlite", "raw"),
    System("bruno-memory SQLite", "sqlite", "bruno-memory", "upstream:UpstreamSQLite", "upstream"),
    System(
        "LangChain SQLChatMessageHistory",
        "sqlite",
        "langchain",
        "langchain:LangChainSQLite",
        "langchain",
    ),
    System("bruno-memstore PostgresMemory", "postgres", "ours", "ours:OursPostgres", None),
    System("raw asyncpg", "postgres", "raw", "raw:RawAsyncpg", "raw"),
    System(
        "bruno-memory PostgreSQL",
        "postgres",
        "bruno-memory",
        "upstream:UpstreamPostgres",
        "upstream",
    ),
    System(
        "langchain-postgres PostgresChatMessageHistory",
        "postgres",
        "langchain",
        "langchain:LangChainPostgres",
        "langchain",
    ),
    System("bruno-memstore RedisMemory", "redis", "ours", "ours:OursRedis", None, 8),
    System("raw redis.asyncio", "redis", "raw", "raw:RawRedis", "raw", 9),
    System("bruno-memory Redis", "redis", "bruno-memory", "upstream:UpstreamRedis", "upstream", 10),
    System(
        "LangChain RedisChatMessageHistory",
        "redis",
        "langchain",
        "langchain:LangChainRedis",
        "langchain",
        11,
    ),
)


# ====================================================================== targets


@dataclass(frozen=True)
class Servers:
    """Where the engines are; every system gets its own database inside them."""

    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    redis: str = "redis://127.0.0.1:6379"
    data_dir: Path = VENVS / "data"

    def target(self, system: System) -> dict[str, Any]:
        if system.engine == "sqlite":
            return {"path": str(self.data_dir / f"{system.slug}.db")}
        if system.engine == "postgres":
            from urllib.parse import urlsplit

            url = urlsplit(self.postgres)
            database = f"peers_{system.slug}"
            return {
                "dsn": f"{self.postgres.rstrip('/')}/{database}",
                "host": url.hostname,
                "port": url.port or 5432,
                "user": url.username or "postgres",
                "password": url.password,
                "database": database,
            }
        from urllib.parse import urlsplit

        url = urlsplit(self.redis)
        return {
            "url": f"{self.redis.rstrip('/')}/{system.redis_db}",
            "host": url.hostname,
            "port": url.port or 6379,
            "db": system.redis_db,
        }

    async def create_databases(self, systems: Iterable[System]) -> None:
        """Make each PostgreSQL system's database if it is missing."""
        import asyncpg

        wanted = [self.target(s)["database"] for s in systems if s.engine == "postgres"]
        if not wanted:
            return
        conn = await asyncpg.connect(f"{self.postgres.rstrip('/')}/postgres")
        try:
            for name in wanted:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                    await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()


# ====================================================================== workers


class Worker:
    """A worker process measuring one system, spoken to one JSON line at a time."""

    def __init__(self, system: System, log_dir: Path) -> None:
        self.system = system
        self.failed: str | None = None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if system.venv is None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
            )
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = (log_dir / f"{system.slug}.log").open("w")
        self._proc = subprocess.Popen(
            [system.python, "-m", "benchmarks.peer_systems.worker"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )

    def call(self, cmd: dict[str, Any], timeout: float) -> Any:
        """Send ``cmd``; its result, or raise ``RuntimeError`` with the worker's error."""
        if self.failed:
            raise RuntimeError(self.failed)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps(cmd) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            self.failed = f"worker exited ({self._proc.wait()})"
            raise RuntimeError(self.failed) from None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            self.failed = f"no reply in {timeout:.0f} s"
            self._proc.kill()
            raise RuntimeError(self.failed)
        line = self._proc.stdout.readline()
        if not line:
            self.failed = f"worker exited ({self._proc.wait()}); see its log"
            raise RuntimeError(self.failed)
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def close(self) -> None:
        if not self.failed:
            with contextlib.suppress(RuntimeError):
                self.call({"cmd": "close"}, 60)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


# ====================================================================== the run


def run(
    systems: list[System],
    params: Params,
    servers: Servers,
    rounds: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Open every system, then run each phase on each system in turn, ``rounds`` times."""
    servers.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(servers.create_databases(systems))
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "uptime_start": _uptime(),
        "params": asdict(params),
        "rounds": rounds,
        "systems": {},
    }
    workers: dict[str, Worker] = {}
    for s in systems:
        entry: dict[str, Any] = {"engine": s.engine, "group": s.group, "runs": {}}
        out["systems"][s.name] = entry
        if not Path(s.python).exists():
            entry["error"] = f"no interpreter {s.python}: run scripts/bench-peers-setup.sh"
            log(f"skip {s.name}: {entry['error']}")
            continue
        worker = Worker(s, servers.data_dir / "logs")
        spec = {"adapter": s.adapter, "target": servers.target(s), "params": asdict(params)}
        try:
            entry["opened"] = worker.call({"cmd": "open", "spec": spec}, 300)
            workers[s.name] = worker
            log(f"opened {s.name}")
        except RuntimeError as e:
            entry["error"] = str(e)
            log(f"cannot open {s.name}: {e}")
            worker.close()
    prints = {e["opened"]["fingerprint"] for e in out["systems"].values() if "opened" in e}
    if len(prints) > 1:
        raise RuntimeError(f"the workers built different data sets: {prints}")
    out["fingerprint"] = prints.pop() if prints else None
    names = list(workers)
    for r in range(rounds):
        for phase in PHASES:
            order = names[r % len(names) :] + names[: r % len(names)] if names else []
            for name in order:
                t0 = time.perf_counter()
                try:
                    result = workers[name].call({"cmd": "measure", "phase": phase}, 900)
                except RuntimeError as e:
                    result = {"error": str(e)}
                result["load1"] = os.getloadavg()[0]
                out["systems"][name]["runs"].setdefault(phase, []).append(result)
                log(f"round {r + 1} {phase:<16} {time.perf_counter() - t0:6.1f} s  {name}")
    for worker in workers.values():
        worker.close()
    out["uptime_end"] = _uptime()
    return out


def _uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# ====================================================================== figures


def _median(values: Iterable[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(numbers) if numbers else None


@dataclass
class Figures:
    """One system's medians over the rounds, and whether its results were right."""

    store_one: float | None = None  # messages/s
    store_concurrent: float | None = None  # messages/s
    cpu_per_store: float | None = None  # client µs per message, one at a time
    read_p50: float | None = None  # µs
    search_p50: float | None = None  # µs
    store_ok: bool = False
    read_ok: bool = False
    search_ok: bool = False
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)  # min, max per metric
    store_note: str = ""
    read_note: str = ""
    search_note: str = ""

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Figures:
        f = cls()
        runs = entry.get("runs", {})
        stores = [x for p in ("store_one", "store_concurrent") for x in runs.get(p, [])]
        f.store_one = _median(x.get("rate") for x in runs.get("store_one", []))
        f.store_concurrent = _median(x.get("rate") for x in runs.get("store_concurrent", []))
        f.cpu_per_store = _median(x.get("client_cpu_us") for x in runs.get("store_one", []))
        for attr, phase, key in (
            ("store_one", "store_one", "rate"),
            ("store_concurrent", "store_concurrent", "rate"),
            ("cpu_per_store", "store_one", "client_cpu_us"),
            ("read_p50", "read_last", "p50_us"),
            ("search_p50", "search", "p50_us"),
        ):
            values = [x[key] for x in runs.get(phase, []) if isinstance(x.get(key), (int, float))]
            if len(values) > 1:
                f.spread[attr] = (min(values), max(values))
        bad = [x for x in stores if "error" in x or x.get("errors") or _wrong_back(x)]
        f.store_ok = bool(stores) and not bad
        f.store_note = _store_note(stores, bad)
        f.read_p50, f.read_ok, f.read_note = _calls(runs.get("read_last", []), "exact")
        f.search_p50, f.search_ok, f.search_note = _calls(runs.get("search", []), "ok")
        return f


def _wrong_back(x: dict[str, Any]) -> bool:
    back = x.get("read_back")
    if not back:
        return False
    count_wrong = back.get("count") is not None and back["count"] != back["expected"]
    return bool(back["conversations_wrong"]) or count_wrong


def _store_note(stores: list[dict[str, Any]], bad: list[dict[str, Any]]) -> str:
    if not stores:
        return "—"
    if not bad:
        backs = [x["read_back"] for x in stores if "read_back" in x]
        exact = sum(b["conversations_exact"] for b in backs)
        return f"{exact} conversations read back exact over {len(backs)} loads"
    x = bad[0]
    if "error" in x:
        return f"failed: {x['error'][:80]}"
    if x.get("errors"):
        return f"{x['errors']} store errors: {str(x.get('first_error'))[:80]}"
    back = x["read_back"]
    return (
        f"read back: {back['conversations_wrong']} conversations wrong, "
        f"{back.get('count')} of {back['expected']} messages"
    )


def _calls(results: list[dict[str, Any]], good: str) -> tuple[float | None, bool, str]:
    if not results:
        return None, False, "—"
    if any("skipped" in x for x in results):
        return None, False, results[0]["skipped"]
    failed = [x["error"] for x in results if "error" in x]
    if failed:
        return None, False, f"failed: {failed[0][:80]}"
    verdicts: dict[str, int] = {}
    for x in results:
        for k, v in x["verdicts"].items():
            verdicts[k] = verdicts.get(k, 0) + v
    total = sum(verdicts.values())
    note = f"{verdicts.get(good, 0)}/{total} {good}"
    note += "".join(f", {v} {k}" for k, v in verdicts.items() if k != good)
    scope = results[0].get("scope")
    if scope == "all":
        note += " (no user filter: whole store)"
    return _median(x["p50_us"] for x in results), verdicts.get(good, 0) == total, note


def _rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _us(v: float | None) -> str:
    return "—" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")


def _x(ours: float | None, other: float | None) -> str:
    if ours is None or not other:
        return "—"
    ratio = ours / other
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


METRICS: tuple[tuple[str, str, str, bool], ...] = (
    # (Figures attribute, heading, the check that must pass, higher is better)
    ("store_one", "store 1 by 1 msg/s", "store_ok", True),
    ("store_concurrent", "32 writers msg/s", "store_ok", True),
    ("read_p50", "last 20 p50 µs", "read_ok", False),
    ("search_p50", "search p50 µs", "search_ok", False),
    ("cpu_per_store", "CPU/store µs", "store_ok", False),
)
LATENCIES = ("read_p50", "search_p50", "cpu_per_store")


def _cell(f: Figures, attr: str, check: str) -> str:
    """The median, the range over the rounds in brackets, ✗ if the checks failed."""
    value = getattr(f, attr)
    show = _us if attr in LATENCIES else _rate
    text = show(value)
    if value is not None and attr in f.spread:
        low, high = f.spread[attr]
        text += f" ({show(low)}-{show(high)})"
    return text if value is None or getattr(f, check) else f"{text} ✗"


@dataclass
class EngineTable:
    """One engine's systems and ratios, and the checks behind them."""

    title: str
    rows: list[list[str]]  # system, one cell per metric
    ratios: list[list[str]]  # "ours ÷ ...", one ratio per metric
    checks: list[str]  # per system: what was checked and how it went
    best_peers: list[str]  # per metric: the peer the last ratio row divides by


def tables(result: dict[str, Any]) -> list[EngineTable]:
    """Per engine: the systems' figures, ours ÷ raw driver and ours ÷ fastest peer."""
    out = []
    systems = result["systems"]
    for engine, title in ENGINES.items():
        names = [n for n, e in systems.items() if e["engine"] == engine]
        if not names:
            continue
        names.sort(key=lambda n: GROUPS.index(systems[n]["group"]))
        figs = {n: Figures.of(systems[n]) for n in names}
        table = EngineTable(title, [], [], [], [])
        for n in names:
            e, f = systems[n], figs[n]
            if "error" in e:
                table.rows.append([n, *("—" for _ in METRICS)])
                table.checks.append(f"{n}: not run: {e['error'][:200]}")
                continue
            table.rows.append([n, *(_cell(f, m[0], m[2]) for m in METRICS)])
            notes = "".join(f"{x}; " for x in e["opened"]["notes"])
            table.checks.append(
                f"{n}: {notes}store: {f.store_note}; last 20: {f.read_note}; "
                f"search: {f.search_note}"
            )
        ran = [n for n in names if "error" not in systems[n]]
        ours_all = [n for n in ran if systems[n]["group"] == "ours"]
        raw = next((n for n in ran if systems[n]["group"] == "raw"), None)
        peers = [n for n in ran if systems[n]["group"] in PEERS]
        best = [_best(figs, peers, m) for m in METRICS] if peers else []
        for k, ours in enumerate(ours_all):
            # The first is the library's defaults ("ours"); a variant is named by its setting.
            label = "ours" if k == 0 else f"ours {ours.rsplit(' ', 1)[-1]}"
            if raw:
                table.ratios.append(
                    [
                        f"{label} ÷ raw driver",
                        *(_x(getattr(figs[ours], m[0]), getattr(figs[raw], m[0])) for m in METRICS),
                    ]
                )
            if peers:
                table.ratios.append(
                    [
                        f"{label} ÷ fastest peer",
                        *(
                            _x(getattr(figs[ours], m[0]), getattr(figs[b], m[0])) if b else "—"
                            for m, b in zip(METRICS, best, strict=True)
                        ),
                    ]
                )
        if best:
            table.best_peers = [b or "no peer with correct results" for b in best]
        out.append(table)
    return out


def _best(
    figs: dict[str, Figures], peers: list[str], metric: tuple[str, str, str, bool]
) -> str | None:
    """The peer with the best figure among those whose checks passed."""
    attr, _heading, check, higher = metric
    fit = [p for p in peers if getattr(figs[p], attr) is not None and getattr(figs[p], check)]
    if not fit:
        return None
    pick = max if higher else min
    return pick(fit, key=lambda p: getattr(figs[p], attr))


RATIO_NOTE = (
    "Figures are medians over the rounds, with the range in brackets. Ratios: ours ÷ other, "
    "of the medians. For msg/s above 1 means ours is faster; for µs below 1 means ours "
    "is faster (or cheaper). ✗ marks a figure whose checks failed; failed figures never count "
    "as the fastest peer."
)


def versions_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for name, e in result["systems"].items():
        v = (e.get("opened") or {}).get("versions")
        if v:
            lines.append(f"{name}: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The tables as Markdown, with the checks, the load and the versions."""
    lines = []
    for t in tables(result):
        lines += [f"#### {t.title}", "", "| system | " + " | ".join(m[1] for m in METRICS) + " |"]
        lines.append("|" + "|".join(["---", *("---:" for _ in METRICS)]) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in t.rows]
        lines += ["| **" + row[0] + "** | " + " | ".join(row[1:]) + " |" for row in t.ratios]
        lines.append("")
        if t.best_peers:
            picks = "; ".join(f"{m[1]}: {b}" for m, b in zip(METRICS, t.best_peers, strict=True))
            lines += [f"Fastest peer per column: {picks}.", ""]
        lines += [f"- {c}" for c in t.checks]
        lines.append("")
    lines += [
        RATIO_NOTE,
        "",
        f"Run {result['date']}; `uptime` at the start: `{result['uptime_start']}`; "
        f"at the end: `{result['uptime_end']}`.",
        "",
        "Versions:",
        "",
    ]
    lines += [f"- {v}" for v in versions_lines(result)]
    return "\n".join(lines) + "\n"


def show(result: dict[str, Any], console: Console) -> None:
    """Print one rich table per engine, then the checks and the load."""
    for t in tables(result):
        table = Table(title=t.title, title_justify="left")
        table.add_column("system")
        for m in METRICS:
            table.add_column(m[1], justify="right")
        for i, row in enumerate(t.rows):
            table.add_row(*row, end_section=i == len(t.rows) - 1)
        for row in t.ratios:
            table.add_row(*row, style="bold")
        console.print(table)
        if t.best_peers:
            picks = "; ".join(f"{m[1]}: {b}" for m, b in zip(METRICS, t.best_peers, strict=True))
            console.print(f"fastest peer per column: {picks}")
        for c in t.checks:
            console.print(f"  {c}", highlight=False)
        console.print()
    console.print(RATIO_NOTE)
    console.print(f"load: {result['uptime_start']}  →  {result['uptime_end']}")


# ====================================================================== command line

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    quick: Annotated[
        bool, typer.Option(help="3 users (3,000 messages), short caps, 1 round")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write every figure here")
    ] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="the tables as Markdown")
    ] = None,
    engine: Annotated[list[str], typer.Option(help="sqlite, postgres, redis (repeatable)")] = [],  # noqa: B006
    group: Annotated[list[str], typer.Option(help="ours, raw, bruno-memory, langchain")] = [],  # noqa: B006
    rounds: Annotated[
        int | None, typer.Option(help="times each phase runs (default 3; --quick 1)")
    ] = None,
    users: Annotated[int | None, typer.Option(help="users of 1,000 messages (default 10)")] = None,
    postgres: Annotated[
        str, typer.Option(help="PostgreSQL server URL, no database")
    ] = Servers.postgres,
    redis: Annotated[
        str, typer.Option(help="Redis server URL, no database number")
    ] = Servers.redis,
    data_dir: Annotated[Path, typer.Option(help="SQLite files and worker logs")] = Servers.data_dir,
) -> None:
    """Measure ours, the peers and the raw drivers; print one table per engine."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    if quick:
        params = Params(
            users=users or 3,
            store_cap_s=3.0,
            reads=300,
            read_cap_s=1.5,
            searches=100,
            search_cap_s=1.5,
        )
    else:
        params = Params(users=users or 10)
    chosen = [
        s for s in SYSTEMS if (not engine or s.engine in engine) and (not group or s.group in group)
    ]
    info = machine()
    console.print(" · ".join(f"{k}: {v}" for k, v in info.items()))
    result = run(
        chosen,
        params,
        Servers(postgres=postgres, redis=redis, data_dir=data_dir),
        rounds or (1 if quick else 3),
        lambda msg: console.print(f"[dim]{time.strftime('%H:%M:%S')} {msg}[/dim]"),
    )
    show(result, console)
    if json_path:
        json_path.write_text(json.dumps(result, indent=1, default=str))
    if markdown_path:
        markdown_path.write_text(markdown(result))


if __name__ == "__main__":
    app()
