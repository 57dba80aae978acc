"""A running application's figures, read from its Prometheus endpoint (``stats --metrics``)."""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["backend_figures", "read_endpoint"]

_PREFIX = "bruno_memstore_"


def read_endpoint(url: str, timeout: float = 5.0) -> str:
    """The text a Prometheus endpoint serves (``http://host:port/metrics``)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


def backend_figures(text: str) -> dict[str, dict[str, Any]]:
    """Per backend: ``operations`` and ``errors`` (totals), ``cache_hits``,
    ``cache_misses`` and ``cache_hit_rate`` (hybrid stores), ``storage_bytes`` and
    ``records`` by kind (as last measured by ``store_statistics``)."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(_PREFIX):
            continue
        name = family.name[len(_PREFIX) :]
        for sample in family.samples:
            backend = sample.labels.get("backend")
            if backend is None:
                continue
            figures = out[backend]
            if name == "operation_seconds" and sample.name.endswith("_count"):
                figures["operations"] = figures.get("operations", 0) + int(sample.value)
            elif name == "operation_errors" and sample.name.endswith("_total"):
                figures["errors"] = figures.get("errors", 0) + int(sample.value)
            elif name == "cache_requests" and sample.name.endswith("_total"):
                key = "cache_hits" if sample.labels.get("result") == "hit" else "cache_misses"
                figures[key] = figures.get(key, 0) + int(sample.value)
            elif name == "storage_bytes":
                figures["storage_bytes"] = int(sample.value)
            elif name == "records":
                figures.setdefault("records", {})[sample.labels.get("kind", "?")] = int(
                    sample.value
                )
    for figures in out.values():
        lookups = figures.get("cache_hits", 0) + figures.get("cache_misses", 0)
        if lookups:
            figures["cache_hit_rate"] = figures.get("cache_hits", 0) / lookups
    return dict(sorted(out.items()))
