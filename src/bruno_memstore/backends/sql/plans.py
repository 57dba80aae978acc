"""The primitives of the SQL family as plans (see :mod:`.steps`), written once.

Each function takes the engine's :class:`~.dialect.Dialect` and the primitive's arguments
and returns a plan; the backend runs it in a read or a write transaction of its engine. The
appends, which group commit batches, are in :mod:`.append`; migrations in :mod:`.schema`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
)
from ...primitives import conversation_taken, memory_taken, session_taken
from .dialect import Conversation, Dialect, RowDialect, Source
from .steps import Commit, Execute, Fetch, Plan
from .where import marks, memory_conditions

__all__ = [
    "claim_conversations",
    "conversation_owner",
    "create_conversations",
    "delete_memory",
    "delete_message_ids",
    "delete_messages",
    "export_page",
    "find_conversations",
    "forget_user",
    "get_messages",
    "get_session",
    "latest_session",
    "purge_expired",
    "put_memory",
    "put_session",
    "query_memories",
    "read_window",
    "statistics",
    "storage_bytes",
    "store_counts",
    "stored_ids",
    "text_search",
    "window",
    "without_vectors",
]

_MIN_KEY = -(2**63)
_CLAIM_ROUNDS = 8  # a conversation claimed by another transaction is read again, a few times


# ------------------------------------------------------------------------------ conversations


def conversation_owner(d: Dialect, conversation_id: str) -> Plan[str | None]:
    c = d.conversations
    rows = yield Fetch(
        f"SELECT {c.field('user_id')} FROM {c.tables} WHERE {c.field('conversation_id')} = ?",
        (conversation_id,),
    )
    return rows[0][0] if rows else None


def find_conversations(
    d: Dialect, conversation_ids: Sequence[str], lock: str = ""
) -> Plan[dict[str, Conversation]]:
    """The stored ones among these conversations (``lock``: the dialect's lock clause)."""
    c = d.conversations
    found: dict[str, Conversation] = {}
    for condition, args in d.among(c.field("conversation_id"), conversation_ids):
        rows = yield Fetch(_find_sql(c, d.user_ref, condition, lock), args)
        for r in rows:
            found[r[0]] = Conversation(r[1], r[2], r[3])
    return found


@functools.lru_cache(maxsize=512)
def _find_sql(c: Source, user_ref: str, condition: str, lock: str) -> str:
    return (
        f"SELECT {c.field('conversation_id')}, {c.key}, {c.field('user_id')}, c.{user_ref} "
        f"FROM {c.tables} WHERE {condition}{lock}"
    )


def claim_conversations(d: Dialect, claims: dict[str, str]) -> Plan[dict[str, Conversation]]:
    """Every conversation of ``claims`` (id -> claimant), creating the missing ones for their
    claimant. The rows read are locked against deletion until the transaction ends."""
    found = yield from find_conversations(d, sorted(claims), d.share_lock)
    missing = {conv: user for conv, user in claims.items() if conv not in found}
    if missing:
        new, _created = yield from create_conversations(d, missing)
        found.update(new)
    return found


def create_conversations(
    d: Dialect, claims: dict[str, str]
) -> Plan[tuple[dict[str, Conversation], set[str]]]:
    """Create these conversations (id -> claimant); one another transaction created
    meanwhile is read instead (whoever created it owns it). Returns them all, and the ids
    this transaction created."""
    claims = dict(sorted(claims.items()))  # one order everywhere: writers never deadlock
    out: dict[str, Conversation] = {}
    created: set[str] = set()
    for _round in range(_CLAIM_ROUNDS):
        try:
            made = yield from d.create_conversations(claims)
        except Exception as exc:
            if not d.is_duplicate(exc):
                raise
            made = {}
        out.update(made)
        created |= made.keys()
        rest = [conv for conv in claims if conv not in made]
        if not rest:
            return out, created
        won = yield from find_conversations(d, rest, d.share_lock)
        out.update(won)
        claims = {conv: claims[conv] for conv in rest if conv not in won}
        if not claims:
            return out, created
    raise RuntimeError("conversation claims kept colliding")  # pragma: no cover


# ------------------------------------------------------------------------------ messages


def stored_ids(d: Dialect, ids: Sequence[str]) -> Plan[set[str]]:
    """Which of these message ids are stored."""
    stored: set[str] = set()
    for condition, args in d.among("id", ids):
        rows = yield Fetch(f"SELECT id FROM {d.table('messages')} WHERE {condition}", args)
        stored.update(r[0] for r in rows)
    return stored


def get_messages(d: Dialect, ids: Sequence[str]) -> Plan[list[MessageRecord]]:
    m = d.messages
    out: list[MessageRecord] = []
    for condition, args in d.among(m.field("id"), list(dict.fromkeys(ids))):
        rows = yield Fetch(f"SELECT {m.select} FROM {m.tables} WHERE {condition}", args)
        out += [d.message(r) for r in rows]
    return out


def read_window(
    d: Dialect, conversation_id: str | None, user_id: str | None, limit: int | None
) -> Plan[list[MessageRecord]]:
    """The newest ``limit`` messages (all when ``None``), oldest first."""
    rows = yield Fetch(*window(d, conversation_id, user_id, limit))
    return [d.message(r) for r in reversed(rows)]


def read_window_and_marker(
    d: Dialect, conversation_id: str, user_id: str | None, limit: int | None, marker: str
) -> Plan[tuple[list[MessageRecord], list[SessionRecord]]]:
    """A conversation's window (oldest first) and the session ``marker`` (its archive
    marker), in one statement: each of the marker's columns is a scalar subquery beside
    every row (an empty window has no row, and needs no marker)."""
    s = d.sessions
    lookup = f"FROM {s.tables} WHERE {s.field('session_id')} = ?"
    extra = [f"(SELECT {column} {lookup})" for column in s.columns]
    sql, args = window(d, conversation_id, user_id, limit, extra)
    rows = yield Fetch(sql, [marker] * len(extra) + args)
    width = len(d.messages.columns)
    found = [d.session(rows[0], width)] if rows and rows[0][width] is not None else []
    return [d.message(r) for r in reversed(rows)], found


def get_sessions(d: Dialect, ids: Sequence[str]) -> Plan[list[SessionRecord]]:
    """The sessions of these ids that exist."""
    s = d.sessions
    out: list[SessionRecord] = []
    for condition, args in d.among(s.field("session_id"), list(ids)):
        rows = yield Fetch(f"SELECT {s.select} FROM {s.tables} WHERE {condition}", args)
        out += [d.session(r) for r in rows]
    return out


def window(
    d: Dialect,
    conversation_id: str | None,
    user_id: str | None,
    limit: int | None,
    extra: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """The statement reading a window, newest first, and its arguments (``extra``: more
    select expressions after the message's columns, whose arguments come first)."""
    m = d.messages
    where, args = d.window_scope(conversation_id, user_id)
    select = ", ".join([m.select, *extra])
    sql = f"SELECT {select} FROM {m.tables} WHERE {where} ORDER BY m.ts_us DESC, m.seq DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, args


def delete_messages(d: Dialect, conversation_id: str, keep_roles: frozenset[str]) -> Plan[int]:
    """Delete the conversation's messages not in ``keep_roles`` (none kept: the conversation
    and its sessions too); return how many messages went."""
    found = yield from find_conversations(d, [conversation_id], d.for_update)
    conv = found.get(conversation_id)
    if conv is None:
        return 0
    ref = d.conversation_ref
    where, args = f"{ref} = ?", [conv.key]
    if keep_roles:
        where += f" AND role NOT IN ({marks(len(keep_roles))})"
        args += sorted(keep_roles)
    yield from d.messages_deleting(where, args)
    count = int((yield Execute(f"DELETE FROM {d.table('messages')} WHERE {where}", args)))
    if count:
        yield from d.messages_changed([conv.owner_key])
    if not keep_roles:
        yield Execute(f"DELETE FROM {d.table('sessions')} WHERE {ref} = ?", [conv.key])
        yield Execute(f"DELETE FROM {d.table('conversations')} WHERE {ref} = ?", [conv.key])
    return count


def delete_message_ids(d: Dialect, conversation_id: str, ids: Sequence[str]) -> Plan[int]:
    """Delete the conversation's messages with these ids (the conversation stays); return
    how many went."""
    found = yield from find_conversations(d, [conversation_id], d.for_update)
    conv = found.get(conversation_id)
    if conv is None:
        return 0
    count = 0
    for condition, args in d.among("id", list(dict.fromkeys(ids))):
        where, params = f"{d.conversation_ref} = ? AND {condition}", [conv.key, *args]
        yield from d.messages_deleting(where, params)
        count += int((yield Execute(f"DELETE FROM {d.table('messages')} WHERE {where}", params)))
    if count:
        yield from d.messages_changed([conv.owner_key])
    return count


# ------------------------------------------------------------------------------ memories


def put_memory(d: Dialect, rec: MemoryRecord) -> Plan[None]:
    """Insert the entry or replace the same user's; another user's raises ``memory_taken``."""
    body, vector = d.search_body(rec.content), d.vector_value(rec.vector)  # preparation
    if not (yield from d.upsert_memory(rec, body, vector)):
        raise memory_taken(rec.id)


def query_memories(d: Dialect, flt: MemoryFilter) -> Plan[list[MemoryRecord]]:
    """The entries ``flt`` admits (any user's when its ``user_id`` is ``None``)."""
    e = d.memories
    owner, args = (
        ("1 = 1", []) if flt.user_id is None else (f"{e.field('user_id')} = ?", [flt.user_id])
    )
    conditions, more = memory_conditions(flt, d.tags_condition)
    rows = yield Fetch(
        f"SELECT {e.select} FROM {e.tables} WHERE {owner} {conditions}"
        "ORDER BY m.importance DESC, m.created_us DESC, m.id LIMIT ?",
        [*args, *more, flt.limit],
    )
    return [d.memory(r) for r in rows]


def delete_memory(d: Dialect, memory_id: str, user_id: str | None) -> Plan[bool]:
    """Delete the entry (only ``user_id``'s, when given: ``memory_taken`` otherwise)."""
    e = d.memories
    rows = yield Fetch(
        f"SELECT m.{d.memory_ref}, {e.field('user_id')}, m.{d.user_ref} FROM {e.tables} "
        f"WHERE {e.field('id')} = ?{d.for_update}",
        (memory_id,),
    )
    if not rows:
        return False
    key, owner, owner_key = rows[0]
    if user_id is not None and owner != user_id:
        raise memory_taken(memory_id)  # the locked row stays as it is
    yield from d.memories_deleting([key])
    yield Execute(f"DELETE FROM {d.table('memories')} WHERE {d.memory_ref} = ?", (key,))
    yield from d.memories_changed([owner_key])
    return True


def purge_expired(d: Dialect, now_us: int) -> Plan[int]:
    """Delete the entries expired at ``now_us``, in bounded parts; return how many went."""
    table, key = d.table("memories"), d.memory_ref
    total = 0
    while True:
        rows = yield Fetch(
            f"SELECT {key}, {d.user_ref} FROM {table} WHERE expires_us <= ? LIMIT ?",
            (now_us, d.batch),
        )
        if not rows:
            return total
        keys = [r[0] for r in rows]
        yield from d.memories_deleting(keys)
        for condition, args in d.among(key, keys):
            total += yield Execute(
                f"DELETE FROM {table} WHERE {condition} AND expires_us <= ?", [*args, now_us]
            )
        yield from d.memories_changed(sorted({r[1] for r in rows}))
        yield Commit()
        if len(rows) < d.batch:
            return total


# ------------------------------------------------------------------------------ sessions


def put_session(d: Dialect, rec: SessionRecord) -> Plan[None]:
    """Upsert the session, claiming its conversation for its user; raises ``OwnershipError``
    (the transaction then writes nothing) if another user has the conversation or the id."""
    claimed = yield from claim_conversations(d, {rec.conversation_id: rec.user_id})
    conv = claimed[rec.conversation_id]
    if conv.owner != rec.user_id:
        raise conversation_taken(rec.conversation_id, backend=d.backend, operation="create_session")
    if not (yield from d.upsert_session(rec, conv)):
        raise session_taken(rec.session_id)


def replace_session(d: Dialect, rec: SessionRecord, expected: SessionRecord) -> Plan[bool]:
    """Write ``rec``'s state over the session if its payload is still ``expected``'s, in one
    statement (a session's payload names its user and conversation; a hybrid copy marker's,
    the claim it was written for)."""
    count = yield Execute(
        f"UPDATE {d.table('sessions')} SET is_active = ?, started_us = ?, payload = ? "
        "WHERE session_id = ? AND payload = ?",
        (rec.is_active, rec.started_us, rec.payload, expected.session_id, expected.payload),
    )
    return count == 1


def get_session(d: Dialect, session_id: str) -> Plan[SessionRecord | None]:
    s = d.sessions
    rows = yield Fetch(
        f"SELECT {s.select} FROM {s.tables} WHERE {s.field('session_id')} = ?", (session_id,)
    )
    return d.session(rows[0]) if rows else None


def latest_session(
    d: Dialect, user_id: str, conversation_id: str | None, active_only: bool
) -> Plan[SessionRecord | None]:
    s = d.sessions
    where, args = f"{s.field('user_id')} = ?", [user_id]
    if conversation_id is not None:
        where += f" AND {s.field('conversation_id')} = ?"
        args.append(conversation_id)
    if active_only:
        where += " AND s.is_active = ?"
        args.append(True)
    rows = yield Fetch(
        f"SELECT {s.select} FROM {s.tables} WHERE {where} "
        "ORDER BY s.started_us DESC, s.session_id DESC LIMIT 1",
        args,
    )
    return d.session(rows[0]) if rows else None


def without_vectors(d: Dialect, after: int, limit: int) -> Plan[list[tuple[int, str, str]]]:
    """The oldest ``limit`` messages after key ``after`` waiting for their vectors, as
    ``(seq, id, content)``: the ``vector_pending`` table (message keys only) read by key."""
    rows = yield Fetch(
        f"SELECT p.seq, m.id, m.content FROM {d.table('vector_pending')} p "
        f"JOIN {d.table('messages')} m ON m.seq = p.seq WHERE p.seq > ? ORDER BY p.seq LIMIT ?",
        (after, limit),
    )
    return [(int(r[0]), r[1], r[2]) for r in rows]


# ------------------------------------------------------------------------------ search


def text_search(d: RowDialect, request: SearchRequest) -> Plan[list[SearchHit]]:
    """Relevance-ranked hits of the user's records, best first."""
    terms = d.search_terms(request.query)  # preparation
    if not terms:
        return []
    key = yield from d.user_key(request.user_id)
    if key is None:
        return []
    hits: list[SearchHit] = []
    conv, limit = request.conversation_id, request.limit
    if "message" in request.kinds:
        hits += yield from d.search_messages(key, terms, conv, limit)
    if "memory" in request.kinds:
        conditions = memory_conditions(request.memories(), d.tags_condition, conv)
        hits += yield from d.search_memories(key, terms, conditions, limit)
    if len(request.kinds) > 1:
        hits.sort(key=lambda h: -h.score)
        del hits[limit:]
    return hits


# ------------------------------------------------------------------------------ users


def statistics(d: Dialect, user_id: str) -> Plan[dict[str, object]]:
    """Counts for one user, read by one statement."""
    out: dict[str, object] = {
        "messages": 0,
        "conversations": 0,
        "sessions": 0,
        "active_sessions": 0,
        "memories": 0,
        "messages_by_role": {},
        "first_message_us": None,
        "last_message_us": None,
    }
    key = yield from d.user_key(user_id)
    if key is None:
        return out
    t, k = d.table, d.user_ref
    rows = yield Fetch(
        f"SELECT 'm', role, count(*), min(ts_us), max(ts_us) FROM {t('messages')} "
        f"WHERE {k} = ? GROUP BY role "
        f"UNION ALL SELECT 'c', NULL, count(*), NULL, NULL FROM {t('conversations')} "
        f"WHERE {k} = ? "
        "UNION ALL SELECT 's', NULL, count(*), sum(CASE WHEN is_active THEN 1 ELSE 0 END), "
        f"NULL FROM {t('sessions')} WHERE {k} = ? "
        f"UNION ALL SELECT 'e', NULL, count(*), NULL, NULL FROM {t('memories')} WHERE {k} = ?",
        (key,) * 4,
    )
    by_role: dict[str, int] = {}
    for tag, role, count, low, high in rows:
        if tag == "m":
            by_role[role] = int(count)
            first, last = out["first_message_us"], out["last_message_us"]
            out["first_message_us"] = int(low) if first is None else min(first, int(low))  # type: ignore[call-overload]
            out["last_message_us"] = int(high) if last is None else max(last, int(high))  # type: ignore[call-overload]
        else:
            name = {"c": "conversations", "s": "sessions", "e": "memories"}[tag]
            out[name] = int(count)
            if tag == "s":
                out["active_sessions"] = int(low or 0)
    out["messages"] = sum(by_role.values())
    out["messages_by_role"] = by_role
    return out


def store_counts(d: Dialect) -> Plan[dict[str, int]]:
    """Records in the whole store by kind, read by one statement."""
    t, k = d.table, d.user_ref
    rows = yield Fetch(
        "SELECT 'users', count(*) FROM ("
        f"SELECT {k} FROM {t('conversations')} UNION SELECT {k} FROM {t('sessions')} "
        f"UNION SELECT {k} FROM {t('memories')}) owners "
        + "".join(
            f"UNION ALL SELECT '{kind}', count(*) FROM {t(kind)} "
            for kind in ("conversations", "messages", "sessions", "memories")
        ),
        (),
    )
    return {kind: int(count) for kind, count in rows}


def storage_bytes(d: Dialect) -> Plan[int | None]:
    """Bytes the store's tables and indexes take (the dialect's own measure)."""
    return (yield from d.storage_bytes())


def forget_user(d: Dialect, user_id: str) -> Plan[dict[str, int]]:
    """Delete every record of the user from every table and index; counts by kind."""
    counts = {"messages": 0, "conversations": 0, "sessions": 0, "memories": 0}
    key = yield from d.user_key(user_id)
    if key is None:
        return counts
    for kind, table, where, args in d.forget_steps(key):
        count = yield from d.delete_rows(table, where, args)
        if kind is not None:
            counts[kind] += count
        if count and kind == "messages":
            yield from d.messages_changed([key])
        elif count and kind == "memories":
            yield from d.memories_changed([key])
    return counts


# ------------------------------------------------------------------------------ export


def export_page(
    d: Dialect, kind: str, user_id: str | None, after: Any, size: int
) -> Plan[tuple[list[object], Any]]:
    """One page of records of ``kind`` after the key ``after``; return it and the next key.

    Messages come one conversation at a time, in ``(ts_us, seq)`` order. An empty page means
    the export is complete.
    """
    owner, who = "", []
    if user_id is not None:
        key = yield from d.user_key(user_id)
        if key is None:
            return [], None
        owner, who = f"AND {{alias}}.{d.user_ref} = ? ", [key]
    if kind == "messages":
        return (yield from _export_messages(d, owner.format(alias="c"), who, after, size))
    source, alias = {
        "conversations": (d.conversations, "c"),
        "memories": (d.memories, "m"),
        "sessions": (d.sessions, "s"),
    }[kind]
    rows = yield Fetch(
        f"SELECT {source.key}, {source.select} FROM {source.tables} WHERE {source.key} > ? "
        f"{owner.format(alias=alias)}ORDER BY {source.key} LIMIT ?",
        [source.start if after is None else after, *who, size],
    )
    if kind == "conversations":
        page: list[object] = [(r[1], r[2]) for r in rows]
    elif kind == "memories":
        page = [d.memory(r, 1) for r in rows]
    else:
        page = [d.session(r, 1) for r in rows]
    return page, (rows[-1][0] if rows else None)


def _export_messages(
    d: Dialect, owner: str, who: list[Any], after: Any, size: int
) -> Plan[tuple[list[object], Any]]:
    # The key is (conversation key, position): position is the last (ts_us, seq) exported
    # from that conversation, or None once the conversation is finished.
    c, m = d.conversations, d.messages
    conv, position = after if after is not None else (c.start, None)
    out: list[object] = []
    upcoming: list[Any] = []  # the next conversations' keys, read in one statement
    while len(out) < size:
        if position is None:
            if not upcoming:
                rows = yield Fetch(
                    f"SELECT {c.key} FROM {c.tables} WHERE {c.key} > ? {owner}"
                    f"ORDER BY {c.key} LIMIT ?",
                    [conv, *who, size],
                )
                if not rows:
                    break
                upcoming = [r[0] for r in reversed(rows)]
            conv, position = upcoming.pop(), (_MIN_KEY, _MIN_KEY)
        wanted = size - len(out)
        later, args = d.after_position(*position)
        rows = yield Fetch(
            f"SELECT {m.select} FROM {m.tables} WHERE m.{d.conversation_ref} = ? AND {later} "
            "ORDER BY m.ts_us, m.seq LIMIT ?",
            [conv, *args, wanted],
        )
        out += [d.message(r) for r in rows]
        position = (rows[-1][6], rows[-1][10]) if len(rows) == wanted else None
    return out, ((conv, position) if out else None)
