"""A plain-Python model of the documented semantics, for model-based tests.

:class:`ReferenceMemory` keeps what a memory should hold after a sequence of calls, in
dictionaries, and answers what each public operation should return or raise, following
``docs/design.md`` and the docstrings of :class:`~bruno_memstore.base.MemoryBackend`:

* ``Message.id`` is the key: storing an identical message again is a no-op; a different one
  (content, role, type, instant, parent, metadata or conversation) raises ``ConflictError``
  and writes nothing.
* A conversation belongs to the user who first wrote to it (a message, a session or a
  claim); a write by another user raises ``OwnershipError``. Without a user,
  ``store_message(message, conversation_id)`` acts for ``message.metadata["user_id"]`` (it
  must own the conversation or claim a new one), else joins the conversation as it is.
* Windows are ordered by ``(timestamp, arrival)`` within a conversation. Across a user's
  conversations only the timestamp orders: ties between conversations may come either way.
* Sessions and memory entries have owners too; ``get_context`` resolves a session id, a
  conversation id or nothing as documented.

The model is synchronous and knows nothing of engines. Where the contract leaves a choice
to the backend (fresh session ids, the exact instant ``end_session`` records, the order of
ties) the model says what is allowed, and :meth:`adopt_session` takes what the backend
chose once it has been checked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryEntry, MemoryQuery
from bruno_core.models.message import Message, MessageRole

from ..errors import ConflictError, InvalidArgumentError, NotFoundError, OwnershipError
from ..models import DEFAULT_USER, to_us
from ..search import terms

__all__ = [
    "MAX_LIMIT",
    "RefMessage",
    "ReferenceMemory",
    "Resolution",
    "is_top_prefix",
]

MAX_LIMIT = 10_000
"""The largest ``limit`` the model accepts (larger ones are refused)."""

_EPOCH = datetime(1970, 1, 1)
K = TypeVar("K")


@dataclass(slots=True)
class RefMessage:
    """A stored message: as first stored, with its conversation and arrival number."""

    message: Message  # conversation_id filled in
    ts_us: int
    arrival: int

    @property
    def id(self) -> str:
        return str(self.message.id)

    @property
    def conversation_id(self) -> str:
        assert self.message.conversation_id is not None
        return self.message.conversation_id


@dataclass(slots=True)
class Resolution:
    """What ``get_context(user_id, ref)`` must resolve to.

    ``kind`` is ``"existing"`` (one of ``candidates``, all tied as the latest), ``"created"``
    (a new session with id and conversation ``ref``) or ``"new"`` (a new session with a
    fresh id and a fresh conversation).
    """

    kind: str
    candidates: list[SessionContext] = field(default_factory=list)
    ref: str | None = None


def is_top_prefix(
    got: Sequence[K], universe: Iterable[K], limit: int, before: Callable[[K, K], bool]
) -> str | None:
    """Whether ``got`` is the first ``limit`` items of some order that respects ``before``.

    ``before(a, b)`` is a strict partial order: ``a`` must come before ``b``. Items it does
    not order (ties) may come either way, and either may fill the last places. Returns
    ``None`` when ``got`` is such a prefix, else what is wrong.
    """
    pool = list(universe)
    want = min(limit, len(pool))
    if len(got) != want:
        return f"expected {want} items, got {len(got)}"
    if len(set(got)) != len(got):
        return "an item comes twice"
    members = set(pool)
    strangers = [g for g in got if g not in members]
    if strangers:
        return f"items that should not be there: {strangers}"
    for i, a in enumerate(got):
        for b in got[i + 1 :]:
            if before(b, a):
                return f"{b} must come before {a}"
    chosen = set(got)
    for left_out in pool:
        if left_out in chosen:
            continue
        for g in got:
            if before(left_out, g):
                return f"{left_out} was left out but must come before {g}"
    return None


class ReferenceMemory:
    """The state a conforming memory is in, and the answers it must give.

    Every write method either raises the error the real memory must raise (changing
    nothing) or applies the write and returns what the real call returns.
    """

    def __init__(self, *, context_window: int = 20) -> None:
        self.context_window = context_window
        self.owners: dict[str, str] = {}  # conversation id -> owner
        self.messages: dict[str, RefMessage] = {}
        self.memories: dict[str, MemoryEntry] = {}
        self.sessions: dict[str, SessionContext] = {}
        self.unpinned_end: set[str] = set()  # ended sessions whose ended_at is not seen yet
        self._arrivals = 0

    # ---------------------------------------------------------------- conversations

    def owner(self, conversation_id: str) -> str | None:
        return self.owners.get(conversation_id)

    def conversations_of(self, user_id: str) -> list[str]:
        return sorted(c for c, o in self.owners.items() if o == user_id)

    def claim_conversation(self, conversation_id: str, user_id: str) -> None:
        self._claim(conversation_id, user_id)

    def _claim(self, conversation_id: str, user_id: str) -> None:
        owner = self.owners.get(conversation_id)
        if owner is not None and owner != user_id:
            raise OwnershipError(f"conversation {conversation_id!r} belongs to another user")
        self.owners[conversation_id] = user_id

    # ---------------------------------------------------------------- messages

    def store_messages(
        self, messages: Sequence[Message], conversation_id: str, user_id: str | None
    ) -> int:
        """``store_message`` (one message) and ``store_messages``; returns how many were new.

        Without ``user_id`` the call acts for the user the messages name in
        ``metadata["user_id"]``, who must own the conversation (or claim it, if new); a batch
        naming two users is refused; naming nobody, it joins an existing conversation whoever
        owns it, and a new one becomes ``"default"``'s.
        """
        if not messages:
            return 0
        ids = [str(m.id) for m in messages]
        if len(set(ids)) != len(ids):
            raise InvalidArgumentError("messages", "the batch repeats a message id")
        enforce = user_id is not None
        if user_id is None:
            named = {
                m.metadata["user_id"]
                for m in messages
                if isinstance(m.metadata.get("user_id"), str) and m.metadata["user_id"].strip()
            }
            if len(named) > 1:
                raise InvalidArgumentError("messages", "the batch names more than one user")
            if named:
                user_id, enforce = named.pop(), True
            else:
                user_id = DEFAULT_USER
        incoming = [self._as_stored(m, conversation_id) for m in messages]
        owner = self.owners.get(conversation_id)
        if enforce and owner is not None and owner != user_id:
            if self._conflicts(incoming):
                raise _either(OwnershipError, ConflictError)
            raise OwnershipError(f"conversation {conversation_id!r} belongs to another user")
        if self._conflicts(incoming):
            raise ConflictError("a different message is stored under this id")
        if owner is None:
            self.owners[conversation_id] = user_id
        new = 0
        for msg in incoming:
            if str(msg.id) in self.messages:
                continue
            self._arrivals += 1
            self.messages[str(msg.id)] = RefMessage(msg, to_us(msg.timestamp), self._arrivals)
            new += 1
        return new

    def conflicts(self, messages: Sequence[Message], conversation_id: str) -> bool:
        """Whether storing ``messages`` into the conversation names a different stored one."""
        return self._conflicts([self._as_stored(m, conversation_id) for m in messages])

    @staticmethod
    def _as_stored(message: Message, conversation_id: str) -> Message:
        return message.model_copy(update={"conversation_id": conversation_id}, deep=True)

    def _conflicts(self, incoming: Sequence[Message]) -> bool:
        for msg in incoming:
            old = self.messages.get(str(msg.id))
            if old is not None and not same_message(old.message, msg):
                return True
        return False

    def window(self, conversation_id: str) -> list[RefMessage]:
        """Every message of the conversation, oldest first."""
        found = [m for m in self.messages.values() if m.conversation_id == conversation_id]
        return sorted(found, key=lambda m: (m.ts_us, m.arrival))

    def retrieve_messages(self, conversation_id: str, limit: int | None) -> list[Message]:
        _check_limit(limit, allow_none=True)
        window = self.window(conversation_id)
        if limit is not None:
            window = window[-limit:]
        return [m.message for m in reversed(window)]

    def user_messages(self, user_id: str, conversation_id: str | None = None) -> list[RefMessage]:
        """The user's messages (of one conversation, if given; none if it is not theirs)."""
        if conversation_id is not None:
            if self.owners.get(conversation_id) != user_id:
                return []
            return self.window(conversation_id)
        mine = set(self.conversations_of(user_id))
        return [m for m in self.messages.values() if m.conversation_id in mine]

    @staticmethod
    def newer(a: RefMessage, b: RefMessage) -> bool:
        """Whether ``a`` must come before ``b`` in a newest-first order (a strict order)."""
        if a.ts_us != b.ts_us:
            return a.ts_us > b.ts_us
        return a.conversation_id == b.conversation_id and a.arrival > b.arrival

    def clear_history(self, conversation_id: str, keep_system_messages: bool) -> None:
        """System messages stay unless told otherwise; without them the conversation and
        its sessions go too (as ``clear_conversation``, without the ownership check)."""
        for msg in self.window(conversation_id):
            if not keep_system_messages or msg.message.role != MessageRole.SYSTEM:
                del self.messages[msg.id]
        if not keep_system_messages:
            self._drop_conversation(conversation_id)

    def clear_conversation(self, user_id: str, conversation_id: str) -> None:
        owner = self.owners.get(conversation_id)
        if owner is None:
            return
        if owner != user_id:
            raise OwnershipError(f"conversation {conversation_id!r} belongs to another user")
        self.clear_history(conversation_id, keep_system_messages=False)

    def _drop_conversation(self, conversation_id: str) -> None:
        self.owners.pop(conversation_id, None)
        for sid in [s for s, v in self.sessions.items() if v.conversation_id == conversation_id]:
            self._forget_session(sid)

    # ---------------------------------------------------------------- memory entries

    def store_memory(self, entry: MemoryEntry) -> None:
        key = str(entry.id)
        old = self.memories.get(key)
        if old is not None and old.user_id != entry.user_id:
            raise OwnershipError(f"memory {key} belongs to another user")
        self.memories[key] = entry.model_copy(deep=True)

    def delete_memory(self, memory_id: str, user_id: str | None) -> None:
        old = self.memories.get(memory_id)
        if old is None:
            return
        if user_id is not None and old.user_id != user_id:
            raise OwnershipError(f"memory {memory_id} belongs to another user")
        del self.memories[memory_id]

    def matching_memories(self, query: MemoryQuery, now: datetime) -> list[MemoryEntry]:
        """Every entry passing all of the query's filters (the text aside), unordered."""
        _check_limit(query.limit)
        types = {t.value if hasattr(t, "value") else t for t in query.memory_types}
        found = []
        for e in self.memories.values():
            meta = e.metadata
            if e.user_id != query.user_id:
                continue
            if types and _value(e.memory_type) not in types:
                continue
            if query.categories and meta.category not in query.categories:
                continue
            if query.tags and not any(t in query.tags for t in meta.tags):
                continue
            if meta.confidence < query.min_confidence or meta.importance < query.min_importance:
                continue
            if not query.include_expired and _expired(e, now):
                continue
            found.append(e)
        return found

    @staticmethod
    def more_important(a: MemoryEntry, b: MemoryEntry) -> bool:
        """Whether ``a`` must come before ``b`` unranked: more important, then newer."""
        ka = (a.metadata.importance, to_us(a.created_at))
        kb = (b.metadata.importance, to_us(b.created_at))
        return ka > kb

    def has_expired(self, now: datetime) -> bool:
        """Whether some entry has expired (and ``purge_expired`` would delete it)."""
        return any(_expired(e, now) for e in self.memories.values())

    def purge_expired(self, now: datetime) -> int:
        doomed = [k for k, e in self.memories.items() if _expired(e, now)]
        for key in doomed:
            del self.memories[key]
        return len(doomed)

    # ---------------------------------------------------------------- sessions

    def get_session(self, session_id: str) -> SessionContext | None:
        return self.sessions.get(session_id)

    def save_session(self, session: SessionContext) -> None:
        old = self.sessions.get(session.session_id)
        if old is not None and old.user_id != session.user_id:
            raise OwnershipError(f"session {session.session_id!r} belongs to another user")
        self._put_session(session)

    def _put_session(self, session: SessionContext) -> None:
        self._claim(session.conversation_id, session.user_id)
        self.sessions[session.session_id] = session.model_copy(deep=True)
        self.unpinned_end.discard(session.session_id)

    def check_new_session(self, session: SessionContext, user_id: str) -> str | None:
        """What is wrong with a session the memory says it just created, or ``None``."""
        if session.user_id != user_id:
            return f"created for {session.user_id!r}, not {user_id!r}"
        if not session.is_active or session.ended_at is not None:
            return "a new session is not active"
        if session.session_id in self.sessions:
            return f"session id {session.session_id!r} is already taken"
        if session.conversation_id in self.owners:
            return f"conversation {session.conversation_id!r} already exists"
        return None

    def adopt_session(self, session: SessionContext) -> None:
        """Record a session the memory created (checked with :meth:`check_new_session`)."""
        self._put_session(session)

    def end_session(self, session_id: str) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFoundError(f"session {session_id!r} does not exist")
        if session.is_active:
            session.is_active = False
            self.unpinned_end.add(session_id)

    def compare_session(self, got: SessionContext, session_id: str) -> str | None:
        """Compare a session read from the memory with the model's; the first read of an
        ended session fixes the ``ended_at`` the memory recorded. ``None`` when equal."""
        want = self.sessions.get(session_id)
        if want is None:
            return f"session {session_id!r} should not exist"
        if session_id in self.unpinned_end:
            if got.ended_at is None:
                return "an ended session has no ended_at"
            pinned = want.model_copy(update={"ended_at": got.ended_at})
            if got != pinned:
                return f"session differs: {got!r} != {pinned!r}"
            self.sessions[session_id] = pinned
            self.unpinned_end.discard(session_id)
            return None
        if got != want:
            return f"session differs: {got!r} != {want!r}"
        return None

    def latest_active(self, user_id: str, conversation_id: str | None) -> list[SessionContext]:
        """The user's most recently started active sessions (several when tied)."""
        found = [
            s
            for s in self.sessions.values()
            if s.user_id == user_id and s.is_active and conversation_id in (None, s.conversation_id)
        ]
        if not found:
            return []
        top = max(to_us(s.started_at) for s in found)
        return [s for s in found if to_us(s.started_at) == top]

    def resolve_context(self, user_id: str, ref: str | None) -> Resolution:
        """What ``get_context(user_id, ref)`` resolves to (raises ``OwnershipError``)."""
        if ref is None:
            latest = self.latest_active(user_id, None)
            return Resolution("existing", latest) if latest else Resolution("new")
        session = self.sessions.get(ref)
        if session is not None:
            if session.user_id != user_id:
                raise OwnershipError(f"session {ref!r} belongs to another user")
            return Resolution("existing", [session])
        owner = self.owners.get(ref)
        if owner is not None and owner != user_id:
            raise OwnershipError(f"conversation {ref!r} belongs to another user")
        if owner is not None:
            latest = self.latest_active(user_id, ref)
            if latest:
                return Resolution("existing", latest)
        return Resolution("created", ref=ref)

    def _forget_session(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        self.unpinned_end.discard(session_id)

    # ---------------------------------------------------------------- users

    def statistics(self, user_id: str) -> dict[str, Any]:
        msgs = self.user_messages(user_id)
        sessions = [s for s in self.sessions.values() if s.user_id == user_id]
        stamps = [m.ts_us for m in msgs]
        return {
            "user_id": user_id,
            "total_messages": len(msgs),
            "conversations": len(self.conversations_of(user_id)),
            "sessions": len(sessions),
            "active_sessions": sum(1 for s in sessions if s.is_active),
            "memories": sum(1 for e in self.memories.values() if e.user_id == user_id),
            "messages_by_role": dict(Counter(_value(m.message.role) for m in msgs)),
            "first_message_at": _iso(min(stamps)) if stamps else None,
            "last_message_at": _iso(max(stamps)) if stamps else None,
            "archived_conversations": 0,
            "archived_messages": 0,
        }

    def forget_user(self, user_id: str) -> dict[str, int]:
        convs = self.conversations_of(user_id)
        counts = {
            "messages": len(self.user_messages(user_id)),
            "conversations": len(convs),
            "sessions": sum(1 for s in self.sessions.values() if s.user_id == user_id),
            "memories": sum(1 for e in self.memories.values() if e.user_id == user_id),
        }
        for conv in convs:
            self.clear_history(conv, keep_system_messages=False)
        for sid in [s for s, v in self.sessions.items() if v.user_id == user_id]:
            self._forget_session(sid)
        for key in [k for k, e in self.memories.items() if e.user_id == user_id]:
            del self.memories[key]
        return counts

    # ---------------------------------------------------------------- search

    def text_matches(
        self,
        user_id: str,
        query: str | None,
        *,
        kinds: Iterable[str],
        conversation_id: str | None,
        now: datetime,
        memory_query: MemoryQuery | None = None,
    ) -> set[tuple[str, str]]:
        """``(kind, id)`` of every live record of the user sharing a term with ``query``
        (every live record when ``query`` is ``None``).

        Memory entries must pass ``memory_query``'s filters (else: not expired) and, with
        ``conversation_id``, belong to that conversation.
        """

        def matches(text: str) -> bool:
            return query is None or bool(wanted & set(terms(text)))

        wanted = set(terms(query)) if query is not None else set()
        hits: set[tuple[str, str]] = set()
        if "message" in kinds:
            for m in self.user_messages(user_id, conversation_id):
                if matches(m.message.content):
                    hits.add(("message", m.id))
        if "memory" in kinds:
            pool = (
                self.matching_memories(memory_query, now)
                if memory_query is not None
                else [
                    e
                    for e in self.memories.values()
                    if e.user_id == user_id and not _expired(e, now)
                ]
            )
            for e in pool:
                if conversation_id is not None and e.conversation_id != conversation_id:
                    continue
                if matches(e.content):
                    hits.add(("memory", str(e.id)))
        return hits


class _Either(Exception):
    """Raised by the model when more than one error is right (the contract names no order)."""

    def __init__(self, *allowed: type[Exception]) -> None:
        super().__init__(" or ".join(c.__name__ for c in allowed))
        self.allowed = allowed


def _either(*allowed: type[Exception]) -> _Either:
    return _Either(*allowed)


def allowed_errors(exc: BaseException) -> tuple[type[BaseException], ...]:
    """The error classes a model exception allows the memory to raise."""
    if isinstance(exc, _Either):
        return exc.allowed
    return (type(exc),)


def same_message(a: Message, b: Message) -> bool:
    """The identity rule: ``b`` stored under ``a``'s id is ``a`` again (a no-op)."""
    return (
        a.conversation_id == b.conversation_id
        and _value(a.role) == _value(b.role)
        and a.content == b.content
        and _value(a.message_type) == _value(b.message_type)
        and to_us(a.timestamp) == to_us(b.timestamp)
        and a.parent_id == b.parent_id
        and a.metadata == b.metadata
    )


def _check_limit(limit: Any, *, allow_none: bool = False) -> None:
    if limit is None and allow_none:
        return
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidArgumentError("limit", "expected an int")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError("limit", f"must be between 1 and {MAX_LIMIT}")


def _expired(entry: MemoryEntry, now: datetime) -> bool:
    return entry.expires_at is not None and to_us(entry.expires_at) <= to_us(now)


def _value(item: Any) -> Any:
    return getattr(item, "value", item)


def _iso(ts_us: int) -> str:
    return (_EPOCH + timedelta(microseconds=ts_us)).isoformat()
