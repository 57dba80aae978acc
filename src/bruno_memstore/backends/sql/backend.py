"""``SQLMemory``: the storage primitives of every SQL engine, as plans run by the engine.

Each primitive builds one plan (:mod:`.plans`, :mod:`.append`) over the engine's
:class:`~.dialect.Dialect` and hands it to :meth:`SQLMemory._perform`, which the engine
implements: where the plan runs (a writer thread, a pooled connection) and in what
transaction. Concurrent appends share one transaction through a
:class:`~..kit.committer.GroupCommitter` where the engine sets one up (:attr:`_committer`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any, ClassVar, Literal, TypeVar

from ...base import MemoryBackend, archive_marker
from ...capabilities import DATABASE, Capability
from ...errors import BackendError, BackendUnavailableError
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
)
from ...primitives import AppendResult, ExportKind, MessagePruning, VectorPrimitives, markers_of
from ..kit.committer import GroupCommitter
from . import plans
from .append import Append, Outcome, append_group
from .dialect import Dialect
from .steps import Plan

__all__ = ["READS", "Mode", "SQLMemory"]

T = TypeVar("T")

Mode = Literal["point", "read", "scan", "write", "erase"]
"""How a plan runs: ``point`` (a read of a few rows by an index: an owner, a session, a
window of at most :data:`POINT_WINDOW` messages), ``read`` (another quick read), ``scan`` (a
read whose time grows with the user's data: searches, statistics, export pages), ``write``
(in a write transaction), ``erase`` (a write that deletes records, after which some engines
clean up)."""

READS: frozenset[str] = frozenset({"point", "read", "scan"})
POINT_WINDOW = 100

_EXPORT_PAGE = 500
_ROUNDS = 5  # an append whose conversation another transaction claimed meanwhile runs again


class SQLMemory(MemoryBackend, VectorPrimitives, MessagePruning):
    """The SQL family's shared backend: subclass it with a dialect and a :meth:`_perform`."""

    capabilities: ClassVar[frozenset[Capability]] = DATABASE | {
        Capability.VECTORS,
        Capability.PRUNING,
    }

    _sql: Dialect
    """The engine's dialect (an engine may replace it when it connects)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._committer: GroupCommitter[Append, AppendResult] | None = None

    # ================================================================ the engine's part

    @abstractmethod
    async def _perform(self, mode: Mode, make_plan: Callable[[], Plan[T]]) -> T:
        """Run the plan ``make_plan()`` makes, in the way ``mode`` says; return its result."""

    def _plan(self, mode: Mode, plan: Callable[..., Plan[T]], *args: Any) -> Any:
        return self._perform(mode, partial(plan, self._sql, *args))

    # ================================================================ messages

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        return await self._plan("point", plans.conversation_owner, conversation_id)

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        request = Append(conversation_id, user_id, records, enforce_owner)
        if self._committer is not None and self._joins_group(request):
            return await self._committer.submit(request)
        for _round in range(_ROUNDS):
            (outcome,) = await self._write_appends([request])
            if isinstance(outcome, Exception):
                raise outcome
            if outcome is not None:
                return outcome
        raise _undetermined()

    def _joins_group(self, request: Append) -> bool:
        """Whether an append waits for a group commit (rather than running on its own)."""
        return True

    async def _write_appends(self, appends: Sequence[Append]) -> list[Outcome]:
        """Run appends in one write transaction (a group commit's batch)."""
        return await self._plan("write", append_group, appends)

    def _new_committer(self, **options: Any) -> GroupCommitter[Append, AppendResult]:
        """A group committer of appends (engines call it when they connect)."""
        defaults: dict[str, Any] = {
            "keys": lambda a: (r.id for r in a.records),
            "weight": lambda a: len(a.records),
            "exhausted_error": _undetermined,
            "closed_error": partial(_interrupted, self.backend_name),
        }
        return GroupCommitter(self._write_appends, **{**defaults, **options})

    async def _stop_committer(self, grace: float = 30.0) -> None:
        """Let the group committer finish (for up to ``grace`` seconds), then drop it."""
        committer, self._committer = self._committer, None
        if committer is not None:
            await committer.close(grace)

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        return await self._plan("read", plans.get_messages, ids)

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        return await self._plan(
            _window_mode(limit), plans.read_window, conversation_id, user_id, limit
        )

    async def _read_window_and_markers(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> tuple[list[MessageRecord], list[SessionRecord] | None]:
        mode = _window_mode(limit)
        if conversation_id is not None:
            marker = archive_marker(conversation_id)
            return await self._plan(
                mode, plans.read_window_and_marker, conversation_id, user_id, limit, marker
            )
        window = await self._plan(mode, plans.read_window, None, user_id, limit)
        convs = list(dict.fromkeys(r.conversation_id for r in window))
        return window, await self._get_markers(user_id, convs)

    async def _get_markers(
        self, user_id: str | None, conversation_ids: Sequence[str]
    ) -> list[SessionRecord]:
        if not conversation_ids:
            return []
        ids = [archive_marker(c) for c in conversation_ids]
        found = await self._plan("read", plans.get_sessions, ids)
        return markers_of(found, user_id)

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        return await self._plan("erase", plans.delete_messages, conversation_id, keep_roles)

    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        return await self._plan("erase", plans.delete_message_ids, conversation_id, ids)

    # ================================================================ memories

    async def _put_memory(self, record: MemoryRecord) -> None:
        await self._plan("write", plans.put_memory, record)

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        return await self._plan("read", plans.query_memories, flt)

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        return await self._plan("erase", plans.delete_memory, memory_id, user_id)

    async def _purge_expired(self, now_us: int) -> int:
        return await self._plan("erase", plans.purge_expired, now_us)

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        await self._plan("write", plans.put_session, record)

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        return await self._plan("point", plans.get_session, session_id)

    async def _replace_session(self, record: SessionRecord, expected: SessionRecord) -> bool:
        if record.payload == expected.payload:  # a row count cannot tell "as expected" then
            return await super()._replace_session(record, expected)
        return await self._plan("write", plans.replace_session, record, expected)

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        return await self._plan("read", plans.latest_session, user_id, conversation_id, active_only)

    # ================================================================ search and users

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        return await self._plan("scan", plans.text_search, request)

    async def _statistics(self, user_id: str) -> dict[str, object]:
        return await self._plan("scan", plans.statistics, user_id)

    async def _store_counts(self) -> dict[str, int]:
        return await self._plan("scan", plans.store_counts)

    async def _storage_bytes(self) -> int | None:
        return await self._plan("scan", plans.storage_bytes)

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        return await self._plan("erase", plans.forget_user, user_id)

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        after: Any = None
        while True:
            page, after = await self._plan(
                "scan", plans.export_page, kind, user_id, after, _EXPORT_PAGE
            )
            if not page:
                return
            yield page


def _interrupted(backend: str) -> BackendUnavailableError:
    return BackendUnavailableError(
        "the write was interrupted while the backend was shutting down",
        backend=backend,
        operation="store_message",
    )


def _undetermined() -> BackendError:
    return BackendError("the conversation's owner could not be determined")


def _window_mode(limit: int | None) -> Mode:
    """How a window of ``limit`` messages is read: a short one as a point read."""
    return "point" if limit is not None and limit <= POINT_WINDOW else "read"
