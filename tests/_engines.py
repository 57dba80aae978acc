"""Reaching the shared test engines: the project's memcached, and clean-up of Redis keys."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis

__all__ = ["drop_redis_keys", "memcached_url"]

MEMCACHED_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "services" / "memcached.sh"


def memcached_url() -> str:
    """``BRUNO_TEST_MEMCACHED_URL``, or the project's own memcached (started if it is down).

    Fails the calling test, never skips it: this engine is required.
    """
    configured = os.environ.get("BRUNO_TEST_MEMCACHED_URL")
    if configured:
        return configured
    done = subprocess.run(
        ["bash", str(MEMCACHED_SCRIPT)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(
            f"could not start memcached with {MEMCACHED_SCRIPT}: {done.stderr}", pytrace=False
        )
    return done.stdout.strip().splitlines()[-1]


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
