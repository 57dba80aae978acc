"""``benchmarks.time_limits`` at a tiny size on the shared Redis: a row for each call and
each way of limiting it, each a positive figure."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

import _engines as engines

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.time_limits import app  # noqa: E402


def test_the_command_prints_every_call_and_way() -> None:
    result = CliRunner().invoke(app, [engines.redis_url(), "--calls", "20", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1:-1] for line in result.output.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in row] for row in rows[2:]]
    assert {(c[0], c[1]) for c in cells} == {
        (call, way)
        for call in ("yield once", "Redis PING")
        for way in ("no limit", "asyncio.timeout", "TimeLimits.within")
    }
    assert all(float(c[2]) > 0 and float(c[3]) > 0 for c in cells)
