"""The erasure log: who was erased, when, and how many records went; never what they held.

``forget_user`` writes one entry to the log the operator configured (store option
``erasure_log=``, URL option ``?erasure_log=PATH``, CLI ``--erasure-log`` or
``BRUNO_MEMSTORE_ERASURE_LOG``), after the erasure succeeded::

    {"event": "forget_user", "format": 1, "user_id": "maya",
     "erased_at": "2026-12-06T03:40:00.123456+00:00", "backend": "sqlite",
     "store": "sqlite:///memory.db", "counts": {"messages": 17, ...}}

The log is a JSON Lines file opened for appending only, each entry one ``write`` followed by
``fsync``, so an entry that was reported written survives a crash; or any callable given the
entry (a dict) to keep it elsewhere. Entries hold ids, a timestamp, the backend, the store's
redacted address and counts; never a message, memory entry or session field.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError, MemstoreError

__all__ = [
    "ERASURE_LOG_ENV",
    "ERASURE_LOG_FORMAT",
    "ErasureLog",
    "ErasureLogError",
    "JsonlErasureLog",
    "erasure_entry",
    "erasure_log",
]

ERASURE_LOG_FORMAT = 1
ERASURE_LOG_ENV = "BRUNO_MEMSTORE_ERASURE_LOG"
"""The environment variable the command line reads for ``--erasure-log``."""

ErasureSink = Callable[[dict[str, Any]], "Awaitable[None] | None"]


class ErasureLogError(MemstoreError):
    """The user was erased but the erasure log could not be written; ``counts`` says what
    was erased, so the operator can record it by hand."""

    def __init__(self, message: str, counts: Mapping[str, int], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.counts = dict(counts)


class ErasureLog:
    """Where erasures are recorded: a callable given each entry (sync or async)."""

    def __init__(self, sink: ErasureSink) -> None:
        if not callable(sink):
            raise InvalidArgumentError("erasure_log", "expected a path or a callable")
        self._sink = sink

    async def record(self, entry: dict[str, Any]) -> None:
        """Keep one entry; returns once it is kept."""
        result = self._sink(entry)
        if inspect.isawaitable(result):
            await result

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._sink!r})"


class JsonlErasureLog(ErasureLog):
    """An append-only JSON Lines file: one entry per line, each synced to disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        super().__init__(self._append_soon)

    async def _append_soon(self, entry: dict[str, Any]) -> None:
        await asyncio.to_thread(self.append, entry)

    def append(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` as one line and ``fsync`` the file (and its directory when the
        file is new), so the entry is on disk when this returns."""
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            data = line.encode("utf-8")
            while data:  # one write for any entry of sane size; the loop only for the rest
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _sync_directory(self.path.parent)

    def __repr__(self) -> str:
        return f"JsonlErasureLog({str(self.path)!r})"


def _sync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # platforms without directory handles
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def erasure_log(value: object) -> ErasureLog | None:
    """The log an ``erasure_log=`` option names: ``None``, a path, a callable or a log."""
    if value is None or isinstance(value, ErasureLog):
        return value
    if isinstance(value, (str, os.PathLike)):
        if not str(value).strip():
            raise InvalidArgumentError("erasure_log", "expected a file path, not an empty string")
        return JsonlErasureLog(value)
    if callable(value):
        return ErasureLog(value)
    raise InvalidArgumentError("erasure_log", "expected a path, a callable or an ErasureLog")


def erasure_entry(
    user_id: str, counts: Mapping[str, int], *, backend: str, store: str
) -> dict[str, Any]:
    """The entry recording that ``user_id`` was erased now, with ``counts``."""
    return {
        "event": "forget_user",
        "format": ERASURE_LOG_FORMAT,
        "user_id": user_id,
        "erased_at": datetime.now(UTC).isoformat(),
        "backend": backend,
        "store": store,
        "counts": {str(kind): int(n) for kind, n in counts.items()},
    }
