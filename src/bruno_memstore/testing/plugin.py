"""pytest plugin (registered through the ``pytest11`` entry point): conformance tests that do
not apply to a backend are deselected at collection, so a run reports no skips for them.

It touches only classes derived from ``ConformanceBase`` that declare ``capabilities``, and
imports nothing from the suite unless such a class was collected.
"""

from __future__ import annotations

import pytest

__all__ = ["pytest_collection_modifyitems"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect conformance tests whose capabilities or conditions the backend does not meet."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    check = None
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None or not getattr(cls, "__memstore_conformance__", False):
            kept.append(item)
            continue
        if check is None:
            from .harness import inapplicable_reason as check
        func = getattr(item, "function", None)
        if func is not None and check(cls, func) is not None:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
