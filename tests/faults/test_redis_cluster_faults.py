"""``RedisMemory`` on a Redis Cluster when a master dies under load, and when the cluster is
down at start.

Each test runs its own cluster (see ``_redis_cluster``: three masters, three replicas, a
1.5-second node timeout, no persistence); the project's cluster is never touched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bruno_memstore.backends.redis import RedisMemory
from bruno_memstore.errors import BackendUnavailableError
from bruno_memstore.retry import RetryPolicy
from bruno_memstore.testing import make_message

from ._load_harness import USER, under_load
from ._redis_cluster import RedisClusterServers
from ._redis_server import free_port
from .test_redis_faults import CountingRedisMemory, _check_exactly_once

# A failover takes a few node timeouts; the killed master then rejoins as a replica. Writes
# wait meanwhile (no replica confirms them), so writers retry for up to two minutes.
FAILOVER = RetryPolicy(attempts=400, initial_backoff=0.05, max_backoff=0.5, deadline=120.0)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path / "cluster", node_timeout=1500)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


async def test_cluster_down_at_start_fails_fast_with_a_redacted_url() -> None:
    port = free_port()
    memory = RedisMemory(
        f"redis+cluster://app:s3cret-pw@127.0.0.1:{port}",
        prefix=f"faults-{uuid.uuid4().hex[:8]}",
        connect_timeout=1.0,
        retry=RetryPolicy(attempts=1),
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await memory.initialize()
    assert time.monotonic() - started < 10.0
    shown = f"{info.value} {info.value!r} {memory!r}"
    assert "s3cret-pw" not in shown
    assert f"redis+cluster://app:***@127.0.0.1:{port}" in str(info.value)
    assert "Redis Cluster" in str(info.value)
    assert not memory.connected
    with pytest.raises(BackendUnavailableError):  # lazily, through any operation
        await memory.store_message(make_message("hello"), USER, "conv")


async def test_master_killed_under_load_keeps_every_acknowledged_store_once(
    cluster: RedisClusterServers,
) -> None:
    memory = CountingRedisMemory(
        cluster.url,
        prefix=f"faults-{uuid.uuid4().hex[:8]}",
        socket_timeout=2.0,
        connect_timeout=1.0,
        retry=FAILOVER,
    )
    await memory.initialize()
    assert memory.cluster and memory._wait[0] == 1  # writes wait for one replica
    master = memory._client.get_node_from_key(memory.keys.tag(USER)).port  # the user's

    def failover() -> None:
        cluster.kill(master)  # SIGKILL, mid-load
        # Its replica is promoted (every other node sees it as the master of the slots) ...
        survivors = [p for p in cluster.ports if p != master]
        cluster.wait(
            lambda: sum(cluster.role(p) == "master" for p in survivors) == 3,
            "a replica to take over the killed master",
            120.0,
        )
        # ... and the killed node, started again, rejoins as its replica.
        cluster.restart(master)
        cluster.wait(
            lambda: cluster.role(master) == "slave" and cluster.replica_link_up(master),
            "the killed master to rejoin as a replica",
            120.0,
        )

    load = await under_load(
        memory, failover, writers=16, conversations=4, progress=100, within=180.0
    )
    assert not load.failed, load.failed[:3]  # retries bridged the failover
    assert memory.transient_errors > 0  # the writers did see it
    assert memory._client.get_node_from_key(memory.keys.tag(USER)).port != master
    total = await _check_exactly_once(memory, load.acked)
    assert total == len(load.acked)
    await memory.shutdown()
    # A fresh client reads the same.
    reopened = RedisMemory(cluster.url, prefix=memory.prefix)
    assert await _check_exactly_once(reopened, load.acked) == total
    # The user's own listing key came through the failover too (SCAN of the new masters).
    assert [user async for user in reopened._users(None)] == [USER]
    await reopened.shutdown()
