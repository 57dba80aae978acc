"""The conformance suite: one class per topic, combined in :class:`MemoryConformance`.

Subclass :class:`MemoryConformance` to run everything, or single topic classes to run a part.
"""

from __future__ import annotations

from .access import ErasureLogSuite, UserExportRefusalSuite, UserExportSuite
from .bad_input import BadInputSuite
from .capabilities import CapabilitySuite
from .concurrency import ConcurrencySuite
from .conditional_writes import ConditionalWriteSuite
from .deletion import DeletionSuite
from .durability import DurabilitySuite
from .export import ExportSuite
from .isolation import IsolationSuite
from .lifecycle import ArchiveSuite, ExpirySuite, RetentionRefusalSuite, RetentionSuite, SweepSuite
from .memories import MemoryEntrySuite, MemoryTextQuerySuite
from .messages import IdentitySuite, OrderSuite
from .roundtrip import RoundTripSuite
from .search import MixedSearchSuite, SearchSuite
from .sessions import ResolutionSuite, SessionSuite, StatisticsSuite
from .stateful import StatefulSuite
from .store_statistics import StoreStatisticsRefusalSuite, StoreStatisticsSuite
from .vector_filters import VectorFilterSuite
from .vectors import VectorSearchSuite, VectorSpaceSuite

__all__ = [
    "ArchiveSuite",
    "BadInputSuite",
    "CapabilitySuite",
    "ConcurrencySuite",
    "ConditionalWriteSuite",
    "DeletionSuite",
    "DurabilitySuite",
    "ErasureLogSuite",
    "ExpirySuite",
    "ExportSuite",
    "IdentitySuite",
    "IsolationSuite",
    "MemoryConformance",
    "MemoryEntrySuite",
    "MemoryTextQuerySuite",
    "MixedSearchSuite",
    "OrderSuite",
    "ResolutionSuite",
    "RetentionRefusalSuite",
    "RetentionSuite",
    "RoundTripSuite",
    "SearchSuite",
    "SessionSuite",
    "StatefulSuite",
    "StatisticsSuite",
    "StoreStatisticsRefusalSuite",
    "StoreStatisticsSuite",
    "SweepSuite",
    "UserExportRefusalSuite",
    "UserExportSuite",
    "VectorFilterSuite",
    "VectorSearchSuite",
    "VectorSpaceSuite",
]


class MemoryConformance(
    CapabilitySuite,
    SessionSuite,
    ConditionalWriteSuite,
    IdentitySuite,
    OrderSuite,
    RoundTripSuite,
    IsolationSuite,
    ResolutionSuite,
    StatisticsSuite,
    StoreStatisticsSuite,
    StoreStatisticsRefusalSuite,
    SearchSuite,
    MixedSearchSuite,
    MemoryEntrySuite,
    MemoryTextQuerySuite,
    DeletionSuite,
    ExportSuite,
    UserExportSuite,
    UserExportRefusalSuite,
    ErasureLogSuite,
    ExpirySuite,
    SweepSuite,
    RetentionSuite,
    RetentionRefusalSuite,
    ArchiveSuite,
    ConcurrencySuite,
    BadInputSuite,
    DurabilitySuite,
    VectorSearchSuite,
    VectorFilterSuite,
    VectorSpaceSuite,
    StatefulSuite,
):
    """Every conformance test. Subclass it, name the subclass ``Test...``, and set
    ``memory_factory`` to a function of the running test that returns your memory; pytest
    collects and runs the whole suite.

    Example:
        >>> from bruno_memstore.testing import MemoryConformance
        >>> def my_memory(test):
        ...     return MyMemory(test.tmp_path / "data")
        >>> class TestMyMemory(MemoryConformance):
        ...     capabilities = MyMemory.capabilities
        ...     memory_factory = my_memory
    """
