"""PostgreSQL's dialect: migrations, layout, fast statements (see docs/backends/postgres.md)."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from asyncpg.exceptions import PostgresError, UniqueViolationError

from ...errors import BackendError, InvalidArgumentError, OwnershipError
from ...models import (
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
)
from ...primitives import AppendResult, memory_taken, session_taken
from ...search import MAX_QUERY_TERMS, index_text, query_words, terms
from ..kit.codec import MEMORIES, MEMORY_FIELDS, SESSION_FIELDS, SESSIONS
from ..sql.append import Append, Outcome
from ..sql.dialect import Conversation, Dialect, Source, numbered
from ..sql.plans import window
from ..sql.schema import Migration
from ..sql.steps import Copy, Execute, Fetch, Plan
from ..sql.where import search_values

__all__ = [
    "EXTENSION",
    "HNSW_MAX_DIMENSIONS",
    "LATEST_VERSION",
    "MEMSTORE_ANALYSIS",
    "Statements",
    "analysed",
    "analysis_label",
    "check_language",
    "check_schema",
    "lock_key",
    "migrations",
    "quote",
    "version_of",
]

# PostgreSQL caps a tsvector at 1 MB; 100,000 characters of any script stays well below it,
# so a 1 MB message is stored whole and its first 100,000 characters are searchable.
INDEXED_PREFIX = 100_000
MEMSTORE_ANALYSIS = "memstore"
# pgvector's HNSW indexes ``vector`` columns of at most this many dimensions; larger vectors
# are searched exactly.
HNSW_MAX_DIMENSIONS = 2000
# HNSW build parameters (pgvector's defaults, named so the docs and the index agree).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CONFIG = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")

_MEMORY_COLUMNS = ", ".join(MEMORY_FIELDS)  # the codec's row order
_SESSION_COLUMNS = ", ".join(SESSION_FIELDS)
# The messages' columns in the record's field order.
_MESSAGE_ORDER = (
    "id conversation_id role content message_type ts_iso ts_us metadata_text parent_id user_id seq"
).split()
# A message's values as the append and COPY statements take them, after its ordinal.
_MESSAGE_VALUES = ("id role message_type content timestamp ts_us metadata parent_id").split()
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


LATEST_VERSION = 2


def analysed(content: str) -> str:
    """The library's analysis of what is searchable in ``content``."""
    return index_text(content[:INDEXED_PREFIX])


def lock_key(name: str) -> int:
    """The advisory lock key serialising schema changes of ``name``."""
    digest = hashlib.blake2b(f"bruno_memstore:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def not_owner(conversation_id: str) -> OwnershipError:
    return OwnershipError(
        f"conversation {conversation_id!r} belongs to another user",
        backend="postgres",
        operation="store_message",
    )


class Statements(Dialect):
    """PostgreSQL's layout and statements, for one schema and one text analysis.

    Args:
        schema: the quoted schema name (see :func:`check_schema`).
        regconfig: the text-search configuration as a ``regconfig`` literal, or ``None``
            for the library's own analysis.
        vector_schema: the quoted schema of pgvector when the store keeps vectors.
        encode_vector: turns a vector into a query argument (``None``: vectors are not
            written, as without the pgvector package).
    """

    backend: ClassVar[str] = "postgres"

    def __init__(
        self,
        schema: str,
        regconfig: str | None,
        vector_schema: str | None = None,
        encode_vector: Callable[[Any], Any] | None = None,
    ) -> None:
        self.schema = schema
        self.regconfig = regconfig
        self.vector_schema = vector_schema
        self.encode_vector = encode_vector
        s, sessions = schema, [f"s.{c}" for c in SESSION_FIELDS]
        self.conversations = Source(
            f"{s}.conversations c", ("c.conversation_id", "c.user_id"), "c.conversation_id"
        )
        self.messages = Source(f"{s}.messages m", [f"m.{c}" for c in _MESSAGE_ORDER], "m.seq", 0)
        self.memories = Source(f"{s}.memories m", [f"m.{c}" for c in MEMORY_FIELDS], "m.id")
        self.sessions = Source(f"{s}.sessions s", sessions, "s.session_id")

    def with_vectors(
        self, vector_schema: str | None, encode_vector: Callable[[Any], Any] | None = None
    ) -> Statements:
        """The same statements for a store whose vector mode is now known."""
        return Statements(self.schema, self.regconfig, vector_schema, encode_vector)

    @property
    def vectors(self) -> bool:
        """Whether rows carry an ``embedding`` column (the store's vector mode is pgvector)."""
        return self.vector_schema is not None

    @property
    def vector_type(self) -> str:
        return f"{self.vector_schema}.vector"

    @property
    def client_analysis(self) -> bool:
        """Whether writes send the analysed text (``index_text``) along with the content."""
        return self.regconfig is None

    def _tsv(self, content: str, analysed: str) -> str:
        """The ``tsv`` value of a row, from its content or its client-analysed text."""
        if self.regconfig is None:
            return f"to_tsvector('simple'::regconfig, {analysed})"
        return f"to_tsvector({self.regconfig}, left({content}, {INDEXED_PREFIX}))"

    # ---------------------------------------------------------------- the shared plans' hooks

    def table(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def sql(self, text: str) -> str:
        return numbered(text)

    def among(self, column: str, values: Sequence[Any]) -> list[tuple[str, list[Any]]]:
        return [(f"{column} = ANY(?::text[])", [list(values)])] if values else []

    def tags_condition(self, tags: Sequence[str]) -> tuple[str, list[Any]]:
        return "m.tags && ?::text[]", [list(tags)]

    def window_scope(
        self, conversation_id: str | None, user_id: str | None
    ) -> tuple[str, list[Any]]:
        if conversation_id is None or user_id is None:
            return super().window_scope(conversation_id, user_id)
        # Ownership is per conversation: check it once, then walk the conversation's index
        # (filtering messages by user would let the planner pick the user index and scan
        # all of that user's other conversations).
        return (
            f"m.conversation_id = ? AND EXISTS (SELECT 1 FROM {self.schema}.conversations c "
            "WHERE c.conversation_id = m.conversation_id AND c.user_id = ?)",
            [conversation_id, user_id],
        )

    def search_body(self, content: str) -> str | None:
        return analysed(content) if self.client_analysis else None

    def vector_value(self, vector: Any) -> Any:
        """A vector as a query argument (``None`` without one, or without the codec)."""
        return None if vector is None or self.encode_vector is None else self.encode_vector(vector)

    def create_conversations(self, claims: Mapping[str, str]) -> Plan[dict[str, Conversation]]:
        rows = yield Fetch(
            f"INSERT INTO {self.schema}.conversations (conversation_id, user_id) "
            "SELECT * FROM unnest(?::text[], ?::text[]) "
            "ON CONFLICT (conversation_id) DO NOTHING RETURNING conversation_id, user_id",
            [list(claims), list(claims.values())],
        )
        return {r[0]: Conversation(r[0], r[1], r[1]) for r in rows}

    def upsert_memory(self, rec: MemoryRecord, body: Any, vector: Any) -> Plan[bool]:
        """Insert, or replace the same user's entry, with its analysed text (the library's
        analysis) and its vector (when the store keeps vectors; a replaced entry's vector is
        replaced too, by ``NULL`` when the new write has none). Nothing is written when the
        id holds another user's entry (the conflicting row is locked and left as it is)."""
        s, values = self.schema, [*MEMORIES.row(rec)]
        tsv = self._tsv("$3::text", "$13::text")
        if self.client_analysis:
            values.append(body)
        vector_col = vector_val = vector_set = ""
        if self.vectors:
            values.append(vector)
            vector_col, vector_set = ", embedding", ", embedding = EXCLUDED.embedding"
            vector_val = f", ${len(values)}::{self.vector_type}"
        rows = yield Fetch(
            f"""INSERT INTO {s}.memories ({_MEMORY_COLUMNS}, tsv{vector_col})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, {tsv}{vector_val})
            ON CONFLICT (id) DO UPDATE SET
                content = EXCLUDED.content,
                memory_type = EXCLUDED.memory_type, category = EXCLUDED.category,
                tags = EXCLUDED.tags, confidence = EXCLUDED.confidence,
                importance = EXCLUDED.importance, created_us = EXCLUDED.created_us,
                expires_us = EXCLUDED.expires_us, conversation_id = EXCLUDED.conversation_id,
                payload = EXCLUDED.payload, tsv = EXCLUDED.tsv{vector_set}
            WHERE {s}.memories.user_id = EXCLUDED.user_id
            RETURNING 1""",
            values,
            alone=True,
        )
        return bool(rows)

    def upsert_session(self, rec: SessionRecord, conversation: Conversation) -> Plan[bool]:
        rows = yield Fetch(
            f"""INSERT INTO {self.schema}.sessions ({_SESSION_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (session_id) DO UPDATE SET
                conversation_id = EXCLUDED.conversation_id, is_active = EXCLUDED.is_active,
                started_us = EXCLUDED.started_us, payload = EXCLUDED.payload
            WHERE {self.schema}.sessions.user_id = EXCLUDED.user_id
            RETURNING 1""",
            SESSIONS.row(rec),
        )
        return bool(rows)

    def is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, UniqueViolationError)

    # ---------------------------------------------------------------- plans of one statement

    def append_group(self, appends: Sequence[Append]) -> Plan[list[Outcome]]:
        """The appends of a group commit, in one statement (see :attr:`append`); an append
        whose conversation another transaction claimed meanwhile gets ``None`` (run again)."""
        conv = [item.conversation_id for item in appends]
        users = [item.user_id for item in appends]
        enforce = [item.enforce_owner for item in appends]
        rows = [self._message_row(n, r) for n, item in enumerate(appends, 1) for r in item.records]
        cols: list[Any] = [list(c) for c in zip(*rows, strict=True)] or [
            [] for _ in self.staging_columns
        ]
        if self.vectors and all(v is None for v in cols[-1]):
            cols[-1] = None  # one NULL array: needs no vector codec
        if not self.client_analysis:
            del cols[9]
        try:
            rows = yield Fetch(self.append, (conv, users, enforce, *cols), alone=True)
        except UniqueViolationError:
            # A conversation claimed by another transaction after the snapshot: nothing
            # was written; every append runs again.
            return [None] * len(appends)
        owners: dict[str, str] = {}
        claimants: set[str] = set()
        inserted: set[str] = set()
        for conversation_id, owner, message_id, owned in rows:
            if message_id is not None:
                inserted.add(message_id)
            elif owned:
                owners[conversation_id] = owner
            else:
                claimants.add(conversation_id)
        outcomes: list[Outcome] = []
        for item in appends:
            owner = owners.get(item.conversation_id)
            if owner is None:
                # Expected to claim it, yet nothing went in (an id stored meanwhile), or
                # refused for that claim: the next snapshot decides. Or a new conversation
                # whose ids were all stored: nothing written.
                outcomes.append(
                    None
                    if item.conversation_id in claimants
                    else AppendResult(item.user_id, frozenset(r.id for r in item.records))
                )
            elif item.enforce_owner and owner != item.user_id:
                outcomes.append(not_owner(item.conversation_id))
            else:
                existing = frozenset(r.id for r in item.records if r.id not in inserted)
                outcomes.append(AppendResult(owner, existing))
        return outcomes

    def _message_row(self, n: int, r: MessageRecord) -> tuple[Any, ...]:
        """A message's values in :attr:`staging_columns` order, ``n`` first."""
        vector = (self.vector_value(r.vector),) if self.vectors else ()
        return (n, *(getattr(r, f) for f in _MESSAGE_VALUES), self.search_body(r.content), *vector)

    def append_copied(self, item: Append) -> Plan[AppendResult]:
        """A large append through ``COPY`` into a staging table, then one ``INSERT``."""
        records = item.records
        rows = [self._message_row(n, r) for n, r in enumerate(records)]
        claimed = yield Fetch(self.claim_conversation, (item.conversation_id, item.user_id))
        if not claimed:  # claimed by a transaction that committed after our snapshot
            found = yield Fetch(
                f"SELECT user_id FROM {self.schema}.conversations WHERE conversation_id = $1",
                (item.conversation_id,),
            )
            claimed = [(found[0][0], False)]
        owner, created = claimed[0]
        if item.enforce_owner and owner != item.user_id:
            raise not_owner(item.conversation_id)
        yield Execute(self.create_staging)
        yield Copy(self.staging_table, self.staging_columns, rows)
        stored = yield Fetch(self.insert_staged, (item.conversation_id, owner))
        if created and not stored:  # every id was stored: the write claims nothing either
            yield Execute(
                f"DELETE FROM {self.schema}.conversations WHERE conversation_id = ?",
                (item.conversation_id,),
            )
        inserted = {row[0] for row in stored}
        return AppendResult(owner, frozenset(r.id for r in records if r.id not in inserted))

    def text_search(self, request: SearchRequest) -> Plan[list[SearchHit]]:
        """Ranked search of the user's messages and memory entries, in one statement."""
        query = request.query
        words = terms(query) if self.client_analysis else query_words(query)
        # The shared layer bounds the query's terms; its distinct words (another
        # configuration's input) may still be more.
        words = list(dict.fromkeys(words))[:MAX_QUERY_TERMS]
        if not words:
            return []
        rows = yield Fetch(self.search(len(words)), search_values(request, words))
        return self.hits(rows)

    def delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> Plan[int]:
        """``_delete_messages`` in one statement (the sessions go by cascade)."""
        if keep_roles:
            return (
                yield Execute(
                    self.delete_messages_keeping, (conversation_id, sorted(keep_roles)), alone=True
                )
            )
        rows = yield Fetch(self.delete_conversation, (conversation_id,), alone=True)
        return int(rows[0][0])

    def delete_owned_memory(self, memory_id: str, user_id: str | None) -> Plan[bool]:
        """``_delete_memory`` in one statement."""
        rows = yield Fetch(self.delete_memory, (memory_id, user_id), alone=True)
        gone, owner = rows[0]
        if not gone and owner is not None and owner != user_id:
            raise memory_taken(memory_id)
        return bool(gone)

    def purge(self, now_us: int) -> Plan[int]:
        """``_purge_expired`` in one statement."""
        return (yield Execute(self.purge_expired, (now_us,), alone=True))

    def save_session(self, rec: SessionRecord) -> Plan[None]:
        """``_put_session`` in one statement (in a transaction: a session id held by another
        user is found only by the upsert, after the statement may have claimed a new
        conversation, which must not stay)."""
        args = (
            rec.session_id,
            rec.user_id,
            rec.conversation_id,
            rec.is_active,
            rec.started_us,
            rec.payload,
        )
        for _round in range(5):
            rows = yield Fetch(self.put_session, args)
            owner, saved = rows[0]
            if owner is None:  # claimed concurrently after this statement's snapshot
                continue
            if owner != rec.user_id:
                raise OwnershipError(
                    f"conversation {rec.conversation_id!r} belongs to another user",
                    backend=self.backend,
                    operation="create_session",
                )
            if not saved:
                raise session_taken(rec.session_id)
            return
        raise BackendError("the conversation's owner could not be determined")

    def forget(self, user_id: str) -> Plan[dict[str, int]]:
        """``_forget_user`` in one statement."""
        rows = yield Fetch(self.forget_user, (user_id,), alone=True)
        kinds = ("messages", "conversations", "sessions", "memories")
        return dict(zip(kinds, (int(v) for v in rows[0]), strict=True))

    # ---------------------------------------------------------------- deletions and sessions

    @property
    def delete_messages_keeping(self) -> str:
        return (
            f"DELETE FROM {self.schema}.messages "
            "WHERE conversation_id = $1 AND role <> ALL($2::text[])"
        )

    @property
    def delete_conversation(self) -> str:
        """Deletes the conversation and its messages; its sessions go by cascade."""
        s = self.schema
        return f"""WITH gone AS (
                DELETE FROM {s}.messages WHERE conversation_id = $1 RETURNING 1
            ), conv AS (
                DELETE FROM {s}.conversations WHERE conversation_id = $1 RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM conv)"""

    @property
    def delete_memory(self) -> str:
        """Delete ``$1`` if ``$2`` is ``NULL`` or its owner; returns how many rows went and
        the owner the statement saw (``NULL``: no such entry)."""
        s = self.schema
        return f"""WITH gone AS (
                DELETE FROM {s}.memories WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone),
                (SELECT user_id FROM {s}.memories WHERE id = $1)"""

    @property
    def purge_expired(self) -> str:
        return f"DELETE FROM {self.schema}.memories WHERE expires_us <= $1"

    # ---------------------------------------------------------------- sessions

    @property
    def put_session(self) -> str:
        """Claim the conversation for the session's user and upsert the session, unless
        another user owns the conversation or the session id. Returns the conversation's
        owner (``NULL`` in the rare claim race: run again) and whether the session was
        written (not when another user holds the session id: the caller rolls back)."""
        s = self.schema
        return f"""WITH claimed AS (
                INSERT INTO {s}.conversations (conversation_id, user_id) VALUES ($3, $2)
                ON CONFLICT (conversation_id) DO NOTHING
                RETURNING user_id
            ), owner AS (
                SELECT user_id FROM claimed
                UNION ALL
                SELECT user_id FROM {s}.conversations WHERE conversation_id = $3
            ), saved AS (
                INSERT INTO {s}.sessions ({_SESSION_COLUMNS})
                SELECT $1::text, $2::text, $3::text, $4::bool, $5::int8, $6::text
                WHERE (SELECT user_id FROM owner LIMIT 1) = $2
                ON CONFLICT (session_id) DO UPDATE SET
                    conversation_id = EXCLUDED.conversation_id,
                    is_active = EXCLUDED.is_active, started_us = EXCLUDED.started_us,
                    payload = EXCLUDED.payload
                WHERE {s}.sessions.user_id = EXCLUDED.user_id
                RETURNING 1
            )
            SELECT (SELECT user_id FROM owner LIMIT 1), (SELECT count(*) FROM saved)"""

    @property
    def forget_user(self) -> str:
        s = self.schema
        return f"""WITH msgs AS (
                DELETE FROM {s}.messages WHERE user_id = $1 RETURNING 1
            ), sess AS (
                DELETE FROM {s}.sessions WHERE user_id = $1 RETURNING 1
            ), mems AS (
                DELETE FROM {s}.memories WHERE user_id = $1 RETURNING 1
            ), convs AS (
                DELETE FROM {s}.conversations WHERE user_id = $1 RETURNING 1
            )
            SELECT (SELECT count(*) FROM msgs), (SELECT count(*) FROM convs),
                   (SELECT count(*) FROM sess), (SELECT count(*) FROM mems)"""

    # ---------------------------------------------------------------- schema management

    def schema_version(self) -> Plan[int]:
        rows = yield Fetch("SELECT to_regclass(?) IS NOT NULL", (self.table("schema_version"),))
        if not rows[0][0]:
            return 0
        rows = yield Fetch(f"SELECT coalesce(max(version), 0) FROM {self.schema}.schema_version")
        return int(rows[0][0])

    def create_version_table(self) -> Plan[None]:
        rows = yield Fetch("SELECT to_regnamespace(?) IS NULL", (self.schema,))
        if rows[0][0]:
            yield Execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        yield Execute(
            f"""CREATE TABLE IF NOT EXISTS {self.schema}.schema_version (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
        )

    def lock_schema(self) -> Plan[None]:
        # Concurrent first connects queue here; the first migrates, the others find the
        # schema current.
        yield Execute("BEGIN")
        yield Execute("SELECT pg_advisory_xact_lock(?)", (lock_key(self.schema.strip('"')),))

    def unlock_schema(self, done: bool) -> Plan[None]:
        yield Execute("COMMIT" if done else "ROLLBACK")

    def record_version(self, version: int, name: str) -> Execute:
        return Execute(
            f"INSERT INTO {self.schema}.schema_version (version, description) VALUES (?, ?)",
            (version, name),
        )

    @property
    def read_meta(self) -> str:
        return f"SELECT key, value FROM {self.schema}.meta"

    @property
    def write_meta(self) -> str:
        return f"""INSERT INTO {self.schema}.meta (key, value) VALUES ($1, $2)
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"""

    def size_vectors(self, dimension: int) -> list[str]:
        """Empty ``embedding`` columns of type ``vector(dimension)``, with HNSW indexes.

        Dropping and adding a column is instant whatever the table's size (no rewrite); the
        index of an all-NULL column builds at the speed of a table scan.
        """
        s, vt = self.schema, self.vector_type
        statements: list[str] = []
        for table in ("messages", "memories"):
            statements += [
                f"ALTER TABLE {s}.{table} DROP COLUMN IF EXISTS embedding",
                f"ALTER TABLE {s}.{table} ADD COLUMN embedding {vt}({int(dimension)})",
            ]
            if dimension <= HNSW_MAX_DIMENSIONS:
                statements.append(
                    f"""CREATE INDEX {table}_embedding_idx ON {s}.{table}
                    USING hnsw (embedding {self.vector_schema}.vector_cosine_ops)
                    WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"""
                )
        return statements

    # ---------------------------------------------------------------- messages

    def window(self, *, by_conversation: bool, by_user: bool, limited: bool) -> str:
        """The window statement the shared plans run, newest first (for raw baselines)."""
        conv, user = ("" if by_conversation else None), ("" if by_user else None)
        return self.sql(window(self, conv, user, 1 if limited else None)[0])

    @property
    def claim_conversation(self) -> str:
        """Claim for ``$2`` unless owned; returns ``(owner, created)`` (no row in a rare
        race: re-read)."""
        s = self.schema
        return f"""WITH claimed AS (
                INSERT INTO {s}.conversations (conversation_id, user_id) VALUES ($1, $2)
                ON CONFLICT (conversation_id) DO NOTHING
                RETURNING user_id
            )
            SELECT user_id, true FROM claimed
            UNION ALL
            SELECT user_id, false FROM {s}.conversations WHERE conversation_id = $1"""

    @property
    def append(self) -> str:
        """Claim conversations and insert messages of many appends in one statement.

        Parameters: per append ``$1`` conversation ids, ``$2`` user ids, ``$3`` enforce
        flags; per message ``$4`` append number (1-based), ``$5..$12`` the columns, then
        the analysed text (with the library's analysis) and the vectors (when the store
        keeps them), in that order from ``$13``. Returns ``(conversation_id, user_id, id,
        owned)`` rows: one per owner, ``(conv, owner, NULL, true)``; one per new conversation
        a live append (one with no records, or with a record not stored yet) would claim,
        ``(conv, claimant, NULL, false)``; one per inserted message ``(NULL, NULL, id, NULL)``.

        An append whose owner check fails inserts nothing. A new conversation is claimed
        (by its first live append's user) only if a message goes into it or an append of no
        records claims it: an append whose ids are all stored writes nothing. Should another
        transaction claim that conversation after this statement's snapshot, the claim
        fails with a unique violation and nothing is written: run the statement again.
        """
        s = self.schema
        extras = [("text[]", "analysed")] if self.client_analysis else []
        if self.vectors:
            extras.append((f"{self.vector_type}[]", "embedding"))
        extra_type = "".join(f", ${13 + i}::{kind}" for i, (kind, _) in enumerate(extras))
        extra_col = "".join(f", {name}" for _, name in extras)
        vector_col, vector_val = (", embedding", ", m.embedding") if self.vectors else ("", "")
        return f"""WITH app AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::bool[])
                    WITH ORDINALITY AS a(conversation_id, user_id, enforce, idx)
            ), m AS (
                SELECT * FROM unnest($4::int8[], $5::text[], $6::text[], $7::text[],
                                     $8::text[], $9::text[], $10::int8[], $11::text[],
                                     $12::text[]{extra_type})
                    WITH ORDINALITY AS m(app, id, role, message_type, content, ts_iso, ts_us,
                                         metadata_text, parent_id{extra_col}, ord)
            ), known AS (
                SELECT c.conversation_id, c.user_id FROM {s}.conversations c
                WHERE c.conversation_id = ANY($1::text[])
            ), claimants AS (
                SELECT DISTINCT ON (app.conversation_id) app.conversation_id, app.user_id
                FROM app
                WHERE app.conversation_id NOT IN (SELECT conversation_id FROM known)
                  AND (NOT EXISTS (SELECT 1 FROM m WHERE m.app = app.idx)
                       OR EXISTS (SELECT 1 FROM m WHERE m.app = app.idx AND NOT EXISTS (
                           SELECT 1 FROM {s}.messages s WHERE s.id = m.id)))
                ORDER BY app.conversation_id, app.idx
            ), owners AS (
                SELECT conversation_id, user_id FROM known
                UNION ALL
                SELECT conversation_id, user_id FROM claimants
            ), accepted AS (
                SELECT app.idx, app.conversation_id, owners.user_id AS owner
                FROM app JOIN owners USING (conversation_id)
                WHERE NOT app.enforce OR owners.user_id = app.user_id
            ), inserted AS (
                INSERT INTO {s}.messages (id, conversation_id, user_id, role, message_type,
                                          content, ts_iso, ts_us, metadata_text, parent_id,
                                          tsv{vector_col})
                SELECT m.id, acc.conversation_id, acc.owner, m.role, m.message_type,
                       m.content, m.ts_iso, m.ts_us, m.metadata_text, m.parent_id,
                       {self._tsv("m.content", "m.analysed")}{vector_val}
                FROM m JOIN accepted acc ON acc.idx = m.app
                ORDER BY m.ord
                ON CONFLICT (id) DO NOTHING
                RETURNING id, conversation_id
            ), claimed AS (
                INSERT INTO {s}.conversations (conversation_id, user_id)
                SELECT c.conversation_id, c.user_id FROM claimants c
                WHERE EXISTS (SELECT 1 FROM inserted i
                              WHERE i.conversation_id = c.conversation_id)
                   OR EXISTS (SELECT 1 FROM accepted a
                              WHERE a.conversation_id = c.conversation_id
                                AND NOT EXISTS (SELECT 1 FROM m WHERE m.app = a.idx))
                RETURNING conversation_id, user_id
            )
            SELECT conversation_id, user_id, NULL::text AS id, true AS owned FROM known
            UNION ALL
            SELECT conversation_id, user_id, NULL, true FROM claimed
            UNION ALL
            SELECT conversation_id, user_id, NULL, false FROM claimants
            UNION ALL
            SELECT NULL, NULL, id, NULL FROM inserted"""

    _STAGING_COLUMNS = (
        "ord id role message_type content ts_iso ts_us metadata_text parent_id analysed"
    ).split()

    @property
    def staging_table(self) -> str:
        """The temporary table ``COPY`` fills (another name when it has a vector column)."""
        return "bruno_memstore_staging_v" if self.vectors else "bruno_memstore_staging"

    @property
    def staging_columns(self) -> tuple[str, ...]:
        return (*self._STAGING_COLUMNS, *(["embedding"] if self.vectors else []))

    @property
    def create_staging(self) -> str:
        """A per-connection staging table for ``COPY`` of large batches (emptied on commit)."""
        vector = f", embedding {self.vector_type}" if self.vectors else ""
        return f"""CREATE TEMP TABLE IF NOT EXISTS {self.staging_table} (
                ord bigint, id text, role text, message_type text, content text,
                ts_iso text, ts_us bigint, metadata_text text, parent_id text, analysed text
                {vector}
            ) ON COMMIT DELETE ROWS"""

    @property
    def insert_staged(self) -> str:
        vector = ", embedding" if self.vectors else ""
        return f"""INSERT INTO {self.schema}.messages (id, conversation_id, user_id, role,
                message_type, content, ts_iso, ts_us, metadata_text, parent_id, tsv{vector})
            SELECT id, $1, $2, role, message_type, content, ts_iso, ts_us, metadata_text,
                   parent_id, {self._tsv("content", "analysed")}{vector}
            FROM {self.staging_table} ORDER BY ord
            ON CONFLICT (id) DO NOTHING
            RETURNING id"""

    # ---------------------------------------------------------------- memories

    @staticmethod
    def memory_filter(first: int) -> str:
        """The ``MemoryFilter`` predicate on alias ``m``, over parameters ``$first`` to
        ``$first+7``: user, types, categories, tags, min confidence, min importance,
        include expired, now."""
        p = [f"${first + i}" for i in range(8)]
        return f"""m.user_id = {p[0]}
            AND (cardinality({p[1]}::text[]) = 0 OR m.memory_type = ANY({p[1]}::text[]))
            AND (cardinality({p[2]}::text[]) = 0 OR m.category = ANY({p[2]}::text[]))
            AND (cardinality({p[3]}::text[]) = 0 OR m.tags && {p[3]}::text[])
            AND m.confidence >= {p[4]} AND m.importance >= {p[5]}
            AND ({p[6]}::bool OR m.expires_us IS NULL OR m.expires_us > {p[7]})"""

    # ---------------------------------------------------------------- search

    def search(self, n_terms: int) -> str:
        """Ranked search of one user's messages and memory entries, in one statement.

        Parameters: ``$1`` user, ``$2`` the query terms (``n_terms`` of them), ``$3`` limit,
        ``$4``/``$5`` include messages/memories, ``$6`` conversation or ``NULL``,
        ``$7..$14`` the memory filter.

        Each term goes through ``plainto_tsquery``, which accepts any text, so user input
        never meets the tsquery parser; the terms are OR-ed to find candidates through the
        GIN index. A candidate scores, over the terms it contains,
        ``sum(idf(term) * ts_rank_cd(tsv, term, 1))``: cover density divided by 1 + log of
        the document's length, weighted by the term's inverse document frequency among the
        user's records (as in BM25), so rarer terms count for more. Ranking term by term is
        also several times cheaper than ``ts_rank_cd`` over the OR-ed query.
        """
        s = self.schema
        cfg = self.regconfig or "'simple'::regconfig"
        k = range(1, n_terms + 1)
        parsed = ", ".join(f"plainto_tsquery({cfg}, ($2::text[])[{i}]) AS q{i}" for i in k)
        listed = ", ".join(f"q{i}" for i in k)
        ranks = ", ".join(
            f"CASE WHEN c.tsv @@ t.q{i} THEN ts_rank_cd(c.tsv, t.q{i}, 1) END AS r{i}" for i in k
        )
        counts = ", ".join(f"count(r{i}) OVER ()::float8 AS df{i}" for i in k)
        score = " + ".join(
            f"coalesce(r{i} * ln(1.0 + (docs.n - df{i} + 0.5) / (df{i} + 0.5)), 0)" for i in k
        )
        return f"""WITH t AS MATERIALIZED (
                SELECT p.*, (SELECT string_agg(x::text, ' | ')
                             FROM unnest(ARRAY[{listed}]) AS x
                             WHERE numnode(x) > 0)::tsquery AS q
                FROM (SELECT {parsed}) AS p
            ), cand AS (
                SELECT 'message'::text AS kind, m.id, m.ts_us AS at, m.tsv
                FROM {s}.messages m
                WHERE $4::bool AND m.user_id = $1 AND m.tsv @@ (SELECT q FROM t)
                  AND ($6::text IS NULL OR m.conversation_id = $6::text)
                UNION ALL
                SELECT 'memory', m.id, m.created_us, m.tsv
                FROM {s}.memories m
                WHERE $5::bool AND m.tsv @@ (SELECT q FROM t) AND {self.memory_filter(7)}
                  AND ($6::text IS NULL OR m.conversation_id = $6::text)
            ), ranked AS (
                SELECT c.kind, c.id, c.at, {ranks} FROM cand c, t
            ), counted AS (
                SELECT ranked.*, {counts} FROM ranked
            ), docs AS MATERIALIZED (
                SELECT ((SELECT count(*) FROM {s}.messages WHERE user_id = $1)
                     + (SELECT count(*) FROM {s}.memories WHERE user_id = $1))::float8 AS n
            ), top AS (
                SELECT counted.kind, counted.id, counted.at, {score} AS score
                FROM counted, docs
                ORDER BY score DESC, counted.at DESC, counted.id
                LIMIT $3
            )
            {self._top_records("top.score", "top.score DESC")}"""

    def _top_records(self, score: str, order: str) -> str:
        """The records of the hits in ``top`` (``kind, id, at``), as :meth:`hits` reads them."""
        s, memory = self.schema, ", ".join(f"e.{c[2:]}" for c in self.memories.columns)
        return f"""SELECT top.kind, {score} AS score, {self.messages.select}, {memory}
            FROM top
            LEFT JOIN {s}.messages m ON top.kind = 'message' AND m.id = top.id
            LEFT JOIN {s}.memories e ON top.kind = 'memory' AND e.id = top.id
            ORDER BY {order}, top.at DESC, top.id"""

    # ---------------------------------------------------------------- vectors

    def put_vectors(self, table: str) -> str:
        """Attach vectors ``$2`` to the rows of ``table`` with ids ``$1`` (others skipped)."""
        return f"""UPDATE {self.schema}.{table} t SET embedding = v.embedding
            FROM unnest($1::text[], $2::{self.vector_type}[]) AS v(id, embedding)
            WHERE t.id = v.id"""

    @property
    def vector_search(self) -> str:
        """The user's records nearest to a vector, in one statement.

        Parameters: ``$1`` user, ``$2`` the query vector, ``$3`` limit, ``$4``/``$5`` include
        messages/memories, ``$6`` conversation or ``NULL``, ``$7..$14`` the memory filter,
        ``$15``/``$16`` the exact-scan threshold: at least ``$15`` rows, and
        ``sqrt($16 * limit * rows in the table)``.

        Every filter is part of the scan's own ``WHERE`` clause. Per kind, one of two plans
        runs (the other is cut off by a one-time filter):

        * *exact*: when the user (or the conversation) holds fewer rows than the threshold,
          they are read through the B-tree on ``user_id`` and sorted by distance. ``+ 0``
          keeps the HNSW index out of this ``ORDER BY``. Its cost grows with the user's
          rows ``n``.
        * *index*: otherwise the HNSW index is walked nearest first, skipping rows that fail
          the filters (with pgvector 0.8's iterative scans it keeps going until ``$3`` rows
          pass): about ``limit * N / n`` rows of a table of ``N``, which is what the
          threshold weighs against ``n``. If it still returns fewer than ``$3`` (the scan
          hit ``hnsw.max_scan_tuples``, or few rows pass the filters), the exact plan runs
          instead, so a filter never starves the result.

        The table's size is PostgreSQL's estimate (``pg_class.reltuples``), read for free.
        """
        s = self.schema
        # Cosine distance, the operator named by its schema (no ``search_path``).
        dist = f"m.embedding OPERATOR({self.vector_schema}.<=>) $2::{self.vector_type}"
        conv = "($6::text IS NULL OR m.conversation_id = $6::text)"
        mem_where = f"m.user_id = $1 AND {self.memory_filter(7)} AND {conv}"

        def plans(kind: str, table: str, at: str, scope: str, where: str) -> str:
            return f"""{kind}_cut AS MATERIALIZED (
                SELECT greatest($15::float8, sqrt($16::float8 * $3::float8
                                                  * greatest(c.reltuples, 0)))::int8 AS n
                FROM pg_class c WHERE c.oid = '{s}.{table}'::regclass
            ), {kind}_scope AS MATERIALIZED (
                SELECT count(*) AS n FROM (
                    SELECT 1 FROM {s}.{table} m WHERE {scope}
                    LIMIT (SELECT n FROM {kind}_cut)
                ) AS x
            ), {kind}_index AS MATERIALIZED (
                SELECT m.id, {dist} AS d, m.{at} AS at FROM {s}.{table} m
                WHERE (SELECT n FROM {kind}_scope) >= (SELECT n FROM {kind}_cut) AND {where}
                ORDER BY {dist}
                LIMIT $3
            ), {kind}_exact AS MATERIALIZED (
                SELECT m.id, {dist} AS d, m.{at} AS at FROM {s}.{table} m
                WHERE ((SELECT n FROM {kind}_scope) < (SELECT n FROM {kind}_cut)
                       OR (SELECT count(*) FROM {kind}_index) < $3)
                  AND {where} AND m.embedding IS NOT NULL
                ORDER BY ({dist}) + 0, m.id
                LIMIT $3
            )"""

        msg_scope = f"$4::bool AND m.user_id = $1 AND {conv}"
        mem_scope = "$5::bool AND m.user_id = $1"
        return f"""WITH {plans("msg", "messages", "ts_us", msg_scope, msg_scope)},
            {plans("mem", "memories", "created_us", mem_scope, f"$5::bool AND {mem_where}")},
            hits AS (
                SELECT 'message'::text AS kind, id, d, at FROM msg_exact
                UNION ALL
                SELECT 'message', id, d, at FROM msg_index
                WHERE NOT EXISTS (SELECT 1 FROM msg_exact)
                UNION ALL
                SELECT 'memory', id, d, at FROM mem_exact
                UNION ALL
                SELECT 'memory', id, d, at FROM mem_index
                WHERE NOT EXISTS (SELECT 1 FROM mem_exact)
            ), top AS (
                SELECT kind, id, d, at FROM hits ORDER BY d, at DESC, id LIMIT $3
            )
            {self._top_records("1 - top.d", "top.d")}"""

    # ---------------------------------------------------------------- maintenance

    @property
    def compact(self) -> str:
        """Rewrite every table holding user data into new files (indexes and TOAST too).

        A plain ``VACUUM`` only marks dead tuples' space reusable: their bytes stay in the
        pages until overwritten. ``FULL`` copies the live rows into new files and drops the
        old ones; ``ANALYZE`` replaces the planner's samples of column values (kept in
        ``pg_statistic``) with samples of live rows.
        """
        s = self.schema
        tables = ", ".join(
            f"{s}.{t}" for t in ("conversations", "messages", "memories", "sessions")
        )
        return f"VACUUM (FULL, ANALYZE) {tables}"
