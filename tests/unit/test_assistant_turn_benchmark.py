"""``benchmarks.assistant_turn`` at a tiny size, on SQLite and Redis: every phase timed, and
the command's table printed for two trees (this checkout's, and a copy of it)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from typer.testing import CliRunner

import _engines as engines

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.assistant_turn import PHASES, _measure, app  # noqa: E402


def test_each_phase_is_timed_on_sqlite_and_redis() -> None:
    for url in ("sqlite", engines.redis_url()):
        figures = asyncio.run(_measure(url, history=5, turns=4))
        assert set(figures) == set(PHASES)
        assert all(v > 0 for v in figures.values())
        assert figures["turn"] >= figures["get_context"]


def test_the_command_prints_one_row_per_backend_and_tree(tmp_path: Path) -> None:
    src = tmp_path / "other"  # another tree: a copy of this checkout's src
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    result = CliRunner().invoke(
        app, ["--rounds", "1", "--turns", "3", "--history", "2", "--tree", str(src), "sqlite"]
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| sqlite |")]
    assert len(rows) == 2 and all(line.count("|") == len(PHASES) + 3 for line in rows)
