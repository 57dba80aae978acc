"""PostgreSQL's dialect: its layout, and its own statements where one statement does what
the shared plans do in several (see docs/backends/postgres.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, ClassVar

from asyncpg.exceptions import UniqueViolationError

from ...errors import BackendError, OwnershipError
from ...models import (
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
)
from ...primitives import AppendResult, conversation_taken, memory_taken, session_taken
from ...search import MAX_QUERY_TERMS, index_text, query_words, terms
from ..kit.codec import MEMORIES, MEMORY_FIELDS, SESSION_FIELDS, SESSIONS
from ..sql.append import Append, Outcome
from ..sql.dialect import Conversation, Dialect, Source, numbered
from ..sql.steps import Execute, Fetch, Plan
from ..sql.where import search_values
from . import schema

__all__ = ["INDEXED_PREFIX", "PostgresDialect", "analysed"]

# PostgreSQL caps a tsvector at 1 MB; 100,000 characters of any script stays well below it,
# so a 1 MB message is stored whole and its first 100,000 characters are searchable.
INDEXED_PREFIX = 100_000

_MEMORY_COLUMNS = ", ".join(MEMORY_FIELDS)  # the codec's row order
_SESSION_COLUMNS = ", ".join(SESSION_FIELDS)
# The messages' columns in the record's field order.
_MESSAGE_ORDER = (
    "id conversation_id role content message_type ts_iso ts_us metadata_text parent_id user_id seq"
).split()
# A message's values as the append and COPY statements take them, after its ordinal, and
# the columns they go to.
_MESSAGE_VALUES = ("id role message_type content timestamp ts_us metadata parent_id").split()
_ROW_COLUMNS = ("id role message_type content ts_iso ts_us metadata_text parent_id").split()


def analysed(content: str) -> str:
    """The library's analysis of what is searchable in ``content``."""
    return index_text(content[:INDEXED_PREFIX])


def not_owner(conversation_id: str) -> OwnershipError:
    return conversation_taken(conversation_id, backend="postgres", operation="store_message")


class PostgresDialect(Dialect):
    """PostgreSQL's layout and statements, for one schema and one text analysis.

    Args:
        schema: the quoted schema name (see :func:`.schema.check_schema`).
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
        self.vectors = vector_schema is not None  # rows carry an ``embedding`` column
        self.vector_type = f"{vector_schema}.vector"
        # Writes send the analysed text (``index_text``) along with the content.
        self.client_analysis = regconfig is None
        s, sessions = schema, [f"s.{c}" for c in SESSION_FIELDS]
        self.conversations = Source(
            f"{s}.conversations c", ("c.conversation_id", "c.user_id"), "c.conversation_id"
        )
        self.messages = Source(f"{s}.messages m", [f"m.{c}" for c in _MESSAGE_ORDER], "m.seq", 0)
        self.memories = Source(f"{s}.memories m", [f"m.{c}" for c in MEMORY_FIELDS], "m.id")
        self.sessions = Source(f"{s}.sessions s", sessions, "s.session_id")

    def with_vectors(
        self, vector_schema: str | None, encode_vector: Callable[[Any], Any] | None = None
    ) -> PostgresDialect:
        """The same dialect for a store whose vector mode is now known."""
        return PostgresDialect(self.schema, self.regconfig, vector_schema, encode_vector)

    def tsv(self, content: str, analysed: str) -> str:
        """The ``tsv`` value of a row, from its content or its client-analysed text."""
        if self.regconfig is None:
            return f"to_tsvector('simple'::regconfig, {analysed})"
        return f"to_tsvector({self.regconfig}, left({content}, {INDEXED_PREFIX}))"

    # ---------------------------------------------------------------- the shared plans' hooks

    def table(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def storage_bytes(self) -> Plan[int | None]:
        # Every table of the store's schema, with its indexes and TOAST data.
        rows = yield Fetch(
            "SELECT coalesce(sum(pg_total_relation_size(oid)), 0) FROM pg_class "
            f"WHERE relnamespace = '{self.schema}'::regnamespace AND relkind = 'r'",
            (),
        )
        return int(rows[0][0])

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
        # Ownership is per conversation: check it once (a one-time filter, cheaper than a
        # semi-join), then walk the conversation's index (filtering messages by user would
        # let the planner pick the user index and scan all of that user's other
        # conversations).
        return (
            f"m.conversation_id = ? AND (SELECT c.user_id FROM {self.schema}.conversations c "
            "WHERE c.conversation_id = ?) = ?",
            [conversation_id, conversation_id, user_id],
        )

    def search_body(self, content: str) -> str | None:
        return analysed(content) if self.client_analysis else None

    def vector_value(self, vector: Any) -> Any:
        """A vector as a query argument (``None`` without one, or without the codec)."""
        return None if vector is None or self.encode_vector is None else self.encode_vector(vector)

    def upsert_memory(self, rec: MemoryRecord, body: Any, vector: Any) -> Plan[bool]:
        """Insert, or replace the same user's entry, with its analysed text (the library's
        analysis) and its vector (when the store keeps vectors; a replaced entry's vector is
        replaced too, by ``NULL`` when the new write has none). Nothing is written when the
        id holds another user's entry (the conflicting row is locked and left as it is)."""
        s, values = self.schema, [*MEMORIES.row(rec)]
        tsv = self.tsv("$3::text", "$13::text")
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
            self._session_upsert("VALUES ($1, $2, $3, $4, $5, $6)"), SESSIONS.row(rec)
        )
        return bool(rows)

    def _session_upsert(self, source: str) -> str:
        """Insert the session row ``source`` gives, or replace the same user's session;
        returns a row if it wrote."""
        s = self.schema
        return f"""INSERT INTO {s}.sessions ({_SESSION_COLUMNS}) {source}
            ON CONFLICT (session_id) DO UPDATE SET
                conversation_id = EXCLUDED.conversation_id, is_active = EXCLUDED.is_active,
                started_us = EXCLUDED.started_us, payload = EXCLUDED.payload
            WHERE {s}.sessions.user_id = EXCLUDED.user_id
            RETURNING 1"""

    def is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, UniqueViolationError)

    # ---------------------------------------------------------------- plans of one statement

    def append_group(self, appends: Sequence[Append]) -> Plan[list[Outcome]]:
        """The appends of a group commit, in one statement (see :attr:`append`); an append
        whose conversation another transaction claimed meanwhile gets ``None`` (run again).
        A lone message into a stored conversation goes through :attr:`append_one`."""
        # (It passes a vector as one value, which needs the codec where rows have vectors.)
        lean = not self.vectors or self.encode_vector is not None
        if lean and len(appends) == 1 and len(appends[0].records) == 1:
            written = yield from self._append_one(appends[0])
            if written is not None:
                return [written]
        conv = [item.conversation_id for item in appends]
        users = [item.user_id for item in appends]
        enforce = [item.enforce_owner for item in appends]
        rows = [self.message_row(n, r) for n, item in enumerate(appends, 1) for r in item.records]
        cols: list[Any] = [list(c) for c in zip(*rows, strict=True)] or [
            [] for _ in self.row_columns
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

    def _append_one(self, item: Append) -> Plan[Outcome]:
        """One message into a stored conversation, written by :attr:`append_one`; ``None``
        when that wrote nothing (:attr:`append` then finds out why)."""
        r = item.records[0]
        args = [item.conversation_id, item.user_id, item.enforce_owner]
        args += [getattr(r, f) for f in _MESSAGE_VALUES]
        if self.client_analysis:
            args.append(analysed(r.content))
        if self.vectors:
            args.append(self.vector_value(r.vector))
        rows = yield Fetch(self.append_one, args, alone=True)
        return AppendResult(rows[0][0], frozenset()) if rows else None

    def message_row(self, n: int, r: MessageRecord) -> tuple[Any, ...]:
        """A message's values as :attr:`append` and ``COPY`` take them (:attr:`row_columns`),
        its ordinal ``n`` first."""
        vector = (self.vector_value(r.vector),) if self.vectors else ()
        return (n, *(getattr(r, f) for f in _MESSAGE_VALUES), self.search_body(r.content), *vector)

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
        """``_delete_messages`` in one statement; with no role kept, the conversation goes
        too (its sessions by cascade)."""
        s = self.schema
        if keep_roles:
            return (
                yield Execute(
                    f"DELETE FROM {s}.messages "
                    "WHERE conversation_id = $1 AND role <> ALL($2::text[])",
                    (conversation_id, sorted(keep_roles)),
                    alone=True,
                )
            )
        rows = yield Fetch(
            f"""WITH gone AS (
                DELETE FROM {s}.messages WHERE conversation_id = $1 RETURNING 1
            ), conv AS (
                DELETE FROM {s}.conversations WHERE conversation_id = $1 RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM conv)""",
            (conversation_id,),
            alone=True,
        )
        return int(rows[0][0])

    def delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> Plan[int]:
        """``_delete_message_ids`` in one statement (vectors and search terms are columns
        of the rows)."""
        return (
            yield Execute(
                f"DELETE FROM {self.schema}.messages "
                "WHERE conversation_id = $1 AND id = ANY($2::text[])",
                (conversation_id, list(dict.fromkeys(ids))),
                alone=True,
            )
        )

    def delete_owned_memory(self, memory_id: str, user_id: str | None) -> Plan[bool]:
        """``_delete_memory`` in one statement: it deletes the entry if ``user_id`` is
        ``None`` or its owner, and reads the owner it saw (``NULL``: no such entry)."""
        s = self.schema
        rows = yield Fetch(
            f"""WITH gone AS (
                DELETE FROM {s}.memories WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone), (SELECT user_id FROM {s}.memories WHERE id = $1)""",
            (memory_id, user_id),
            alone=True,
        )
        gone, owner = rows[0]
        if not gone and owner is not None and owner != user_id:
            raise memory_taken(memory_id)
        return bool(gone)

    def save_session(self, rec: SessionRecord) -> Plan[None]:
        """``_put_session`` in one statement: claim the conversation for the session's user
        and upsert the session, unless another user owns the conversation or the session
        id. In a transaction: a session id held by another user is found only by the upsert,
        after the statement may have claimed a new conversation, which must not stay."""
        s = self.schema
        # The conversation's owner (NULL in the rare claim race: run again), and whether the
        # session was written.
        statement = f"""WITH claimed AS (
                INSERT INTO {s}.conversations (conversation_id, user_id) VALUES ($3, $2)
                ON CONFLICT (conversation_id) DO NOTHING
                RETURNING user_id
            ), owner AS (
                SELECT user_id FROM claimed
                UNION ALL
                SELECT user_id FROM {s}.conversations WHERE conversation_id = $3
            ), saved AS ({
            self._session_upsert(
                "SELECT $1::text, $2::text, $3::text, $4::bool, $5::int8, $6::text "
                "WHERE (SELECT user_id FROM owner LIMIT 1) = $2"
            )
        })
            SELECT (SELECT user_id FROM owner LIMIT 1), (SELECT count(*) FROM saved)"""
        for _round in range(5):
            rows = yield Fetch(statement, SESSIONS.row(rec))
            owner, saved = rows[0]
            if owner is None:  # claimed concurrently after this statement's snapshot
                continue
            if owner != rec.user_id:
                raise conversation_taken(
                    rec.conversation_id, backend=self.backend, operation="create_session"
                )
            if not saved:
                raise session_taken(rec.session_id)
            return
        raise BackendError("the conversation's owner could not be determined")

    def forget(self, user_id: str) -> Plan[dict[str, int]]:
        """``_forget_user`` in one statement."""
        s = self.schema
        rows = yield Fetch(
            f"""WITH msgs AS (
                DELETE FROM {s}.messages WHERE user_id = $1 RETURNING 1
            ), sess AS (
                DELETE FROM {s}.sessions WHERE user_id = $1 RETURNING 1
            ), mems AS (
                DELETE FROM {s}.memories WHERE user_id = $1 RETURNING 1
            ), convs AS (
                DELETE FROM {s}.conversations WHERE user_id = $1 RETURNING 1
            )
            SELECT (SELECT count(*) FROM msgs), (SELECT count(*) FROM convs),
                   (SELECT count(*) FROM sess), (SELECT count(*) FROM mems)""",
            (user_id,),
            alone=True,
        )
        kinds = ("messages", "conversations", "sessions", "memories")
        return dict(zip(kinds, (int(v) for v in rows[0]), strict=True))

    # ---------------------------------------------------------------- schema (:mod:`.schema`)

    def schema_version(self) -> Plan[int]:
        return schema.schema_version(self.schema)

    def create_version_table(self) -> Plan[None]:
        return schema.create_version_table(self.schema)

    def lock_schema(self) -> Plan[None]:
        return schema.lock_schema(self.schema)

    def unlock_schema(self, done: bool) -> Plan[None]:
        yield Execute("COMMIT" if done else "ROLLBACK")

    def record_version(self, version: int, name: str) -> Execute:
        return schema.record_version(self.schema, version, name)

    # ---------------------------------------------------------------- messages

    @cached_property
    def append_one(self) -> str:
        """Insert one message into a stored conversation, unless the owner check fails.

        Parameters: ``$1`` conversation, ``$2`` user, ``$3`` enforce the owner, ``$4..$11``
        the message's columns (as :attr:`append`), then the analysed text (with the library's
        analysis) and the vector (when the store keeps vectors). Returns the owner if it
        inserted the message; no row if it wrote nothing: the conversation is new, another
        user's (enforced), or the id is stored. A plain ``INSERT``, planned in a fraction of
        :attr:`append`'s time, for the most common write.
        """
        extras = ["analysed"] if self.client_analysis else []
        if self.vectors:
            extras.append("embedding")
        marks = {name: f"${12 + i}" for i, name in enumerate(extras)}
        vector_col = ", embedding" if self.vectors else ""
        vector_val = f", {marks['embedding']}::{self.vector_type}" if self.vectors else ""
        tsv = self.tsv("$7::text", f"{marks.get('analysed')}::text")
        return f"""INSERT INTO {self.schema}.messages (id, conversation_id, user_id, role,
                message_type, content, ts_iso, ts_us, metadata_text, parent_id, tsv{vector_col})
            SELECT $4, $1, c.user_id, $5, $6, $7, $8, $9, $10, $11, {tsv}{vector_val}
            FROM {self.schema}.conversations c
            WHERE c.conversation_id = $1 AND (NOT $3::bool OR c.user_id = $2::text)
            ON CONFLICT (id) DO NOTHING
            RETURNING user_id"""

    @cached_property
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
                       {self.tsv("m.content", "m.analysed")}{vector_val}
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

    @cached_property
    def row_columns(self) -> tuple[str, ...]:
        """The names of :meth:`message_row`'s values (the staging table's columns)."""
        return ("ord", *_ROW_COLUMNS, "analysed", *(["embedding"] if self.vectors else []))

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
            {self.top_records("top.score", "top.score DESC")}"""

    def top_records(self, score: str, order: str) -> str:
        """The records of the hits in ``top`` (``kind, id, at``), as :meth:`hits` reads them."""
        s, memory = self.schema, ", ".join(f"e.{c[2:]}" for c in self.memories.columns)
        return f"""SELECT top.kind, {score} AS score, {self.messages.select}, {memory}
            FROM top
            LEFT JOIN {s}.messages m ON top.kind = 'message' AND m.id = top.id
            LEFT JOIN {s}.memories e ON top.kind = 'memory' AND e.id = top.id
            ORDER BY {order}, top.at DESC, top.id"""
