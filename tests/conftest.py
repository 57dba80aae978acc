"""Shared fixtures for the test suite (backend URLs for server engines come from the
environment; see ``tests/conformance``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from bruno_memstore.backends.memory import InMemoryStorage


@pytest_asyncio.fixture
async def in_memory() -> AsyncIterator[InMemoryStorage]:
    """A fresh, connected in-memory backend, shut down after the test."""
    async with InMemoryStorage() as memory:
        yield memory
