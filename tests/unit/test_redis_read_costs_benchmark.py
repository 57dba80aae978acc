"""``benchmarks.redis_read_costs`` at a tiny size on the shared Redis: the read it measures
reads the window back whole, and the command prints a row for every step."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

import _engines as engines

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.redis_read_costs import _STEPS, app  # noqa: E402


def test_the_command_prints_every_step() -> None:
    result = CliRunner().invoke(
        app, [engines.redis_url(), "--messages", "30", "--window", "20", "--calls", "5"]
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ")][2:]
    # The script, its steps, two baselines, two client rows; each a positive figure.
    assert len(rows) == 1 + len(_STEPS) + 2 + 2
    assert all(float(line.rsplit("|", 2)[1]) > 0 for line in rows)
