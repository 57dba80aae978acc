"""Prometheus metrics: operation latency and errors, cache hit rate, storage usage.

Names follow Prometheus conventions (``_seconds``, ``_total``, ``_bytes``). Expose them with
``prometheus_client.start_http_server`` or any exporter; nothing is served by default.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CACHE_REQUESTS",
    "LIFECYCLE_REMOVED",
    "OPERATION_ERRORS",
    "OPERATION_SECONDS",
    "RECORDS",
    "STORAGE_BYTES",
    "STORE_KINDS",
    "Meter",
]

STORE_KINDS = ("users", "conversations", "messages", "sessions", "memories")

OPERATION_SECONDS = Histogram(
    "bruno_memstore_operation_seconds",
    "Latency of public memory operations.",
    ["backend", "operation"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
OPERATION_ERRORS = Counter(
    "bruno_memstore_operation_errors_total",
    "Failed memory operations, by error class.",
    ["backend", "operation", "error"],
)
CACHE_REQUESTS = Counter(
    "bruno_memstore_cache_requests_total",
    "Cache tier lookups of a hybrid memory, by result (hit or miss).",
    ["backend", "result"],
)
STORAGE_BYTES = Gauge(
    "bruno_memstore_storage_bytes",
    "Bytes used by a backend's store, as last measured.",
    ["backend"],
)
RECORDS = Gauge(
    "bruno_memstore_records",
    "Records in a backend's store by kind, as last counted.",
    ["backend", "kind"],
)

LIFECYCLE_REMOVED = Counter(
    "bruno_memstore_lifecycle_removed_total",
    "Records removed by the expiry sweeper and by retention policies, by kind.",
    ["backend", "reason", "kind"],
)


class Meter:
    """Per-backend handles on the shared metrics, with label children cached."""

    __slots__ = ("_backend", "_timers")

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._timers: dict[str, Histogram] = {}

    def observe(self, operation: str, seconds: float) -> None:
        timer = self._timers.get(operation)
        if timer is None:
            timer = self._timers[operation] = OPERATION_SECONDS.labels(self._backend, operation)
        timer.observe(seconds)

    def error(self, operation: str, exc: BaseException) -> None:
        OPERATION_ERRORS.labels(self._backend, operation, type(exc).__name__).inc()

    def cache(self, hit: bool) -> None:
        CACHE_REQUESTS.labels(self._backend, "hit" if hit else "miss").inc()

    def storage(self, nbytes: int) -> None:
        STORAGE_BYTES.labels(self._backend).set(nbytes)

    def records(self, counts: Mapping[str, int]) -> None:
        for kind in STORE_KINDS:
            RECORDS.labels(self._backend, kind).set(counts.get(kind, 0))

    def removed(self, reason: str, counts: dict[str, int]) -> None:
        """Records the sweeper (``reason="expiry"``) or retention removed, by kind."""
        for kind, n in counts.items():
            if n:
                LIFECYCLE_REMOVED.labels(self._backend, reason, kind).inc(n)
