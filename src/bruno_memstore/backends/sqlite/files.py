"""SQLite's files: opening a connection set up for the store, and erasing what deletions
leave (``secure_delete``, FTS5 ``optimize``, WAL checkpoints; see docs/backends/sqlite.md)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from ..sql.schema import migrate, refresh_analysis
from ..sql.sync import run_plan
from .dialect import DIALECT
from .schema import MIGRATIONS, is_current, rebuild_search_index

__all__ = [
    "MEMORY_PATH",
    "Settings",
    "checkpoint_wal",
    "compact_search_index",
    "erasing",
    "is_busy",
    "open_connection",
    "rebuild_file",
]

log = logging.getLogger("bruno_memstore.backends.sqlite")

MEMORY_PATH = ":memory:"
_CACHE_KIB = 8192  # page cache per connection
_WAL_LIMIT = 64 * 1024 * 1024  # the WAL is truncated back to this after a checkpoint
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6  # result codes (the low byte of an extended one)


class Settings(NamedTuple):
    """What a connection is opened with (plain values: threads must not keep the store)."""

    path: str
    busy_timeout: float
    synchronous: str
    label: str  # for log lines


def open_connection(settings: Settings, *, writer: bool) -> sqlite3.Connection:
    """A connection set up for the store (runs on the thread that will own it); the
    writer's also migrates the schema."""
    conn = sqlite3.connect(
        settings.path,
        timeout=settings.busy_timeout,
        isolation_level=None,  # transactions are explicit
        cached_statements=256,
    )
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows are overwritten with zeros, in their pages and in freed pages.
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        conn.execute("PRAGMA temp_store = MEMORY")
        if writer:
            _prepare(conn, settings)
        else:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, wait: float) -> str:
    """Switch to WAL, waiting up to ``wait`` seconds for other processes.

    Changing the journal mode needs a moment alone with the file, and SQLite reports "locked"
    at once instead of calling the busy handler when processes open a new file together.
    """
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0])
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "another connection holds the lock" (worth a retry)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
        or "locked" in str(exc)
        or "busy" in str(exc)
    )


def _prepare(conn: sqlite3.Connection, settings: Settings) -> None:
    """Journal mode, durability and schema: the writer does it once per connect."""
    if settings.path != MEMORY_PATH:
        mode = _enable_wal(conn, settings.busy_timeout)
        if str(mode).lower() != "wal":
            # Some file systems (network shares) cannot hold WAL's shared memory: still
            # correct, but readers and the writer then wait for each other.
            log.warning(
                "SQLite could not enable WAL for %s (journal_mode=%s)", settings.label, mode
            )
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
    conn.execute(f"PRAGMA synchronous = {settings.synchronous.upper()}")
    before, after = run_plan(conn, partial(migrate, DIALECT, MIGRATIONS))
    if before != after:
        log.info("migrated %s from schema version %d to %d", settings.label, before, after)
    # The text analysis changed since the index was built: rebuild it, once.
    if run_plan(conn, partial(refresh_analysis, DIALECT, is_current, rebuild_search_index)):
        log.info("rebuilt the full-text index of %s", settings.label)


def compact_search_index(conn: sqlite3.Connection) -> None:
    """Merge the full-text index into one segment, dropping the entries of deleted rows."""
    conn.execute("INSERT INTO search_fts (search_fts) VALUES ('optimize')")


def erasing(delete: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection) -> Any:
    """Run a deletion; if it deleted anything, merge the full-text index after it."""
    result = delete(conn)
    if any(result.values()) if isinstance(result, dict) else result:
        compact_search_index(conn)
    return result


def checkpoint_wal(conn: sqlite3.Connection) -> bool:
    """Copy the WAL into the database file and truncate it to zero bytes (no transaction).

    Waits up to the busy timeout for other connections reading older snapshots; returns
    ``False`` (and logs) if one still was, leaving old page images in the WAL until the next
    complete checkpoint.
    """
    try:
        busy, _frames, _copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
    except sqlite3.OperationalError as exc:
        # Another process checkpointing at this moment: the erasure itself is committed.
        if not is_busy(exc):
            raise
        busy = 1
    if busy:
        log.warning(
            "SQLite: another connection kept reading, so the WAL was not truncated; it holds "
            "pages of erased records until the next complete checkpoint"
        )
    return not busy


def rebuild_file(conn: sqlite3.Connection) -> None:
    """Rewrite the database file with only live pages, then truncate the WAL (no transaction).

    Erases what deletions made before ``secure_delete`` was on may have left in free pages.
    """
    conn.execute("VACUUM")
    checkpoint_wal(conn)
