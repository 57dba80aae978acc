"""``MemoryBackend``: both faces of the contract, and all of its semantics, written once.

Every public method validates its arguments, applies the ownership and idempotency rules,
then calls one primitive (see :mod:`bruno_memstore.primitives`) through :meth:`_run`, which
connects lazily, times out, retries transient failures, records metrics and translates driver
errors. A backend implements only the primitives.

Semantics (identical on every backend; the conformance suite checks them):

* ``Message.id`` is the key: storing the same message again is a no-op; storing a *different*
  message under a stored id raises :class:`ConflictError` and writes nothing.
* Windows are chronological (oldest first) and hold the newest ``limit`` messages; equal
  timestamps keep arrival order. ``retrieve_messages`` alone returns newest first, as
  bruno-core documents it.
* A conversation belongs to the user who first wrote to it. Reads are scoped to the user;
  writing into another user's conversation raises :class:`OwnershipError`.
* ``get_context`` accepts a session id or a conversation id and creates what is missing.
* Search is relevance-ranked over the user's messages and memory entries: BM25 full text,
  fused with embedding similarity on backends with vectors (:mod:`bruno_memstore.semantic`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar
from uuid import UUID

from bruno_core.interfaces.memory import MemoryInterface
from bruno_core.models.context import ConversationContext, SessionContext, UserContext
from bruno_core.models.memory import MemoryEntry, MemoryMetadata, MemoryQuery, MemoryType
from bruno_core.models.message import Message, MessageRole
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from .background import abandon, stop_task
from .capabilities import REQUIRED, Capability
from .deferred_vectors import VectorWrites
from .erasure_log import ErasureLog, ErasureLogError, erasure_entry
from .erasure_log import erasure_log as as_erasure_log
from .errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CapabilityError,
    ClosedError,
    ConflictError,
    InvalidArgumentError,
    MemstoreError,
    MissingDependencyError,
    NotFoundError,
    OwnershipError,
)
from .lifecycle import (
    ARCHIVE_MARKER,
    archive_marker,
    check_ttl,
    conversation_deadline,
    message_deadlines,
    now_us,
    session_deadline,
    stamp_message,
    stamp_session,
)
from .limits import NO_LIMITS, Limits, Record, record_bytes
from .metrics import STORE_KINDS, Meter
from .models import (
    DEFAULT_USER,
    LIFECYCLE_KEY,
    MAX_LIMIT,
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchResult,
    SessionRecord,
    check_id,
    check_limit,
    memory_to_record,
    message_to_record,
    record_to_memory,
    record_to_session,
    records_to_messages,
    session_to_record,
    to_us,
    user_metadata,
    utcnow,
)
from .primitives import MessagePruning, StoragePrimitives, conversation_taken
from .ranking import DEFAULT_VECTOR_WEIGHT, SearchMode
from .retention import RetentionPolicy, as_policy, retention_plan
from .retry import RetryPolicy, retry_transient
from .semantic import DEFAULT_MODEL, SemanticSearch
from .telemetry import telemetry_wanted
from .time_limits import TimeLimits
from .url import MemoryURL, redact_url

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT", "ContextStrategy", "MemoryBackend", "SearchKind"]

log = logging.getLogger("bruno_memstore")

DEFAULT_SHUTDOWN_TIMEOUT = 30.0
"""Seconds ``shutdown()`` waits for the calls under way before it closes the connections."""

LEFT_BEHIND_CLOSE_TIMEOUT = 2.0
"""Seconds spent closing a connection an earlier event loop made, before it is dropped."""

T = TypeVar("T")
ContextStrategy = Literal["recent", "relevant", "hybrid"]
SearchKind = Literal["message", "memory"]
_ALL_KINDS: frozenset[str] = frozenset({"message", "memory"})
_MAX_CONTEXT_WINDOW = 1000  # ConversationContext.max_messages upper bound
_EPOCH = datetime(1970, 1, 1)
_MARK = f'"{LIFECYCLE_KEY}"'


class MemoryBackend(MemoryInterface, StoragePrimitives, SemanticSearch):
    """A bruno-core memory: subclass it and implement the primitives.

    Args:
        context_window: messages ``get_context`` loads (the newest, oldest first).
        operation_timeout: seconds each engine call may take (``None``: no limit).
        retry: how transient engine failures are retried.
        embedding_model: for backends with vector search: ``"default"`` (the light local
            model), ``None`` (keyword search only), a local model name (``"minilm"``), a
            bruno-core ``EmbeddingInterface`` or any object with ``embed``/``embed_texts``.
        search_mode: default ranking of ``search``: ``"hybrid"`` (keywords and vectors
            fused; the default with a model), ``"keyword"`` or ``"vector"``.
        vector_weight: weight of vector similarity in hybrid ranking (0 to 1).
        vectors: when a stored message gets its vector: ``"inline"`` (the default: embedded
            before the write, so vector and hybrid search reflect every acknowledged
            message, and a model failure refuses the write) or ``"deferred"`` (written and
            acknowledged first, keyword-searchable at once; the vector is attached shortly
            after from a durable queue, and :meth:`flush` waits for it). Backends without
            that queue refuse ``"deferred"``. See docs/embeddings.md.
        shutdown_timeout: seconds ``shutdown()`` waits for the calls under way.
        erasure_log: where ``forget_user`` records each erasure (ids, time, counts; never
            content): a JSON Lines file path, a callable given each entry, or ``None``
            (docs/lifecycle.md).
        telemetry: OpenTelemetry spans and metrics (the ``otel`` extra): ``True`` on,
            ``False`` off, ``None`` as ``BRUNO_MEMSTORE_TELEMETRY`` says (default off), or a
            :class:`~bruno_memstore.telemetry.Telemetry` naming providers. Decided here, once.
        trace_content: record query text and record content on spans (opt-in; needs
            ``telemetry``).
        message_ttl: seconds (or a ``timedelta``) a new message lives; ``None``: forever.
            A call's ``ttl=`` overrides it (docs/lifecycle.md).
        conversation_ttl: seconds a conversation lives after its last message was
            written; then it goes whole (messages and sessions).
        session_ttl: seconds a new session lives (``create_session(ttl=...)`` overrides it).
        memory_ttl: seconds a new memory entry lives when it sets no ``expires_at``
            (``store_memory(ttl=...)`` overrides it).
        sweep_interval: seconds between runs of a background sweeper (:meth:`sweep`),
            started with the first call and stopped by :meth:`shutdown`; ``None``: no
            background sweeps (call :meth:`purge_expired` or ``bruno-memstore expire``).
        retention: a :class:`~bruno_memstore.retention.RetentionPolicy` (or its keyword
            arguments as a dict) that :meth:`apply_retention` enforces.
    """

    backend_name: ClassVar[str] = "abstract"
    # A backend whose promises depend on its engine's configuration may narrow or widen this
    # per instance (e.g. DURABLE only when Redis has AOF on), once known, before first use.
    capabilities: ClassVar[frozenset[Capability]] = REQUIRED
    # What the engine cannot store, checked before every write (an instance may narrow it
    # once it knows its server's settings, e.g. the largest packet).
    limits: Limits = NO_LIMITS
    ttl: float | None = None
    """Seconds after its last write that the engine may drop a record on its own, record by
    record (``MemcachedMemory``'s ``ttl``); ``None``: records stay until deleted."""
    overlap_reads: bool = True
    """Whether ``get_context`` reads a conversation's window while it looks up the session
    (two calls at once, one round trip's wait); off where a read waits for no network (an
    embedded engine), since running both at once costs more than it saves there."""
    loop_bound: bool = False
    """Whether the connection belongs to the event loop it was made on (an asyncio driver's
    sockets and futures do). Such a memory, called from another loop (``asyncio.run`` again,
    say), leaves the old connection behind, closing what it can of it, and connects again
    on the caller's loop; one loop at a time uses it."""
    deletes_expired_itself: bool = False
    """Whether the engine deletes expired memory entries on its own schedule (MongoDB's TTL
    monitor, DynamoDB's TTL): an expired entry that ``include_expired`` shows may be gone at
    the next read, swept or not."""

    def __init__(
        self,
        *,
        context_window: int = 20,
        operation_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        embedding_model: Any = DEFAULT_MODEL,
        search_mode: SearchMode | None = None,
        vector_weight: float = DEFAULT_VECTOR_WEIGHT,
        vectors: VectorWrites = "inline",
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        erasure_log: Any = None,
        telemetry: Any = None,
        trace_content: bool = False,
        message_ttl: Any = None,
        conversation_ttl: Any = None,
        session_ttl: Any = None,
        memory_ttl: Any = None,
        sweep_interval: Any = None,
        retention: Any = None,
    ) -> None:
        window = check_limit(context_window, "context_window", maximum=_MAX_CONTEXT_WINDOW)
        assert window is not None
        if operation_timeout is not None and operation_timeout <= 0:
            raise InvalidArgumentError("operation_timeout", "must be positive")
        if isinstance(shutdown_timeout, bool) or not isinstance(shutdown_timeout, (int, float)):
            raise InvalidArgumentError("shutdown_timeout", "expected seconds as a number")
        if shutdown_timeout < 0:
            raise InvalidArgumentError("shutdown_timeout", "must not be negative")
        self.context_window = window
        self.shutdown_timeout = float(shutdown_timeout)
        self._calls = _CallGate()
        self._generation = 0  # bumped by each close: a call that spans one was cut off
        self.operation_timeout = operation_timeout
        self.retry_policy = retry or RetryPolicy()
        self._connected = False
        self._connect_lock: asyncio.Lock | None = None
        self._schema_version: int | None = None
        self._meter = Meter(self.backend_name)
        self._time_limits = TimeLimits()  # operation_timeout's, and a backend's own limits
        self.erasure_log: ErasureLog | None = as_erasure_log(erasure_log)
        self.message_ttl = check_ttl(message_ttl, "message_ttl")
        self.conversation_ttl = check_ttl(conversation_ttl, "conversation_ttl")
        self.session_ttl = check_ttl(session_ttl, "session_ttl")
        self.memory_ttl = check_ttl(memory_ttl, "memory_ttl")
        self.sweep_interval = check_ttl(sweep_interval, "sweep_interval")
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the connection's (loop_bound)
        self._left_behind = False  # a connection of an earlier loop, to close at the next connect
        self.retention = as_policy(retention)
        self._init_semantic(embedding_model, search_mode, vector_weight, vectors)
        if telemetry_wanted(telemetry, trace_content):  # decided once: off costs nothing
            self._instrument(telemetry, trace_content)

    def _instrument(self, telemetry: object, trace_content: bool) -> None:
        """Turn OpenTelemetry on for this memory (the ``otel`` extra; see ``otel.py``)."""
        try:
            from .otel import instrument
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "opentelemetry":
                raise
            raise MissingDependencyError("otel", exc.name or "", "OpenTelemetry telemetry") from exc
        self._meter, self._run = instrument(  # type: ignore[method-assign]
            self,
            telemetry,
            trace_content=trace_content,
            describe=lambda: self._redact(self.describe()) or self.backend_name,
            run=self._run,
        )

    # ================================================================ lifecycle

    async def initialize(self) -> None:
        """Connect and prepare the schema. Optional: a new memory connects on first use.

        After :meth:`shutdown` this opens the memory again.
        """
        self._reopen()
        await self._ensure_connected()

    async def shutdown(self) -> None:
        """Stop taking calls, let the calls under way finish, then close the connections.

        New calls raise :class:`ClosedError` from the moment this is called until
        :meth:`initialize` opens the memory again. The calls under way get up to
        :attr:`shutdown_timeout` seconds; any still running then are cut off and raise
        :class:`ClosedError` (applied or not: their outcome is unknown). Calling it again is
        a no-op.

        Messages still waiting for their vectors (``vectors="deferred"``) stay stored and
        marked: the next open attaches them (call :meth:`flush` first to attach them now).
        """
        drained = self._calls.close()
        await self._vector_queue.stop()
        await self._stop_sweeper()
        wait = self.shutdown_timeout
        if not drained.done():
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(drained)), wait)
            except TimeoutError:
                log.warning(
                    "%r: closing with %d calls still running after %gs",
                    self,
                    self._calls.count,
                    wait,
                )
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            # initialize() may have opened the memory again meanwhile: it wins.
            if self._connected and not self._calls.open:
                self._connected = False
                self._generation += 1
                if self._elsewhere():
                    await self._close_left_behind()
                else:
                    await self._close()
        if not self._calls.open:
            self._connect_lock = None  # the next initialize() may run on another loop

    def _elsewhere(self) -> bool:
        """Whether the connection (of a ``loop_bound`` memory) belongs to another loop."""
        return self.loop_bound and self._loop is not asyncio.get_running_loop()

    def _leave_loop(self) -> None:
        """Called on a loop other than the connection's: the connection is left behind (its
        loop may be closed), to be closed as far as it can be by the next connect, on this
        loop, which from now on is the memory's."""
        self._connected = False
        self._generation += 1
        self._left_behind = True
        self._loop = asyncio.get_running_loop()
        self._connect_lock = None  # bound to the old loop once contended
        abandon(self._sweeper)
        self._sweeper = None

    async def _close_left_behind(self) -> None:
        """``_close()`` for a connection made on another loop: what cannot be closed from
        this one (its sockets belong to the other loop, which may be closed) is dropped."""
        try:
            async with asyncio.timeout(LEFT_BEHIND_CLOSE_TIMEOUT):
                await self._close()
        except Exception as exc:
            log.debug("%r: the previous event loop's connection was dropped (%s)", self, exc)

    def _reopen(self) -> None:
        """Take calls again after :meth:`shutdown` (they connect on first use)."""
        self._calls.reopen()

    async def __aenter__(self: T) -> T:
        await self.initialize()  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def schema_version(self) -> int | None:
        """The version of the stored schema, for backends with migrations (after connecting)."""
        return self._schema_version

    @property
    def connected(self) -> bool:
        """Whether the backend holds open connections."""
        return self._connected

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called (and :meth:`initialize` not since)."""
        return not self._calls.open

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> MemoryBackend:
        """Build from a parsed URL (``open_memory`` calls this); its one query option is
        ``vectors``. Backends with more options override."""
        return cls(**url.apply_options(options, {"vectors": str}))

    def describe(self) -> str:
        """Where the data lives, with any secret redacted (used in reprs and errors)."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def supports(self, capability: Capability) -> bool:
        """Whether this backend declares ``capability``."""
        return capability in self.capabilities

    def require(self, capability: Capability, operation: str) -> None:
        """Raise :class:`CapabilityError` unless the backend declares ``capability``."""
        if capability not in self.capabilities:
            raise CapabilityError(
                f"{type(self).__name__} does not support {capability.value!r}; "
                "keep this data in a backend that declares it "
                "(the capabilities table is in docs/backends.md)",
                backend=self.backend_name,
                operation=operation,
            )

    def _closed_error(self, operation: str) -> ClosedError:
        return ClosedError(
            "the memory is shut down; call initialize() to open it again",
            backend=self.backend_name,
            operation=operation,
        )

    async def _ensure_connected(self) -> None:
        if not self._calls.open:
            raise self._closed_error("connect")
        if self._connected:
            return
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._connected:
                return
            if self._left_behind:
                self._left_behind = False
                await self._close_left_behind()
            try:
                await self._connect()
                try:
                    await self._timed(self._check_vector_space)
                except BaseException:
                    await self._close()
                    raise
            except MemstoreError:
                raise
            except Exception as exc:
                raise self._translate("connect", exc) from exc
            self._connected = True
            self._loop = asyncio.get_running_loop()
            if self.vectors == "deferred" and self.embedder is not None:
                self._vector_queue.start()  # first drains what an earlier process left
            if self.sweep_interval is not None:
                self._start_sweeper()

    # ================================================================ the choke point

    def _is_transient(self, exc: BaseException) -> bool:
        """Whether a driver error may succeed on retry. Backends override."""
        return False

    def _is_timeout(self, exc: BaseException) -> bool:
        """Whether a driver error is a timeout. Backends whose driver has its own class override."""
        return isinstance(exc, TimeoutError)

    def _is_unavailable(self, exc: BaseException) -> bool:
        """Whether a driver error means the engine cannot be reached. Backends override."""
        return isinstance(exc, (ConnectionError, OSError))

    def _redact(self, text: str) -> str:
        """Remove secrets from a message. Backends with credentials override."""
        return text

    def _translate(self, operation: str, exc: BaseException) -> MemstoreError:
        self._meter.error(operation, exc)
        if isinstance(exc, MemstoreError):
            return exc
        detail = self._redact(f"{type(exc).__name__}: {exc}")
        where = self.describe()
        if where:
            detail = f"{detail} (at {where})"
        kind: type[BackendError]
        if self._is_timeout(exc):
            kind = BackendTimeoutError
        elif self._is_unavailable(exc):
            kind = BackendUnavailableError
        else:
            kind = BackendError
        err = kind(detail, backend=self.backend_name, operation=operation)
        err.cause = exc
        return err

    async def _run(self, operation: str, call: Callable[[], Any]) -> Any:
        """Run one primitive call with connect, timeout, retry, metrics and error mapping.

        The call counts as under way until it returns, so :meth:`shutdown` waits for it;
        once shutdown has begun, no call starts.
        """
        if not self._calls.enter():
            raise self._closed_error(operation)
        generation = self._generation
        try:
            if not self._connected:
                await self._ensure_connected()
            elif self._elsewhere():
                self._leave_loop()
                await self._ensure_connected()
                generation = self._generation
            elif self.sweep_interval is not None and self._sweeper is None:
                self._start_sweeper()  # configured after the connection
            started = time.perf_counter()
            try:
                try:
                    if self.operation_timeout is None:
                        result = await call()
                    else:
                        result = await self._timed(call)
                except MemstoreError:
                    raise
                except Exception as exc:
                    if not self._is_transient(exc) or self.retry_policy.attempts <= 1:
                        raise
                    result = await retry_transient(
                        lambda: self._timed(call), self.retry_policy, self._is_transient
                    )
            except MemstoreError as exc:
                self._meter.error(operation, exc)
                if self._generation != generation and not isinstance(exc, ClosedError):
                    raise self._closed_error(operation) from exc
                raise
            except Exception as exc:
                if self._generation != generation:
                    self._meter.error(operation, exc)
                    raise self._closed_error(operation) from exc
                raise self._translate(operation, exc) from exc
            self._meter.observe(operation, time.perf_counter() - started)
            return result
        finally:
            self._calls.leave()

    async def _timed(self, call: Callable[[], Any]) -> Any:
        if self.operation_timeout is None:
            return await call()
        return await self._time_limits.within(self.operation_timeout, call())

    # ================================================================ messages

    async def store_message(  # type: ignore[override]
        self,
        message: Message,
        *args: str,
        user_id: str | None = None,
        conversation_id: str | None = None,
        ttl: Any = None,
    ) -> None:
        """Store one message (idempotent by ``message.id``).

        Both call forms work: bruno-core's ``store_message(message, conversation_id)`` and the
        guide's ``store_message(message, user_id, conversation_id)`` (keywords too). Without a
        user, the user is ``message.metadata["user_id"]``, held to the same ownership rule; a
        message naming nobody joins the conversation (or starts one owned by ``"default"``).

        Raises:
            InvalidArgumentError: bad message or ids; nothing is written.
            OwnershipError: the conversation belongs to another user.
            ConflictError: a different message is stored under this id.
        """
        user_id, conversation_id = _store_args(args, user_id, conversation_id)
        # ``store_messages`` for one message, without what only a batch needs.
        conversation_id = check_id(conversation_id, "conversation_id")
        ttl = check_ttl(ttl, "ttl") if ttl is not None else self.message_ttl
        if user_id is not None:
            user_id = check_id(user_id, "user_id")
        record = message_to_record(message, conversation_id)
        await self._store_records((message,), [record], conversation_id, user_id, ttl)

    async def store_messages(
        self,
        messages: Sequence[Message],
        *,
        conversation_id: str,
        user_id: str | None = None,
        ttl: Any = None,
    ) -> int:
        """Store many messages of one conversation in one atomic batch; return how many were new.

        The arrival order of the batch is its order. Messages already stored (same id, same
        content) are skipped; if any id names a different stored message, ``ConflictError``
        is raised and nothing is written (unless a concurrent writer stores that id between
        this call's check and its write: then the batch's other messages are stored; see
        docs/design.md).

        Without ``user_id``, messages naming a user in ``metadata["user_id"]`` are that user's
        (refused with ``OwnershipError`` in another user's conversation); unattributed ones
        join the conversation whoever owns it, or start one owned by ``"default"``. A batch
        naming two users raises ``InvalidArgumentError``.

        ``ttl`` (seconds or a ``timedelta``; default :attr:`message_ttl`): how long the
        messages live; expired messages are left out of every read.
        """
        conversation_id = check_id(conversation_id, "conversation_id")
        ttl = check_ttl(ttl, "ttl") if ttl is not None else self.message_ttl
        if user_id is not None:
            user_id = check_id(user_id, "user_id")
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise InvalidArgumentError("messages", "expected a sequence of Message")
        records = await _convert(messages, conversation_id)
        if not records:
            return 0
        if len({r.id for r in records}) != len(records):
            raise InvalidArgumentError("messages", "the batch repeats a message id")
        return await self._store_records(messages, records, conversation_id, user_id, ttl)

    async def _store_records(
        self,
        messages: Sequence[Message],
        records: list[MessageRecord],
        conversation_id: str,
        user_id: str | None,
        ttl: float | None,
    ) -> int:
        """The checked messages of one conversation, as ``records``, stored; see
        :meth:`store_messages`."""
        enforce = user_id is not None
        if user_id is None:
            named = _named_user(messages)
            # A write naming its user is that user's: it may not join another's conversation.
            enforce = named is not None
            user_id = named or DEFAULT_USER
        owner: str = user_id
        if ttl is not None or self.conversation_ttl is not None:
            at = now_us()
            for rec in records:
                stamp_message(rec, at, ttl, self.conversation_ttl)
        self._check_records(records)
        deferred = (
            await self._deferred("store_message", records) if self.embedder is not None else False
        )
        if self.conversation_ttl is not None:
            await self._drop_if_expired("store_message", conversation_id)
        if len(records) > 1:
            # Pre-check so a conflicting batch writes nothing at all. A single message needs
            # none: an append that inserts nothing writes nothing (see ``_append_messages``).
            found = await self._run(
                "store_message", lambda: self._get_messages([r.id for r in records])
            )
            self._raise_on_conflict(records, found)
        result = await self._run(
            "store_message",
            lambda: self._append_messages(conversation_id, owner, records, enforce_owner=enforce),
        )
        if result.existing_ids:
            found = await self._run(
                "store_message", lambda: self._get_messages(list(result.existing_ids))
            )
            self._raise_on_conflict(records, found)
        if deferred and len(result.existing_ids) < len(records):
            self._vector_queue.wake(max(r.seq for r in records if r.id not in result.existing_ids))
        return len(records) - len(result.existing_ids)

    def check_storable(self, records: Iterable[Record]) -> None:
        """Refuse what this backend cannot store (see :attr:`limits`), before any write.

        The public write methods call this; tools that write records themselves (import,
        copy) call it first too.

        Raises:
            InvalidArgumentError: a record breaks a limit (named by its field).
        """
        for rec in records:
            if isinstance(rec, MessageRecord):
                self._check_records([rec])
            elif isinstance(rec, MemoryRecord):
                self._check_memory(rec)
            else:
                self._check_session(rec)

    def _check_records(self, records: Sequence[MessageRecord]) -> None:
        """Refusals for messages, before anything is written: the declared :attr:`limits`."""
        for rec in records:
            self._check_limits(rec)

    def _check_memory(self, record: MemoryRecord) -> None:
        """Refusals for a memory entry, before anything is read or written."""
        self._check_limits(record)

    def _check_session(self, record: SessionRecord) -> None:
        """Refusals for a session, before anything is written."""
        self._check_limits(record)

    def _check_limits(self, record: Record) -> None:
        limits = self.limits
        if limits is NO_LIMITS:
            return
        size = self._record_size(record) if limits.max_record_bytes is not None else None
        limits.check(record, size)

    def _record_size(self, record: Record) -> int:
        """The size of ``record``'s write, compared with ``limits.max_record_bytes``.

        Default: the UTF-8 size of its text. Backends whose engine counts otherwise (a
        statement with escaped values, an encoded value) override this.
        """
        return record_bytes(record)

    @staticmethod
    def _raise_on_conflict(records: Sequence[MessageRecord], found: Iterable[MessageRecord]):
        mine = {r.id: r for r in records}
        for old in found:
            new = mine.get(old.id)
            if new is not None and not _same_message(old, new):
                raise ConflictError(
                    f"message id {old.id} is already stored with different content or in "
                    "another conversation; message ids are immutable"
                )

    async def retrieve_messages(
        self, conversation_id: str, limit: int | None = None
    ) -> list[Message]:
        """The conversation's newest ``limit`` messages, **newest first**.

        ``limit`` is at most :data:`~bruno_memstore.models.MAX_LIMIT`; ``None`` reads the whole
        conversation (one conversation, never more: a user's whole history is read in pages
        with :meth:`export_batches`).
        """
        conversation_id = check_id(conversation_id, "conversation_id")
        limit = check_limit(limit, allow_none=True)
        records = await self._live_window(
            "retrieve_messages", conversation_id=conversation_id, user_id=None, limit=limit
        )
        return await _to_messages(records[::-1])

    async def retrieve_context(
        self,
        user_id: str,
        query: str | None = None,
        limit: int = 10,
        conversation_id: str | None = None,
        *,
        strategy: ContextStrategy = "recent",
        mode: SearchMode | None = None,
    ) -> list[Message]:
        """Messages to put before the model, **oldest first**.

        Args:
            user_id: whose messages; never returns another user's.
            query: the text the reply is about (used by ``"relevant"`` and ``"hybrid"``).
            limit: at most this many messages.
            conversation_id: restrict to one conversation (default: all of the user's).
            strategy: ``"recent"`` — the newest ``limit``; ``"relevant"`` — the ``limit``
                best matches of ``query``; ``"hybrid"`` — the newest half of ``limit`` plus
                the best matches of ``query`` among older messages. Without a query every
                strategy gives the recent window.
            mode: ranking of the matches (see :meth:`search`; default ``search_mode``).
        """
        user_id = check_id(user_id, "user_id")
        limit = check_limit(limit)
        assert limit is not None
        if conversation_id is not None:
            conversation_id = check_id(conversation_id, "conversation_id")
        if strategy not in ("recent", "relevant", "hybrid"):
            raise InvalidArgumentError("strategy", "expected 'recent', 'relevant' or 'hybrid'")
        if query is not None and not isinstance(query, str):
            raise InvalidArgumentError("query", "expected a string")
        ranked = strategy != "recent" and query is not None and bool(query.strip())
        if ranked:
            self._search_mode_for(mode, "retrieve_context")  # early refusal, before connecting
        recent_n = limit if not ranked else (0 if strategy == "relevant" else (limit + 1) // 2)
        recent: list[MessageRecord] = []
        if recent_n:
            recent = await self._live_window(
                "retrieve_context",
                conversation_id=conversation_id,
                user_id=user_id,
                limit=recent_n,
                archived=False,
            )
        if not ranked:
            return records_to_messages(recent)
        assert query is not None
        seen = {r.id for r in recent}
        hits = await self._live_ranked(
            "retrieve_context",
            user_id,
            query,
            archived=False,
            mode=mode,
            kinds=frozenset({"message"}),
            conversation_id=conversation_id,
            limit=limit,
            memory_filter=None,
        )
        found = list(recent)
        for hit in hits:
            if len(found) >= limit:
                break
            if hit.message is not None and hit.message.id not in seen:
                found.append(hit.message)
                seen.add(hit.message.id)
        found.sort(key=lambda r: (r.ts_us, r.seq))
        return records_to_messages(found)

    def _search_mode_for(self, mode: SearchMode | None, operation: str) -> SearchMode:
        """The ranking to use (``None``: the store's default), refusing what it cannot do.

        Called before connecting for early errors, and again by ``_ranked`` once connected
        (a backend may learn only then that its engine has no vectors).
        """
        resolved = self._resolve_mode(mode, operation)
        if resolved != "vector":
            self.require(Capability.FULL_TEXT, operation)
        return resolved

    async def clear_history(self, conversation_id: str, keep_system_messages: bool = True) -> None:
        """Delete the conversation's messages (system messages stay unless told otherwise)."""
        conversation_id = check_id(conversation_id, "conversation_id")
        if not isinstance(keep_system_messages, bool):
            raise InvalidArgumentError("keep_system_messages", "expected a bool")
        keep = frozenset({MessageRole.SYSTEM.value}) if keep_system_messages else frozenset()
        await self._run("clear_history", lambda: self._delete_messages(conversation_id, keep))

    async def clear_conversation(self, user_id: str, conversation_id: str) -> None:
        """Delete the user's conversation: every message, its sessions, its search entries.

        Raises:
            OwnershipError: the conversation belongs to another user (nothing is deleted).
        """
        user_id = check_id(user_id, "user_id")
        conversation_id = check_id(conversation_id, "conversation_id")
        owner = await self._run(
            "clear_conversation", lambda: self._conversation_owner(conversation_id)
        )
        if owner is None:
            return
        if owner != user_id:
            raise conversation_taken(
                conversation_id, backend=self.backend_name, operation="clear_conversation"
            )
        await self._run(
            "clear_conversation", lambda: self._delete_messages(conversation_id, frozenset())
        )

    # ================================================================ search

    async def search(
        self,
        user_id: str,
        query: str,
        *,
        limit: int = 10,
        kinds: Iterable[SearchKind] = ("message", "memory"),
        conversation_id: str | None = None,
        mode: SearchMode | None = None,
        include_archived: bool = False,
    ) -> list[SearchResult]:
        """Relevance-ranked search of one user's records, best first.

        Messages of archived conversations are left out unless ``include_archived``.

        Args:
            mode: ``"keyword"`` (BM25-family full text), ``"vector"`` (embedding
                similarity) or ``"hybrid"`` (both fused); default :attr:`search_mode`.

        Scores are in [0, 1], higher is better: keyword scores relative to the best match
        (which scores 1.0), vector scores are cosine similarities, hybrid scores their
        weighted mean (see :mod:`bruno_memstore.ranking`).
        """
        self._search_mode_for(mode, "search")  # early refusal, before connecting
        user_id = check_id(user_id, "user_id")
        limit = check_limit(limit)
        assert limit is not None
        if not isinstance(query, str):
            raise InvalidArgumentError("query", "expected a string")
        if conversation_id is not None:
            conversation_id = check_id(conversation_id, "conversation_id")
        kind_set = frozenset(kinds)
        if not kind_set or not kind_set <= _ALL_KINDS:
            raise InvalidArgumentError("kinds", "expected 'message' and/or 'memory'")
        if not query.strip():
            return []
        flt = MemoryFilter(user_id=user_id, now_us=to_us(utcnow()), limit=limit)
        hits = await self._live_ranked(
            "search",
            user_id,
            query,
            archived=bool(include_archived),
            mode=mode,
            kinds=kind_set,
            conversation_id=conversation_id,
            limit=limit,
            memory_filter=flt,
        )
        return _to_results(hits)

    async def search_messages(
        self, query: str, user_id: str | None = None, limit: int = 10
    ) -> list[Message]:
        """The user's messages best matching ``query`` (default search mode), best first.

        ``user_id`` is required: search is always scoped to one user.
        """
        if user_id is None:
            raise InvalidArgumentError("user_id", "search is scoped to one user; pass user_id")
        results = await self.search(user_id, query, limit=limit, kinds=("message",))
        return [r.message for r in results if r.message is not None]

    async def search_memories(self, user_id: str, query: str, limit: int = 5) -> list[MemoryEntry]:
        """The guide's semantic search: the user's messages and memory entries, best first.

        Each result's ``metadata.custom_fields["search"]`` says ``kind`` (``"message"`` or
        ``"memory"``) and ``score``; message hits come back as ``EPISODIC`` entries whose id
        is the message id.
        """
        results = await self.search(user_id, query, limit=limit)
        return [_result_to_entry(r, user_id) for r in results]

    # ================================================================ memory entries

    async def store_memory(self, memory_entry: MemoryEntry, *, ttl: Any = None) -> None:
        """Insert or replace a memory entry (by id).

        An entry without ``expires_at`` gets one ``ttl`` seconds from now (default
        :attr:`memory_ttl`; ``None``: it never expires). The caller's entry is not changed.

        Raises:
            OwnershipError: the id belongs to another user's entry.
        """
        self.require(Capability.MEMORIES, "store_memory")
        ttl = check_ttl(ttl, "ttl") if ttl is not None else self.memory_ttl
        if (
            ttl is not None
            and isinstance(memory_entry, MemoryEntry)
            and memory_entry.expires_at is None
        ):
            memory_entry = memory_entry.model_copy(
                update={"expires_at": utcnow() + timedelta(seconds=ttl)}
            )
        record = memory_to_record(memory_entry)
        self._check_memory(record)
        await self._embed_records("store_memory", [record])
        # The engine decides ownership in the write itself (see ``_put_memory``).
        await self._run_owned("store_memory", lambda: self._put_memory(record))

    async def retrieve_memories(self, query: MemoryQuery) -> list[MemoryEntry]:
        """Entries matching every field of ``query``.

        With ``query_text`` they are ranked as :meth:`search` ranks (default mode) and
        ``similarity_threshold`` drops those scoring below it (scores in [0, 1], higher is
        better; see :meth:`search`). Without it they come by
        importance, then newest. Expired entries are left out unless ``include_expired``.
        """
        self.require(Capability.MEMORIES, "retrieve_memories")
        if not isinstance(query, MemoryQuery):
            raise InvalidArgumentError("query", "expected a bruno_core MemoryQuery")
        user_id = check_id(query.user_id, "query.user_id")
        # MemoryQuery validates on construction only; a later assignment is checked here.
        check_limit(query.limit, "query.limit")
        flt = MemoryFilter(
            user_id=user_id,
            memory_types=tuple(MemoryType(t).value for t in query.memory_types),
            categories=tuple(query.categories),
            tags=tuple(query.tags),
            min_confidence=query.min_confidence,
            min_importance=query.min_importance,
            include_expired=query.include_expired,
            now_us=to_us(utcnow()),
            limit=query.limit,
        )
        text = query.query_text
        if text is not None and text.strip():
            self._search_mode_for(None, "retrieve_memories")
            hits = await self._live_ranked(
                "retrieve_memories",
                user_id,
                text,
                mode=None,
                kinds=frozenset({"memory"}),
                conversation_id=None,
                limit=flt.limit,
                memory_filter=flt,
            )
            results = _to_results(hits)
            return [
                r.memory
                for r in results
                if r.memory is not None and r.score >= query.similarity_threshold
            ]
        records = await self._run("retrieve_memories", lambda: self._query_memories(flt))
        return [record_to_memory(r) for r in records]

    async def delete_memory(self, memory_id: str, *, user_id: str | None = None) -> None:
        """Delete a memory entry from every index. Deleting a missing id is a no-op.

        With ``user_id``, refuses (``OwnershipError``) to delete another user's entry.
        """
        self.require(Capability.MEMORIES, "delete_memory")
        if isinstance(memory_id, UUID):
            memory_id = str(memory_id)
        memory_id = check_id(memory_id, "memory_id")
        if user_id is not None:
            user_id = check_id(user_id, "user_id")
        await self._run_owned("delete_memory", lambda: self._delete_memory(memory_id, user_id))

    async def purge_expired(self, *, now: datetime | None = None) -> int:
        """Delete what has expired (see :meth:`sweep`); return how many messages and memory
        entries went."""
        counts = await self.sweep(now=now)
        return counts["messages"] + counts["memories"]

    async def sweep(self, *, now: datetime | None = None) -> dict[str, int]:
        """The expiry sweeper: delete every expired record, store-wide; return counts by
        kind (``messages``, ``conversations``, ``sessions``, ``memories``).

        Memory entries past ``expires_at`` go (backends with ``Capability.MEMORIES``);
        conversations past their deadline go whole, with their messages and sessions, and
        expired messages one by one (``Capability.LISTING``; one by one needs
        ``Capability.PRUNING``). ``now`` replaces the clock (tests, replays). Reads never
        return expired records, swept or not.
        """
        if not self.supports(Capability.LISTING):  # nothing to sweep but memory entries
            self.require(Capability.MEMORIES, "purge_expired")
        at = now_us(now)
        counts = {"messages": 0, "conversations": 0, "sessions": 0, "memories": 0}
        if self.supports(Capability.MEMORIES):
            counts["memories"] = int(
                await self._run("purge_expired", lambda: self._purge_expired(at))
            )
        if self.supports(Capability.LISTING):
            await self._sweep_messages(at, counts)
        self._meter.removed("expiry", counts)
        return counts

    async def _sweep_messages(self, at: int, counts: dict[str, int]) -> None:
        # Per conversation: None once one message has no conversation deadline (it never
        # ends), else the latest deadline; and the ids of messages past their own.
        ends: dict[str, int | None] = {}
        doomed: dict[str, list[str]] = {}
        async for batch in self._raw_batches("purge_expired", "messages", None):
            for rec in batch:
                x, c = message_deadlines(rec)
                conv = rec.conversation_id
                if conv not in ends:
                    ends[conv] = c
                elif (end := ends[conv]) is not None:
                    ends[conv] = None if c is None else max(c, end)
                if x is not None and x <= at:
                    doomed.setdefault(conv, []).append(rec.id)
        prune = self.supports(Capability.PRUNING) and isinstance(self, MessagePruning)
        for conv, end in ends.items():
            if (
                end is not None
                and end <= at
                and await self._drop_if_expired("purge_expired", conv, at, counts)
            ):
                continue
            ids = doomed.get(conv)
            if ids and prune:
                counts["messages"] += await self._prune("purge_expired", conv, ids)

    async def _prune(self, operation: str, conversation_id: str, ids: Sequence[str]) -> int:
        """Delete these messages of the conversation (``Capability.PRUNING``)."""
        self.require(Capability.PRUNING, operation)
        if not isinstance(self, MessagePruning):
            raise CapabilityError(
                "this backend cannot delete single messages",
                backend=self.backend_name,
                operation=operation,
            )
        delete = self._delete_message_ids  # type: ignore[attr-defined]
        return int(await self._run(operation, lambda: delete(conversation_id, ids)))

    async def _drop_if_expired(
        self,
        operation: str,
        conversation_id: str,
        at: int | None = None,
        counts: dict[str, int] | None = None,
    ) -> bool:
        """Delete the conversation if it is past its deadline (read again, whole, first);
        whether it went."""
        at = now_us() if at is None else at
        newest = await self._run(
            operation,
            lambda: self._read_window(conversation_id=conversation_id, user_id=None, limit=8),
        )
        end = conversation_deadline(newest)
        if not newest or end is None or end > at:  # one live message keeps it: no more reads
            return False
        whole = await self._run(
            operation,
            lambda: self._read_window(conversation_id=conversation_id, user_id=None, limit=None),
        )
        end = conversation_deadline(whole)
        if not whole or end is None or end > at:
            return False
        await self._erase_conversation(operation, conversation_id, len(whole), counts)
        return True

    async def _erase_conversation(
        self,
        operation: str,
        conversation_id: str,
        messages: int,
        counts: dict[str, int] | None,
    ) -> None:
        """Delete the conversation with its messages and sessions, counting them."""
        sessions = 0
        if counts is not None and self.supports(Capability.LISTING):
            owner = await self._run(operation, lambda: self._conversation_owner(conversation_id))
            if owner is not None:
                held = await self._run(operation, lambda: self._collect("sessions", owner))
                sessions = sum(1 for s in held if s.conversation_id == conversation_id)
        gone = int(
            await self._run(operation, lambda: self._delete_messages(conversation_id, frozenset()))
        )
        if counts is not None:
            counts["messages"] += gone or messages
            counts["conversations"] += 1
            counts["sessions"] += sessions

    # ---------------------------------------------------------------- retention

    async def apply_retention(
        self,
        policy: RetentionPolicy | None = None,
        *,
        dry_run: bool = False,
        user_id: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Enforce a retention policy (default: the store's :attr:`retention`).

        Returns a report: ``dry_run``, ``totals`` and ``users`` (per user: ``messages``
        and ``conversations`` that went, or with ``dry_run=True`` would go; nothing is
        deleted then). ``user_id`` limits it to one user. Needs ``Capability.LISTING``,
        and ``Capability.PRUNING`` for rules that delete single messages.
        """
        policy = as_policy(policy) if policy is not None else self.retention
        if policy is None:
            raise InvalidArgumentError("policy", "no retention policy given or configured")
        if not isinstance(dry_run, bool):
            raise InvalidArgumentError("dry_run", "expected a bool")
        self.require(Capability.LISTING, "apply_retention")
        if user_id is not None:
            user_id = check_id(user_id, "user_id")
        at = now_us(now)
        op = "apply_retention"
        users: dict[str, dict[str, int]] = {}
        conversations: list[tuple[str, str]] = []
        async for batch in self._raw_batches(op, "conversations", user_id):
            conversations += batch
        for conv, owner in conversations:
            whole = await self._run(
                op, lambda c=conv: self._read_window(conversation_id=c, user_id=None, limit=None)
            )
            drop_all, ids = retention_plan(policy, whole, at)
            if not drop_all and not ids:
                continue
            tally = users.setdefault(owner, {"messages": 0, "conversations": 0})
            if drop_all:
                tally["conversations"] += 1
                tally["messages"] += len(whole)
                if not dry_run:
                    await self._erase_conversation(op, conv, len(whole), None)
            else:
                if not dry_run:
                    await self._prune(op, conv, ids)
                elif not self.supports(Capability.PRUNING):
                    self.require(Capability.PRUNING, op)
                tally["messages"] += len(ids)
        totals = {
            "messages": sum(t["messages"] for t in users.values()),
            "conversations": sum(t["conversations"] for t in users.values()),
        }
        if not dry_run:
            self._meter.removed("retention", totals)
        return {"dry_run": dry_run, "totals": totals, "users": users}

    # ---------------------------------------------------------------- reads without the expired

    async def _unexpired(
        self, records: Sequence[MessageRecord], at: int, operation: str
    ) -> list[MessageRecord]:
        """``records`` without the expired: messages past their deadline, and messages of
        conversations past theirs (read whole when the records in hand cannot tell)."""
        if not any(_MARK in r.metadata for r in records):
            return list(records)
        by_conv: dict[str, list[MessageRecord]] = {}
        for rec in records:
            by_conv.setdefault(rec.conversation_id, []).append(rec)
        alive: dict[str, bool] = {}
        for conv, held in by_conv.items():
            end = conversation_deadline(held)
            if end is not None and end <= at:
                whole = await self._run(
                    operation,
                    lambda c=conv: self._read_window(conversation_id=c, user_id=None, limit=None),
                )
                end = conversation_deadline(whole)
            alive[conv] = end is None or end > at
        out: list[MessageRecord] = []
        for rec in records:
            if alive[rec.conversation_id]:
                x = message_deadlines(rec)[0]
                if x is None or x > at:
                    out.append(rec)
        return out

    async def _live_window(
        self,
        operation: str,
        *,
        conversation_id: str | None,
        user_id: str | None,
        limit: int | None,
        archived: bool = True,
        first: tuple[list[MessageRecord], list[SessionRecord] | None] | None = None,
    ) -> list[MessageRecord]:
        """``_read_window`` without expired messages (nor, unless ``archived``, messages of
        archived conversations): the newest ``limit`` left (read again, wider, when left-out
        ones took places in the window). ``first``: the first read (window and markers),
        already done."""
        at = now_us()
        want = limit

        async def read(n: int | None) -> tuple[list[MessageRecord], list[SessionRecord] | None]:
            scope: dict[str, Any] = {
                "conversation_id": conversation_id,
                "user_id": user_id,
                "limit": n,
            }
            if archived:
                return await self._read_window(**scope), None
            return await self._read_window_and_markers(**scope)

        while True:
            if first is None:
                records, markers = await self._run(operation, lambda n=want: read(n))
            else:
                (records, markers), first = first, None
            live = await self._unexpired(records, at, operation)
            if not archived:
                live = await self._unarchived(live, operation, markers, user_id)
            if limit is None or want is None or len(live) >= limit or len(records) < want:
                return live if limit is None else live[-limit:]
            want = want * 4 if want * 4 <= 16 * MAX_LIMIT else None

    async def _live_ranked(
        self,
        operation: str,
        user_id: str,
        query: str,
        *,
        limit: int,
        archived: bool = True,
        **kw: Any,
    ) -> list[SearchHit]:
        """:meth:`_ranked` without expired message hits (asked again, for more, when expired
        ones took places)."""
        at = now_us()
        want = limit
        while True:
            hits = await self._ranked(operation, user_id, query, limit=want, **kw)
            messages = [h.message for h in hits if h.message is not None]
            left = await self._unexpired(messages, at, operation)
            if not archived:
                left = await self._unarchived(left, operation, user_id=user_id)
            live = {r.id for r in left}
            kept = [h for h in hits if h.message is None or h.message.id in live]
            if len(kept) == len(hits) or len(kept) >= limit or len(hits) < want:
                return kept[:limit]
            if want >= MAX_LIMIT:
                return kept[:limit]
            want = min(want * 4, MAX_LIMIT)

    def _session_live(self, rec: SessionRecord | None, at: int | None = None) -> bool:
        if rec is None:
            return False
        end = session_deadline(rec)
        return end is None or end > (now_us() if at is None else at)

    # ---------------------------------------------------------------- the background sweeper

    def _start_sweeper(self) -> None:
        if self._sweeper is not None and not self._sweeper.done():
            return
        if self.sweep_interval is None:
            return
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep_forever(), name=f"sweeper of {self!r}"
        )

    async def _sweep_forever(self) -> None:
        while (interval := self.sweep_interval) is not None:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except ClosedError:
                return
            except Exception:  # the next round tries again
                log.exception("%r: the expiry sweep failed", self)
        self._sweeper = None

    async def _stop_sweeper(self) -> None:
        task, self._sweeper = self._sweeper, None
        await stop_task(task)

    # ================================================================ sessions and context

    async def create_session(
        self, user_id: str, metadata: dict[str, Any] | None = None, *, ttl: Any = None
    ) -> SessionContext:
        """Start a session, with a new conversation owned by ``user_id``.

        ``ttl`` (default :attr:`session_ttl`): seconds the session lives; an expired session
        is not found.
        """
        user_id = check_id(user_id, "user_id")
        ttl = check_ttl(ttl, "ttl") if ttl is not None else self.session_ttl
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidArgumentError("metadata", "expected a dict")
        try:
            session = SessionContext(user_id=user_id, metadata=dict(metadata or {}))
        except ValidationError as exc:
            problem = "; ".join(e["msg"] for e in exc.errors(include_url=False)[:3])
            raise InvalidArgumentError("metadata", problem) from None
        try:
            await self._save_session(session, "create_session", ttl=ttl)
        except PydanticSerializationError as exc:  # raised before the write: nothing stored
            raise InvalidArgumentError("metadata", f"cannot be serialised: {exc}") from None
        return session

    async def get_session(self, session_id: str) -> SessionContext | None:
        """The session, or ``None`` when it does not exist."""
        session_id = check_id(session_id, "session_id")
        rec = await self._run("get_session", lambda: self._get_session(session_id))
        return record_to_session(rec) if rec is not None and self._session_live(rec) else None

    async def end_session(self, session_id: str) -> None:
        """Mark a session ended (its messages stay).

        Raises:
            NotFoundError: no such session.
        """
        session = await self.get_session(session_id)
        if session is None:
            raise NotFoundError(
                f"session {session_id!r} does not exist",
                backend=self.backend_name,
                operation="end_session",
            )
        if session.is_active:
            session.end_session()
            await self._save_session(session, "end_session")

    async def save_session(self, session: SessionContext) -> None:
        """Insert or replace a session as given (e.g. when importing), claiming its conversation.

        Raises:
            OwnershipError: the session id or the session's conversation belongs to another
                user (nothing is written).
        """
        if not isinstance(session, SessionContext):
            raise InvalidArgumentError("session", "expected a bruno_core SessionContext")
        # The engine decides ownership in the write itself (see ``_put_session``).
        await self._save_session(session, "save_session")

    async def claim_conversation(self, conversation_id: str, user_id: str) -> None:
        """Create an empty conversation owned by ``user_id`` (a no-op if it is already theirs).

        Raises:
            OwnershipError: the conversation belongs to another user.
        """
        conversation_id = check_id(conversation_id, "conversation_id")
        user_id = check_id(user_id, "user_id")
        await self._run(
            "claim_conversation",
            lambda: self._append_messages(conversation_id, user_id, [], enforce_owner=True),
        )

    async def _save_session(
        self, session: SessionContext, operation: str, *, ttl: float | None = None
    ) -> None:
        record = session_to_record(session)
        stamp_session(record, now_us(), ttl)
        self._check_session(record)
        await self._run_owned(operation, lambda: self._put_session(record))

    async def _run_owned(self, operation: str, call: Callable[[], Any]) -> Any:
        """:meth:`_run` for a primitive that may refuse another user's record: its
        ``OwnershipError`` names this backend and the public operation."""
        try:
            return await self._run(operation, call)
        except OwnershipError as exc:
            exc.backend, exc.operation = self.backend_name, operation
            raise

    async def get_context(self, user_id: str, session_id: str | None = None) -> ConversationContext:
        """The conversation context bruno-core's ``BaseAssistant`` asks for before each reply.

        ``session_id`` may be a session id or a conversation id (``BaseAssistant`` passes its
        conversation id here); what does not exist yet is created for ``user_id``. Without it,
        the user's latest active session is continued, or a new one started. ``messages`` holds
        the newest ``context_window`` messages, oldest first.
        """
        user_id = check_id(user_id, "user_id")
        op = "get_context"
        first: tuple[list[MessageRecord], list[SessionRecord] | None] | None = None
        ref = None if session_id is None else check_id(session_id, "session_id")
        if ref is None or not self.overlap_reads:
            session = await self._resolve_session(user_id, ref)
        else:
            # BaseAssistant passes a conversation id, which names its session too: the window
            # of that conversation is read beside the session, and kept if the session found
            # or made for the user is one of that conversation (else the right one is read).
            window = asyncio.ensure_future(
                self._run(
                    op,
                    lambda: self._read_window_and_markers(
                        conversation_id=ref, user_id=None, limit=self.context_window
                    ),
                )
            )
            try:
                found = await self._run(op, lambda: self._get_session(ref))
                session = await self._resolve_session(user_id, ref, looked_up=True, found=found)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled: the read goes too
                    window.cancel()
                with contextlib.suppress(BaseException):
                    await window
                raise
            try:
                read = await window
            except Exception:  # the speculative read failed: read the window as usual
                read = None
            if session.conversation_id == ref:
                first = read
        conv = session.conversation_id
        records = await self._live_window(
            op,
            conversation_id=conv,
            user_id=None,
            limit=self.context_window,
            archived=False,
            first=first,
        )
        return ConversationContext(
            conversation_id=conv,
            user=UserContext(user_id=user_id),
            session=session,
            messages=records_to_messages(records),
            max_messages=self.context_window,
        )

    async def _resolve_session(
        self,
        user_id: str,
        ref: str | None,
        *,
        looked_up: bool = False,
        found: SessionRecord | None = None,
    ) -> SessionContext:
        """The session ``ref`` (checked) names for the user, made if need be (``looked_up``:
        its record was read already, ``found``); without ``ref``, the user's latest live
        one."""
        op = "get_context"
        if ref is None:
            rec = await self._latest_live_session(op, user_id, None)
            if rec is not None:
                return record_to_session(rec)
            return await self.create_session(user_id)
        rec = found if looked_up else await self._run(op, lambda: self._get_session(ref))
        if rec is not None and (self._session_live(rec) or rec.user_id != user_id):
            if rec.user_id != user_id:
                raise OwnershipError(
                    f"session {ref!r} belongs to another user",
                    backend=self.backend_name,
                    operation=op,
                )
            return record_to_session(rec)
        owner = await self._run(op, lambda: self._conversation_owner(ref))
        if owner is not None and owner != user_id:
            raise conversation_taken(ref, backend=self.backend_name, operation=op)
        if owner is not None:
            rec = await self._latest_live_session(op, user_id, ref)
            if rec is not None:
                return record_to_session(rec)
        session = SessionContext(session_id=ref, user_id=user_id, conversation_id=ref)
        await self._save_session(session, op, ttl=self.session_ttl)
        return session

    async def _latest_live_session(
        self, op: str, user_id: str, conversation_id: str | None
    ) -> SessionRecord | None:
        """The user's latest active session that has not expired (in the conversation, if
        given), or ``None``."""
        rec = await self._run(
            op, lambda: self._latest_session(user_id, conversation_id, active_only=True)
        )
        if rec is None or self._session_live(rec):
            return rec
        if not self.supports(Capability.LISTING):
            return None
        at = now_us()
        best: SessionRecord | None = None
        for s in await self._run(op, lambda: self._collect("sessions", user_id)):
            if not (s.is_active and conversation_id in (None, s.conversation_id)):
                continue
            if self._session_live(s, at) and (
                best is None or (s.started_us, s.session_id) > (best.started_us, best.session_id)
            ):
                best = s
        return best

    # ================================================================ archive

    async def archive_conversation(
        self, user_id: str, conversation_id: str, *, target: Any = None
    ) -> bool:
        """Archive the user's conversation: it leaves context windows and default search,
        stays stored, listed (:meth:`list_conversations`), exported and counted apart in
        statistics, until :meth:`restore_conversation`. Returns ``False`` if it already was.

        With ``target`` (another memory, or its URL) the messages and sessions move there
        (copied first, then deleted here: an interrupted move loses nothing, and archiving
        again completes it); the conversation stays listed here as archived. Moving needs
        ``Capability.PRUNING``.

        Raises:
            NotFoundError: no such conversation.
            OwnershipError: the conversation belongs to another user (nothing changes).
        """
        user_id = check_id(user_id, "user_id")
        conversation_id = check_id(conversation_id, "conversation_id")
        op = "archive_conversation"
        if target is not None:
            self.require(Capability.PRUNING, op)
        await self._owned_conversation(op, user_id, conversation_id)
        if await self._is_archived(op, conversation_id):
            return False
        moved_to = None
        if target is not None:
            from .transfer import copy_conversation

            async with _other_store(target, "target") as store:
                await copy_conversation(self, store, user_id, conversation_id)
                moved_to = redact_url(store.describe())
            whole = await self._run(
                op,
                lambda: self._read_window(
                    conversation_id=conversation_id, user_id=None, limit=None
                ),
            )
            if whole:
                await self._prune(op, conversation_id, [r.id for r in whole])
        await self._mark_archived(op, user_id, conversation_id, True, moved_to)
        return True

    async def restore_conversation(
        self, user_id: str, conversation_id: str, *, source: Any = None
    ) -> bool:
        """Bring an archived conversation back, exactly as it was; ``False`` if it was not
        archived.

        With ``source`` (the memory, or URL, it was moved to) its records come back from
        there first, and are deleted there after (an interrupted restore loses nothing;
        restoring again completes it).

        Raises:
            NotFoundError: no such conversation.
            OwnershipError: the conversation belongs to another user (nothing changes).
        """
        user_id = check_id(user_id, "user_id")
        conversation_id = check_id(conversation_id, "conversation_id")
        op = "restore_conversation"
        await self._owned_conversation(op, user_id, conversation_id)
        if not await self._is_archived(op, conversation_id):
            return False
        if source is None:
            await self._mark_archived(op, user_id, conversation_id, False)
            return True
        from .transfer import copy_conversation

        async with _other_store(source, "source") as store:
            await copy_conversation(store, self, user_id, conversation_id)
            await self._mark_archived(op, user_id, conversation_id, False)
            await store.clear_conversation(user_id, conversation_id)
        return True

    async def archive(
        self,
        user_id: str | None = None,
        *,
        older_than: Any,
        now: datetime | None = None,
    ) -> int:
        """Archive every conversation (of the user, if given) whose newest message is older
        than ``older_than`` (seconds or a ``timedelta``); return how many were archived.
        Empty conversations stay. Needs ``Capability.LISTING``."""
        self.require(Capability.LISTING, "archive")
        age = check_ttl(older_than, "older_than")
        if age is None:
            raise InvalidArgumentError("older_than", "required")
        if user_id is not None:
            user_id = check_id(user_id, "user_id")
        cutoff = now_us(now) - round(age * 1_000_000)
        op = "archive"
        conversations: list[tuple[str, str]] = []
        async for batch in self._raw_batches(op, "conversations", user_id):
            conversations += batch
        archived = 0
        for conv, owner in conversations:
            newest = await self._run(
                op, lambda c=conv: self._read_window(conversation_id=c, user_id=None, limit=1)
            )
            if not newest or newest[-1].ts_us >= cutoff or await self._is_archived(op, conv):
                continue
            await self._mark_archived(op, owner, conv, True)
            archived += 1
        return archived

    async def list_conversations(self, user_id: str) -> list[dict[str, Any]]:
        """The user's conversations, by id: ``{"conversation_id", "archived"}`` each.
        Needs ``Capability.LISTING``."""
        self.require(Capability.LISTING, "list_conversations")
        user_id = check_id(user_id, "user_id")
        ids: list[str] = []
        async for batch in self._raw_batches("list_conversations", "conversations", user_id):
            ids += [conv for conv, _owner in batch]
        apart = await self._archived_set("list_conversations", user_id)
        return [{"conversation_id": c, "archived": c in apart} for c in sorted(ids)]

    async def _owned_conversation(self, op: str, user_id: str, conversation_id: str) -> None:
        owner = await self._run(op, lambda: self._conversation_owner(conversation_id))
        if owner is None:
            raise NotFoundError(
                f"conversation {conversation_id!r} does not exist",
                backend=self.backend_name,
                operation=op,
            )
        if owner != user_id:
            raise OwnershipError(
                f"conversation {conversation_id!r} belongs to another user",
                backend=self.backend_name,
                operation=op,
            )

    async def _mark_archived(
        self, op: str, user_id: str, conversation_id: str, on: bool, moved_to: str | None = None
    ) -> None:
        """Record the conversation's archive state in its marker session (replaced in
        place: a restore leaves the marker, saying it is not archived)."""
        state: dict[str, Any] = {"archived": on, "at": utcnow().isoformat()}
        if moved_to is not None:
            state["moved_to"] = moved_to
        marker = SessionContext(
            session_id=archive_marker(conversation_id),
            user_id=user_id,
            conversation_id=conversation_id,
            metadata={LIFECYCLE_KEY: state},
            is_active=False,
        )
        record = session_to_record(marker)
        await self._run_owned(op, lambda: self._put_session(record))

    async def _is_archived(self, op: str, conversation_id: str) -> bool:
        rec = await self._run(op, lambda: self._get_session(archive_marker(conversation_id)))
        return rec is not None and _marks_archived(rec)

    async def _unarchived(
        self,
        records: Sequence[MessageRecord],
        op: str,
        markers: Sequence[SessionRecord] | None = None,
        user_id: str | None = None,
    ) -> list[MessageRecord]:
        """``records`` without those of archived conversations: by the archive ``markers``
        read with them, else by the markers of their conversations (``user_id``'s), read
        now in one call."""
        if not records:
            return []
        held = list(dict.fromkeys(r.conversation_id for r in records))
        if markers is None:
            markers = await self._run(op, lambda: self._get_markers(user_id, held))
        apart = {
            m.conversation_id
            for m in markers
            if m.session_id == archive_marker(m.conversation_id) and _marks_archived(m)
        }.intersection(held)
        return [r for r in records if r.conversation_id not in apart] if apart else list(records)

    async def _archived_set(self, op: str, user_id: str) -> set[str]:
        return {
            s.conversation_id
            for s in await self._run(op, lambda: self._collect("sessions", user_id))
            if s.session_id.startswith(ARCHIVE_MARKER) and _marks_archived(s)
        }

    async def _archived_counts(self, user_id: str) -> dict[str, Any]:
        """What statistics count apart: markers, archived conversations, their messages."""
        counts: dict[str, Any] = {"markers": 0, "conversations": 0, "messages": 0, "roles": {}}
        if not self.supports(Capability.LISTING):
            return counts
        op = "get_statistics"
        sessions = await self._run(op, lambda: self._collect("sessions", user_id))
        markers = [s for s in sessions if s.session_id.startswith(ARCHIVE_MARKER)]
        counts["markers"] = len(markers)
        roles: dict[str, int] = {}
        for marker in markers:
            if not _marks_archived(marker):
                continue
            whole = await self._run(
                op,
                lambda c=marker.conversation_id: self._read_window(
                    conversation_id=c, user_id=None, limit=None
                ),
            )
            counts["conversations"] += 1
            counts["messages"] += len(whole)
            for rec in whole:
                roles[rec.role] = roles.get(rec.role, 0) + 1
        counts["roles"] = roles
        return counts

    # ================================================================ users and statistics

    async def get_statistics(self, user_id: str) -> dict[str, Any]:
        """Counts for one user: messages (by role), conversations, sessions, memories."""
        user_id = check_id(user_id, "user_id")
        raw = await self._run("get_statistics", lambda: self._statistics(user_id))
        first, last = raw.get("first_message_us"), raw.get("last_message_us")
        apart = await self._archived_counts(user_id)
        if apart["markers"]:
            raw = dict(raw)
            raw["sessions"] = int(raw.get("sessions", 0)) - apart["markers"]
            raw["conversations"] = int(raw.get("conversations", 0)) - apart["conversations"]
            raw["messages"] = int(raw.get("messages", 0)) - apart["messages"]
            roles = dict(raw.get("messages_by_role", {}))
            for role, n in apart["roles"].items():
                roles[role] = roles.get(role, 0) - n
                if roles[role] <= 0:
                    del roles[role]
            raw["messages_by_role"] = roles
        return {
            "user_id": user_id,
            "backend": self.backend_name,
            "total_messages": int(raw.get("messages", 0)),
            "conversations": int(raw.get("conversations", 0)),
            "sessions": int(raw.get("sessions", 0)),
            "active_sessions": int(raw.get("active_sessions", 0)),
            "memories": int(raw.get("memories", 0)),
            "messages_by_role": dict(raw.get("messages_by_role", {})),
            "first_message_at": _us_to_iso(first),
            "last_message_at": _us_to_iso(last),
            "archived_conversations": apart["conversations"],
            "archived_messages": apart["messages"],
        }

    async def store_statistics(self) -> dict[str, Any]:
        """The whole store: records by kind (``users``, ``conversations``, ``messages``,
        ``sessions``, ``memories``) and ``storage_bytes`` (``None`` where the engine cannot
        tell). Also sets the ``bruno_memstore_records`` and ``bruno_memstore_storage_bytes``
        gauges (docs/observability.md).

        Counting reads every record on engines with no count of their own (see the backend
        pages): an operator's call, not one for every request.
        """
        self.require(Capability.LISTING, "store_statistics")
        counts = await self._run("store_statistics", self._store_counts)
        nbytes = await self._run("store_statistics", self._storage_bytes)
        self._meter.records(counts)
        if nbytes is not None:
            self._meter.storage(nbytes)
        return {
            "backend": self.backend_name,
            "store": self._redact(self.describe()),
            **{kind: int(counts.get(kind, 0)) for kind in STORE_KINDS},
            "storage_bytes": None if nbytes is None else int(nbytes),
        }

    async def forget_user(self, user_id: str) -> dict[str, int]:
        """Erase everything stored for the user (messages, sessions, memories, indexes).

        With an :attr:`erasure_log`, the erasure is recorded there (user id, time, counts)
        before this returns.

        Raises:
            ErasureLogError: the user was erased, but the log could not be written.
        """
        self.require(Capability.LISTING, "forget_user")
        user_id = check_id(user_id, "user_id")
        held = await self._run("forget_user", lambda: self._collect("sessions", user_id))
        markers = sum(1 for rec in held if rec.session_id.startswith(ARCHIVE_MARKER))
        counts = dict(await self._run("forget_user", lambda: self._forget_user(user_id)))
        if markers and "sessions" in counts:  # archive states are no sessions of the user
            counts["sessions"] = max(0, counts["sessions"] - markers)
        if self.erasure_log is not None:
            entry = erasure_entry(
                user_id, counts, backend=self.backend_name, store=self._redact(self.describe())
            )
            try:
                await self.erasure_log.record(entry)
            except Exception as exc:
                raise ErasureLogError(
                    f"user {user_id!r} was erased ({counts}) but the erasure log "
                    f"{self.erasure_log!r} could not be written: {exc}",
                    counts,
                    backend=self.backend_name,
                    operation="forget_user",
                    cause=exc,
                ) from exc
        return counts

    async def export_user(self, user_id: str) -> dict[str, Any]:
        """Every record of the user, as one JSON-ready package (a data-subject access request).

        The package (docs/lifecycle.md) holds the user's conversations, sessions, messages
        and memory entries in the JSON Lines export's record shapes, with counts and the
        time of export; :func:`bruno_memstore.user_export.package_lines` makes it an import
        file again.
        """
        from .user_export import build_user_package

        self.require(Capability.LISTING, "export_user")
        user_id = check_id(user_id, "user_id")
        return await build_user_package(self, user_id)

    async def compact(self) -> None:
        """Maintenance: erase the remains of deleted records the engine keeps until then.

        Some engines keep bytes of deleted records in their files until a rewrite
        (PostgreSQL: dead tuples until ``VACUUM FULL``; MariaDB: ``FULLTEXT`` words until the
        table is rebuilt). This runs that rewrite, which may lock the store's tables for its
        duration; on other backends it finishes what deletions already do, or does nothing.
        What each engine keeps, and where (logs, backups), is in its page under docs/backends.
        """
        await self._run("compact", self._compact)

    async def export_batches(
        self, kind: str, user_id: str | None = None, *, include_expired: bool = False
    ) -> AsyncIterator[list[object]]:
        """Batches of raw records of ``kind`` (see ``StoragePrimitives._export``).

        Expired messages and sessions are left out unless ``include_expired`` (a tier of a
        combinator, which sweeps them itself, reads them all). Memory entries come whole:
        ``expires_at`` is a field of theirs that a copy keeps.
        """
        self.require(Capability.LISTING, "export")
        if kind not in ("conversations", "messages", "memories", "sessions"):
            raise InvalidArgumentError("kind", f"unknown record kind {kind!r}")
        if user_id is not None:
            user_id = check_id(user_id, "user_id")
        at = now_us()
        async for batch in self._raw_batches("export", kind, user_id):
            if include_expired:
                pass
            elif kind == "messages":
                batch = await self._unexpired(batch, at, "export")
            elif kind == "sessions":
                batch = [s for s in batch if self._session_live(s, at)]
            if batch:
                yield batch

    async def _raw_batches(
        self, operation: str, kind: str, user_id: str | None
    ) -> AsyncIterator[list[Any]]:
        """``_export``'s batches as stored (expired records included), each page a call."""
        await self._ensure_connected()
        async with contextlib.aclosing(self._export(kind, user_id)) as batches:  # type: ignore[arg-type]
            while True:
                # Each page counts as a call under way (shutdown waits for it), not the walk.
                if not self._calls.enter():
                    raise self._closed_error(operation)
                try:
                    batch = await anext(batches)
                except StopAsyncIteration:
                    return
                except MemstoreError:
                    raise
                except Exception as exc:
                    raise self._translate(operation, exc) from exc
                finally:
                    self._calls.leave()
                yield batch

    # ================================================================ checks and reads for tools
    # What an import checks before its first write, as public calls (see transfer.py).

    async def conversation_owner(self, conversation_id: str) -> str | None:
        """The user who owns the conversation, or ``None`` when it does not exist."""
        conversation_id = check_id(conversation_id, "conversation_id")
        return await self._run(
            "conversation_owner", lambda: self._conversation_owner(conversation_id)
        )

    async def get_memory(self, memory_id: str) -> MemoryEntry | None:
        """The memory entry with this id, whoever's it is, or ``None``."""
        self.require(Capability.MEMORIES, "get_memory")
        if isinstance(memory_id, UUID):
            memory_id = str(memory_id)
        memory_id = check_id(memory_id, "memory_id")
        rec = await self._run("get_memory", lambda: self._get_memory(memory_id))
        return record_to_memory(rec) if rec is not None else None

    async def check_conflicts(self, records: Sequence[MessageRecord]) -> None:
        """Refuse, as :meth:`store_messages` would, ids that name a different stored message
        (other content, or another conversation); writes nothing.

        Raises:
            ConflictError: an id names a different stored message.
        """
        if records:
            ids = [r.id for r in records]
            found = await self._run("check_conflicts", lambda: self._get_messages(ids))
            self._raise_on_conflict(records, found)


# ==================================================================== helpers


class _CallGate:
    """The calls under way on one memory, and whether new ones may start.

    Thread-safe: one memory may serve callers on several event loops.
    """

    __slots__ = ("_idle", "_lock", "count", "open")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[concurrent.futures.Future[None]] = []
        self.count = 0
        self.open = True

    def enter(self) -> bool:
        """Count a call in, unless the gate is closed."""
        with self._lock:
            if not self.open:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count -= 1
            waiters: list[concurrent.futures.Future[None]] = []
            if self.count == 0:
                waiters, self._idle = self._idle, []
        for waiter in waiters:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                waiter.set_result(None)

    def close(self) -> concurrent.futures.Future[None]:
        """Refuse new calls; the future resolves once the calls under way have ended."""
        idle: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            self.open = False
            if self.count:
                self._idle.append(idle)
                return idle
        idle.set_result(None)
        return idle

    def reopen(self) -> None:
        with self._lock:
            self.open = True


def _store_args(
    args: tuple[str, ...], user_id: str | None, conversation_id: str | None
) -> tuple[str | None, str]:
    """Resolve both ``store_message`` call forms into ``(user_id, conversation_id)``."""
    if len(args) > 2:
        raise InvalidArgumentError("args", "store_message takes at most user_id, conversation_id")
    if len(args) == 2:
        if user_id is not None or conversation_id is not None:
            raise InvalidArgumentError("args", "ids given both positionally and by keyword")
        user_id, conversation_id = args
        if user_id is None:
            raise InvalidArgumentError("user_id", "must not be None in the three-argument form")
    elif len(args) == 1:
        if conversation_id is None:
            conversation_id = args[0]
        elif user_id is None:
            user_id = args[0]
        else:
            raise InvalidArgumentError("args", "ids given both positionally and by keyword")
    if conversation_id is None:
        raise InvalidArgumentError("conversation_id", "is required")
    return user_id, conversation_id


def _named_user(messages: Sequence[Message]) -> str | None:
    """The user the messages name in ``metadata["user_id"]`` (``None``: they name nobody).

    Raises:
        InvalidArgumentError: they name different users, or a malformed one.
    """
    named: set[str] = set()
    for message in messages:
        value = message.metadata.get("user_id")
        if isinstance(value, str) and value.strip():
            named.add(value)
    if len(named) > 1:
        raise InvalidArgumentError(
            "messages", 'the batch names more than one user in metadata["user_id"]'
        )
    if not named:
        return None
    return check_id(named.pop(), "message.metadata.user_id")


_CONVERT_SLICE = 1000  # messages validated between two yields to the event loop


async def _convert(messages: Sequence[Message], conversation_id: str) -> list[MessageRecord]:
    """Validate a batch into records, letting other tasks run between slices of a big one."""
    if len(messages) <= _CONVERT_SLICE:
        return [message_to_record(m, conversation_id) for m in messages]
    records: list[MessageRecord] = []
    for start in range(0, len(messages), _CONVERT_SLICE):
        records += [
            message_to_record(m, conversation_id) for m in messages[start : start + _CONVERT_SLICE]
        ]
        await asyncio.sleep(0)
    return records


async def _to_messages(records: Sequence[MessageRecord]) -> list[Message]:
    """Records as messages, letting other tasks run between slices of a long conversation."""
    if len(records) <= _CONVERT_SLICE:
        return records_to_messages(records)
    out: list[Message] = []
    for start in range(0, len(records), _CONVERT_SLICE):
        out += records_to_messages(records[start : start + _CONVERT_SLICE])
        await asyncio.sleep(0)
    return out


def _same_message(a: MessageRecord, b: MessageRecord) -> bool:
    return (
        a.conversation_id == b.conversation_id
        and a.role == b.role
        and a.content == b.content
        and a.message_type == b.message_type
        and a.ts_us == b.ts_us
        and a.parent_id == b.parent_id
        and (a.metadata == b.metadata or user_metadata(a.metadata) == user_metadata(b.metadata))
    )


def _to_results(hits: Sequence[SearchHit]) -> list[SearchResult]:
    found = iter(records_to_messages([h.message for h in hits if h.message is not None]))
    out: list[SearchResult] = []
    for h in hits:
        score = h.score
        if h.message is not None:
            out.append(SearchResult("message", score, message=next(found)))
        elif h.memory is not None:
            out.append(SearchResult("memory", score, memory=record_to_memory(h.memory)))
    return out


def _result_to_entry(result: SearchResult, user_id: str) -> MemoryEntry:
    tag = {"kind": result.kind, "score": result.score}
    if result.memory is not None:
        entry = result.memory
        entry.metadata.custom_fields["search"] = tag
        return entry
    msg = result.message
    assert msg is not None
    return MemoryEntry(
        id=msg.id,
        content=msg.content,
        memory_type=MemoryType.EPISODIC,
        user_id=user_id,
        conversation_id=msg.conversation_id,
        created_at=msg.timestamp,
        updated_at=msg.timestamp,
        last_accessed=msg.timestamp,
        metadata=MemoryMetadata(
            source="message",
            category=msg.role.value,
            custom_fields={"search": tag, "role": msg.role.value, "message_id": str(msg.id)},
        ),
    )


def _us_to_iso(value: object) -> str | None:
    if value is None:
        return None
    return (_EPOCH + timedelta(microseconds=int(value))).isoformat()  # type: ignore[call-overload]


def _marks_archived(rec: SessionRecord) -> bool:
    """Whether a marker session says its conversation is archived."""
    if not rec.session_id.startswith(ARCHIVE_MARKER):
        return False
    meta = json.loads(rec.payload).get("metadata") or {}
    state = meta.get(LIFECYCLE_KEY)
    return isinstance(state, dict) and state.get("archived") is True


@contextlib.asynccontextmanager
async def _other_store(store: Any, argument: str) -> AsyncIterator[MemoryBackend]:
    """``store`` itself if it is a memory; a memory opened from it if it is a URL (shut
    down on the way out)."""
    if isinstance(store, MemoryBackend):
        yield store
        return
    if not isinstance(store, str):
        raise InvalidArgumentError(argument, "expected a memory or a memory URL")
    from .registry import open_memory

    opened = open_memory(store)
    try:
        yield opened
    finally:
        await opened.shutdown()
