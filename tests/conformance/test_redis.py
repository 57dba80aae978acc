"""The conformance suite against Redis, on three servers (see ``tests/_engines.py``):

* the shared Redis, which has no RediSearch (vectors searched in the client) and no
  persistence (``DURABLE`` is declared only if its AOF is on);
* the project's Redis with RediSearch, where vectors are searched by the server's HNSW index;
* the project's Redis Cluster (three masters, three replicas), where each user of a store is
  in the slot of its own tag, directory keys in slots of their own, and every write waits for
  a replica (``WAIT``);
* a private server with ``appendonly yes`` for the durability tests, where reopening means
  restarting that server.
"""

from bruno_memstore.backends.redis import RedisMemory
from bruno_memstore.capabilities import Capability
from bruno_memstore.testing import DurabilitySuite, MemoryConformance

from . import _stores as stores


class TestRedisMemory(MemoryConformance):
    capabilities = stores.redis_capabilities()
    memory_factory = stores.redis_client_vectors
    private_factory = stores.redis_private


class TestRedisSearchMemory(MemoryConformance):
    capabilities = RedisMemory.capabilities  # the script starts it without persistence
    memory_factory = stores.redisearch
    private_factory = stores.redisearch_private


class TestRedisClusterMemory(MemoryConformance):
    capabilities = RedisMemory.capabilities  # the script starts it without persistence
    memory_factory = stores.redis_cluster
    private_factory = stores.redis_cluster_private


class TestRedisMemoryDurable(DurabilitySuite):
    capabilities = RedisMemory.capabilities | {Capability.DURABLE}
    memory_factory = stores.redis_aof
    reopen_factory = stores.redis_aof_restarted
