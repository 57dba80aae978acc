"""Reaching the shared test engines: the project's own servers, and clean-up of Redis keys.

Each ``*_url()`` returns its ``BRUNO_TEST_*_URL`` environment variable when set, otherwise runs
the engine's script in ``scripts/services`` (which installs and starts it when needed) and
returns the URL the script prints.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis

__all__ = ["chroma_url", "drop_redis_keys", "memcached_url", "pgvector_url", "redis_search_url"]

SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services"


def _engine_url(variable: str, script: str) -> str:
    """``$variable``, or the last line printed by ``scripts/services/<script>``.

    Fails the calling test, never skips it: the project's engines are required.
    """
    configured = os.environ.get(variable)
    if configured:
        return configured
    path = SERVICES / script
    done = subprocess.run(["bash", str(path)], capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        pytest.fail(
            f"could not start the engine with {path} (exit {done.returncode}): "
            f"{done.stderr.strip()}",
            pytrace=False,
        )
    return lines[-1]


def memcached_url() -> str:
    """``BRUNO_TEST_MEMCACHED_URL``, or the project's own memcached (started if it is down)."""
    return _engine_url("BRUNO_TEST_MEMCACHED_URL", "memcached.sh")


def pgvector_url() -> str:
    """``BRUNO_TEST_PGVECTOR_URL``, or the project's PostgreSQL 18 with pgvector (database
    ``bruno_test``, extension ``vector`` created), started if it is down."""
    return _engine_url("BRUNO_TEST_PGVECTOR_URL", "pgvector.sh")


def redis_search_url() -> str:
    """``BRUNO_TEST_REDIS_SEARCH_URL``, or the project's Redis with RediSearch and RedisJSON,
    started if it is down."""
    return _engine_url("BRUNO_TEST_REDIS_SEARCH_URL", "redis-search.sh")


def chroma_url() -> str:
    """``BRUNO_TEST_CHROMA_URL``, or the project's Chroma server (``http://host:port``),
    started if it is down."""
    return _engine_url("BRUNO_TEST_CHROMA_URL", "chroma.sh")


def drop_redis_keys(url: str, prefix: str) -> None:
    """Delete a run's keys (``prefix*`` and hash-tagged ``{prefix*``) from a shared Redis."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            for pattern in (f"{prefix}*", f"{{{prefix}*"):
                keys = list(client.scan_iter(match=pattern, count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
    except redis.RedisError:
        pass  # unreachable: the tests already failed saying so
