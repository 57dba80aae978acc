"""Search in ``ChromaMemory``: the kit's keyword index over cached per-user indexes, and
Chroma's vector index.

Chroma's own document filter (``$contains``) matches substrings and does not rank, so
full-text search is the kit's keyword index over the user's messages and memory entries,
loaded from Chroma once and kept in the store's user cache, tagged with:

* this process's generation of the user, bumped by the writer thread after every write that
  touches the user's text. In embedded mode (one process owns the directory) the writer
  also patches a current index in place, so searches after writes need no reload.
* for a server, also a token stored in Chroma (``gen:{user}`` in the meta collection) that
  every process replaces after such a write. A search reads it first and reloads when it
  differs, so other processes' writes are seen. Writers there drop the index instead of
  patching it: without compare-and-set, a patch cannot know it saw every other writer.

These functions run on the store's reader threads and read one user's records only: the
user's own collections (see ``layout``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...models import MemoryRecord, MessageRecord, SearchHit, SearchRequest
from ..kit.hits import Found
from ..kit.keyword_index import KeywordIndex
from .layout import all_of, memory_conditions, memory_from, message_from, rows
from .ops import get_all, get_ids
from .store import ChromaStore

__all__ = ["load_text", "records_of", "vector_search"]

_BOTH = ["documents", "metadatas"]


def load_text(store: ChromaStore, user_id: str) -> KeywordIndex:
    """The user's keyword index, built from every message and memory entry of theirs."""
    index = KeywordIndex()
    for kind in ("message", "memory"):
        collection = store.user_records(user_id, kind)
        if collection is None:
            continue
        got = rows(get_all(collection, None, _BOTH))
        if kind == "message":
            index.add_messages(message_from(rid, doc, meta) for rid, doc, meta in got)
        else:
            for rid, doc, meta in got:
                index.add_memory(memory_from(rid, doc, meta))
    return index


def records_of(
    store: ChromaStore, user_id: str, found: Sequence[Found]
) -> tuple[dict[str, MessageRecord], dict[str, MemoryRecord]]:
    """The user's records named in a search answer, by id (those deleted meanwhile are
    missing)."""
    out: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    for kind, build, into in (("message", message_from, out[0]), ("memory", memory_from, out[1])):
        wanted = [rid for k, rid, _ in found if k == kind]
        collection = store.user_records(user_id, kind) if wanted else None
        if collection is not None:
            got = get_ids(collection, wanted, _BOTH)
            into.update((rid, build(rid, doc, meta)) for rid, doc, meta in rows(got))
    return out


def vector_search(store: ChromaStore, request: SearchRequest, vector: Any) -> list[SearchHit]:
    """Nearest records by cosine among the user's records that pass every filter.

    The user is the collection. The other filters are Chroma ``where`` conditions, and
    Chroma applies them inside the search. Filtered searches cost time in proportion to the
    collection, so each search first asks without a filter: when every hit of that answer
    passes the filters, it is also the filtered answer (nothing that fails a filter was
    displaced by it), and it is returned; otherwise the filtered search runs.
    """
    user_id, kinds, limit = request.user_id, request.kinds, request.limit
    conversation_id = request.conversation_id
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
        flt = request.memories()
        conds = [{"vec": True}, *memory_conditions(flt, conversation_id)]

        def memory_ok(meta: dict[str, Any]) -> bool:
            return bool(meta.get("vec")) and request.admits_memory(memory_from("", None, meta), flt)

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
