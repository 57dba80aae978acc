"""The project's extra engines start and answer: PostgreSQL 18 with pgvector, Redis with
RediSearch, a Redis Cluster, and a Chroma server (see ``scripts/services``)."""

from __future__ import annotations

import json
import urllib.request

import asyncpg
import redis

import _engines as engines


async def test_pgvector_has_the_vector_extension() -> None:
    """Database ``bruno_test`` runs on PostgreSQL 18 and has pgvector installed."""
    conn = await asyncpg.connect(engines.pgvector_url(), timeout=10)
    try:
        major = await conn.fetchval("SELECT current_setting('server_version_num')::int / 10000")
        version = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        )
        distance = await conn.fetchval("SELECT '[1,0]'::vector <-> '[0,0]'::vector")
    finally:
        await conn.close()
    assert major == 18
    assert version and version.split(".")[0].isdigit()
    assert distance == 1.0


def test_redis_has_the_search_module() -> None:
    """The server lists RediSearch among its modules and answers ``FT._LIST``."""
    url = engines.redis_search_url()
    with redis.Redis.from_url(url, socket_connect_timeout=5, decode_responses=True) as client:
        modules = {module["name"] for module in client.module_list()}
        indexes = client.execute_command("FT._LIST")
    assert "search" in modules
    assert isinstance(indexes, list)


def test_redis_cluster_has_three_masters_with_a_replica_each() -> None:
    """Every slot is served, by three masters, each with one replica."""
    host, port = engines.host_port(engines.redis_cluster_url())
    with redis.RedisCluster(host=host, port=port, socket_connect_timeout=5) as client:
        masters, replicas = client.get_primaries(), client.get_replicas()
        info = client.cluster_info(target_nodes=masters[0])
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_assigned"]) == 16384
    assert len(masters) == 3 and len(replicas) == 3


def test_chroma_answers_its_heartbeat() -> None:
    """``GET /api/v2/heartbeat`` returns 200 with a nanosecond timestamp."""
    with urllib.request.urlopen(f"{engines.chroma_url()}/api/v2/heartbeat", timeout=10) as reply:
        status = reply.status
        body = json.load(reply)
    assert status == 200
    assert body["nanosecond heartbeat"] > 0
