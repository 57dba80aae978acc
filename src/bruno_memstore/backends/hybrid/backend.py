"""``HybridMemory``: a fast cache tier in front of a persistent one.

The persistent tier is the source of truth: every write goes there first and is acknowledged
once it is stored there. The cache tier holds only message windows of conversations, and
per conversation either nothing or a complete copy, which serves the conversation's window
reads (``get_context``, ``retrieve_messages``, ``retrieve_context`` of one conversation).
Everything else (sessions, memory entries, search, statistics, export, reads across a user's
conversations) goes to the persistent tier.

The protocol that keeps a copy complete:

* **Copy marker.** A copy is trusted only while the cache tier holds its *marker*, a record
  written after the copy was filled (a session record of the cached conversation, so
  deleting the conversation from the cache deletes the marker with it). Every process that
  shares the cache sees the same markers; there is no per-process "warm" state to go stale.
* **Rebuild.** A read that finds no marker deletes whatever the cache holds for the
  conversation, claims it there (an unfinished marker, owned by the persistent owner), *then*
  reads the whole conversation from the persistent tier, appends it to the cache (idempotent
  by message id) and writes the marker. Writes that land after the claim reach the copy by
  write-through; writes before it are in the read.
* **Write-through.** After a persistent append, the records are appended to the cache when
  the cache holds the conversation (a copy, or a rebuild in progress).
* **Invalidation.** Deletions delete from the persistent tier first, then the whole cache
  copy. A cache write or deletion that fails never fails the call: the conversation is
  recorded as *pending invalidation* (this process then serves it from the persistent tier)
  and its copy is deleted as soon as the cache answers again.
* **Suspension.** When the cache tier cannot be reached, it is left alone for a growing
  interval (one call at a time probes it afterwards), so calls do not each pay a timeout.

See ``docs/backends/hybrid.md`` for the guarantees and their limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, ClassVar, Literal, TypeVar

from ...base import MemoryBackend
from ...capabilities import REQUIRED, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import (
    CapabilityError,
    ConflictError,
    InvalidArgumentError,
    MemstoreError,
    OwnershipError,
)
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
)
from ...primitives import (
    AppendResult,
    ExportKind,
    MessagePruning,
    VectorPrimitives,
    same_session,
)
from ...registry import open_memory
from ...url import MemoryURL
from ..kit.settings import positive_int, positive_seconds

__all__ = ["HybridMemory"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_OPERATION: ContextVar[str] = ContextVar("bruno_memstore_hybrid_operation", default="hybrid")
_MARKER_PREFIX = "bruno-hybrid-copy:"
_MARKER_FORMAT = 1
_FILL_CHUNK = 500  # records per cache append when filling a copy
_MAX_HOT = 10_000  # conversations remembered as recently cached (writes skip a check)
_DRAIN_BATCH = 64  # pending invalidations settled per call once the cache answers again
_OVERFLOW_LOG_INTERVAL = 60.0  # seconds between two warnings about too many pending copies
_MAX_SUSPENSION = 60.0  # seconds: the longest the cache tier is left alone after failures
_JITTER = 0.2  # copies expire up to this fraction early, so processes do not rebuild at once
_URL_OPTIONS: dict[str, type] = {
    "cache_timeout": float,
    "cache_retry_after": float,
    "cache_max_age": float,
    "context_window": int,
    "operation_timeout": float,
}


class _CacheProblem(Exception):
    """The cache tier cannot be used for this conversation right now (already logged)."""


class _Skipped(_CacheProblem):
    """The cache tier is suspended: the call was not even tried."""


def _now_us() -> int:
    return time.time_ns() // 1000


def _marker_id(conversation_id: str) -> str:
    # Hashed: fixed length whatever the conversation id, and never a user's session id.
    digest = hashlib.sha256(conversation_id.encode("utf-8", "surrogatepass")).hexdigest()
    return _MARKER_PREFIX + digest[:40]


def _marker(
    conversation_id: str, owner: str, built_us: int, token: str, *, complete: bool
) -> SessionRecord:
    """The record that claims a copy (``complete=False``) and then vouches for it; ``token``
    tells one rebuild's claim from another's."""
    payload = {
        "hybrid_copy": _MARKER_FORMAT,
        "built_us": built_us,
        "complete": complete,
        "claim": token,
    }
    return SessionRecord(
        session_id=_marker_id(conversation_id),
        user_id=owner,
        conversation_id=conversation_id,
        is_active=False,
        started_us=built_us,
        payload=json.dumps(payload),
    )


def _seq(record: MessageRecord) -> int:
    return record.seq


def _slice(
    records: list[MessageRecord], owner: str | None, user_id: str | None, limit: int | None
) -> list[MessageRecord]:
    """The window a persistent read would return, cut from the whole conversation."""
    if owner is None or (user_id is not None and owner != user_id):
        return []
    return records if limit is None else records[-limit:]


class _Locks:
    """One asyncio lock per conversation, kept only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._held: dict[str, list[Any]] = {}

    def busy(self, key: str) -> bool:
        return key in self._held

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._held.get(key)
        if entry is None:
            entry = self._held[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._held[key]


class HybridMemory(MemoryBackend, VectorPrimitives, MessagePruning):
    """A cache tier in front of a persistent tier; the persistent tier is the source of truth.

    Args:
        cache: the fast tier, e.g. ``RedisMemory``, ``MemcachedMemory`` or
            ``InMemoryStorage`` (private to this instance: use it only when this instance is
            the only writer of the persistent store).
        persistent: the tier that holds everything, e.g. ``PostgresMemory`` or
            ``SQLiteMemory``. The hybrid declares its capabilities.
        cache_timeout: seconds a cache-tier call may take before the hybrid gives up on it and
            uses the persistent tier (``None``: the cache tier's own timeouts only).
        cache_retry_after: seconds the cache tier is left alone after it could not be
            reached; doubles on each further failure, up to a minute.
        cache_max_age: seconds a cached copy is trusted after it was built (``None``: until
            it is invalidated). Bounds how long a copy damaged by a rare race between
            processes can be served. With a ``MemcachedMemory`` cache that has a ``ttl``,
            at most half the ttl is used (memcached expires items one by one).
        max_pending: most conversations remembered as pending invalidation; beyond it the
            oldest is forgotten and copies built before that moment are not trusted.
        **options: see :class:`~bruno_memstore.base.MemoryBackend` (``context_window``,
            ``operation_timeout``, ``retry``).

    Both tiers are connected by ``initialize()`` (or on first use) and shut down by
    ``shutdown()``, whether the hybrid built them (from a URL) or was given them.
    """

    backend_name: ClassVar[str] = "hybrid"
    capabilities: ClassVar[frozenset[Capability]] = REQUIRED

    def __init__(
        self,
        cache: MemoryBackend,
        persistent: MemoryBackend,
        *,
        cache_timeout: float | None = 2.0,
        cache_retry_after: float = 1.0,
        cache_max_age: float | None = 600.0,
        max_pending: int = 100_000,
        **options: Any,
    ) -> None:
        for name, tier in (("cache", cache), ("persistent", persistent)):
            if not isinstance(tier, MemoryBackend):
                raise InvalidArgumentError(name, f"expected a MemoryBackend, got {type(tier)}")
        if cache is persistent:
            raise InvalidArgumentError("cache", "must be another instance than persistent")
        for name, value in (
            ("cache_timeout", cache_timeout),
            ("cache_retry_after", cache_retry_after),
            ("cache_max_age", cache_max_age),
        ):
            if value is not None or name == "cache_retry_after":
                positive_seconds(name, value)
        positive_int("max_pending", max_pending)
        super().__init__(**options)
        self.cache = cache
        self.persistent = persistent
        # A context read overlaps its two calls when either tier waits for a network.
        self.overlap_reads = cache.overlap_reads or persistent.overlap_reads
        self.deletes_expired_itself = persistent.deletes_expired_itself
        self.capabilities = self._declared()  # type: ignore[misc]
        self.limits = persistent.limits
        # Vectors are the persistent tier's: its model embeds, its index answers.
        self.embedder = persistent.embedder
        self.search_mode = persistent.search_mode
        self.vector_weight = persistent.vector_weight
        self.cache_timeout = cache_timeout
        self.cache_retry_after = float(cache_retry_after)
        if cache.ttl:
            # Records expire one by one: trust a copy only while all of it is surely there.
            half = cache.ttl / 2
            cache_max_age = half if cache_max_age is None else min(cache_max_age, half)
        self.cache_max_age = cache_max_age
        self.max_pending = max_pending
        # A cache in this process answers without awaiting: it needs no timeout, and two
        # sequential calls beat a gather there.
        self._local = cache.supports(Capability.IN_PROCESS)
        self._locks = _Locks()
        self._pending: OrderedDict[str, int] = OrderedDict()
        self._forgotten: OrderedDict[str, None] = OrderedDict()  # users the cache still lists
        self._hot: OrderedDict[str, None] = OrderedDict()  # recently served from the cache
        self._pending_seq = itertools.count(1)
        self._distrust_before_us = 0
        self._overflow_logged = -_OVERFLOW_LOG_INTERVAL
        self._down_until = 0.0  # monotonic; 0: the cache tier is believed reachable
        self._failures = 0
        self._probing = False
        self._draining = False
        self._lookups = {"hit": 0, "miss": 0}  # window reads, since this object was made

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> HybridMemory:
        """Build from ``hybrid://?cache=<url>&persistent=<url>`` (inner URLs percent-encoded).

        The other query options are ``cache_timeout``, ``cache_retry_after``,
        ``cache_max_age``, ``context_window`` and ``operation_timeout``; keywords win.
        """
        merged = url.apply_options(options, _URL_OPTIONS, also=("cache", "persistent"))
        if (
            url.host
            or url.port
            or url.path not in ("", "/")
            or url.username
            or url.password is not None
        ):
            raise InvalidArgumentError(
                "url", "a hybrid URL has no host or path: hybrid://?cache=<url>&persistent=<url>"
            )
        tiers = {}
        for part in ("cache", "persistent"):
            inner = url.query.get(part, "")
            if not inner.strip():
                raise InvalidArgumentError(
                    f"url option {part}",
                    f"missing; expected hybrid://?cache=<url>&persistent=<url> with the {part} "
                    "URL percent-encoded",
                )
            tiers[part] = inner
        return cls(
            cache=open_memory(tiers["cache"]),
            persistent=open_memory(tiers["persistent"]),
            **merged,
        )

    def describe(self) -> str:
        return f"cache={self.cache.describe()} persistent={self.persistent.describe()}"

    def _declared(self) -> frozenset[Capability]:
        """The persistent tier's capabilities; in process only if both tiers are."""
        declared = self.persistent.capabilities
        if self.cache.supports(Capability.IN_PROCESS):
            return declared
        return declared - {Capability.IN_PROCESS}

    def _redact(self, text: str) -> str:
        return self.cache._redact(self.persistent._redact(text))

    # ================================================================ lifecycle

    async def _connect(self) -> None:
        # After shutdown() the tiers are closed too: opening the hybrid opens them again (a
        # paused cache tier, at the first call that tries it).
        await self.persistent.initialize()
        # The persistent tier may declare more once connected (RedisMemory: DURABLE), and
        # narrow its limits (MySQLMemory: the server's largest packet).
        self.capabilities = self._declared()  # type: ignore[misc]
        self.limits = self.persistent.limits
        if self._down_until and time.monotonic() < self._down_until:
            return
        try:
            await self._limited(self.cache.initialize())
        except Exception as exc:
            self._cache_failed("connect", exc, suspend=True)
        else:
            self._cache_answered()

    async def _close(self) -> None:
        try:
            await self.cache.shutdown()
        except Exception as exc:
            logger.warning("hybrid memory: closing the cache tier failed: %s", self._detail(exc))
        await self.persistent.shutdown()

    async def _run(self, operation: str, call: Callable[[], Any]) -> Any:
        # The inner tiers record their metrics under the public operation's name.
        token = _OPERATION.set(operation)
        try:
            return await super()._run(operation, call)
        finally:
            _OPERATION.reset(token)

    # What the persistent tier cannot store is refused before anything is written.

    def _check_records(self, records: Sequence[MessageRecord]) -> None:
        self.persistent.check_storable(records)

    def _check_memory(self, record: MemoryRecord) -> None:
        self.persistent.check_storable([record])

    def _check_session(self, record: SessionRecord) -> None:
        self.persistent.check_storable([record])

    # ================================================================ calling the tiers

    async def _stored(self, call: Callable[[], Awaitable[T]]) -> T:
        """One persistent-tier primitive: its failures are the caller's failures."""
        return await self.persistent._run(_OPERATION.get(), call)

    async def _cached(self, call: Callable[[], Awaitable[T]], *, primitive: bool = True) -> T:
        """One cache-tier primitive (or, not ``primitive``, a public call of the tier);
        raises :class:`_CacheProblem` (logged) if it fails."""
        probe = False
        if self._down_until:
            if self._probing or time.monotonic() < self._down_until:
                raise _Skipped()
            self._probing = probe = True  # the first call after the pause finds out
        try:
            result = await self._limited(self._in_cache(call, primitive))
        except Exception as exc:
            unreachable = isinstance(exc, (ConnectionError, TimeoutError))
            self._cache_failed(_OPERATION.get(), exc, suspend=unreachable)
            if probe and not unreachable:
                self._cache_answered()
            raise _CacheProblem() from exc
        finally:
            if probe:
                self._probing = False
        if probe:
            self._cache_answered()
        return result

    async def _in_cache(self, call: Callable[[], Awaitable[T]], primitive: bool) -> T:
        if self.cache.closed:
            await self.cache.initialize()  # shut down with the hybrid, and paused since
        return await (self.cache._run(_OPERATION.get(), call) if primitive else call())

    async def _limited(self, awaitable: Awaitable[T]) -> T:
        if self.cache_timeout is None or self._local:
            return await awaitable
        return await self._time_limits.within(self.cache_timeout, awaitable)

    def _cache_usable(self) -> bool:
        """Whether the cache tier may be tried now (a probe is allowed once a pause ends)."""
        if not self._down_until:
            return True
        return not self._probing and time.monotonic() >= self._down_until

    def _detail(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError) and not isinstance(exc, MemstoreError):
            return f"no answer within {self.cache_timeout:g}s"
        return self._redact(f"{type(exc).__name__}: {exc}")

    def _cache_failed(self, operation: str, exc: BaseException, *, suspend: bool) -> None:
        note = ""
        if suspend:
            self._failures += 1
            pause = min(self.cache_retry_after * 2 ** (self._failures - 1), _MAX_SUSPENSION)
            self._down_until = time.monotonic() + pause
            note = f"; leaving it alone for {pause:g}s"
        logger.warning(
            "hybrid memory: cache tier %s failed during %s (%s); serving from the persistent "
            "tier%s",
            self.cache.describe(),
            operation,
            self._detail(exc),
            note,
        )

    def _cache_answered(self) -> None:
        if self._down_until:
            logger.info("hybrid memory: cache tier %s answers again", self.cache.describe())
        self._down_until = 0.0
        self._failures = 0

    # ================================================================ copies

    def _mark(self, conversation_id: str) -> None:
        """Record that the conversation's cached copy must not be trusted until deleted."""
        self._hot.pop(conversation_id, None)
        self._pending[conversation_id] = next(self._pending_seq)
        self._pending.move_to_end(conversation_id)
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            # Its copy can no longer be tracked: distrust every copy built until now.
            self._distrust_before_us = _now_us()
            now = time.monotonic()
            if now - self._overflow_logged > _OVERFLOW_LOG_INTERVAL:
                self._overflow_logged = now
                logger.warning(
                    "hybrid memory: more than %d conversations wait for their cache copy to "
                    "be deleted; copies built before now will be rebuilt",
                    self.max_pending,
                )

    async def _erase(self, conversation_id: str) -> bool:
        """Delete the cached copy (the caller holds the conversation's lock)."""
        version = self._pending.get(conversation_id)
        try:
            await self._cached(lambda: self.cache._delete_messages(conversation_id, frozenset()))
        except _CacheProblem:
            return False
        if version is not None and self._pending.get(conversation_id) == version:
            # Nothing was marked meanwhile: the deletion covered every reason to distrust.
            del self._pending[conversation_id]
        return True

    async def _invalidate(self, conversation_id: str, *, mark: bool = True) -> None:
        if mark:
            self._mark(conversation_id)
        if not self._cache_usable():
            return  # deleted once the cache tier answers again
        async with self._locks.hold(conversation_id):
            await self._erase(conversation_id)

    async def _drain(self) -> None:
        """Delete some copies still pending invalidation, once the cache tier answers."""
        if not (self._pending or self._forgotten) or self._draining or not self._cache_usable():
            return
        self._draining = True
        try:
            batch = list(itertools.islice(self._pending, _DRAIN_BATCH))
            await asyncio.gather(*(self._invalidate(c, mark=False) for c in batch))
            for user_id in list(itertools.islice(self._forgotten, _DRAIN_BATCH)):
                await self._forget_cached_user(user_id)
        finally:
            self._draining = False

    async def _forget_cached_user(self, user_id: str) -> None:
        """Erase what the cache tier keeps of the user beyond its copies (its set of users,
        per-user counters and indexes); retried by :meth:`_drain` if the cache fails."""
        if not self.cache.supports(Capability.LISTING):
            return  # a tier that cannot list users keeps no set of them
        try:
            await self._cached(lambda: self.cache.forget_user(user_id), primitive=False)
        except _CacheProblem:
            self._forgotten[user_id] = None
            while len(self._forgotten) > self.max_pending:
                self._forgotten.popitem(last=False)
        else:
            self._forgotten.pop(user_id, None)

    def _trusted(self, marker: SessionRecord | None, conversation_id: str) -> bool:
        """Whether a copy marker vouches for a complete, fresh enough copy."""
        if marker is None or marker.conversation_id != conversation_id:
            return False
        try:
            data = json.loads(marker.payload)
            built = int(data["built_us"])
        except (ValueError, KeyError, TypeError):
            return False
        if data.get("hybrid_copy") != _MARKER_FORMAT or data.get("complete") is not True:
            return False
        if built < self._distrust_before_us:
            return False
        if self.cache_max_age is None:
            return True
        age = (_now_us() - built) / 1e6
        return age < self.cache_max_age * (1 - _JITTER * random.random())

    async def _cached_window(
        self, conversation_id: str, user_id: str | None, limit: int | None
    ) -> list[MessageRecord] | None:
        """The window from a trusted cached copy, or ``None`` when there is none."""
        marker_id = _marker_id(conversation_id)

        def read() -> Awaitable[list[MessageRecord]]:
            return self.cache._read_window(
                conversation_id=conversation_id, user_id=user_id, limit=limit
            )

        try:
            if not self._local:
                got = await asyncio.gather(
                    self._cached(lambda: self.cache._get_session(marker_id)),
                    self._cached(read),
                    return_exceptions=True,
                )
                for outcome in got:
                    if isinstance(outcome, BaseException):
                        raise outcome
                marker, window = got
            else:
                marker = await self._cached(lambda: self.cache._get_session(marker_id))
                if not self._trusted(marker, conversation_id):
                    return None
                window = await self._cached(read)
            if not self._trusted(marker, conversation_id):
                return None
            if not window:
                # A marker whose conversation is gone (evicted) vouches for nothing.
                owner = await self._cached(lambda: self.cache._conversation_owner(conversation_id))
                if owner is None:
                    return None
        except _CacheProblem:
            return None
        self._heat(conversation_id)
        return window

    def _heat(self, conversation_id: str) -> None:
        self._hot[conversation_id] = None
        self._hot.move_to_end(conversation_id)
        if len(self._hot) > _MAX_HOT:
            self._hot.popitem(last=False)

    async def _fill(
        self, conversation_id: str, owner: str, records: Sequence[MessageRecord]
    ) -> None:
        """Append records to the cached copy; raise :class:`_CacheProblem` if it cannot hold
        them or turns out not to be this conversation's copy."""
        # Copies: some tiers keep the records they are given and number them in place.
        copies = [replace(r, seq=0, user_id=None) for r in records]
        try:
            self.cache.check_storable(copies)
        except InvalidArgumentError as exc:
            self._inconsistent(conversation_id, f"the cache tier cannot hold a message: {exc}")
        for start in range(0, len(copies), _FILL_CHUNK):
            chunk = copies[start : start + _FILL_CHUNK]
            result = await self._cached(
                lambda chunk=chunk: self.cache._append_messages(
                    conversation_id, owner, chunk, enforce_owner=False
                )
            )
            if result.owner != owner:
                self._inconsistent(conversation_id, "the cache holds another user's conversation")
            if result.existing_ids:
                # Already there: fine if in this conversation (a retry, a racing writer). A
                # leftover elsewhere would leave this copy without the message; so would a
                # copy deleted meanwhile (then the rebuild that follows restores it).
                ids = list(result.existing_ids)
                found = await self._cached(lambda ids=ids: self.cache._get_messages(ids))
                if {r.id for r in found if r.conversation_id == conversation_id} != set(ids):
                    self._inconsistent(
                        conversation_id, "a message the cache reports as stored is not in it"
                    )

    def _inconsistent(self, conversation_id: str, why: str) -> None:
        logger.warning("hybrid memory: not caching conversation %s: %s", conversation_id[:64], why)
        raise _CacheProblem(why)

    async def _rebuild(self, conversation_id: str) -> tuple[str | None, list[MessageRecord] | None]:
        """Rebuild the cached copy from the persistent tier (the caller holds the lock).

        Returns the conversation's owner and, unless the cache failed before the persistent
        read, the whole conversation as the persistent tier holds it.
        """
        built_us = _now_us()  # before anything of the new copy is written (memcached ttl)
        token = secrets.token_hex(8)
        owner = await self._stored(lambda: self.persistent._conversation_owner(conversation_id))
        # Whatever is cached (a damaged copy, a bare claim) goes: the copy starts empty.
        if not await self._erase(conversation_id):
            return owner, None
        if owner is None:
            return None, []
        try:
            # The claim: an unfinished marker, which claims the conversation for its owner
            # (refused if the cache holds another user's) and vouches for nothing yet.
            claim = _marker(conversation_id, owner, built_us, token, complete=False)
            await self._cached(lambda: self.cache._put_session(claim))
        except _CacheProblem:
            await self._give_up(conversation_id)
            return owner, None
        # Claimed first, read second: a write the read misses reaches the copy by write-through.
        # Scoped to the owner: if the conversation changed hands meanwhile, nothing of the new
        # owner's is read (and the emptiness is checked below).
        records = await self._stored(
            lambda: self.persistent._read_window(
                conversation_id=conversation_id, user_id=owner, limit=None
            )
        )
        if not records:
            now = await self._stored(lambda: self.persistent._conversation_owner(conversation_id))
            if now != owner:
                await self._give_up(conversation_id)
                return now, None
        try:
            # Still this rebuild's claim? If not, another process deleted or claimed the copy
            # since: appending what may be stale to it would only be undone below.
            held = await self._cached(lambda: self.cache._get_session(claim.session_id))
            if not same_session(held, claim):
                return owner, records
            await self._fill(conversation_id, owner, records)
            marker = _marker(conversation_id, owner, built_us, token, complete=True)
            # Only over this rebuild's own claim: a copy deleted meanwhile (by another
            # process: a deletion, its own rebuild) may lack a write that landed after the
            # read above, or hold one deleted since.
            vouched = await self._cached(lambda: self.cache._replace_session(marker, claim))
        except _CacheProblem:
            vouched = False
        if vouched:
            self._heat(conversation_id)
        else:
            # What this rebuild appended may now sit in a copy another process claimed, and
            # hold words deleted since the read above: the copy goes, whoever claimed it
            # (their own vouching then fails), and the next read rebuilds it.
            await self._give_up(conversation_id)
        return owner, records

    async def _give_up(self, conversation_id: str) -> None:
        self._mark(conversation_id)
        if self._cache_usable():
            await self._erase(conversation_id)

    # ================================================================ messages

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        return await self._stored(lambda: self.persistent._conversation_owner(conversation_id))

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        try:
            result = await self._stored(
                lambda: self.persistent._append_messages(
                    conversation_id, user_id, records, enforce_owner=enforce_owner
                )
            )
            if records:
                through = await self._as_stored(conversation_id, records, result.existing_ids)
                if through:
                    await self._write_through(conversation_id, result.owner, through)
        except (OwnershipError, ConflictError, InvalidArgumentError):
            raise  # refused: nothing was written
        except BaseException:
            # A failed or cancelled call may have stored records that the cached copy lacks
            # (stored, then the answer lost; or stopped before the write-through).
            if records:
                self._mark(conversation_id)
            raise
        return result

    async def _as_stored(
        self, conversation_id: str, records: Sequence[MessageRecord], existing: frozenset[str]
    ) -> list[MessageRecord]:
        """The records as the persistent tier holds them in this conversation, in arrival
        order: the new ones, and the ones it had already (a retry whose first attempt
        stopped before the write-through) as stored. A different message stored under one
        of the ids (a conflict, which the caller reports) is not the conversation's."""
        new = [r for r in records if r.id not in existing]
        if not existing:
            return new
        stored = await self._stored(lambda: self.persistent._get_messages(list(existing)))
        mine = sorted((r for r in stored if r.conversation_id == conversation_id), key=_seq)
        return [*mine, *new]

    async def _write_through(
        self, conversation_id: str, owner: str, records: Sequence[MessageRecord]
    ) -> None:
        """Append stored records to the cached copy, if the cache holds the conversation.

        Records the persistent tier already had in this conversation go too: a retried write
        whose first attempt stopped before this step still reaches the copy.
        """
        if not self._cache_usable():
            self._mark(conversation_id)
            return
        await self._drain()
        try:
            if conversation_id in self._hot:
                # Recently cached: append straight away. Should the copy be gone meanwhile,
                # the append leaves a bare claim without a marker, which nobody trusts and the
                # next rebuild deletes; the check below only spares the cache conversations
                # nobody reads.
                self._hot.move_to_end(conversation_id)
            else:
                cached_owner = await self._cached(
                    lambda: self.cache._conversation_owner(conversation_id)
                )
                if cached_owner is None:
                    return  # not cached, and no rebuild has claimed it
                if cached_owner != owner:
                    self._inconsistent(
                        conversation_id, "the cache holds another user's conversation"
                    )
            await self._fill(conversation_id, owner, records)
        except _CacheProblem:
            await self._invalidate(conversation_id)

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        return await self._stored(lambda: self.persistent._get_messages(ids))

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        conv = conversation_id
        if conv is not None and self._cache_usable():
            await self._drain()
            if conv not in self._pending:
                window = await self._cached_window(conv, user_id, limit)
                if window is not None:
                    self._looked_up(True)
                    return window
            contended = self._locks.busy(conv)
            async with self._locks.hold(conv):
                if contended and conv not in self._pending:
                    # Another task rebuilt the copy while this one waited.
                    window = await self._cached_window(conv, user_id, limit)
                    if window is not None:
                        self._looked_up(True)
                        return window
                self._looked_up(False)
                if self._cache_usable():
                    owner, records = await self._rebuild(conv)
                    if records is not None:
                        return _slice(records, owner, user_id, limit)
        elif conv is not None:
            self._looked_up(False)
        return await self._stored(
            lambda: self.persistent._read_window(
                conversation_id=conversation_id, user_id=user_id, limit=limit
            )
        )

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        # Marked before the persistent deletion: no copy is trusted here from now on, not
        # even one rebuilt while the deletion runs.
        self._mark(conversation_id)
        try:
            return await self._stored(
                lambda: self.persistent._delete_messages(conversation_id, keep_roles)
            )
        finally:
            await self._invalidate(conversation_id, mark=False)

    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        persistent = self.persistent
        if not isinstance(persistent, MessagePruning):
            raise CapabilityError(
                "the persistent tier cannot delete single messages",
                backend=self.backend_name,
                operation="delete_message_ids",
            )
        self._mark(conversation_id)  # as for _delete_messages
        try:
            return await self._stored(lambda: persistent._delete_message_ids(conversation_id, ids))
        finally:
            await self._invalidate(conversation_id, mark=False)

    # ================================================================ memories

    # Memory entries and sessions live in the persistent tier alone: it decides ownership
    # in its own atomic write, and the cache tier holds nothing of them to follow.

    async def _put_memory(self, record: MemoryRecord) -> None:
        await self._stored(lambda: self.persistent._put_memory(record))

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        return await self._stored(lambda: self.persistent._get_memory(memory_id))

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        return await self._stored(lambda: self.persistent._query_memories(flt))

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        return await self._stored(lambda: self.persistent._delete_memory(memory_id, user_id))

    async def _purge_expired(self, now_us: int) -> int:
        return await self._stored(lambda: self.persistent._purge_expired(now_us))

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        await self._stored(lambda: self.persistent._put_session(record))

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        return await self._stored(lambda: self.persistent._get_session(session_id))

    async def _replace_session(self, record: SessionRecord, expected: SessionRecord) -> bool:
        return await self._stored(lambda: self.persistent._replace_session(record, expected))

    async def _get_markers(
        self, user_id: str | None, conversation_ids: Sequence[str]
    ) -> list[SessionRecord]:
        return await self._stored(lambda: self.persistent._get_markers(user_id, conversation_ids))

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        return await self._stored(
            lambda: self.persistent._latest_session(
                user_id, conversation_id, active_only=active_only
            )
        )

    # ================================================================ search and statistics

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        return await self._stored(lambda: self.persistent._text_search(request))

    async def _statistics(self, user_id: str) -> dict[str, object]:
        return await self._stored(lambda: self.persistent._statistics(user_id))

    async def _store_counts(self) -> dict[str, int]:
        return await self._stored(self.persistent._store_counts)

    async def _storage_bytes(self) -> int | None:
        return await self._stored(self.persistent._storage_bytes)

    def _looked_up(self, hit: bool) -> None:
        self._lookups["hit" if hit else "miss"] += 1
        self._meter.cache(hit)

    async def store_statistics(self) -> dict[str, Any]:
        """The persistent tier's store (see :meth:`MemoryBackend.store_statistics`), with
        ``cache``: the cache tier's own figures, and ``cache_requests``: this object's
        window reads answered from the cache (``hit``) or not (``miss``) and ``hit_rate``."""
        out = await super().store_statistics()
        tier = self.cache
        if tier.supports(Capability.LISTING):
            out["cache"] = await tier.store_statistics()
        else:
            nbytes = await tier._run("store_statistics", tier._storage_bytes)
            out["cache"] = {"backend": tier.backend_name, "storage_bytes": nbytes}
        hits, misses = self._lookups["hit"], self._lookups["miss"]
        rate = hits / (hits + misses) if hits + misses else None
        out["cache_requests"] = {"hit": hits, "miss": misses, "hit_rate": rate}
        return out

    # ================================================================ vectors (persistent tier)

    def set_embedding_model(self, embedding_model: Any) -> None:
        """Use another embedding model, here and in the persistent tier (before connecting)."""
        super().set_embedding_model(embedding_model)
        self.persistent.set_embedding_model(self.embedder)

    def _vectors(self) -> VectorPrimitives:
        tier = self.persistent
        if not isinstance(tier, VectorPrimitives):
            raise CapabilityError(
                f"{type(tier).__name__} keeps no vectors",
                backend=self.backend_name,
                operation="vector_search",
            )
        return tier

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        return await self._stored(
            lambda: self._vectors()._claim_vector_space(space, replace=replace)
        )

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        await self._stored(lambda: self._vectors()._put_vectors(kind, items))

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        return await self._stored(lambda: self._vectors()._vector_search(request, vector))

    # ================================================================ whole-store operations

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        # Listed before the deletion, which leaves nothing to list.
        conversations = await self._user_conversations(user_id)
        for conv in conversations:
            self._mark(conv)
        try:
            # The tier's primitive: the public call's adjustments (archive states are no
            # sessions) are made once, by this store's own forget_user.
            return await self._stored(lambda: self.persistent._forget_user(user_id))
        finally:
            for start in range(0, len(conversations), _DRAIN_BATCH):
                chunk = conversations[start : start + _DRAIN_BATCH]
                await asyncio.gather(*(self._invalidate(c, mark=False) for c in chunk))
            await self._forget_cached_user(user_id)

    async def _compact(self) -> None:
        await self.persistent.compact()
        with contextlib.suppress(_CacheProblem):  # logged; the cache holds only copies
            await self._cached(self.cache.compact, primitive=False)

    async def _user_conversations(self, user_id: str) -> list[str]:
        async def listing() -> list[str]:
            return [
                str(pair[0])  # type: ignore[index]
                async for batch in self.persistent._export("conversations", user_id)
                for pair in batch
            ]

        return await self._stored(listing)

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        raw = self.persistent.export_batches(kind, user_id, include_expired=True)
        async with contextlib.aclosing(raw) as batches:
            async for batch in batches:
                yield batch
