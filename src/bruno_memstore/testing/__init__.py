"""A conformance suite for bruno-memstore backends, shipped in the package.

Needs the ``testing`` extra (pytest, pytest-asyncio, hypothesis). In a test module::

    from bruno_memstore.testing import MemoryConformance

    def my_memory(test):
        return MyMemory(test.tmp_path / "data")

    class TestMyMemory(MemoryConformance):
        capabilities = MyMemory.capabilities
        memory_factory = my_memory

Subclassing is the registration: pytest runs every test the backend's declared capabilities
call for. See ``docs/conformance.md``.
"""

from __future__ import annotations

import pytest

# The suite's modules are not test files, so ask pytest to rewrite their asserts for
# readable failures. This must happen before they are imported.
pytest.register_assert_rewrite("bruno_memstore.testing.suite", "bruno_memstore.testing.harness")

from .builders import (  # noqa: E402
    BASE_TIME,
    ScriptedLLM,
    at,
    collect_export,
    make_memory_entry,
    make_message,
    new_conversation_id,
    new_session_id,
    new_user_id,
)
from .harness import ConformanceBase, MemoryFactory, lacks, requires  # noqa: E402
from .suite import *  # noqa: E402, F403  (every suite, as listed in suite.__all__)
from .suite import __all__ as _SUITES  # noqa: E402

__all__ = [
    "BASE_TIME",
    "ConformanceBase",
    "MemoryFactory",
    "ScriptedLLM",
    "at",
    "collect_export",
    "lacks",
    "make_memory_entry",
    "make_message",
    "new_conversation_id",
    "new_session_id",
    "new_user_id",
    "requires",
    *_SUITES,
]
