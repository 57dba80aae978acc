"""A fake Weaviate server: Weaviate's REST and gRPC APIs over an in-process store.

The subset ``WeaviateMemory`` uses, driven by the unmodified official client: schema
(collections with multi-tenancy), tenants, object batches, searches (filters, sorting,
near-vector, BM25) and batch deletion. It is a test double, not an engine: one process, no
persistence, no replication. ``FakeWeaviate.start()`` serves both APIs on free local ports.
"""

from .server import FakeWeaviate

__all__ = ["FakeWeaviate"]
