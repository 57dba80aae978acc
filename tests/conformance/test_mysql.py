"""The conformance suite against MariaDB/MySQL (see ``tests/_engines.py``)."""

from bruno_memstore.backends.mysql import MySQLMemory
from bruno_memstore.testing import MemoryConformance

from . import _stores as stores


class TestMySQLMemory(MemoryConformance):
    capabilities = MySQLMemory.capabilities
    # utf8mb4 holds every Unicode scalar value but not a lone surrogate. Message content
    # cannot carry one (bruno-core's model refuses it); metadata values can.
    forbidden_metadata_text = stores.SURROGATE
    memory_factory = stores.mysql
    private_factory = stores.mysql_private
