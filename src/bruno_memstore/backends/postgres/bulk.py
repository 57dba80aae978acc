"""PostgreSQL's large appends: ``COPY`` into a per-connection staging table, then one
``INSERT ... SELECT`` (see docs/backends/postgres.md)."""

from __future__ import annotations

from ...primitives import AppendResult
from ..sql.append import Append
from ..sql.steps import Copy, Execute, Fetch, Plan
from .dialect import PostgresDialect, not_owner

__all__ = [
    "append_copied",
    "claim_conversation",
    "create_staging",
    "insert_staged",
    "staging_table",
]


def staging_table(d: PostgresDialect) -> str:
    """The temporary table ``COPY`` fills (another name when it has a vector column)."""
    return "bruno_memstore_staging_v" if d.vectors else "bruno_memstore_staging"


def create_staging(d: PostgresDialect) -> str:
    """A per-connection staging table of ``row_columns``, emptied on commit."""
    vector = f", embedding {d.vector_type}" if d.vectors else ""
    return f"""CREATE TEMP TABLE IF NOT EXISTS {staging_table(d)} (
            ord bigint, id text, role text, message_type text, content text,
            ts_iso text, ts_us bigint, metadata_text text, parent_id text, analysed text
            {vector}
        ) ON COMMIT DELETE ROWS"""


def insert_staged(d: PostgresDialect) -> str:
    """Insert the staged messages into conversation ``$1`` of owner ``$2``, in order; returns
    the ids inserted."""
    vector = ", embedding" if d.vectors else ""
    return f"""INSERT INTO {d.schema}.messages (id, conversation_id, user_id, role,
            message_type, content, ts_iso, ts_us, metadata_text, parent_id, tsv{vector})
        SELECT id, $1, $2, role, message_type, content, ts_iso, ts_us, metadata_text,
               parent_id, {d.tsv("content", "analysed")}{vector}
        FROM {staging_table(d)} ORDER BY ord
        ON CONFLICT (id) DO NOTHING
        RETURNING id"""


def claim_conversation(d: PostgresDialect) -> str:
    """Claim conversation ``$1`` for ``$2`` unless owned; returns ``(owner, created)`` (no
    row in a rare race: re-read)."""
    s = d.schema
    return f"""WITH claimed AS (
            INSERT INTO {s}.conversations (conversation_id, user_id) VALUES ($1, $2)
            ON CONFLICT (conversation_id) DO NOTHING
            RETURNING user_id
        )
        SELECT user_id, true FROM claimed
        UNION ALL
        SELECT user_id, false FROM {s}.conversations WHERE conversation_id = $1"""


def append_copied(d: PostgresDialect, item: Append) -> Plan[AppendResult]:
    """A large append: claim the conversation, ``COPY`` the messages, insert them."""
    records = item.records
    rows = [d.message_row(n, r) for n, r in enumerate(records)]
    claimed = yield Fetch(claim_conversation(d), (item.conversation_id, item.user_id))
    if not claimed:  # claimed by a transaction that committed after our snapshot
        found = yield Fetch(
            f"SELECT user_id FROM {d.schema}.conversations WHERE conversation_id = $1",
            (item.conversation_id,),
        )
        claimed = [(found[0][0], False)]
    owner, created = claimed[0]
    if item.enforce_owner and owner != item.user_id:
        raise not_owner(item.conversation_id)
    yield Execute(create_staging(d))
    yield Copy(staging_table(d), d.row_columns, rows)
    stored = yield Fetch(insert_staged(d), (item.conversation_id, owner))
    if created and not stored:  # every id was stored: the write claims nothing either
        yield Execute(
            f"DELETE FROM {d.schema}.conversations WHERE conversation_id = ?",
            (item.conversation_id,),
        )
    inserted = {row[0] for row in stored}
    return AppendResult(owner, frozenset(r.id for r in records if r.id not in inserted))
