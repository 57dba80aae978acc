"""Schema migrations, and re-indexing when the text analysis changed, for every SQL engine.

A store's schema is an ordered list of :class:`Migration` steps, each applied once and
recorded in a version table. :func:`migrate` reads the version without a lock (nothing to
do is the rule), and otherwise takes the engine's schema lock (``BEGIN IMMEDIATE``, an
advisory lock, ``GET_LOCK``), reads the version again (another process may have migrated
meanwhile), applies what is missing and releases the lock. A migration is never edited once
released; changes go in a new, higher version.

:func:`refresh_analysis` does the same for the full-text index: when the text analysis that
built it (recorded by the engine) is not the library's, the index is rebuilt, once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .dialect import Dialect
from .steps import Execute, ExecuteMany, Fetch, Plan

__all__ = [
    "Migration",
    "MigrationStep",
    "migrate",
    "refresh_analysis",
    "reindex_terms",
    "stored_setting",
]

MigrationStep = str | Callable[[], Plan[None]]
"""A statement, or a plan for what SQL alone cannot do (analysed text, engine checks)."""


class Migration(NamedTuple):
    """One step of the schema: its number, a name, and what it runs in order."""

    version: int
    name: str
    steps: Sequence[MigrationStep]


def migrate(
    d: Dialect, migrations: Sequence[Migration], target: int | None = None
) -> Plan[tuple[int, int]]:
    """Apply the pending migrations up to ``target`` (default: all); return the versions
    ``(before, after)``. Raises :class:`SchemaError` for a store of a newer library."""
    latest = migrations[-1].version
    target = latest if target is None else target
    current = yield from d.schema_version()
    if current > latest:
        raise d.too_new(current, latest)
    if current >= target:
        return current, current
    yield from d.lock_schema()
    try:
        yield from d.create_version_table()
        before = yield from d.schema_version()
        if before > latest:
            raise d.too_new(before, latest)
        for migration in migrations:
            if before < migration.version <= target:
                for step in migration.steps:
                    if isinstance(step, str):
                        yield Execute(step)
                    else:
                        yield from step()
                yield d.record_version(migration.version, migration.name)
    except Exception:
        yield from d.unlock_schema(False)
        raise
    yield from d.unlock_schema(True)
    return before, max(before, target)


def refresh_analysis(
    d: Dialect, is_current: Callable[[], Plan[bool]], rebuild: Callable[[], Plan[None]]
) -> Plan[bool]:
    """Rebuild the full-text index unless ``is_current()``, under the schema lock; return
    whether it was rebuilt. ``rebuild()`` records the analysis it used."""
    if (yield from is_current()):
        return False
    yield from d.lock_schema()
    try:
        done = not (yield from is_current())
        if done:
            yield from rebuild()
    except Exception:
        yield from d.unlock_schema(False)
        raise
    yield from d.unlock_schema(True)
    return done


def stored_setting(d: Dialect, name: str) -> Plan[str | None]:
    """The value of ``name`` in the store's ``settings`` table (``None``: not recorded)."""
    rows = yield Fetch(f"SELECT value FROM {d.table('settings')} WHERE name = ?", (name,))
    return rows[0][0] if rows else None


def reindex_terms(
    d: Dialect,
    index: Callable[[str], Any],
    tables: Sequence[tuple[str, str, Any]],
    batch: int = 500,
) -> Plan[None]:
    """Rewrite the ``search_terms`` of every row of each ``(table, key, below every key)``
    as ``index(content)``, in key order, ``batch`` rows per transaction."""
    for table, key, after in tables:
        while True:
            rows = yield Fetch(
                f"SELECT {key}, content FROM {d.table(table)} WHERE {key} > ? "
                f"ORDER BY {key} LIMIT {int(batch)}",
                (after,),
            )
            if not rows:
                break
            yield Execute("START TRANSACTION")
            yield ExecuteMany(
                f"UPDATE {d.table(table)} SET search_terms = ? WHERE {key} = ?",
                [(index(content), k) for k, content in rows],
            )
            yield Execute("COMMIT")
            after = rows[-1][0]
