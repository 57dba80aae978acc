"""Backends configured by one driver URL: built from a memory URL by passing it on, shown and
quoted in errors with its secrets hidden."""

from __future__ import annotations

from typing import Any

from ...base import MemoryBackend
from ...url import MemoryURL

__all__ = ["DriverURLBackend"]


class DriverURLBackend(MemoryBackend):
    """A backend whose first argument is its driver URL (a string), kept parsed as ``_url``.

    Subclasses set ``self._url`` in ``__init__``; :meth:`describe` shows it redacted and
    driver messages lose its password (:meth:`MemoryURL.redact`).
    """

    _url: MemoryURL

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> Any:
        """Build from a parsed memory URL (``open_memory`` calls this): ``cls(url, **options)``
        with the URL as written, its query options included."""
        return cls(url.raw, **options)

    def describe(self) -> str:
        return str(self._url)

    def _redact(self, text: str) -> str:
        return self._url.redact(text)
