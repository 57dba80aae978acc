"""Fixtures for the command-line tests: an in-process runner and a store holding the demo."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bruno_memstore.cli import load_app

Invoke = Callable[..., Result]


@pytest.fixture
def invoke() -> Invoke:
    """Run ``bruno-memstore ARGS`` in process; the user's BRUNO_MEMSTORE_URL is ignored."""
    runner = CliRunner()
    app = load_app()

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        environment: dict[str, str | None] = {"BRUNO_MEMSTORE_URL": None}
        environment.update(env or {})
        return runner.invoke(app, list(args), input=input, env=environment)

    return run


@pytest.fixture
def demo_db(invoke: Invoke, tmp_path: Path) -> Path:
    """A SQLite file holding the demo's data (user 'maya': 17 messages, 6 memories)."""
    path = tmp_path / "demo.db"
    result = invoke("demo", "--db", str(path))
    assert result.exit_code == 0, result.output
    return path
