"""Model-based stateful testing: random interleavings of every public operation by several
users, checked call by call against :class:`~bruno_memstore.testing.reference.ReferenceMemory`.

Hypothesis' :class:`~hypothesis.stateful.RuleBasedStateMachine` chooses the operations:
storing messages (both call forms, batches, replays of stored ids), reading windows,
clearing, sessions and ``get_context``, memory entries with colliding ids, search, purging,
forgetting a user, export. Three users draw ids from small pools, so the same conversation,
message, session or memory id is used by two users, or again with other content, within a
few steps; timestamps come from a small set, so ties are common. Every read is compared with
the model, and every error by its class.

Each example builds a memory of its own with the test class's ``make_memory()``, on an event
loop that lives as long as the example (the machine itself is synchronous and runs in a
worker thread), and tears it down with ``teardown_memory()``. Ids are fresh per example, so
examples sharing one database never see each other.

The budget is ``BRUNO_STATEFUL_EXAMPLES`` examples (default 20) of up to
``BRUNO_STATEFUL_STEPS`` steps (default 25).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple, TypeVar
from uuid import uuid4

from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryEntry, MemoryMetadata, MemoryQuery, MemoryType
from bruno_core.models.message import Message, MessageRole, MessageType
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import MemstoreError
from ...models import (
    MemoryRecord,
    MessageRecord,
    SessionRecord,
    record_to_memory,
    record_to_message,
    record_to_session,
    utcnow,
)
from ..builders import BASE_TIME
from ..harness import ConformanceBase
from ..reference import (
    MAX_LIMIT,
    ReferenceMemory,
    RefMessage,
    allowed_errors,
    is_top_prefix,
)

__all__ = ["EXAMPLES_ENV", "STEPS_ENV", "StatefulSuite", "memory_machine", "stateful_settings"]

EXAMPLES_ENV = "BRUNO_STATEFUL_EXAMPLES"
STEPS_ENV = "BRUNO_STATEFUL_STEPS"
DEFAULT_EXAMPLES = 20
DEFAULT_STEPS = 30

T = TypeVar("T")

OPEN_DEFECTS: frozenset[str] = frozenset()
"""Known defects whose cases the machine does not generate; remove an entry once fixed."""


def stateful_settings() -> settings:
    """The budget: ``BRUNO_STATEFUL_EXAMPLES`` examples of ``BRUNO_STATEFUL_STEPS`` steps.

    Everything else comes from the active Hypothesis profile. A failure prints the steps
    that reproduce it, and a ``@reproduce_failure`` blob.
    """
    return settings(
        max_examples=_env_count(EXAMPLES_ENV, DEFAULT_EXAMPLES),
        stateful_step_count=_env_count(STEPS_ENV, DEFAULT_STEPS),
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )


def _env_count(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


# ---------------------------------------------------------------------- what rules draw

# Distinct stems, none a stop word: a one-word query matches exactly the texts holding it.
WORDS = ("zebra", "quartz", "violin", "maple")
USERS = ("u0", "u1", "u2")
CONVERSATIONS = ("c0", "c1", "k0")  # kN: the conversation of the N-th new session
SESSIONS = ("s0", "c0", "c1", "k0", "k1")  # kN: the N-th session the memory made
MESSAGE_SLOTS = 4
MEMORY_SLOTS = 3
TIMES = {
    "t0": BASE_TIME,
    "t1": BASE_TIME + timedelta(seconds=1),
    "t2": BASE_TIME + timedelta(seconds=2),
    # The instant of t1 written with an offset: the same position, another text.
    "t1z": (BASE_TIME + timedelta(seconds=1)).replace(tzinfo=UTC),
    "t1p": (BASE_TIME + timedelta(seconds=1, hours=5)).replace(tzinfo=timezone(timedelta(hours=5))),
}
# 1 and 1.0 are equal in JSON: storing {"k": 1.0} over {"k": 1} is storing the same message.
METADATA: tuple[dict[str, Any], ...] = ({}, {"k": 1}, {"k": 1.0}, {"k": [1, "x"], "n": None})
PAST = BASE_TIME - timedelta(days=1)
FUTURE = datetime(2100, 1, 1)


class MessageSpec(NamedTuple):
    """A message to store: which id slot, what it says, and whether to replay the stored one."""

    slot: int
    role: str
    at: str
    words: tuple[str, ...]
    meta: int  # which of METADATA
    kind: str  # message type
    parent: int | None  # the id slot of the parent message
    replay: bool  # send the message stored under this id again, unchanged


class MemorySpec(NamedTuple):
    slot: int
    words: tuple[str, ...]
    kind: str
    category: str | None
    tags: tuple[str, ...]
    importance: float
    confidence: float
    created: str
    expires: str | None  # None, "past" or "future"
    conversation: str | None


class QuerySpec(NamedTuple):
    kinds: tuple[str, ...]
    categories: tuple[str, ...]
    tags: tuple[str, ...]
    min_importance: float
    min_confidence: float
    include_expired: bool
    limit: int
    word: str | None


users = st.sampled_from(USERS)
conversations = st.sampled_from(CONVERSATIONS)
session_refs = st.sampled_from(SESSIONS)
words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=2).map(tuple)
message_specs = st.builds(
    MessageSpec,
    slot=st.integers(0, MESSAGE_SLOTS - 1),
    role=st.sampled_from(["user", "assistant", "system"]),
    at=st.sampled_from(sorted(TIMES)),
    words=words,
    meta=st.integers(0, 3),
    kind=st.sampled_from(["text", "command"]),
    parent=st.one_of(st.none(), st.integers(0, MESSAGE_SLOTS - 1)),
    replay=st.booleans(),
)
memory_specs = st.builds(
    MemorySpec,
    slot=st.integers(0, MEMORY_SLOTS - 1),
    words=words,
    kind=st.sampled_from(["fact", "episodic", "long_term"]),
    category=st.sampled_from([None, "pets", "work"]),
    tags=st.lists(st.sampled_from(["x", "y"]), max_size=2, unique=True).map(tuple),
    importance=st.sampled_from([0.2, 0.5, 0.9]),
    confidence=st.sampled_from([0.3, 0.8]),
    created=st.sampled_from(["t0", "t1"]),
    expires=st.sampled_from([None, "past", "future"]),
    conversation=st.sampled_from([None, "c0", "c1"]),
)
# Aim a read at the N-th stored record (its owner, a word of it), or (None) read at random.
aims = st.one_of(st.none(), st.integers(0, 7))
query_specs = st.builds(
    QuerySpec,
    kinds=st.sampled_from([(), (), ("fact",), ("episodic", "long_term")]),
    categories=st.sampled_from([(), (), ("pets",), ("work", "pets")]),
    tags=st.sampled_from([(), (), ("x",), ("y",)]),
    min_importance=st.sampled_from([0.0, 0.5]),
    min_confidence=st.sampled_from([0.0, 0.5]),
    include_expired=st.booleans(),
    limit=st.sampled_from([1, 2, 10]),
    word=st.one_of(st.none(), st.sampled_from(WORDS)),
)


# ---------------------------------------------------------------------- the machine


class _Mismatch(AssertionError):
    """The memory and the model disagree."""


def _fail(operation: str, problem: str) -> None:
    raise _Mismatch(f"{operation}: {problem}")


class MemoryMachine(RuleBasedStateMachine):
    """Drives one memory and one :class:`ReferenceMemory` with the same calls.

    Subclasses made by :func:`memory_machine` set ``suite``, the conformance test whose
    ``make_memory()`` and ``teardown_memory()`` build and release each example's memory.
    """

    suite: ConformanceBase

    def __init__(self) -> None:
        super().__init__()
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self.memory: MemoryBackend | None = None
        try:
            memory = self._run(self.suite.make_memory())
            if not isinstance(memory, MemoryBackend):
                raise TypeError(f"make_memory() returned {type(memory).__name__}")
            self.memory = memory
            self._run(memory.initialize())
        except BaseException:
            self.teardown()
            raise
        self.caps = memory.capabilities
        if Capability.FULL_TEXT in self.caps:
            # Keyword ranking: exact match sets, and no embedding work for queries.
            memory.search_mode = "keyword"
        self.model = ReferenceMemory(context_window=memory.context_window)
        tag = uuid4().hex[:10]
        self.user_ids = {u: f"st{tag}-{u}" for u in USERS}
        self.conv_pool = {c: f"st{tag}-{c}" for c in CONVERSATIONS if c.startswith("c")}
        self.session_pool = {s: f"st{tag}-{s}" for s in SESSIONS if s.startswith("s")}
        self.message_ids = [uuid4() for _ in range(MESSAGE_SLOTS)]
        self.memory_ids = [uuid4() for _ in range(MEMORY_SLOTS)]
        self.made_sessions: list[SessionContext] = []  # sessions the memory created, in order

    def teardown(self) -> None:
        try:
            if self.memory is not None:
                self._run(self.suite.teardown_memory(self.memory))
        finally:
            self._runner.close()

    # ---------------------------------------------------------------- plumbing

    @property
    def mem(self) -> MemoryBackend:
        assert self.memory is not None
        return self.memory

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def has(self, *caps: Capability) -> bool:
        return all(c in self.caps for c in caps)

    def both(
        self,
        operation: str,
        model_call: Callable[[], T],
        real_call: Callable[[], Awaitable[Any]],
    ) -> tuple[T, Any] | None:
        """Run the model, then the memory; errors must match by class.

        Returns ``(expected, got)`` when both succeeded, ``None`` when both raised.
        """
        try:
            want: Any = model_call()
            want_error: BaseException | None = None
        except MemstoreError as exc:
            want, want_error = None, exc
        except Exception as exc:  # the model's "either of these" marker
            want, want_error = None, exc

        async def real() -> Any:
            return await real_call()

        try:
            got = self._run(real())
        except MemstoreError as exc:
            if want_error is None:
                _fail(operation, f"the memory raised {exc!r}; the model expected success")
            allowed = allowed_errors(want_error)
            if type(exc) not in allowed:
                names = " or ".join(c.__name__ for c in allowed)
                _fail(operation, f"the memory raised {exc!r}; the model expected {names}")
            return None
        if want_error is not None:
            _fail(operation, f"the memory succeeded; the model expected {want_error!r}")
        return want, got

    def user(self, name: str) -> str:
        return self.user_ids[name]

    def conversation(self, name: str) -> str:
        if name.startswith("k"):
            if self.made_sessions:
                return self.made_sessions[int(name[1:]) % len(self.made_sessions)].conversation_id
            name = f"c{name[1:]}"
        return self.conv_pool[name]

    def session_ref(self, name: str) -> str:
        if name.startswith("k"):
            if self.made_sessions:
                return self.made_sessions[int(name[1:]) % len(self.made_sessions)].session_id
            name = "s0"
        if name.startswith("c"):
            return self.conv_pool[name]
        return self.session_pool[name]

    def new_session(self, operation: str, session: SessionContext, user_id: str) -> None:
        problem = self.model.check_new_session(session, user_id)
        if problem is not None:
            _fail(operation, problem)
        self.model.adopt_session(session)
        self.made_sessions.append(session)

    # ---------------------------------------------------------------- comparisons

    def check_messages(
        self, operation: str, got: Sequence[Message], want: Sequence[Message]
    ) -> None:
        got_ids = [str(m.id) for m in got]
        want_ids = [str(m.id) for m in want]
        if got_ids != want_ids:
            _fail(operation, f"message ids {got_ids} != expected {want_ids}")
        for g, w in zip(got, want, strict=True):
            self.check_message(operation, g, w)

    @staticmethod
    def check_message(operation: str, got: Message, want: Message) -> None:
        same = got.model_dump() == want.model_dump() and (
            got.timestamp.utcoffset() == want.timestamp.utcoffset()
        )
        if not same:
            _fail(operation, f"message {want.id} reads back as {got!r}, stored as {want!r}")

    def check_known_messages(self, operation: str, got: Sequence[Message]) -> None:
        """Each message is stored in the model, and reads back as stored."""
        for g in got:
            ref = self.model.messages.get(str(g.id))
            if ref is None:
                _fail(operation, f"message {g.id} should not exist")
            else:
                self.check_message(operation, g, ref.message)

    def check_entry(self, operation: str, got: MemoryEntry) -> None:
        want = self.model.memories.get(str(got.id))
        if want is None:
            _fail(operation, f"memory entry {got.id} should not exist")
        elif got != want:
            _fail(operation, f"memory entry reads back as {got!r}, stored as {want!r}")

    def check_session(self, operation: str, got: SessionContext, session_id: str) -> None:
        problem = self.model.compare_session(got, session_id)
        if problem is not None:
            _fail(operation, problem)

    def check_user_window(
        self, operation: str, got: Sequence[Message], user_id: str, limit: int
    ) -> None:
        """The user's newest ``limit`` messages across conversations, oldest first."""
        mine = {m.id: m for m in self.model.user_messages(user_id)}
        newest_first = [mine.get(str(m.id)) for m in reversed(got)]
        if any(m is None for m in newest_first):
            _fail(operation, f"messages not of {user_id}: {[str(m.id) for m in got]}")
        chosen: list[RefMessage] = [m for m in newest_first if m is not None]

        def before(a: str, b: str) -> bool:
            return ReferenceMemory.newer(mine[a], mine[b])

        problem = is_top_prefix([m.id for m in chosen], mine, limit, before)
        if problem is not None:
            _fail(operation, f"not the newest {limit} messages of the user: {problem}")
        self.check_known_messages(operation, got)

    # ---------------------------------------------------------------- messages

    def build_message(self, spec: MessageSpec, hint: str | None) -> tuple[Message, str | None]:
        """The message for ``spec``, and the conversation it is stored in (for replays)."""
        mid = self.message_ids[spec.slot]
        stored = self.model.messages.get(str(mid))
        if spec.replay and stored is not None:
            return stored.message.model_copy(update={"conversation_id": None}), (
                stored.conversation_id
            )
        metadata: dict[str, Any] = dict(METADATA[spec.meta])
        if hint is not None:
            metadata["user_id"] = hint
        message = Message(
            id=mid,
            role=MessageRole(spec.role),
            content=" ".join(spec.words),
            message_type=MessageType(spec.kind),
            timestamp=TIMES[spec.at],
            metadata=metadata,
            parent_id=self.message_ids[spec.parent] if spec.parent is not None else None,
        )
        return message, None

    def _hinted(self, messages: Sequence[Message], conv: str) -> bool:
        """Whether the two-argument form acts for a user here (never for ``"default"``)."""
        named = any(isinstance(m.metadata.get("user_id"), str) for m in messages)
        return named or conv in self.model.owners

    @rule(
        user=users,
        conv=conversations,
        spec=message_specs,
        form=st.sampled_from(["user", "hint", "join"]),
    )
    def store_message(self, user: str, conv: str, spec: MessageSpec, form: str) -> None:
        """One message, by ``store_message(msg, user, conv)`` or ``store_message(msg, conv)``
        with (``hint``) or without (``join``) ``metadata["user_id"]``."""
        uid, cid = self.user(user), self.conversation(conv)
        message, replay_conv = self.build_message(spec, uid if form == "hint" else None)
        cid = replay_conv or cid
        if form != "user" and not self._hinted([message], cid):
            form = "user"
        by_user = uid if form == "user" else None
        if by_user is not None:
            call = lambda: self.mem.store_message(message, by_user, cid)  # noqa: E731
        else:
            call = lambda: self.mem.store_message(message, cid)  # noqa: E731
        self.both("store_message", lambda: self.model.store_messages([message], cid, by_user), call)

    @rule(
        user=users,
        conv=conversations,
        specs=st.lists(message_specs, min_size=1, max_size=3),
        hinted=st.booleans(),
    )
    def store_batch(self, user: str, conv: str, specs: list[MessageSpec], hinted: bool) -> None:
        """``store_messages``: a batch, possibly with repeated, replayed or conflicting ids."""
        uid, cid = self.user(user), self.conversation(conv)
        batch = [self.build_message(s, uid if hinted else None)[0] for s in specs]
        by_user = None if hinted and self._hinted(batch, cid) else uid
        result = self.both(
            "store_messages",
            lambda: self.model.store_messages(batch, cid, by_user),
            lambda: self.mem.store_messages(batch, conversation_id=cid, user_id=by_user),
        )
        if result is not None and result[0] != result[1]:
            _fail("store_messages", f"returned {result[1]} new messages, expected {result[0]}")

    @rule(conv=conversations, limit=st.sampled_from([None, 1, 2, 3, MAX_LIMIT, MAX_LIMIT + 1]))
    def retrieve_messages(self, conv: str, limit: int | None) -> None:
        if "limit-cap" in OPEN_DEFECTS and limit is not None and limit > MAX_LIMIT:
            return
        cid = self.conversation(conv)
        result = self.both(
            "retrieve_messages",
            lambda: self.model.retrieve_messages(cid, limit),
            lambda: self.mem.retrieve_messages(cid, limit),
        )
        if result is not None:
            self.check_messages("retrieve_messages", result[1], result[0])

    @rule(
        user=users,
        conv=st.one_of(st.none(), conversations),
        limit=st.sampled_from([1, 2, 4, 50]),
    )
    def retrieve_context(self, user: str, conv: str | None, limit: int) -> None:
        """The recent window: one conversation's, or across all of the user's."""
        uid = self.user(user)
        cid = self.conversation(conv) if conv is not None else None
        got = self._run(self.mem.retrieve_context(uid, limit=limit, conversation_id=cid))
        if cid is not None:
            want = [m.message for m in self.model.user_messages(uid, cid)[-limit:]]
            self.check_messages("retrieve_context", got, want)
        else:
            self.check_user_window("retrieve_context", got, uid, limit)

    @precondition(lambda self: self.has(Capability.FULL_TEXT))
    @rule(
        user=users,
        conv=st.one_of(st.none(), conversations),
        word=st.sampled_from(WORDS),
        strategy=st.sampled_from(["relevant", "hybrid"]),
        limit=st.sampled_from([1, 3, 50]),
        aim=aims,
    )
    def retrieve_relevant(
        self, user: str, conv: str | None, word: str, strategy: str, limit: int, aim: int | None
    ) -> None:
        """Ranked context: the user's matches (and, for ``hybrid``, the newest half)."""
        op = f"retrieve_context({strategy})"
        uid, word = self.aim_at(aim, self.user(user), word, ("message",))
        cid = self.conversation(conv) if conv is not None else None
        got = self._run(
            self.mem.retrieve_context(
                uid,
                word,
                limit,
                cid,
                strategy=strategy,
                mode="keyword",  # type: ignore[arg-type]
            )
        )
        self.check_known_messages(op, got)
        pool = {m.id: m for m in self.model.user_messages(uid, cid)}
        matches = {
            i
            for k, i in self.model.text_matches(
                uid, word, kinds=("message",), conversation_id=cid, now=utcnow()
            )
        }
        ids = [str(m.id) for m in got]
        if len(set(ids)) != len(ids) or not set(ids) <= set(pool):
            _fail(op, f"{ids} are not distinct messages of the user's (conversation)")
        order = [(pool[i].ts_us) for i in ids]
        if order != sorted(order):
            _fail(op, "not oldest first")
        if strategy == "relevant":
            if len(matches) <= limit and set(ids) != matches:
                _fail(op, f"found {sorted(ids)}, the matches are {sorted(matches)}")
            if len(matches) > limit and (len(ids) != limit or not set(ids) <= matches):
                _fail(op, f"found {sorted(ids)}, expected {limit} of {sorted(matches)}")
            return
        recent_n = (limit + 1) // 2
        newest = sorted(pool.values(), key=lambda m: m.ts_us, reverse=True)
        may_be_recent = {
            m.id for m in newest if sum(1 for o in newest if o.ts_us > m.ts_us) < recent_n
        }
        strays = set(ids) - matches - may_be_recent
        if strays:
            _fail(op, f"{sorted(strays)} neither match nor are among the newest {recent_n}")
        least = min(limit, max(len(matches), min(recent_n, len(pool))))
        if not least <= len(ids) <= limit:
            _fail(op, f"{len(ids)} messages, expected {least} to {limit}")

    @rule(conv=conversations, keep=st.booleans())
    def clear_history(self, conv: str, keep: bool) -> None:
        cid = self.conversation(conv)
        self.both(
            "clear_history",
            lambda: self.model.clear_history(cid, keep),
            lambda: self.mem.clear_history(cid, keep_system_messages=keep),
        )

    @rule(user=users, conv=conversations)
    def clear_conversation(self, user: str, conv: str) -> None:
        uid, cid = self.user(user), self.conversation(conv)
        self.both(
            "clear_conversation",
            lambda: self.model.clear_conversation(uid, cid),
            lambda: self.mem.clear_conversation(uid, cid),
        )

    @rule(user=users, conv=conversations)
    def claim_conversation(self, user: str, conv: str) -> None:
        uid, cid = self.user(user), self.conversation(conv)
        self.both(
            "claim_conversation",
            lambda: self.model.claim_conversation(cid, uid),
            lambda: self.mem.claim_conversation(cid, uid),
        )

    @rule(user=users)
    def get_statistics(self, user: str) -> None:
        uid = self.user(user)
        got = dict(self._run(self.mem.get_statistics(uid)))
        if got.pop("backend", None) != self.mem.backend_name:
            _fail("get_statistics", "'backend' is not the backend's name")
        want = self.model.statistics(uid)
        if got != want:
            _fail("get_statistics", f"{got} != expected {want}")

    # ---------------------------------------------------------------- sessions

    @rule(user=users, metadata=st.sampled_from([None, {"channel": "voice"}]))
    def create_session(self, user: str, metadata: dict[str, Any] | None) -> None:
        uid = self.user(user)
        session = self._run(self.mem.create_session(uid, metadata))
        if session.metadata != (metadata or {}):
            _fail("create_session", f"metadata {session.metadata} != {metadata or {}}")
        self.new_session("create_session", session, uid)

    @rule(ref=session_refs)
    def get_session(self, ref: str) -> None:
        sid = self.session_ref(ref)
        got = self._run(self.mem.get_session(sid))
        if got is None:
            if self.model.get_session(sid) is not None:
                _fail("get_session", f"session {sid!r} is missing")
        else:
            self.check_session("get_session", got, sid)

    @rule(ref=session_refs)
    def end_session(self, ref: str) -> None:
        sid = self.session_ref(ref)
        self.both(
            "end_session",
            lambda: self.model.end_session(sid),
            lambda: self.mem.end_session(sid),
        )

    @rule(
        user=users,
        ref=session_refs,
        conv=conversations,
        started=st.sampled_from(["t0", "t1"]),
        active=st.booleans(),
    )
    def save_session(self, user: str, ref: str, conv: str, started: str, active: bool) -> None:
        """``save_session`` (an import): taken session ids and conversations collide."""
        uid, sid, cid = self.user(user), self.session_ref(ref), self.conversation(conv)
        session = SessionContext(
            session_id=sid,
            user_id=uid,
            conversation_id=cid,
            started_at=TIMES[started],
            last_activity=TIMES[started],
            is_active=active,
            ended_at=None if active else TIMES["t2"],
            state={"step": started},
        )
        self.both(
            "save_session",
            lambda: self.model.save_session(session),
            lambda: self.mem.save_session(session),
        )

    @rule(user=users, ref=st.one_of(st.none(), session_refs))
    def get_context(self, user: str, ref: str | None) -> None:
        """Resolution of a session id, a conversation id, an unknown id or nothing."""
        uid = self.user(user)
        sid = self.session_ref(ref) if ref is not None else None
        result = self.both(
            "get_context",
            lambda: self.model.resolve_context(uid, sid),
            lambda: self.mem.get_context(uid, sid),
        )
        if result is None:
            return
        resolution, ctx = result
        op = f"get_context({ref})"
        session = ctx.session
        if resolution.kind == "existing":
            ids = [s.session_id for s in resolution.candidates]
            if session.session_id not in ids:
                _fail(op, f"resolved to session {session.session_id!r}, expected one of {ids}")
            self.check_session(op, session, session.session_id)
        elif resolution.kind == "created":
            if (session.session_id, session.conversation_id) != (sid, sid):
                _fail(op, f"created {session!r}, expected session and conversation {sid!r}")
            if session.user_id != uid or not session.is_active:
                _fail(op, f"created {session!r} for {uid!r}, not active")
            self.model.adopt_session(session)
        else:
            self.new_session(op, session, uid)
        if ctx.conversation_id != session.conversation_id or ctx.user.user_id != uid:
            _fail(op, "the context names another conversation or user than its session")
        window = self.model.window(session.conversation_id)[-self.model.context_window :]
        self.check_messages(op, ctx.messages, [m.message for m in window])

    # ---------------------------------------------------------------- memory entries

    def build_entry(self, spec: MemorySpec, user_id: str) -> MemoryEntry:
        created = TIMES[spec.created]
        expires = {None: None, "past": PAST, "future": FUTURE}[spec.expires]
        if expires is PAST and self.mem.deletes_expired_itself:
            # The engine deletes it when it likes, which no model can follow: the memories
            # and vector-filter suites test these engines' expired entries.
            expires = None
        return MemoryEntry(
            id=self.memory_ids[spec.slot],
            content=" ".join(spec.words),
            memory_type=MemoryType(spec.kind),
            user_id=user_id,
            conversation_id=self.conv_pool[spec.conversation] if spec.conversation else None,
            metadata=MemoryMetadata(
                source="stateful",
                category=spec.category,
                tags=list(spec.tags),
                importance=spec.importance,
                confidence=spec.confidence,
            ),
            created_at=created,
            updated_at=created,
            last_accessed=created,
            expires_at=expires,
        )

    @precondition(lambda self: self.has(Capability.MEMORIES))
    @rule(user=users, spec=memory_specs)
    def store_memory(self, user: str, spec: MemorySpec) -> None:
        entry = self.build_entry(spec, self.user(user))
        self.both(
            "store_memory",
            lambda: self.model.store_memory(entry),
            lambda: self.mem.store_memory(entry),
        )

    @precondition(lambda self: self.has(Capability.MEMORIES))
    @rule(slot=st.integers(0, MEMORY_SLOTS - 1), user=st.one_of(st.none(), users))
    def delete_memory(self, slot: int, user: str | None) -> None:
        mid = str(self.memory_ids[slot])
        uid = self.user(user) if user is not None else None
        self.both(
            "delete_memory",
            lambda: self.model.delete_memory(mid, uid),
            lambda: self.mem.delete_memory(mid, user_id=uid),
        )

    @precondition(lambda self: self.has(Capability.MEMORIES))
    @rule(user=users, spec=query_specs, aim=aims)
    def retrieve_memories(self, user: str, spec: QuerySpec, aim: int | None) -> None:
        """Every filter; unranked by importance then newest, or ranked by a query word."""
        uid, word = self.aim_at(aim, self.user(user), spec.word or WORDS[0], ("memory",))
        if spec.word is not None:
            spec = spec._replace(word=word if self.has(Capability.FULL_TEXT) else None)
        query = MemoryQuery(
            user_id=uid,
            query_text=spec.word,
            memory_types=[MemoryType(k) for k in spec.kinds],
            categories=list(spec.categories),
            tags=list(spec.tags),
            min_importance=spec.min_importance,
            min_confidence=spec.min_confidence,
            include_expired=spec.include_expired,
            limit=spec.limit,
        )
        got = self._run(self.mem.retrieve_memories(query))
        now = utcnow()
        for entry in got:
            self.check_entry("retrieve_memories", entry)
        ids = [str(e.id) for e in got]
        if spec.word is None:
            pool = {str(e.id): e for e in self.model.matching_memories(query, now)}

            def before(a: str, b: str) -> bool:
                return ReferenceMemory.more_important(pool[a], pool[b])

            problem = is_top_prefix(ids, pool, spec.limit, before)
            if problem is not None:
                _fail("retrieve_memories", f"{problem} (query {query!r})")
            return
        matches = {
            i
            for _, i in self.model.text_matches(
                uid, spec.word, kinds=("memory",), conversation_id=None, now=now, memory_query=query
            )
        }
        self._check_match_set("retrieve_memories", ids, matches, spec.limit)

    @precondition(lambda self: self.has(Capability.MEMORIES) and self.model.has_expired(utcnow()))
    @rule()
    def purge_expired(self) -> None:
        """Store-wide: other tests' expired entries may go too, so at least the model's."""
        want = self.model.purge_expired(utcnow())
        got = self._run(self.mem.purge_expired())
        if got < want:
            _fail("purge_expired", f"purged {got}, at least {want} had expired")

    # ---------------------------------------------------------------- search

    def aim_at(
        self, aim: int | None, uid: str, word: str, kinds: Sequence[str] = ("message", "memory")
    ) -> tuple[str, str]:
        """With ``aim``, the owner of a stored record and its first word, so that searches
        meet the records they may wrongly find or miss; else ``(uid, word)`` unchanged."""
        if aim is None:
            return uid, word
        targets: list[tuple[str | None, str]] = []
        if "message" in kinds:
            for mid in self.message_ids:  # slot order: reproducible, unlike the ids
                ref = self.model.messages.get(str(mid))
                if ref is not None:
                    targets.append((self.model.owner(ref.conversation_id), ref.message.content))
        for mid in self.memory_ids if "memory" in kinds else ():
            entry = self.model.memories.get(str(mid))
            if entry is not None:
                targets.append((entry.user_id, entry.content))
        if not targets:
            return uid, word
        owner, content = targets[aim % len(targets)]
        return owner or uid, content.split()[0]

    @staticmethod
    def _check_match_set(operation: str, ids: list[str], matches: set[str], limit: int) -> None:
        if len(set(ids)) != len(ids):
            _fail(operation, f"a result comes twice: {ids}")
        if len(matches) <= limit:
            if set(ids) != matches:
                _fail(operation, f"found {sorted(ids)}, the matches are {sorted(matches)}")
        elif len(ids) != limit or not set(ids) <= matches:
            _fail(operation, f"found {sorted(ids)}, expected {limit} of {sorted(matches)}")

    @precondition(lambda self: self.has(Capability.FULL_TEXT))
    @rule(
        user=users,
        word=st.sampled_from(WORDS),
        kinds=st.sampled_from([("message", "memory"), ("message",), ("memory",)]),
        conv=st.one_of(st.none(), conversations),
        limit=st.sampled_from([1, 2, 10]),
        aim=aims,
        mode=st.sampled_from(["keyword", "vector", "hybrid"]),
    )
    def search(
        self,
        user: str,
        word: str,
        kinds: tuple[str, ...],
        conv: str | None,
        limit: int,
        aim: int | None,
        mode: str,
    ) -> None:
        """Keyword search finds exactly the user's live records holding the word; vector
        and hybrid search (where declared) find only the user's live records."""
        if not self.has(Capability.VECTORS) or self.mem.embedder is None:
            mode = "keyword"  # a store without a model searches keywords only
        op = f"search({mode})"
        uid, word = self.aim_at(aim, self.user(user), word, kinds)
        cid = self.conversation(conv) if conv is not None else None
        results = self._run(
            self.mem.search(
                uid,
                word,
                limit=limit,
                kinds=kinds,  # type: ignore[arg-type]
                conversation_id=cid,
                mode=mode,  # type: ignore[arg-type]
            )
        )
        scores = [r.score for r in results]
        if any(not 0.0 <= s <= 1.0 for s in scores) or scores != sorted(scores, reverse=True):
            _fail(op, f"scores {scores} are not in [0, 1], best first")
        found: list[str] = []
        for r in results:
            if r.kind == "message" and r.message is not None:
                self.check_known_messages(op, [r.message])
                found.append(f"message:{r.message.id}")
            elif r.kind == "memory" and r.memory is not None:
                self.check_entry(op, r.memory)
                found.append(f"memory:{r.memory.id}")
            else:
                _fail(op, f"a {r.kind!r} result without its record")
        now = utcnow()
        if mode == "keyword":
            matches = self.model.text_matches(uid, word, kinds=kinds, conversation_id=cid, now=now)
            self._check_match_set(op, found, {f"{k}:{i}" for k, i in matches}, limit)
            return
        live = self.model.text_matches(uid, None, kinds=kinds, conversation_id=cid, now=now)
        strays = set(found) - {f"{k}:{i}" for k, i in live}
        if strays or len(set(found)) != len(found) or len(found) > limit:
            _fail(op, f"found {found}: {sorted(strays)} are not live records of the user's")

    # ---------------------------------------------------------------- whole users

    @precondition(lambda self: self.has(Capability.LISTING))
    @rule(user=users)
    def forget_user(self, user: str) -> None:
        uid = self.user(user)
        result = self.both(
            "forget_user", lambda: self.model.forget_user(uid), lambda: self.mem.forget_user(uid)
        )
        if result is not None and result[1] != result[0]:
            _fail("forget_user", f"counts {result[1]} != expected {result[0]}")

    @precondition(lambda self: self.has(Capability.LISTING))
    @rule(user=users, kind=st.sampled_from(["conversations", "messages", "memories", "sessions"]))
    def export(self, user: str, kind: str) -> None:
        uid = self.user(user)
        got = self._run(_collect(self.mem, kind, uid))
        op = f"export({kind})"
        if kind == "conversations":
            pairs = sorted(tuple(p) for p in got)  # type: ignore[arg-type]
            want = sorted((c, uid) for c in self.model.conversations_of(uid))
            if pairs != want:
                _fail(op, f"{pairs} != expected {want}")
        elif kind == "messages":
            by_conv: dict[str, list[str]] = {}
            for rec in got:
                if not isinstance(rec, MessageRecord):
                    _fail(op, f"not a MessageRecord: {rec!r}")
                by_conv.setdefault(rec.conversation_id, []).append(rec.id)
                self.check_known_messages(op, [record_to_message(rec)])
            want_convs = {
                c: [m.id for m in self.model.window(c)]
                for c in self.model.conversations_of(uid)
                if self.model.window(c)
            }
            if by_conv != want_convs:
                _fail(op, f"{by_conv} != expected {want_convs}")
        elif kind == "memories":
            ids = []
            for rec in got:
                if not isinstance(rec, MemoryRecord):
                    _fail(op, f"not a MemoryRecord: {rec!r}")
                self.check_entry(op, record_to_memory(rec))
                ids.append(rec.id)
            want_ids = sorted(k for k, e in self.model.memories.items() if e.user_id == uid)
            if sorted(ids) != want_ids:
                _fail(op, f"{sorted(ids)} != expected {want_ids}")
        else:
            ids = []
            for rec in got:
                if not isinstance(rec, SessionRecord):
                    _fail(op, f"not a SessionRecord: {rec!r}")
                self.check_session(op, record_to_session(rec), rec.session_id)
                ids.append(rec.session_id)
            want_ids = sorted(s for s, v in self.model.sessions.items() if v.user_id == uid)
            if sorted(ids) != want_ids:
                _fail(op, f"{sorted(ids)} != expected {want_ids}")


async def _collect(memory: MemoryBackend, kind: str, user_id: str) -> list[Any]:
    out: list[Any] = []
    async for batch in memory.export_batches(kind, user_id):
        out.extend(batch)
    return out


def memory_machine(suite: ConformanceBase) -> type[MemoryMachine]:
    """The state machine class for one conformance test (its memories come from ``suite``)."""
    return type("MemoryMachine", (MemoryMachine,), {"suite": suite})


class StatefulSuite(ConformanceBase):
    """Random interleavings of every public operation, compared with a reference model."""

    async def test_model_based_interleavings(self, memory: MemoryBackend) -> None:
        machine = memory_machine(self)
        # The machine is synchronous and runs each example on a loop of its own, so it runs
        # beside this test's loop, in a worker thread.
        await asyncio.to_thread(run_state_machine_as_test, machine, settings=stateful_settings())
