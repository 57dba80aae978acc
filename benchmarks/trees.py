"""Measuring other checkouts beside this one: one subprocess per run, on a tree's ``src``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["HERE", "run_in_tree"]

ROOT = Path(__file__).resolve().parent.parent
HERE = str(ROOT / "src")
"""This checkout's ``src``."""


def run_in_tree(src: str, module: str, args: list[str]) -> dict[str, Any]:
    """Run ``python -m module *args`` with ``src`` first on the path; the JSON object its
    last line of output holds."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, "PYTHONPATH": src},
        cwd=str(ROOT),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]
