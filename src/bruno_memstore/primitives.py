"""The narrow primitive set a backend implements.

:class:`~bruno_memstore.base.MemoryBackend` does all validation, ownership rules, id
conflicts, error translation, retries and metrics, then calls exactly one primitive. A
primitive receives validated records and must be atomic: it either happens whole or raises.
Retried writes are safe because every write is keyed by an id (insert-if-absent or upsert).

Ownership is decided by the engine in the same atomic step as the write it guards (a
conditional insert or update, a script, a transaction): a check made in one call and a write
made in another would let two users racing for one new id both succeed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, NamedTuple

from .embeddings.adapter import VectorSpace
from .errors import OwnershipError
from .models import MemoryFilter, MemoryRecord, MessageRecord, SearchHit, SessionRecord

__all__ = [
    "AppendResult",
    "ExportKind",
    "StoragePrimitives",
    "VectorPrimitives",
    "memory_taken",
    "session_taken",
]

ExportKind = Literal["conversations", "messages", "memories", "sessions"]


def memory_taken(memory_id: str) -> OwnershipError:
    """The error a memory primitive raises for another user's entry."""
    return OwnershipError(f"memory {memory_id} belongs to another user")


def session_taken(session_id: str) -> OwnershipError:
    """The error ``_put_session`` raises for another user's session id."""
    return OwnershipError(f"session {session_id!r} belongs to another user")


class AppendResult(NamedTuple):
    """What ``_append_messages`` did."""

    owner: str  # the conversation's owner
    existing_ids: frozenset[str]  # ids that were already stored, hence skipped


class StoragePrimitives(ABC):
    """Engine operations. Each has a one-line contract; none validates its arguments."""

    # ---------------------------------------------------------------- lifecycle

    @abstractmethod
    async def _connect(self) -> None:
        """Open connections and create or migrate the schema. Called once, under a lock.

        Backends with versioned schemas set ``self._schema_version`` here.
        """

    @abstractmethod
    async def _close(self) -> None:
        """Release every resource this backend opened. Called at most once per connect."""

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
    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        """The entry with this id, or ``None``."""

    @abstractmethod
    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        """Entries matching every filter, most important first, then newest; at most ``limit``."""

    @abstractmethod
    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        """Delete the entry; ``True`` if it existed.

        With ``user_id``, only that user's entry: another user's raises :func:`memory_taken`
        and stays, decided in the same atomic step as the deletion.
        """

    @abstractmethod
    async def _purge_expired(self, now_us: int) -> int:
        """Delete memory entries with ``expires_us <= now_us``; return how many."""

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

    @abstractmethod
    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        """The user's most recently started session (in the conversation, if given), or ``None``."""

    # ---------------------------------------------------------------- search and statistics

    @abstractmethod
    async def _text_search(
        self,
        user_id: str,
        query: str,
        *,
        kinds: frozenset[str],
        conversation_id: str | None,
        limit: int,
        memory_filter: MemoryFilter | None = None,
    ) -> list[SearchHit]:
        """Relevance-ranked hits of the user's records (``kinds``: ``"message"``/``"memory"``).

        Best first, scores higher-is-better. Memory hits honour ``memory_filter`` when given
        (and exclude expired entries unless it says otherwise). An empty query matches nothing.
        """

    @abstractmethod
    async def _statistics(self, user_id: str) -> dict[str, object]:
        """Counts for one user: ``messages``, ``conversations``, ``sessions``,
        ``active_sessions``, ``memories``, ``messages_by_role``, ``first_message_us``,
        ``last_message_us``."""

    # ---------------------------------------------------------------- whole-store operations

    @abstractmethod
    async def _forget_user(self, user_id: str) -> dict[str, int]:
        """Delete every record of the user from every index; return counts by kind."""

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


class VectorPrimitives(ABC):
    """Engine operations of a backend that declares ``Capability.VECTORS``.

    Such a backend also stores ``record.vector`` (a unit float32 ``numpy`` row, or ``None``)
    in the same atomic write as the record, in ``_append_messages`` and ``_put_memory``, and
    removes vectors with their records everywhere records are deleted.
    """

    @abstractmethod
    async def _vector_space(self) -> VectorSpace | None:
        """The recorded model name and dimension of the stored vectors, or ``None``."""

    @abstractmethod
    async def _claim_vector_space(self, space: VectorSpace, *, replace: bool) -> VectorSpace:
        """Record ``space`` and return the space now recorded.

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
    async def _vector_search(
        self,
        user_id: str,
        vector: Any,
        *,
        kinds: frozenset[str],
        conversation_id: str | None,
        limit: int,
        memory_filter: MemoryFilter | None = None,
    ) -> list[SearchHit]:
        """The user's records nearest to ``vector``, best first, score = cosine similarity.

        The user (and conversation, and memory filter) restrict the engine's query itself,
        never its results afterwards, so no other user's record can fill or leak into them.
        """
