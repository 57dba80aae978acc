"""The conformance suite against HybridMemory over three pairs of tiers (see
``tests/_engines.py``). A hybrid declares its persistent tier's capabilities; reopening builds
new tiers on the same storage (file, key prefix, schema)."""

from bruno_memstore.backends.postgres import PostgresMemory
from bruno_memstore.backends.sqlite import SQLiteMemory
from bruno_memstore.capabilities import Capability
from bruno_memstore.testing import MemoryConformance

from . import _stores as stores


class TestHybridMemoryOverSQLite(MemoryConformance):
    capabilities = SQLiteMemory.capabilities
    memory_factory = stores.hybrid_over_sqlite
    private_factory = stores.hybrid_over_sqlite_private


class TestHybridMemoryMemcachedOverSQLite(MemoryConformance):
    capabilities = SQLiteMemory.capabilities
    memory_factory = stores.hybrid_memcached_over_sqlite
    private_factory = stores.hybrid_memcached_over_sqlite_private


class TestHybridMemoryRedisOverPostgres(MemoryConformance):
    # The shared PostgreSQL 15 has no pgvector: keyword search only.
    capabilities = PostgresMemory.capabilities - {Capability.VECTORS}
    forbidden_text = forbidden_metadata_text = stores.NUL
    memory_factory = stores.hybrid_redis_over_postgres
