"""The conformance suite against PostgreSQL, on two servers (see ``tests/_engines.py``):

* the machine's PostgreSQL 15, which has no pgvector: ``PostgresMemory`` declares no
  ``VECTORS`` there and searches full text only;
* the project's PostgreSQL 18 with pgvector: vectors in the record rows, HNSW search, hybrid
  ranking with the default embedding model.
"""

from bruno_memstore.backends.postgres import PostgresMemory
from bruno_memstore.capabilities import DATABASE, Capability
from bruno_memstore.testing import MemoryConformance

from . import _stores as stores


class TestPostgresMemory(MemoryConformance):
    capabilities = DATABASE | {Capability.PRUNING}
    forbidden_text = forbidden_metadata_text = stores.NUL
    memory_factory = stores.postgres


class TestPostgresVectorMemory(MemoryConformance):
    capabilities = PostgresMemory.capabilities
    forbidden_text = forbidden_metadata_text = stores.NUL
    memory_factory = stores.pgvector
    private_factory = stores.pgvector_private
