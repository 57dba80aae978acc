"""Compatibility: a store written by the code of commit d1f064f (main before the backend
redesign) reads back the same with this code, on every engine this machine has: the on-disk
formats are unchanged.

The old sources are extracted once per session with ``git archive d1f064f src`` (the tests
need the project's git history). For each engine, one subprocess runs the old code
(``PYTHONPATH`` at the extracted sources, the same interpreter) on ``_dataset.py``: it writes
the dataset into a fresh store (a name of this run's own, removed afterwards) and dumps
everything it reads back. Then this code opens the same store and must dump exactly the same:
windows, newest-first messages, memory queries, sessions, search result ids in each search
mode, statistics and the export. Backends with vectors embed with the dataset's tiny
deterministic ``HashEmbedding``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import _engines as engines

from ._dataset import CONVERSATIONS, dump, open_store

OLD_COMMIT = "d1f064f"
ROOT = Path(__file__).resolve().parents[2]
DATASET = Path(__file__).with_name("_dataset.py")
NAME = "compat"


@pytest.fixture(scope="session")
def old_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous code's ``src`` tree, extracted from git once per session."""
    target = tmp_path_factory.mktemp(f"bruno-memstore-{OLD_COMMIT}")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", OLD_COMMIT, "src"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"cannot extract commit {OLD_COMMIT} (the compatibility tests need the project's "
            f"git history): {archive.stderr.decode(errors='replace').strip()}",
            pytrace=False,
        )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


@pytest.fixture
def spec(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict]:
    """A fresh store on ``engine`` (see ``_dataset.open_store``), removed after the test."""
    fixture = request.getfixturevalue
    kv = f"{engines.REDIS_PREFIX}-{NAME}"
    sql = f"{engines.SQL_PREFIX}{NAME}"
    if engine == "sqlite":
        yield _spec("sqlite:SQLiteMemory", True, str(tmp_path / "memory.db"))
    elif engine in ("postgres", "pgvector"):
        url = fixture(f"{engine}_url")
        yield _spec("postgres:PostgresMemory", engine == "pgvector", url, schema=sql)
        engines.drop_postgres_schemas(url, sql)
    elif engine == "mysql":
        url = fixture("mysql_url")
        yield _spec("mysql:MySQLMemory", True, url, table_prefix=f"{sql}_")
        engines.drop_mysql_tables(url, f"{sql}_")
    elif engine in ("redis", "redis-search"):
        url = fixture("redis_url" if engine == "redis" else "redis_search_url")
        mode = "client" if engine == "redis" else "redisearch"
        yield _spec("redis:RedisMemory", True, url, prefix=kv, vector_search=mode)
        engines.drop_redis_keys(url, kv)
        if engine == "redis-search":
            engines.drop_redis_indexes(url, kv)
    elif engine == "memcached":  # keys cannot be listed: they expire within the hour
        yield _spec(
            "memcached:MemcachedMemory", False, fixture("memcached_url"), prefix=kv, ttl=3600
        )
    elif engine == "chroma":
        yield _spec("chroma:ChromaMemory", True, persist_directory=str(tmp_path / "chroma"))
    elif engine == "chroma-server":
        url = fixture("chroma_url")
        host, port = engines.host_port(url)
        prefix = f"{engines.CHROMA_PREFIX}-{NAME}"
        yield _spec("chroma:ChromaMemory", True, host=host, port=port, prefix=prefix)
        engines.drop_chroma_collections(url, prefix)
    elif engine == "qdrant":
        yield _spec("qdrant:QdrantMemory", True, str(tmp_path / "qdrant"))
    else:
        raise AssertionError(engine)


def _spec(cls: str, vectors: bool, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {
        "cls": f"bruno_memstore.backends.{cls}",
        "vectors": vectors,
        "args": args,
        "kwargs": kwargs,
    }


def _write_with_old_code(source: Path, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run ``_dataset.py`` under the old code; return its manifest and dump."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, str(DATASET), json.dumps(spec), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"the old code failed to write the dataset:\n{done.stderr[-4000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dump entries (``user / read``) that differ."""
    keys: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{key} / {k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            keys.append(key)
    return keys


ENGINES = [
    "sqlite",
    "postgres",
    "pgvector",
    "mysql",
    "redis",
    "redis-search",
    "memcached",
    "chroma",
    "chroma-server",
    "qdrant",
]


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_store_written_by_the_old_code_reads_the_same(
    spec: dict[str, Any], old_source: Path, tmp_path: Path
) -> None:
    written = _write_with_old_code(old_source, spec, tmp_path / "old.json")
    assert Path(written["code"]).is_relative_to(old_source), written["code"]
    memory = open_store(spec)
    try:
        now = await dump(memory, written["manifest"])
    finally:
        await memory.shutdown()
    then = written["dump"]
    assert any(then[user]["window"] for user in CONVERSATIONS), "the dataset was not written"
    assert (then["vector_space"] is not None) == spec["vectors"], then["vector_space"]
    (tmp_path / "new.json").write_text(json.dumps(now, ensure_ascii=False), encoding="utf-8")
    differing = _differences(then, now)
    assert not differing, f"reads differ (dumps old.json, new.json in {tmp_path}): {differing}"
    assert now == then
