"""The narrow primitive set a backend implements, and the operations built from it.

:class:`~bruno_memstore.base.MemoryBackend` does all validation, ownership rules, id
conflicts, error translation, retries and metrics, then calls exactly one primitive. A
primitive receives validated records and must be atomic: it either happens whole or raises.
Retried writes are safe because every write is keyed by an id (insert-if-absent or upsert).

A backend implements the eleven abstract storage primitives (and the three vector ones if it
declares ``Capability.VECTORS``). Every other operation here has a default built from them
(reading one entry, latest session, statistics, purging, forgetting a user, keyword search
with an in-process BM25 index); an engine overrides one when it can do it faster or in one
atomic step.

Ownership is decided by the engine in the same atomic step as the write it guards (a
conditional insert or update, a script, a transaction): a check made in one call and a write
made in another would let two users racing for one new id both succeed.
"""

from __future__ import annotations

import contextlib
import heapq
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Literal, NamedTuple

from .embeddings.adapter import VectorSpace
from .errors import OwnershipError
from .lifecycle import archive_marker
from .models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
    hit_order,
)
from .search import BM25Index

__all__ = [
    "AppendResult",
    "ExportKind",
    "MessagePruning",
    "PendingVectors",
    "StoragePrimitives",
    "VectorPrimitives",
    "markers_of",
    "memory_taken",
    "same_session",
    "session_taken",
]

ExportKind = Literal["conversations", "messages", "memories", "sessions"]


def conversation_taken(
    conversation_id: str, *, backend: str | None = None, operation: str | None = None
) -> OwnershipError:
    """The error for a write into, or a use of, another user's conversation."""
    return OwnershipError(
        f"conversation {conversation_id!r} belongs to another user",
        backend=backend,
        operation=operation,
    )


def memory_taken(memory_id: str) -> OwnershipError:
    """The error a memory primitive raises for another user's entry."""
    return OwnershipError(f"memory {memory_id} belongs to another user")


def markers_of(found: Iterable[SessionRecord | None], user_id: str | None) -> list[SessionRecord]:
    """What ``_get_markers`` returns of the sessions read: those found, ``user_id``'s."""
    return [s for s in found if s is not None and (user_id is None or s.user_id == user_id)]


def same_session(stored: SessionRecord | None, expected: SessionRecord) -> bool:
    """Whether a stored session is ``expected``: owner, conversation and payload."""
    return stored is not None and (stored.user_id, stored.conversation_id, stored.payload) == (
        expected.user_id,
        expected.conversation_id,
        expected.payload,
    )


def session_taken(session_id: str) -> OwnershipError:
    """The error ``_put_session`` raises for another user's session id."""
    return OwnershipError(f"session {session_id!r} belongs to another user")


class AppendResult(NamedTuple):
    """What ``_append_messages`` did."""

    owner: str  # the conversation's owner
    existing_ids: frozenset[str]  # ids that were already stored, hence skipped


class StoragePrimitives(ABC):
    """Engine operations. Each has a one-line contract; none validates its arguments.

    The abstract ones are the primitives; the others have defaults built from them, which an
    engine may override to go faster (their contract stays the same).
    """

    # ---------------------------------------------------------------- lifecycle

    async def _connect(self) -> None:
        """Open connections and create or migrate the schema. Called once, under a lock.

        Backends with versioned schemas set ``self._schema_version`` here. The default
        does nothing.
        """
        return None

    async def _close(self) -> None:
        """Release every resource this backend opened. Called at most once per connect.

        The default does nothing.
        """
        return None

    # ---------------------------------------------------------------- conversations

    @abstractmethod
    async def _conversation_owner(self, conversation_id: str) -> str | None:
        """The owner of the conversation, or ``None`` when it does not exist."""

    # ---------------------------------------------------------------- messages

    @abstractmethod
    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        """Atomically claim the conversation and insert the records.

        A new conversation becomes ``user_id``'s. An existing one owned by someone else raises
        ``OwnershipError`` if ``enforce_owner`` (nothing is written); otherwise its owner stays
        and is returned. Records whose id is already stored (in any conversation) are skipped
        and reported in ``existing_ids``; new records get increasing arrival numbers in order.
        If every record is skipped, nothing at all is written: the owner is still checked,
        but a new conversation is not created (a refused write claims nothing). With no
        records it only claims (creating an empty conversation).
        """

    @abstractmethod
    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        """The stored records with these ids (any order; missing ids are left out)."""

    @abstractmethod
    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        """The newest ``limit`` messages (all when ``None``), returned oldest first.

        Scoped to the conversation if given, and to the user's conversations if ``user_id``
        is given (both may be). Order is ``(ts_us, seq)``: timestamp, then arrival.
        """

    async def _read_window_and_markers(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> tuple[list[MessageRecord], list[SessionRecord] | None]:
        """:meth:`_read_window`, with the archive marker sessions of the conversations the
        window may hold when the engine reads them in the same round trip (``None``: not
        read; the caller then reads each conversation's marker on its own)."""
        window = await self._read_window(
            conversation_id=conversation_id, user_id=user_id, limit=limit
        )
        return window, None

    async def _get_markers(
        self, user_id: str | None, conversation_ids: Sequence[str]
    ) -> list[SessionRecord]:
        """The archive marker sessions of these conversations (``user_id``'s, when given)
        that exist. Default: one :meth:`_get_session` each; engines that can read them all in
        one round trip override this."""
        found = [await self._get_session(archive_marker(c)) for c in conversation_ids]
        return markers_of(found, user_id)

    @abstractmethod
    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        """Delete the conversation's messages whose role is not in ``keep_roles``; return count.

        With empty ``keep_roles`` the conversation and its sessions go too.
        """

    # ---------------------------------------------------------------- memories

    @abstractmethod
    async def _put_memory(self, record: MemoryRecord) -> None:
        """Insert the entry, or replace the stored one with this id if it is the same user's.

        If the id holds another user's entry, raise :func:`memory_taken`, writing nothing.
        The engine decides this in the same atomic step as the write.
        """

    @abstractmethod
    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        """Entries matching every filter, most important first, then newest; at most ``limit``.

        Every field of ``flt`` counts, as :meth:`MemoryFilter.matches` reads it: ``user_id``
        ``None`` means any user's, non-empty ``ids`` only those entries.
        """

    @abstractmethod
    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        """Delete the entry; ``True`` if it existed.

        With ``user_id``, only that user's entry: another user's raises :func:`memory_taken`
        and stays, decided in the same atomic step as the deletion.
        """

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        """The entry with this id, or ``None``. Default: one ``_query_memories`` by id."""
        flt = MemoryFilter(user_id=None, ids=(memory_id,), include_expired=True, limit=1)
        found = await self._query_memories(flt)
        return found[0] if found else None

    async def _purge_expired(self, now_us: int) -> int:
        """Delete memory entries with ``expires_us <= now_us``; return how many.

        Default: list the expired entries, then delete each one that is still expired when
        read again just before its deletion. An entry replaced between that read and the
        deletion is deleted all the same; engines that can put the condition in the deletion
        itself override this.
        """
        doomed = [
            rec.id
            for rec in await self._collect("memories", None)
            if rec.expires_us is not None and rec.expires_us <= now_us
        ]
        purged = 0
        for memory_id in doomed:
            rec = await self._get_memory(memory_id)
            if rec is None or rec.expires_us is None or rec.expires_us > now_us:
                continue
            with contextlib.suppress(OwnershipError):  # re-stored by another user meanwhile
                purged += await self._delete_memory(memory_id, rec.user_id)
        return purged

    # ---------------------------------------------------------------- sessions

    @abstractmethod
    async def _put_session(self, record: SessionRecord) -> None:
        """Insert the session, or replace the stored one with this id if it is the same
        user's, claiming its conversation for its user.

        Raises ``OwnershipError`` (writing nothing) if another user owns the session id
        (:func:`session_taken`) or the conversation. Both are decided in the same atomic step
        as the write.
        """

    @abstractmethod
    async def _get_session(self, session_id: str) -> SessionRecord | None:
        """The session with this id, or ``None``."""

    async def _replace_session(self, record: SessionRecord, expected: SessionRecord) -> bool:
        """Replace the session ``expected`` with ``record`` (the same id, user and
        conversation) only if it is still stored as ``expected``; return whether it was.

        Default: a read, then :meth:`_put_session`, which is not one atomic step (a deletion
        landing between the two is undone). Engines that can write conditionally override it.
        """
        if not same_session(await self._get_session(expected.session_id), expected):
            return False
        await self._put_session(record)
        return True

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        """The user's most recently started session (in the conversation, if given), or
        ``None``; of sessions started at the same instant, the greatest id.

        Default: a scan of the user's exported sessions.
        """
        best: SessionRecord | None = None
        for rec in await self._collect("sessions", user_id):
            if (active_only and not rec.is_active) or conversation_id not in (
                None,
                rec.conversation_id,
            ):
                continue
            if best is None or (rec.started_us, rec.session_id) > (
                best.started_us,
                best.session_id,
            ):
                best = rec
        return best

    # ---------------------------------------------------------------- search and statistics

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        """Relevance-ranked hits of the user's records, best first, scores higher-is-better.

        Only ``request.kinds``; messages of ``request.conversation_id`` if given; memory hits
        pass the request's memory filter (:meth:`SearchRequest.memories`: expired entries
        are left out unless it says otherwise). An empty query matches nothing.

        Default: a BM25 index over the user's exported messages and memory entries, built
        for this one query (the user's whole corpus gives the term statistics, as an
        engine's own index of the user's records would).
        """
        index = BM25Index()
        messages: dict[str, MessageRecord] = {}
        memories: dict[str, MemoryRecord] = {}
        for rec in await self._collect("messages", request.user_id):
            messages[rec.id] = rec
            index.add(("message", rec.id), rec.content)
        for rec in await self._collect("memories", request.user_id):
            memories[rec.id] = rec
            index.add(("memory", rec.id), rec.content)
        flt = request.memories()
        hits: list[SearchHit] = []
        for (kind, rid), score in index.search(request.query).items():  # type: ignore[misc]
            if kind not in request.kinds:
                continue
            if kind == "message":
                if request.admits_message(msg := messages[rid]):
                    hits.append(SearchHit("message", score, message=msg))
            elif request.admits_memory(mem := memories[rid], flt):
                hits.append(SearchHit("memory", score, memory=mem))
        return heapq.nsmallest(request.limit, hits, key=hit_order)

    async def _statistics(self, user_id: str) -> dict[str, object]:
        """Counts for one user: ``messages``, ``conversations``, ``sessions``,
        ``active_sessions``, ``memories``, ``messages_by_role``, ``first_message_us``,
        ``last_message_us``.

        Default: counted over the user's exported records.
        """
        roles: Counter[str] = Counter()
        first: int | None = None
        last: int | None = None
        async for batch in self._export("messages", user_id):
            for rec in batch:
                roles[rec.role] += 1  # type: ignore[attr-defined]
                ts: int = rec.ts_us  # type: ignore[attr-defined]
                first = ts if first is None else min(first, ts)
                last = ts if last is None else max(last, ts)
        sessions = await self._collect("sessions", user_id)
        return {
            "messages": sum(roles.values()),
            "conversations": len(await self._collect("conversations", user_id)),
            "sessions": len(sessions),
            "active_sessions": sum(1 for s in sessions if s.is_active),
            "memories": len(await self._collect("memories", user_id)),
            "messages_by_role": dict(roles),
            "first_message_us": first,
            "last_message_us": last,
        }

    # ---------------------------------------------------------------- whole-store operations

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        """Delete every record of the user from every index; return counts by kind:
        ``messages``, ``conversations``, ``sessions``, ``memories``.

        Default: each of the user's conversations is deleted with its messages and sessions
        (``_delete_messages`` keeping no role), then each of the user's memory entries.
        """
        conversations = [c for c, _owner in await self._collect("conversations", user_id)]
        counts = {
            "messages": 0,
            "conversations": len(conversations),
            "sessions": len(await self._collect("sessions", user_id)),
            "memories": 0,
        }
        for conversation_id in conversations:
            counts["messages"] += await self._delete_messages(conversation_id, frozenset())
        for rec in await self._collect("memories", user_id):
            with contextlib.suppress(OwnershipError):  # re-stored by another user meanwhile
                counts["memories"] += await self._delete_memory(rec.id, user_id)
        return counts

    async def _store_counts(self) -> dict[str, int]:
        """Records in the whole store by kind: ``users``, ``conversations``, ``messages``,
        ``sessions``, ``memories``.

        Default: counted over every exported record (a user is anyone who owns a
        conversation, a session or a memory entry); engines that can count override this.
        """
        users: set[str] = set()
        counts = dict.fromkeys(("conversations", "messages", "sessions", "memories"), 0)
        for kind in counts:
            async for batch in self._export(kind, None):  # type: ignore[arg-type]
                counts[kind] += len(batch)
                if kind == "conversations":
                    users.update(owner for _conv, owner in batch)  # type: ignore[misc]
                elif kind != "messages":
                    users.update(rec.user_id for rec in batch)  # type: ignore[attr-defined]
        return {"users": len(users), **counts}

    async def _storage_bytes(self) -> int | None:
        """Bytes the store takes in its engine (data and indexes), or ``None`` where the
        engine cannot tell. Default: ``None``."""
        return None

    async def _compact(self) -> None:
        """Erase what deletions left for the engine to clean up later, and reclaim the space.

        The default does nothing: right for engines whose deletions leave nothing behind.
        """
        return None

    @abstractmethod
    def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        """Yield batches of records of ``kind`` (all users when ``user_id`` is ``None``).

        Conversations come as ``(conversation_id, owner)`` pairs; messages in ``(ts_us, seq)``
        order within each conversation.
        """

    async def _collect(self, kind: ExportKind, user_id: str | None) -> list[Any]:
        """Every record ``_export`` yields, in one list (for the defaults above)."""
        out: list[Any] = []
        async for batch in self._export(kind, user_id):
            out += batch
        return out


class VectorPrimitives(ABC):
    """Engine operations of a backend that declares ``Capability.VECTORS``.

    Such a backend also stores ``record.vector`` (a unit float32 ``numpy`` row, or ``None``)
    in the same atomic write as the record, in ``_append_messages`` and ``_put_memory``, and
    removes vectors with their records everywhere records are deleted.
    """

    @abstractmethod
    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        """Record ``space`` and return the space now recorded; with ``None``, only return
        the recorded space (``None`` if there is none), changing nothing.

        Without ``replace`` this is insert-if-absent (nothing is dropped; a space recorded
        first by another process wins and is returned). With ``replace`` every stored vector
        is dropped and ``space`` recorded, sizing any index to its dimension.
        """

    @abstractmethod
    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        """Attach vectors to stored records: ``items`` are ``(id, vector)`` pairs.

        Ids no longer stored are skipped; an existing vector is replaced.
        """

    @abstractmethod
    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        """The user's records nearest to ``vector``, best first, score = cosine similarity.

        ``request`` scopes the search as for ``_text_search`` (its query text is not used).
        The user (and conversation, and memory filter) restrict the engine's query itself,
        never its results afterwards, so no other user's record can fill or leak into them.
        """


class PendingVectors(ABC):
    """The durable queue of a backend that can acknowledge messages before their vectors
    (``vectors="deferred"``; see :mod:`bruno_memstore.deferred_vectors`).

    When ``self.vectors == "deferred"`` (fixed at construction), ``_append_messages`` marks
    each message it inserts without a vector as pending, in the same atomic write;
    ``_put_vectors("message", ...)`` clears the mark of each message it attaches a vector
    to; a deleted message loses its mark with it, on every deletion path. A mark holds the
    message's key (its ``seq``) and nothing else: the text is read from the message itself.
    A backend without this primitive refuses ``vectors="deferred"``.
    """

    @abstractmethod
    async def _without_vectors(
        self, kind: Literal["message"], after: int, limit: int
    ) -> list[tuple[int, str, str]]:
        """The ``limit`` pending records of ``kind`` with the smallest keys above ``after``,
        as ``(key, id, content)`` in increasing key order.

        Keys grow with arrival: a message stored after another was marked has a greater
        key than it.
        """


class MessagePruning(ABC):
    """Deleting messages one by one, what expiry sweeps and retention policies need: the
    primitive of a backend that declares ``Capability.PRUNING``."""

    @abstractmethod
    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        """Delete the conversation's messages with these ids from every index (search,
        vectors, pending marks); return how many were deleted.

        Ids not stored in this conversation are skipped. The conversation and its sessions
        stay, even when no message is left.
        """
