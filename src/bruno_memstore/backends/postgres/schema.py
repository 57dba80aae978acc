"""PostgreSQL's schema: names, migrations, the version table and its lock, the store's
metadata and its recorded text analysis (see docs/backends/postgres.md)."""

from __future__ import annotations

import functools
import hashlib
import re

from asyncpg.exceptions import PostgresError, UndefinedObjectError

from ...errors import InvalidArgumentError, SchemaError
from ..sql.schema import Migration
from ..sql.steps import Execute, Fetch, Plan

__all__ = [
    "EXTENSION",
    "LATEST_VERSION",
    "MEMSTORE_ANALYSIS",
    "analysis_label",
    "check_analysis",
    "check_configuration",
    "check_language",
    "check_schema",
    "compact",
    "create_version_table",
    "lock_key",
    "lock_schema",
    "migrations",
    "quote",
    "read_meta",
    "record_version",
    "schema_version",
    "version_of",
    "write_meta",
]

MEMSTORE_ANALYSIS = "memstore"
LATEST_VERSION = 2

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CONFIG = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
EXTENSION = """SELECT e.extversion, n.nspname FROM pg_extension e
    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"""
_EXTENSION_LOCK = "bruno_memstore:extension vector"  # serialises CREATE EXTENSION
_FIRST_HNSW = (0, 5, 0)


def check_schema(name: str) -> str:
    """Validate a schema name (a plain identifier) and return it quoted for SQL."""
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise InvalidArgumentError(
            "schema", "expected an identifier of letters, digits and '_' (at most 63)"
        )
    return f'"{name}"'


def check_language(name: str) -> str | None:
    """Validate the ``language`` option: ``None`` for the library's own analysis, else the
    text-search configuration as a SQL ``regconfig`` literal."""
    if name == MEMSTORE_ANALYSIS:
        return None
    if not isinstance(name, str) or not _CONFIG.fullmatch(name):
        raise InvalidArgumentError(
            "language",
            f"expected {MEMSTORE_ANALYSIS!r} or a text search configuration such as 'english'",
        )
    return f"'{name}'::regconfig"


def analysis_label(language: str) -> str:
    """The comment recorded on ``tsv`` columns for an analysis."""
    return f"bruno_memstore text search: {language}"


def migrations(schema: str, language: str) -> list[Migration]:
    """The ordered migrations: ``(version, description, steps)``.

    ``schema`` is quoted (see :func:`check_schema`); ``language`` is the validated option.
    A migration is never edited once released; changes go in a new, higher version.
    """
    s = schema
    label = analysis_label(language).replace("'", "''")
    return [
        Migration(
            1,
            "conversations, messages, memories, sessions; full-text and window indexes",
            [
                f"""CREATE TABLE {s}.conversations (
                    conversation_id text PRIMARY KEY,
                    user_id text NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )""",
                f"CREATE INDEX conversations_user_idx ON {s}.conversations (user_id)",
                f"""CREATE TABLE {s}.messages (
                    id text PRIMARY KEY,
                    conversation_id text NOT NULL
                        REFERENCES {s}.conversations ON DELETE CASCADE,
                    user_id text NOT NULL,
                    seq bigint GENERATED ALWAYS AS IDENTITY,
                    role text NOT NULL,
                    message_type text NOT NULL,
                    content text NOT NULL,
                    ts_iso text NOT NULL,
                    ts_us bigint NOT NULL,
                    parent_id text,
                    metadata_text text NOT NULL,
                    metadata jsonb GENERATED ALWAYS AS (metadata_text::jsonb) STORED,
                    tsv tsvector NOT NULL
                )""",
                f"COMMENT ON COLUMN {s}.messages.tsv IS '{label}'",
                # Context windows: the newest N of a conversation, or of a user.
                f"""CREATE INDEX messages_window_idx
                    ON {s}.messages (conversation_id, ts_us, seq)""",
                f"""CREATE INDEX messages_user_window_idx
                    ON {s}.messages (user_id, ts_us, seq)""",
                f"CREATE INDEX messages_tsv_idx ON {s}.messages USING gin (tsv)",
                f"""CREATE TABLE {s}.memories (
                    id text PRIMARY KEY,
                    user_id text NOT NULL,
                    conversation_id text,
                    memory_type text NOT NULL,
                    category text,
                    tags text[] NOT NULL DEFAULT '{{}}',
                    confidence double precision NOT NULL,
                    importance double precision NOT NULL,
                    created_us bigint NOT NULL,
                    expires_us bigint,
                    content text NOT NULL,
                    payload text NOT NULL,
                    metadata jsonb GENERATED ALWAYS AS ((payload::jsonb) -> 'metadata') STORED,
                    tsv tsvector NOT NULL
                )""",
                f"COMMENT ON COLUMN {s}.memories.tsv IS '{label}'",
                # Unranked reads: the user's entries by importance, then newest.
                f"""CREATE INDEX memories_user_idx
                    ON {s}.memories (user_id, importance DESC, created_us DESC, id)""",
                f"CREATE INDEX memories_tsv_idx ON {s}.memories USING gin (tsv)",
                f"""CREATE INDEX memories_expiry_idx
                    ON {s}.memories (expires_us) WHERE expires_us IS NOT NULL""",
                f"""CREATE TABLE {s}.sessions (
                    session_id text PRIMARY KEY,
                    user_id text NOT NULL,
                    conversation_id text NOT NULL
                        REFERENCES {s}.conversations ON DELETE CASCADE,
                    is_active boolean NOT NULL,
                    started_us bigint NOT NULL,
                    payload text NOT NULL,
                    metadata jsonb GENERATED ALWAYS AS ((payload::jsonb) -> 'metadata') STORED
                )""",
                f"""CREATE INDEX sessions_user_idx
                    ON {s}.sessions (user_id, started_us DESC, session_id DESC)""",
                f"""CREATE INDEX sessions_conversation_idx
                    ON {s}.sessions (conversation_id, started_us DESC, session_id DESC)""",
            ],
        ),
        Migration(
            2,
            "store metadata; embedding columns when the server has pgvector",
            [
                f"CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
                functools.partial(_vector_mode, s),
            ],
        ),
    ]


def _vector_mode(s: str) -> Plan[None]:
    """Migration 2: the store keeps vectors if the server has pgvector (created here if the
    role may), recorded in ``meta`` with the reason (its *vector mode*, decided once)."""
    # Stores in other schemas may be migrating at the same moment.
    yield Execute("SELECT pg_advisory_xact_lock(?)", (lock_key(_EXTENSION_LOCK),))
    found = yield Fetch(EXTENSION)
    vector_schema, reason = None, "the server has no pgvector extension"
    if not found:
        available = yield Fetch(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        )
        if available:
            yield Execute("SAVEPOINT extension")  # a refusal keeps the migration
            try:
                yield Execute("CREATE EXTENSION IF NOT EXISTS vector")
            except PostgresError as exc:
                yield Execute("ROLLBACK TO SAVEPOINT extension")
                reason = f"CREATE EXTENSION vector was refused: {exc}"
            else:
                yield Execute("RELEASE SAVEPOINT extension")
                found = yield Fetch(EXTENSION)
    if found:
        version, namespace = found[0]
        if version_of(version) < _FIRST_HNSW:
            reason = f"pgvector {version} has no HNSW index (0.5.0 or later is needed)"
        else:
            vector_schema = quote(namespace)
            reason = f"pgvector {version} was available when the store was created"
    if vector_schema is not None:
        for table in ("messages", "memories"):
            yield Execute(f"ALTER TABLE {s}.{table} ADD COLUMN embedding {vector_schema}.vector")
    write = f"INSERT INTO {s}.meta (key, value) VALUES (?, ?)"
    yield Execute(write, ("vector_mode", "none" if vector_schema is None else "pgvector"))
    yield Execute(write, ("vector_mode_reason", reason))


def version_of(text: str) -> tuple[int, ...]:
    """``"0.8.1"`` as ``(0, 8, 1)`` (non-numeric parts count as 0)."""
    return tuple(int(part) if part.isdigit() else 0 for part in text.split(".")[:3])


def quote(identifier: str) -> str:
    """An identifier quoted for SQL."""
    return '"' + identifier.replace('"', '""') + '"'


def lock_key(name: str) -> int:
    """The advisory lock key serialising schema changes of ``name``."""
    digest = hashlib.blake2b(f"bruno_memstore:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# ------------------------------------------------------------------------------ the version table


def schema_version(schema: str) -> Plan[int]:
    """The newest migration applied to the (quoted) ``schema``; 0 before the first."""
    rows = yield Fetch("SELECT to_regclass(?) IS NOT NULL", (f"{schema}.schema_version",))
    if not rows[0][0]:
        return 0
    rows = yield Fetch(f"SELECT coalesce(max(version), 0) FROM {schema}.schema_version")
    return int(rows[0][0])


def create_version_table(schema: str) -> Plan[None]:
    """Create the schema and its version table unless they exist."""
    rows = yield Fetch("SELECT to_regnamespace(?) IS NULL", (schema,))
    if rows[0][0]:
        yield Execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    yield Execute(
        f"""CREATE TABLE IF NOT EXISTS {schema}.schema_version (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )"""
    )


def lock_schema(schema: str) -> Plan[None]:
    """Begin a transaction holding the schema's advisory lock: concurrent first connects
    queue here; the first migrates, the others find the schema current."""
    yield Execute("BEGIN")
    yield Execute("SELECT pg_advisory_xact_lock(?)", (lock_key(schema.strip('"')),))


def record_version(schema: str, version: int, name: str) -> Execute:
    """The statement recording an applied migration."""
    return Execute(
        f"INSERT INTO {schema}.schema_version (version, description) VALUES (?, ?)",
        (version, name),
    )


# ------------------------------------------------------------------------------ metadata


def read_meta(schema: str) -> str:
    """The store's metadata, as ``(key, value)`` rows."""
    return f"SELECT key, value FROM {schema}.meta"


def write_meta(schema: str) -> str:
    """Record ``$2`` under the key ``$1``."""
    return f"""INSERT INTO {schema}.meta (key, value) VALUES ($1, $2)
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"""


def check_configuration(regconfig: str | None, language: str) -> Plan[None]:
    """Refuse a ``language`` the server has no text-search configuration for."""
    if regconfig is None:
        return
    try:
        yield Fetch(f"SELECT {regconfig}::oid")
    except UndefinedObjectError:
        names = yield Fetch("SELECT cfgname FROM pg_ts_config ORDER BY cfgname")
        raise InvalidArgumentError(
            "language",
            f"no text search configuration {language!r} on this server; "
            f"available: {', '.join(r[0] for r in names)}",
        ) from None


def check_analysis(schema: str, language: str) -> Plan[None]:
    """Refuse a store whose full-text index another analysis built (as recorded in the
    comment on ``messages.tsv``)."""
    rows = yield Fetch(
        """SELECT col_description(a.attrelid, a.attnum) FROM pg_attribute a
        WHERE a.attrelid = to_regclass(?) AND a.attname = 'tsv'""",
        (f"{schema}.messages",),
    )
    recorded = rows[0][0] if rows else None
    if recorded is not None and recorded != analysis_label(language):
        stored, name = recorded.rsplit(": ", 1)[-1], schema.strip('"')
        raise SchemaError(
            f"schema {name!r} was indexed with language={stored}, not language={language}; "
            f"open it with language={stored}, or use another schema",
            backend="postgres",
            operation="connect",
        )


def compact(schema: str) -> str:
    """Rewrite every table holding user data into new files (indexes and TOAST too).

    A plain ``VACUUM`` only marks dead tuples' space reusable: their bytes stay in the
    pages until overwritten. ``FULL`` copies the live rows into new files and drops the old
    ones; ``ANALYZE`` replaces the planner's samples of column values (kept in
    ``pg_statistic``) with samples of live rows.
    """
    tables = ", ".join(
        f"{schema}.{t}" for t in ("conversations", "messages", "memories", "sessions")
    )
    return f"VACUUM (FULL, ANALYZE) {tables}"
