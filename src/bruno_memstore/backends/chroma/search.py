"""Search in ``ChromaMemory``: BM25 over cached text indexes, and Chroma's vector index.

Both run on the store's reader threads and search one user's records only: the user's own
collections (see ``layout``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from ...models import MemoryFilter, MemoryRecord, SearchHit
from .layout import all_of, memory_conditions, memory_from, message_from, rows
from .ops import get_all, get_ids
from .store import ChromaStore
from .text import UserText

__all__ = ["text_search", "user_text", "vector_search"]

_BOTH = ["documents", "metadatas"]


def _load_text(store: ChromaStore, user_id: str, mark: Any) -> UserText:
    entry = UserText(mark=mark)
    messages = store.user_records(user_id, "message")
    if messages is not None:
        for rid, doc, meta in rows(get_all(messages, None, _BOTH)):
            entry.add_message(rid, doc or "", meta["conv"], int(meta["ts_us"]))
    memories = store.user_records(user_id, "memory")
    if memories is not None:
        for rid, doc, meta in rows(get_all(memories, None, _BOTH)):
            entry.add_memory(memory_from(rid, doc, meta))
    return entry


def user_text(store: ChromaStore, user_id: str) -> UserText:
    """The user's text index, loaded from Chroma unless the cached one is current."""
    token = store.read_token(user_id)
    mark, entry = store.text.lookup(user_id, token)
    if entry is None:
        entry = _load_text(store, user_id, mark)
        store.text.install(user_id, entry)
    return entry


def text_search(
    store: ChromaStore,
    user_id: str,
    query: str,
    kinds: frozenset[str],
    conversation_id: str | None,
    limit: int,
    memory_filter: MemoryFilter | None,
) -> list[SearchHit]:
    """BM25 over the user's records; every filter applies before the best ``limit`` are cut."""
    entry = user_text(store, user_id)
    flt = memory_filter or MemoryFilter(user_id=user_id)
    ranked: list[tuple[float, int, str, str]] = []
    memories: dict[str, MemoryRecord] = {}
    with entry.lock:
        for (kind, rid), score in entry.index.search(query).items():
            if kind not in kinds:
                continue
            if kind == "message":
                conv, ts_us = entry.messages[rid]
                if conversation_id is None or conv == conversation_id:
                    ranked.append((-score, -ts_us, rid, kind))
            else:
                mem = entry.memories[rid]
                if flt.matches(mem) and conversation_id in (None, mem.conversation_id):
                    ranked.append((-score, -mem.created_us, rid, kind))
                    memories[rid] = mem
    best = heapq.nsmallest(limit, ranked)
    wanted = [rid for _s, _t, rid, kind in best if kind == "message"]
    collection = store.user_records(user_id, "message") if wanted else None
    messages = {}
    if collection is not None:
        got = get_ids(collection, wanted, _BOTH)
        messages = {rid: message_from(rid, doc, meta) for rid, doc, meta in rows(got)}
    hits: list[SearchHit] = []
    for neg, _t, rid, kind in best:
        if kind == "message":
            if rid in messages:  # a message deleted meanwhile is left out
                hits.append(SearchHit("message", -neg, message=messages[rid]))
        else:
            hits.append(SearchHit("memory", -neg, memory=memories[rid]))
    return hits


def vector_search(
    store: ChromaStore,
    user_id: str,
    vector: Any,
    kinds: frozenset[str],
    conversation_id: str | None,
    limit: int,
    memory_filter: MemoryFilter | None,
) -> list[SearchHit]:
    """Nearest records by cosine among the user's records that pass every filter.

    The user is the collection. The other filters are Chroma ``where`` conditions, and
    Chroma applies them inside the search. Filtered searches cost time in proportion to the
    collection, so each search first asks without a filter: when every hit of that answer
    passes the filters, it is also the filtered answer (nothing that fails a filter was
    displaced by it), and it is returned; otherwise the filtered search runs.
    """
    query = [[float(x) for x in vector]]
    hits: list[tuple[float, int, str, SearchHit]] = []
    if "message" in kinds:
        collection = store.user_records(user_id, "message")
        conds: list[dict[str, Any]] = [{"vec": True}]
        if conversation_id is not None:
            conds.append({"conv": conversation_id})

        def message_ok(meta: dict[str, Any]) -> bool:
            return bool(meta.get("vec")) and conversation_id in (None, meta.get("conv"))

        for rid, doc, meta, score in _nearest(collection, query, conds, message_ok, limit):
            rec = message_from(rid, doc, meta)
            hits.append((-score, -rec.ts_us, rid, SearchHit("message", score, message=rec)))
    if "memory" in kinds:
        collection = store.user_records(user_id, "memory")
        flt = memory_filter or MemoryFilter(user_id=user_id)
        conds = [{"vec": True}, *memory_conditions(flt, conversation_id)]

        def memory_ok(meta: dict[str, Any]) -> bool:
            rec = memory_from("", None, meta)
            return (
                bool(meta.get("vec"))
                and flt.matches(rec)
                and conversation_id in (None, rec.conversation_id)
            )

        for rid, doc, meta, score in _nearest(collection, query, conds, memory_ok, limit):
            mem = memory_from(rid, doc, meta)
            hits.append((-score, -mem.created_us, rid, SearchHit("memory", score, memory=mem)))
    hits.sort(key=lambda h: h[:3])
    return [h[3] for h in hits[:limit]]


Nearest = list[tuple[str, str | None, dict[str, Any], float]]


def _nearest(
    collection: Any,
    query: list[list[float]],
    conds: list[dict[str, Any]],
    accept: Callable[[dict[str, Any]], bool],
    limit: int,
) -> Nearest:
    if collection is None:
        return []
    probe = _query(collection, query, None, limit)
    if all(accept(meta) for _rid, _doc, meta, _score in probe):
        return probe
    return _query(collection, query, all_of(conds), limit)


def _query(
    collection: Any, query: list[list[float]], where: dict[str, Any] | None, limit: int
) -> Nearest:
    got = collection.query(
        query_embeddings=query,
        n_results=limit,
        where=where,
        include=["documents", "metadatas", "distances"],
    )
    ids = got["ids"][0]
    docs = (got.get("documents") or [[None] * len(ids)])[0]
    metas = (got.get("metadatas") or [[{}] * len(ids)])[0]
    dists = got["distances"][0]
    return [
        (rid, doc, meta or {}, 1.0 - float(dist))
        for rid, doc, meta, dist in zip(ids, docs, metas, dists, strict=True)
    ]
