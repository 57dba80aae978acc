"""``ChromaMemory``'s primitives as blocking functions of a :class:`ChromaStore`.

Functions marked *writer* run only on the store's writer thread, one at a time; the others
run on its reader threads. Chroma applies each ``add``/``upsert``/``delete`` call whole or
not at all, and has no transaction spanning calls: each writer function orders its calls so
that a crash between two of them leaves nothing a reader could mistake for data (see the
notes on each function, and ``docs/backends/chroma.md``). The ``ids`` collection only
points at records: a record counts as stored when it is in its user's collection.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ...models import MemoryFilter, MemoryRecord, MessageRecord, SessionRecord
from ...primitives import AppendResult, conversation_taken, memory_taken, session_taken
from ..kit.apart import run_apart_sync
from ..kit.appends import Append
from ..kit.batches import chunks
from ..kit.threads import Outcome, run_alone
from .layout import (
    all_of,
    embeddings,
    locator,
    memory_conditions,
    memory_from,
    memory_metadata,
    message_from,
    message_metadata,
    message_order,
    rows,
    session_from,
    session_metadata,
)
from .store import ONE, ChromaStore

__all__ = ["Append", "get_all", "get_ids", "run_appends", "run_writes"]

_ID_CHUNK = 5000  # ids per get/delete call (SQLite allows 32,766 variables per statement)
_BOTH = ["documents", "metadatas"]


def get_ids(collection: Any, ids: Sequence[str], include: list[str]) -> dict[str, Any]:
    """``get`` by ids in chunks, merged into one result."""
    merged: dict[str, list[Any]] = {"ids": [], "documents": [], "metadatas": []}
    for part in chunks(list(dict.fromkeys(ids)), _ID_CHUNK):
        got = collection.get(ids=list(part), include=include)
        merged["ids"] += got["ids"]
        merged["documents"] += got.get("documents") or [None] * len(got["ids"])
        merged["metadatas"] += got.get("metadatas") or [{}] * len(got["ids"])
    return merged


def get_all(collection: Any, where: dict[str, Any] | None, include: list[str]) -> dict[str, Any]:
    """Every record matching ``where``. One call when they are few; otherwise their ids,
    then the records by id in chunks: Chroma fails a single ``get`` whose records need more
    SQL variables than SQLite allows (at about 32,000 records)."""
    got = collection.get(where=where, include=include, limit=_ID_CHUNK)
    if len(got["ids"]) < _ID_CHUNK:
        return got
    ids = collection.get(where=where, include=[])["ids"]
    return get_ids(collection, ids, include)


def _delete_ids(collection: Any, ids: Sequence[str]) -> None:
    for part in chunks(list(ids), _ID_CHUNK):
        collection.delete(ids=list(part))


def _ids_where(collection: Any, where: dict[str, Any] | None) -> list[str]:
    return list(collection.get(where=where, include=[])["ids"])


# -------------------------------------------------------------------- locating records


def _located(store: ChromaStore, kind: str, ids: Sequence[str]) -> dict[str, str]:
    """``{id: user}`` for the ids the ``ids`` collection points at (stored or not)."""
    got = get_ids(store.ids, [locator(kind, i) for i in ids], ["metadatas"])
    return {key[2:]: meta["user"] for key, _doc, meta in rows(got)}


def _fetch(
    store: ChromaStore, kind: str, ids: Sequence[str], include: list[str]
) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """``(user, id, document, metadata)`` of the stored records among ``ids``."""
    by_user: dict[str, list[str]] = {}
    for rid, user in _located(store, kind, ids).items():
        by_user.setdefault(user, []).append(rid)
    out = []
    for user, mine in by_user.items():
        collection = store.user_records(user, kind)
        if collection is not None:
            got = get_ids(collection, mine, include)
            out += [(user, rid, doc, meta) for rid, doc, meta in rows(got)]
    return out


def _point(store: ChromaStore, kind: str, owners_by_id: dict[str, str]) -> None:
    """Point the ``ids`` collection at the records' users (before the records are written:
    a pointer without its record reads as absent, a record without a pointer is lost)."""
    keys = list(owners_by_id)
    for part in chunks(keys, store.max_batch):
        store.ids.upsert(
            ids=[locator(kind, rid) for rid in part],
            embeddings=ONE * len(part),
            metadatas=[{"user": owners_by_id[rid]} for rid in part],
        )


def _pointed_user(store: ChromaStore, kind: str, rid: str, user: str) -> str:
    """*Writer.* The user the ``ids`` collection names for a record, pointing it at ``user``
    when it names nobody. The writer thread orders this process's writers; on a server the
    pointer is written with ``add``, so the first of several processes to land wins and
    every one reads the winner back."""
    found = _located(store, kind, [rid]).get(rid)
    if found is not None:
        return found
    if not store.shared:
        _point(store, kind, {rid: user})
        return user
    store.ids.add(ids=[locator(kind, rid)], embeddings=ONE, metadatas=[{"user": user}])
    return _located(store, kind, [rid])[rid]


def _unpoint(store: ChromaStore, kind: str, ids: Sequence[str]) -> None:
    _delete_ids(store.ids, [locator(kind, rid) for rid in ids])


# -------------------------------------------------------------------- conversations


def owners(store: ChromaStore, conversation_ids: Sequence[str]) -> dict[str, str]:
    got = get_ids(store.conversations, conversation_ids, ["metadatas"])
    return {cid: meta["user"] for cid, _doc, meta in rows(got)}


def conversation_owner(store: ChromaStore, conversation_id: str) -> str | None:
    return owners(store, [conversation_id]).get(conversation_id)


def _claim(store: ChromaStore, claims: dict[str, str]) -> dict[str, str]:
    """Record owners for unowned conversations; return the owners now stored.

    ``add`` skips ids that exist, so when processes race for a new conversation the first
    to land wins and everyone reads the winner back.
    """
    ids = list(claims)
    for part in chunks(ids, store.max_batch):
        store.conversations.add(
            ids=list(part),
            embeddings=ONE * len(part),
            metadatas=[{"user": claims[c]} for c in part],
        )
    return owners(store, ids)


# -------------------------------------------------------------------- messages


def run_writes(store: ChromaStore, jobs: list[Any]) -> list[Outcome]:
    """*Writer.* The jobs the writer took from its queue together, in order: consecutive
    appends in shared calls (:func:`run_appends`), every other job (a function of the
    store) alone."""
    outcomes: list[Outcome] = []
    for appends, part in itertools.groupby(jobs, key=lambda job: isinstance(job, Append)):
        if appends:
            outcomes += run_appends(store, list(part))
            continue
        outcomes += run_alone(store, list(part))
    return outcomes


def run_appends(store: ChromaStore, group: list[Append]) -> list[Outcome]:
    """*Writer.* Queued appends together; if the shared write fails, again in halves until
    the appends that cannot be written stand alone (only those fail)."""
    done = run_apart_sync(group, lambda part: _append_together(store, list(part)), _never)
    return [(got, None) if isinstance(got, Exception) else got for got in done]


def _never(exc: BaseException) -> bool:
    return False  # any failure may be one append's: the others are tried without it


def _append_together(store: ChromaStore, group: list[Append]) -> list[Outcome]:
    """Claims, pointers, then every new record of each owner in one ``add``.

    Order of calls: (1) owners of new conversations that records go into (``add``,
    insert-if-absent), (2) the ``ids`` pointers, (3) the records (one ``add`` per owner and
    ``max_batch`` records), (4) for a server, the owners' text tokens. A crash after (1)
    leaves an empty conversation owned by the writer, as ``claim_conversation`` would; after
    (2) pointers to nothing, which read as absent; after (3) only other processes' cached
    text indexes are stale until the owner's next write. Nothing is acknowledged before (3)
    completes.
    """
    conv_ids = list(dict.fromkeys(a.conversation_id for a in group))
    owner_of = owners(store, conv_ids)
    all_ids = [r.id for a in group for r in a.records]
    seen = {rid for _u, rid, _d, _m in _fetch(store, "message", all_ids, [])} if all_ids else set()
    # A new conversation is claimed only by an append that puts something into it (or
    # claims it outright, with no records): one whose ids are all stored writes nothing.
    claims: dict[str, str] = {}
    taken = set(seen)
    for append in group:
        fresh = {r.id for r in append.records} - taken
        if append.conversation_id not in owner_of and (fresh or not append.records):
            claims.setdefault(append.conversation_id, append.user_id)
        taken |= fresh
    if claims:
        owner_of.update(_claim(store, claims))
    outcomes: list[Outcome] = []
    new: list[tuple[MessageRecord, str]] = []
    for append in group:
        if append.conversation_id not in owner_of:
            ids = frozenset(r.id for r in append.records)
            if ids <= seen:
                outcomes.append((None, AppendResult(append.user_id, ids)))
                continue
            # Its ids were counted for an earlier append of the group that was refused.
            owner_of.update(_claim(store, {append.conversation_id: append.user_id}))
        owner = owner_of[append.conversation_id]
        if append.enforce_owner and owner != append.user_id:
            error = conversation_taken(
                append.conversation_id, backend="chroma", operation="store_message"
            )
            outcomes.append((error, None))
            continue
        skipped = frozenset(r.id for r in append.records if r.id in seen)
        for rec in append.records:
            if rec.id not in seen:
                seen.add(rec.id)
                new.append((rec, owner))
        outcomes.append((None, AppendResult(owner, skipped)))
    if new:
        for (rec, owner), seq in zip(new, store.next_seqs(len(new)), strict=True):
            rec.seq = seq
            rec.user_id = owner
        _point(store, "message", {rec.id: owner for rec, owner in new})
        by_owner: dict[str, list[MessageRecord]] = {}
        for rec, owner in new:
            by_owner.setdefault(owner, []).append(rec)
        for owner, recs in by_owner.items():
            _add_messages(store, owner, recs)
        store.bump_tokens(list(by_owner))
        for owner, recs in by_owner.items():
            store.text_changed(owner, lambda index, recs=recs: index.add_messages(recs))
    return outcomes


def _add_messages(store: ChromaStore, owner: str, records: list[MessageRecord]) -> None:
    collection = store.user_records(owner, "message", create=True)
    for part in chunks(records, store.max_batch):
        vectors, real = embeddings([rec.vector for rec in part], store.dimension)
        collection.add(
            ids=[rec.id for rec in part],
            documents=[rec.content for rec in part],
            embeddings=vectors,
            metadatas=[message_metadata(rec, has) for rec, has in zip(part, real, strict=True)],
        )


def get_messages(store: ChromaStore, ids: Sequence[str]) -> list[MessageRecord]:
    return [
        message_from(rid, doc, meta) for _u, rid, doc, meta in _fetch(store, "message", ids, _BOTH)
    ]


def read_window(
    store: ChromaStore, conversation_id: str | None, user_id: str | None, limit: int | None
) -> list[MessageRecord]:
    """The newest ``limit`` messages, oldest first. Chroma neither sorts nor limits by
    metadata: a small scope's metadata is read and sorted here; a large one is first cut to
    the messages at or after a timestamp that at least ``limit`` of them reach (see
    :func:`_newest`). Only the window's contents are fetched."""
    where = None
    if conversation_id is not None:
        owner = conversation_owner(store, conversation_id)
        if owner is None or user_id not in (None, owner):
            return []
        user_id, where = owner, {"conv": conversation_id}
    assert user_id is not None
    collection = store.user_records(user_id, "message")
    if collection is None:
        return []
    if limit is None:
        got = get_all(collection, where, _BOTH)
        found = [message_from(rid, doc, meta) for rid, doc, meta in rows(got)]
        found.sort(key=lambda r: (r.ts_us, r.seq))
        return found
    if where is None and limit < _ID_CHUNK <= collection.count():
        got = _newest(collection, where, limit)
    else:
        got = collection.get(where=where, include=["metadatas"], limit=_ID_CHUNK)
        if len(got["ids"]) >= _ID_CHUNK and limit < _ID_CHUNK:
            got = _newest(collection, where, limit)
    window = sorted(rows(got), key=lambda row: message_order(row[2]))[-limit:]
    if not window:
        return []
    docs = get_ids(collection, [rid for rid, _d, _m in window], ["documents"])
    content = dict(zip(docs["ids"], docs["documents"], strict=True))
    return [message_from(rid, content[rid], meta) for rid, _d, meta in window if rid in content]


def _newest(collection: Any, where: dict[str, Any] | None, limit: int) -> dict[str, Any]:
    """Metadata of a large scope's messages that include its newest ``limit``.

    The most recently added ones (Chroma returns records in insertion order) give a
    timestamp ``t`` that at least ``limit`` messages reach, so the newest ``limit`` all have
    ``ts_us >= t``: that range is read. Correct in any order of insertion; fast when
    messages arrive roughly in time order.
    """
    probe = max(4 * limit, 100)
    if where is None:
        count = collection.count()
        tail = collection.get(include=["metadatas"], limit=probe, offset=max(0, count - probe))
    else:
        ids = collection.get(where=where, include=[])["ids"]
        tail = get_ids(collection, ids[-probe:], ["metadatas"])
    stamps = sorted((int(m["ts_us"]) for _r, _d, m in rows(tail)), reverse=True)
    if len(stamps) < limit:
        return get_all(collection, where, ["metadatas"])
    since = {"ts_us": {"$gte": stamps[limit - 1]}}
    return get_all(collection, all_of([where, since] if where else [since]), ["metadatas"])


def delete_messages(store: ChromaStore, conversation_id: str, keep_roles: frozenset[str]) -> int:
    """*Writer.* Records, then their pointers; with nothing kept, then the sessions and the
    owner record last, so a crash part-way leaves an owned conversation with fewer records
    (deleting again finishes the job), never records without an owner."""
    owner = conversation_owner(store, conversation_id)
    collection = store.user_records(owner, "message") if owner is not None else None
    ids: list[str] = []
    if collection is not None:
        conds: list[dict[str, Any]] = [{"conv": conversation_id}]
        if keep_roles:
            conds.append({"role": {"$nin": sorted(keep_roles)}})
        ids = _ids_where(collection, all_of(conds))
        _delete_ids(collection, ids)
        _unpoint(store, "message", ids)
    if not keep_roles:
        _delete_ids(store.sessions, _ids_where(store.sessions, {"conv": conversation_id}))
        store.conversations.delete(ids=[conversation_id])
    if ids and owner is not None:
        store.bump_tokens([owner])
        store.text_changed(owner, lambda index: index.remove_many("message", ids))
    return len(ids)


def delete_message_ids(store: ChromaStore, conversation_id: str, ids: Sequence[str]) -> int:
    """*Writer.* The conversation's records with these ids, then their pointers; the
    conversation and its sessions stay."""
    owner = conversation_owner(store, conversation_id)
    collection = store.user_records(owner, "message") if owner is not None else None
    if collection is None or owner is None:
        return 0
    wanted = set(ids)
    gone = [i for i in _ids_where(collection, {"conv": conversation_id}) if i in wanted]
    if gone:
        _delete_ids(collection, gone)
        _unpoint(store, "message", gone)
        store.bump_tokens([owner])
        store.text_changed(owner, lambda index: index.remove_many("message", gone))
    return len(gone)


# -------------------------------------------------------------------- memory entries


def put_memory(store: ChromaStore, rec: MemoryRecord) -> None:
    """*Writer.* The pointer, which says whose the id is (another user's: ``OwnershipError``,
    nothing written), then one ``upsert``: the entry, its vector and its filter columns
    together."""
    if _pointed_user(store, "memory", rec.id, rec.user_id) != rec.user_id:
        raise memory_taken(rec.id)
    vectors, real = embeddings([rec.vector], store.dimension)
    store.user_records(rec.user_id, "memory", create=True).upsert(
        ids=[rec.id],
        documents=[rec.content],
        embeddings=vectors,
        metadatas=[memory_metadata(rec, real[0])],
    )
    store.bump_tokens([rec.user_id])
    store.text_changed(rec.user_id, lambda index: index.add_memory(rec))


def get_memory(store: ChromaStore, memory_id: str) -> MemoryRecord | None:
    found = _fetch(store, "memory", [memory_id], _BOTH)
    return memory_from(found[0][1], found[0][2], found[0][3]) if found else None


def query_memories(store: ChromaStore, flt: MemoryFilter) -> list[MemoryRecord]:
    collection = store.user_records(flt.user_id, "memory")
    if collection is None:
        return []
    got = get_all(collection, all_of(memory_conditions(flt)), _BOTH)
    found = [memory_from(rid, doc, meta) for rid, doc, meta in rows(got)]
    return heapq.nsmallest(flt.limit, found, key=lambda r: (-r.importance, -r.created_us, r.id))


def _delete_memories(store: ChromaStore, user_id: str, collection: Any, ids: list[str]) -> int:
    """Records first, then their pointers."""
    if not ids:
        return 0
    _delete_ids(collection, ids)
    _unpoint(store, "memory", ids)
    store.bump_tokens([user_id])
    store.text_changed(user_id, lambda index: index.remove_many("memory", ids))
    return len(ids)


def delete_memory(store: ChromaStore, memory_id: str, user_id: str | None = None) -> bool:
    """*Writer.* Only ``user_id``'s entry when given (another's: ``OwnershipError``)."""
    found = _fetch(store, "memory", [memory_id], [])
    if not found:
        return False
    user = found[0][0]
    if user_id is not None and user != user_id:
        raise memory_taken(memory_id)
    return _delete_memories(store, user, store.user_records(user, "memory"), [memory_id]) > 0


def purge_expired(store: ChromaStore, now_us: int) -> int:
    """*Writer.* Every user's memory collection, one after another."""
    count = 0
    for user, collection in store.user_collections("memory"):
        ids = _ids_where(collection, {"exp": {"$lte": now_us}})
        count += _delete_memories(store, user, collection, ids)
    return count


# -------------------------------------------------------------------- sessions


def put_session(store: ChromaStore, rec: SessionRecord) -> None:
    """*Writer.* The claim first (a crash after it leaves an empty owned conversation).

    Another user's session id or conversation raises ``OwnershipError``. On a server a new
    session is written with ``add``, so that of two processes racing for one id only one
    lands (within a process the writer thread orders them).
    """
    held = store.sessions.get(ids=[rec.session_id], include=["metadatas"])
    holder = next((meta["user"] for _rid, _doc, meta in rows(held)), None)
    if holder is not None and holder != rec.user_id:
        raise session_taken(rec.session_id)
    owner = conversation_owner(store, rec.conversation_id)
    if owner is None:
        owner = _claim(store, {rec.conversation_id: rec.user_id})[rec.conversation_id]
    if owner != rec.user_id:
        raise conversation_taken(rec.conversation_id, backend="chroma", operation="save_session")
    fields = {
        "ids": [rec.session_id],
        "documents": [rec.payload],
        "embeddings": ONE,
        "metadatas": [session_metadata(rec)],
    }
    if holder is None and store.shared:
        store.sessions.add(**fields)
        landed = get_session(store, rec.session_id)
        if landed is not None and landed.user_id != rec.user_id:
            # Another process added it first (the claim above stays, as after a crash).
            raise session_taken(rec.session_id)
        if landed == rec:
            return
    store.sessions.upsert(**fields)


def get_session(store: ChromaStore, session_id: str) -> SessionRecord | None:
    got = store.sessions.get(ids=[session_id], include=_BOTH)
    found = [session_from(rid, doc, meta) for rid, doc, meta in rows(got)]
    return found[0] if found else None


def latest_session(
    store: ChromaStore, user_id: str, conversation_id: str | None, active_only: bool
) -> SessionRecord | None:
    conds: list[dict[str, Any]] = [{"user": user_id}]
    if conversation_id is not None:
        conds.append({"conv": conversation_id})
    if active_only:
        conds.append({"active": True})
    got = get_all(store.sessions, all_of(conds), _BOTH)
    found = [session_from(rid, doc, meta) for rid, doc, meta in rows(got)]
    return max(found, key=lambda s: (s.started_us, s.session_id), default=None)


# -------------------------------------------------------------------- vectors


def put_vectors(store: ChromaStore, kind: str, items: Sequence[tuple[str, Any]]) -> None:
    """*Writer.* Attach vectors to stored records (``update`` merges ``vec=True`` into the
    metadata and replaces the embedding in one call)."""
    vectors = dict(items)
    by_user: dict[str, list[str]] = {}
    for user, rid, _doc, _meta in _fetch(store, kind, list(vectors), []):
        by_user.setdefault(user, []).append(rid)
    for user, ids in by_user.items():
        collection = store.user_records(user, kind)
        for part in chunks(ids, store.max_batch):
            rows_, _real = embeddings([vectors[rid] for rid in part], store.dimension)
            collection.update(
                ids=list(part), embeddings=rows_, metadatas=[{"vec": True} for _ in part]
            )


# -------------------------------------------------------------------- users


def statistics(store: ChromaStore, user_id: str) -> dict[str, object]:
    mine = {"user": user_id}
    messages = store.user_records(user_id, "message")
    got = get_all(messages, None, ["metadatas"]) if messages is not None else {"ids": []}
    msgs = [m for _r, _d, m in rows(got)]
    stamps = [int(m["ts_us"]) for m in msgs]
    sessions = [m for _r, _d, m in rows(get_all(store.sessions, mine, ["metadatas"]))]
    memories = store.user_records(user_id, "memory")
    return {
        "messages": len(msgs),
        "conversations": len(_ids_where(store.conversations, {"user": user_id})),
        "sessions": len(sessions),
        "active_sessions": sum(1 for s in sessions if s["active"]),
        "memories": memories.count() if memories is not None else 0,
        "messages_by_role": dict(Counter(m["role"] for m in msgs)),
        "first_message_us": min(stamps, default=None),
        "last_message_us": max(stamps, default=None),
    }


def forget_user(store: ChromaStore, user_id: str) -> dict[str, int]:
    """*Writer.* The user's collections first (each dropped whole), then pointers,
    sessions, and the owner records last: a crash part-way leaves the user's
    conversations listed, so running ``forget_user`` again finishes it."""
    counts: dict[str, int] = {}
    for kind, name in (("message", "messages"), ("memory", "memories")):
        collection = store.user_records(user_id, kind)
        counts[name] = collection.count() if collection is not None else 0
        if collection is not None:
            # Deleted by id first: Chroma dropping a collection leaves its records' metadata
            # (array values too) and full-text rows behind in its SQLite file.
            _delete_ids(collection, _ids_where(collection, None))
            store.drop(collection.name)
    store.forget_handles(user_id)
    mine = {"user": user_id}
    _delete_ids(store.ids, _ids_where(store.ids, mine))
    for name, collection in (("sessions", store.sessions), ("conversations", store.conversations)):
        ids = _ids_where(collection, mine)
        _delete_ids(collection, ids)
        counts[name] = len(ids)
    store.bump_tokens([user_id])
    store.text_changed(user_id)
    return counts


# -------------------------------------------------------------------- export


def conversation_pairs(store: ChromaStore, user_id: str | None) -> list[tuple[str, str]]:
    where = {"user": user_id} if user_id is not None else None
    got = get_all(store.conversations, where, ["metadatas"])
    return sorted((cid, meta["user"]) for cid, _doc, meta in rows(got))


def conversation_messages(store: ChromaStore, conversation_id: str) -> list[MessageRecord]:
    return read_window(store, conversation_id, None, None)


def memory_users(store: ChromaStore, user_id: str | None) -> list[str]:
    return [user for user, _c in store.user_collections("memory", user_id)]


def memories_of(store: ChromaStore, user_id: str) -> list[MemoryRecord]:
    collection = store.user_records(user_id, "memory")
    if collection is None:
        return []
    got = get_all(collection, None, _BOTH)
    found = [memory_from(rid, doc, meta) for rid, doc, meta in rows(got)]
    return sorted(found, key=lambda r: r.id)


def session_ids(store: ChromaStore, user_id: str | None) -> list[str]:
    where = {"user": user_id} if user_id is not None else None
    return sorted(store.sessions.get(where=where, include=[])["ids"])


def sessions_by_id(store: ChromaStore, ids: Sequence[str]) -> list[SessionRecord]:
    got = get_ids(store.sessions, ids, _BOTH)
    return [session_from(rid, doc, meta) for rid, doc, meta in rows(got)]
