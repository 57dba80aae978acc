"""SQL of the PostgreSQL backend: ordered migrations and every statement it runs.

All names are schema-qualified (no reliance on ``search_path``, so connection poolers in
transaction mode work). The schema name and the text-search configuration are validated
before they are put into SQL text; every value travels as a bound parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "INDEXED_PREFIX",
    "LATEST_VERSION",
    "MESSAGE_COLUMNS",
    "Statements",
    "check_language",
    "check_schema",
    "migrations",
]

# PostgreSQL caps a tsvector at 1 MB; 100,000 characters of any script stays well below it,
# so a 1 MB message is stored whole and its first 100,000 characters are searchable.
INDEXED_PREFIX = 100_000

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CONFIG = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")

MESSAGE_COLUMNS = (
    "id, conversation_id, user_id, role, message_type, content, ts_iso, ts_us, "
    "metadata_text, parent_id, seq"
)
_MEMORY_COLUMNS = (
    "id, user_id, content, memory_type, category, tags, confidence, importance, "
    "created_us, expires_us, conversation_id, payload"
)
_SESSION_COLUMNS = "session_id, user_id, conversation_id, is_active, started_us, payload"


def check_schema(name: str) -> str:
    """Validate a schema name (a plain identifier) and return it quoted for SQL."""
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ValueError("expected an identifier of letters, digits and '_' (at most 63)")
    return f'"{name}"'


def check_language(name: str) -> str:
    """Validate a text-search configuration name and return it as a SQL ``regconfig``."""
    if not isinstance(name, str) or not _CONFIG.fullmatch(name):
        raise ValueError("expected a text search configuration name such as 'english'")
    return f"'{name}'::regconfig"


def migrations(schema: str, language: str) -> list[tuple[int, str, list[str]]]:
    """The ordered migrations: ``(version, description, statements)``.

    ``schema`` is quoted and ``language`` a ``regconfig`` literal, both from the checks above.
    A migration is never edited once released; changes go in a new, higher version.
    """
    s, lang = schema, language
    tsv = f"to_tsvector({lang}, left(content, {INDEXED_PREFIX}))"
    return [
        (
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
                    tsv tsvector GENERATED ALWAYS AS ({tsv}) STORED
                )""",
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
                    tsv tsvector GENERATED ALWAYS AS ({tsv}) STORED
                )""",
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
    ]


LATEST_VERSION = 1


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement the backend runs, for one schema and text-search configuration."""

    schema: str  # quoted
    language: str  # regconfig literal

    # ---------------------------------------------------------------- schema management

    @property
    def create_schema(self) -> str:
        return f"CREATE SCHEMA IF NOT EXISTS {self.schema}"

    @property
    def create_version_table(self) -> str:
        return f"""CREATE TABLE IF NOT EXISTS {self.schema}.schema_version (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )"""

    @property
    def version_table_exists(self) -> str:
        return "SELECT to_regclass($1) IS NOT NULL"

    @property
    def current_version(self) -> str:
        return f"SELECT coalesce(max(version), 0) FROM {self.schema}.schema_version"

    @property
    def record_version(self) -> str:
        return f"INSERT INTO {self.schema}.schema_version (version, description) VALUES ($1, $2)"

    @property
    def indexed_language(self) -> str:
        """The configuration the stored ``tsv`` column was built with (``regconfig`` text)."""
        return f"""SELECT substring(pg_get_expr(d.adbin, d.adrelid)
                                    FROM 'to_tsvector\\(''([^'']+)''::regconfig')
            FROM pg_attrdef d
            JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
            WHERE d.adrelid = '{self.schema}.messages'::regclass AND a.attname = 'tsv'"""

    # ---------------------------------------------------------------- conversations

    @property
    def conversation_owner(self) -> str:
        return f"SELECT user_id FROM {self.schema}.conversations WHERE conversation_id = $1"

    @property
    def claim_conversation(self) -> str:
        """Claim for ``$2`` unless owned; returns the owner (no row in a rare race: re-read)."""
        s = self.schema
        return f"""WITH claimed AS (
                INSERT INTO {s}.conversations (conversation_id, user_id) VALUES ($1, $2)
                ON CONFLICT (conversation_id) DO NOTHING
                RETURNING user_id
            )
            SELECT user_id FROM claimed
            UNION ALL
            SELECT user_id FROM {s}.conversations WHERE conversation_id = $1"""

    # ---------------------------------------------------------------- messages

    @property
    def append(self) -> str:
        """Claim conversations and insert messages of many appends in one statement.

        Parameters: per append ``$1`` conversation ids, ``$2`` user ids, ``$3`` enforce
        flags; per message ``$4`` append number (1-based) and ``$5..$12`` the columns.
        Returns one row per known owner ``(conversation_id, user_id, NULL)`` and one per
        inserted message ``(NULL, NULL, id)``. An append whose owner check fails inserts
        nothing; one whose conversation a concurrent transaction claimed after this
        statement's snapshot finds no owner row and must be run again.
        """
        s = self.schema
        return f"""WITH app AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::bool[])
                    WITH ORDINALITY AS a(conversation_id, user_id, enforce, idx)
            ), claimed AS (
                INSERT INTO {s}.conversations AS c (conversation_id, user_id)
                SELECT DISTINCT ON (conversation_id) conversation_id, user_id
                FROM app ORDER BY conversation_id, idx
                ON CONFLICT (conversation_id) DO NOTHING
                RETURNING c.conversation_id, c.user_id
            ), owners AS (
                SELECT conversation_id, user_id FROM claimed
                UNION ALL
                SELECT c.conversation_id, c.user_id FROM {s}.conversations c
                WHERE c.conversation_id = ANY($1::text[])
            ), accepted AS (
                SELECT app.idx, app.conversation_id, owners.user_id AS owner
                FROM app JOIN owners USING (conversation_id)
                WHERE NOT app.enforce OR owners.user_id = app.user_id
            ), inserted AS (
                INSERT INTO {s}.messages (id, conversation_id, user_id, role, message_type,
                                          content, ts_iso, ts_us, metadata_text, parent_id)
                SELECT m.id, acc.conversation_id, acc.owner, m.role, m.message_type,
                       m.content, m.ts_iso, m.ts_us, m.metadata_text, m.parent_id
                FROM unnest($4::int8[], $5::text[], $6::text[], $7::text[], $8::text[],
                            $9::text[], $10::int8[], $11::text[], $12::text[])
                    WITH ORDINALITY AS m(app, id, role, message_type, content, ts_iso, ts_us,
                                         metadata_text, parent_id, ord)
                JOIN accepted acc ON acc.idx = m.app
                ORDER BY m.ord
                ON CONFLICT (id) DO NOTHING
                RETURNING id
            )
            SELECT conversation_id, user_id, NULL::text AS id FROM owners
            UNION ALL
            SELECT NULL, NULL, id FROM inserted"""

    @property
    def create_staging(self) -> str:
        """A per-connection staging table for ``COPY`` of large batches (emptied on commit)."""
        return """CREATE TEMP TABLE IF NOT EXISTS bruno_memstore_staging (
                ord bigint, id text, role text, message_type text, content text,
                ts_iso text, ts_us bigint, metadata_text text, parent_id text
            ) ON COMMIT DELETE ROWS"""

    @property
    def insert_staged(self) -> str:
        return f"""INSERT INTO {self.schema}.messages (id, conversation_id, user_id, role,
                message_type, content, ts_iso, ts_us, metadata_text, parent_id)
            SELECT id, $1, $2, role, message_type, content, ts_iso, ts_us, metadata_text,
                   parent_id
            FROM bruno_memstore_staging ORDER BY ord
            ON CONFLICT (id) DO NOTHING
            RETURNING id"""

    @property
    def get_messages(self) -> str:
        return f"SELECT {MESSAGE_COLUMNS} FROM {self.schema}.messages WHERE id = ANY($1::text[])"

    def window(self, *, by_conversation: bool, by_user: bool, limited: bool) -> str:
        """The newest messages, newest first (the caller reverses)."""
        where = []
        if by_conversation:
            where.append("conversation_id = $1")
        if by_user:
            where.append(f"user_id = ${len(where) + 1}")
        limit = f" LIMIT ${len(where) + 1}" if limited else ""
        return (
            f"SELECT {MESSAGE_COLUMNS} FROM {self.schema}.messages "
            f"WHERE {' AND '.join(where)} ORDER BY ts_us DESC, seq DESC{limit}"
        )

    @property
    def delete_messages_keeping(self) -> str:
        return (
            f"DELETE FROM {self.schema}.messages "
            "WHERE conversation_id = $1 AND role <> ALL($2::text[])"
        )

    @property
    def delete_conversation(self) -> str:
        """Deletes the conversation; its messages and sessions go by cascade."""
        s = self.schema
        return f"""WITH gone AS (
                DELETE FROM {s}.messages WHERE conversation_id = $1 RETURNING 1
            ), conv AS (
                DELETE FROM {s}.conversations WHERE conversation_id = $1 RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM conv)"""

    # ---------------------------------------------------------------- memories

    @property
    def put_memory(self) -> str:
        s = self.schema
        return f"""INSERT INTO {s}.memories ({_MEMORY_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            ON CONFLICT (id) DO UPDATE SET
                user_id = EXCLUDED.user_id, content = EXCLUDED.content,
                memory_type = EXCLUDED.memory_type, category = EXCLUDED.category,
                tags = EXCLUDED.tags, confidence = EXCLUDED.confidence,
                importance = EXCLUDED.importance, created_us = EXCLUDED.created_us,
                expires_us = EXCLUDED.expires_us, conversation_id = EXCLUDED.conversation_id,
                payload = EXCLUDED.payload"""

    @property
    def get_memory(self) -> str:
        return f"SELECT {_MEMORY_COLUMNS} FROM {self.schema}.memories WHERE id = $1"

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

    @property
    def query_memories(self) -> str:
        return f"""SELECT {_MEMORY_COLUMNS} FROM {self.schema}.memories m
            WHERE {self.memory_filter(1)}
            ORDER BY m.importance DESC, m.created_us DESC, m.id
            LIMIT $9"""

    @property
    def delete_memory(self) -> str:
        return f"DELETE FROM {self.schema}.memories WHERE id = $1"

    @property
    def purge_expired(self) -> str:
        return f"DELETE FROM {self.schema}.memories WHERE expires_us <= $1"

    # ---------------------------------------------------------------- sessions

    @property
    def put_session(self) -> str:
        """Claim the conversation for the session's user and upsert the session, unless
        another user owns it. Returns the owner (``NULL`` in the rare claim race: run again)."""
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
                    user_id = EXCLUDED.user_id, conversation_id = EXCLUDED.conversation_id,
                    is_active = EXCLUDED.is_active, started_us = EXCLUDED.started_us,
                    payload = EXCLUDED.payload
                RETURNING 1
            )
            SELECT (SELECT user_id FROM owner LIMIT 1), (SELECT count(*) FROM saved)"""

    @property
    def get_session(self) -> str:
        return f"SELECT {_SESSION_COLUMNS} FROM {self.schema}.sessions WHERE session_id = $1"

    def latest_session(self, *, by_conversation: bool) -> str:
        conv = " AND conversation_id = $3" if by_conversation else ""
        return f"""SELECT {_SESSION_COLUMNS} FROM {self.schema}.sessions
            WHERE user_id = $1 AND (is_active OR NOT $2){conv}
            ORDER BY started_us DESC, session_id DESC LIMIT 1"""

    # ---------------------------------------------------------------- search

    @property
    def _tsquery(self) -> str:
        # Each query word goes through plainto_tsquery, which accepts any text, so user
        # input never meets the tsquery parser; the parts are joined with OR.
        return f"""(SELECT string_agg(part::text, ' | ')::tsquery
                FROM (SELECT plainto_tsquery({self.language}, w) AS part
                      FROM unnest($2::text[]) AS w) AS parts
                WHERE numnode(part) > 0)"""

    def search_messages(self, *, by_conversation: bool) -> str:
        conv = " AND m.conversation_id = $4" if by_conversation else ""
        cols = ", ".join(f"m.{c.strip()}" for c in MESSAGE_COLUMNS.split(","))
        return f"""WITH q AS MATERIALIZED (SELECT {self._tsquery} AS q)
            SELECT ts_rank_cd(m.tsv, q.q) AS score, {cols}
            FROM {self.schema}.messages m, q
            WHERE m.user_id = $1 AND m.tsv @@ q.q{conv}
            ORDER BY score DESC, m.ts_us DESC, m.id
            LIMIT $3"""

    def search_memories(self, *, by_conversation: bool) -> str:
        """``$1`` user, ``$2`` words, ``$3`` limit, ``$4..$11`` the filter, ``$12`` conversation."""
        conv = " AND m.conversation_id = $12" if by_conversation else ""
        cols = ", ".join(f"m.{c.strip()}" for c in _MEMORY_COLUMNS.split(","))
        return f"""WITH q AS MATERIALIZED (SELECT {self._tsquery} AS q)
            SELECT ts_rank_cd(m.tsv, q.q) AS score, {cols}
            FROM {self.schema}.memories m, q
            WHERE m.user_id = $1 AND m.tsv @@ q.q AND {self.memory_filter(4)}{conv}
            ORDER BY score DESC, m.created_us DESC, m.id
            LIMIT $3"""

    # ---------------------------------------------------------------- statistics and users

    @property
    def statistics(self) -> str:
        s = self.schema
        return f"""SELECT
                (SELECT count(*) FROM {s}.conversations WHERE user_id = $1),
                (SELECT count(*) FROM {s}.sessions WHERE user_id = $1),
                (SELECT count(*) FROM {s}.sessions WHERE user_id = $1 AND is_active),
                (SELECT count(*) FROM {s}.memories WHERE user_id = $1),
                (SELECT coalesce(json_object_agg(role, n), '{{}}')::text
                    FROM (SELECT role, count(*) AS n FROM {s}.messages
                          WHERE user_id = $1 GROUP BY role) AS r),
                (SELECT min(ts_us) FROM {s}.messages WHERE user_id = $1),
                (SELECT max(ts_us) FROM {s}.messages WHERE user_id = $1)"""

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

    # ---------------------------------------------------------------- export (keyset pages)

    def export(self, kind: str, *, by_user: bool) -> str:
        """One page of ``kind`` after the key in ``$1`` (``$2`` user, then the page size)."""
        s = self.schema
        user = " AND user_id = $2" if by_user else ""
        size = "$3" if by_user else "$2"
        if kind == "conversations":
            return f"""SELECT conversation_id, user_id FROM {s}.conversations
                WHERE conversation_id > $1{user} ORDER BY conversation_id LIMIT {size}"""
        if kind == "memories":
            return f"""SELECT {_MEMORY_COLUMNS} FROM {s}.memories
                WHERE id > $1{user} ORDER BY id LIMIT {size}"""
        if kind == "sessions":
            return f"""SELECT {_SESSION_COLUMNS} FROM {s}.sessions
                WHERE session_id > $1{user} ORDER BY session_id LIMIT {size}"""
        raise ValueError(kind)

    def export_messages(self) -> str:
        """Messages of one conversation after ``($2, $3)`` in ``(ts_us, seq)`` order."""
        return f"""SELECT {MESSAGE_COLUMNS} FROM {self.schema}.messages
            WHERE conversation_id = $1 AND (ts_us, seq) > ($2, $3)
            ORDER BY ts_us, seq LIMIT $4"""
