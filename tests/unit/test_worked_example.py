"""The worked example of docs/adding-a-backend.md (docs/examples/dbm_backend.py) passes the
whole shipped conformance suite, and opens by URL once registered, so the walkthrough stays
true."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from bruno_memstore import open_memory, registry
from bruno_memstore.base import MemoryBackend
from bruno_memstore.testing import MemoryConformance

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "dbm_backend.py"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("dbm_backend", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dbm_backend"] = module
    spec.loader.exec_module(module)
    return module


dbm_backend = _load_example()
DbmMemory = dbm_backend.DbmMemory


class TestDbmMemory(MemoryConformance):
    capabilities = DbmMemory.capabilities

    async def make_memory(self) -> MemoryBackend:
        return DbmMemory(self.tmp_path / "store")


def test_register_opens_the_example_by_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registered", {})  # this test's registration stays here
    dbm_backend.register()
    memory = open_memory(f"dbm:///{tmp_path}/store")
    assert isinstance(memory, DbmMemory)
    assert memory.path == str(tmp_path / "store")
    assert memory.describe() == f"dbm:///{tmp_path}/store"
