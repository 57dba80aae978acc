"""``DynamoDBMemory``: the memory in one DynamoDB table, through aiobotocore.

The single-table layout is in ``layout``. Every write is conditional: a conversation is
claimed by an ``UpdateItem`` that creates it for its writer or checks its owner, a message id
is taken by a guard item created with ``attribute_not_exists``, memory entries and sessions
are replaced only by their owner. Where the server has ``TransactWriteItems`` (DynamoDB, moto)
a message and its guard, and a session and its conversation's claim, are written in one
transaction (messages in chunks within the transaction limits); elsewhere (dynalite) they are
written in an order that never leaves a message without its claim and its guard. Keyword
search is the shared in-process BM25 over the user's records, vector search the kit's exact
index over their vectors, both read per query (see docs/backends/dynamodb.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.loaders import Loader, create_loader

from ...base import MemoryBackend, archive_marker
from ...capabilities import DATABASE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import BackendUnavailableError, InvalidArgumentError, OwnershipError
from ...limits import Limits, Record
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
    memory_sort_key,
)
from ...primitives import (
    AppendResult,
    ExportKind,
    MessagePruning,
    VectorPrimitives,
    conversation_taken,
    markers_of,
    memory_taken,
    session_taken,
)
from ...url import MemoryURL, redact_url
from ..kit.codec import MEMORIES, MESSAGES, SESSIONS
from ..kit.hits import ranked_hits
from ..kit.kv import loads
from ..kit.settings import positive_seconds
from ..kit.vectors import MemoryKey, VectorIndex, nearest, vector_from_bytes, vector_to_bytes
from .layout import (
    HEAD,
    MARKS,
    attr,
    claim_key,
    decode,
    guard_key,
    key,
    message_items,
    owner_keys,
    part_keys,
    row_bytes,
    session_owner_keys,
)
from .table import TXN_BYTES, TXN_ITEMS, Table, error_code

__all__ = ["DynamoDBMemory"]

_ITEM_BYTES = 400 * 1024  # DynamoDB's item size limit
_ITEM_OVERHEAD = 16 * 1024  # keys, attributes and a vector beside the row
_MESSAGE_BYTES = 3_000_000  # the largest message row (cut into items of PART_BYTES)
_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)
_FAILED_CHECK = "ConditionalCheckFailedException"
_OWNED = "attribute_not_exists(o) OR o = :u"
_MARKER_ROOM = 5  # archive markers a user's window reads in the same Query
_URL_OPTIONS: dict[str, type] = {
    "region": str,
    "endpoint": str,
    "create_table": bool,
    "transactions": bool,
    "connect_timeout": float,
    "operation_timeout": float,
    "context_window": int,
}


_LOADERS: dict[Any, Loader] = {}  # by botocore data path


def _session() -> AioSession:
    """A new botocore session whose data loader is shared by every memory of the process
    (per data path): the loader keeps the service model and endpoint data it parsed, so a
    client after the first reads no JSON (about a tenth of a second each)."""
    session = get_session()
    path = session.get_config_variable("data_path")
    loader = _LOADERS.get(path)
    if loader is None:
        loader = _LOADERS[path] = create_loader(path)
    session.register_component("data_loader", loader)
    return session


Pair = tuple[MessageRecord, list[dict[str, Any]]]  # a message and its items (_pair_items)


def _cancelled(exc: ClientError) -> list[str]:
    """The per-action reason codes of a cancelled transaction."""
    return [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]


class DynamoDBMemory(MemoryBackend, VectorPrimitives, MessagePruning):
    """Conversations, sessions and memory entries in one DynamoDB table.

    Args:
        table: the table's name (created with on-demand billing unless ``create_table`` is
            false, for tables managed by infrastructure code; see the layout in the docs).
        region: the AWS region (default: the environment's, else ``us-east-1``).
        endpoint_url: another endpoint (DynamoDB Local, an emulator), or ``None`` for AWS.
        create_table: create the table and its index when missing (default ``True``).
        transactions: use ``TransactWriteItems``; ``None`` (default) asks the server once.
        aws_access_key_id, aws_secret_access_key: credentials; by default the usual chain
            (environment, profile, instance role).
        connect_timeout: seconds to wait for the endpoint.
        **options: see :class:`~bruno_memstore.base.MemoryBackend`.
    """

    backend_name: ClassVar[str] = "dynamodb"
    loop_bound = True  # aiobotocore's client
    capabilities = DATABASE | {Capability.VECTORS, Capability.PRUNING}
    # A message is cut into items (all in one transaction where there are transactions,
    # which take 4 MB); a memory entry or a session is one item of at most 400 KB.
    limits = Limits(max_record_bytes=_MESSAGE_BYTES, size_limit="a DynamoDB message's 3 MB")
    deletes_expired_itself = True  # where the table's TTL is on (``ttl``): within days

    def __init__(
        self,
        table: str = "bruno_memory",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        create_table: bool = True,
        transactions: bool | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        connect_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        options.setdefault("operation_timeout", 30.0)
        super().__init__(**options)
        if not isinstance(table, str) or not 3 <= len(table) <= 255:
            raise InvalidArgumentError("table", "a DynamoDB table name of 3 to 255 characters")
        self.table_name = table
        self.region = region
        self.endpoint_url = endpoint_url
        self.create_table = bool(create_table)
        self.transactions = transactions
        self.ttl_enabled = False
        self._credentials = {
            k: v
            for k, v in (
                ("aws_access_key_id", aws_access_key_id),
                ("aws_secret_access_key", aws_secret_access_key),
            )
            if v is not None
        }
        self._connect_timeout = positive_seconds("connect_timeout", connect_timeout)
        self._stack: contextlib.AsyncExitStack | None = None
        self._table: Table | None = None

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> DynamoDBMemory:
        """Build from ``dynamodb://table?region=…&endpoint=http://host:port`` (also
        ``create_table``, ``transactions``, ``connect_timeout``, ``operation_timeout``,
        ``context_window``); keyword options win."""
        if url.username or url.password is not None or url.port or url.path not in ("", "/"):
            raise InvalidArgumentError(
                "url", "expected dynamodb://table?region=...; credentials come from AWS's chain"
            )
        merged = url.apply_options(options, _URL_OPTIONS)
        if "endpoint" in merged:
            merged["endpoint_url"] = merged.pop("endpoint")
        return cls(url.host or "bruno_memory", **merged)

    def describe(self) -> str:
        where = f"endpoint {redact_url(self.endpoint_url)}" if self.endpoint_url else "AWS"
        return f"dynamodb table {self.table_name!r} ({where}, region {self.region or 'default'})"

    # ================================================================ errors and lifecycle

    def _is_transient(self, exc: BaseException) -> bool:
        # Throttling, and the service's own failures (HTTP 5xx), which AWS says to retry.
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return error_code(exc) in _THROTTLED or status >= 500
        return isinstance(exc, BotoConnectionError)

    def _is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, (TimeoutError, ReadTimeoutError))

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, (OSError, BotoConnectionError)) and not isinstance(
            exc, ReadTimeoutError
        )

    @property
    def table(self) -> Table:
        if self._table is None:
            raise BackendUnavailableError(
                "the memory is shut down", backend=self.backend_name, operation="connect"
            )
        return self._table

    async def _connect(self) -> None:
        stack = contextlib.AsyncExitStack()
        config = AioConfig(
            connect_timeout=self._connect_timeout,
            read_timeout=max(self.operation_timeout or 30.0, 5.0),
            retries={"max_attempts": 1},
        )
        client = await stack.enter_async_context(
            _session().create_client(
                "dynamodb",
                region_name=self.region or None,
                endpoint_url=self.endpoint_url,
                config=config,
                **self._credentials,
            )
        )
        table = Table(client, self.table_name)
        try:
            await table.ensure(create=self.create_table)
            if self.transactions is None:
                self.transactions = await table.supports_transactions()
            if self.create_table:
                self.ttl_enabled = await table.enable_ttl()
                self.deletes_expired_itself = self.ttl_enabled
        except Exception as exc:
            await stack.aclose()
            if isinstance(exc, (OSError, BotoConnectionError)):
                raise BackendUnavailableError(
                    f"cannot reach DynamoDB at {self.describe()}: {type(exc).__name__}: {exc}",
                    backend=self.backend_name,
                    operation="connect",
                    cause=exc,
                ) from exc
            raise
        self._stack, self._table = stack, table

    async def _close(self) -> None:
        stack, self._stack, self._table = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _record_size(self, record: Record) -> int:
        if isinstance(record, MessageRecord):
            return len(row_bytes(MESSAGES.row(record)))
        if isinstance(record, MemoryRecord):
            return len(row_bytes(MEMORIES.row(record)))
        return len(row_bytes(SESSIONS.row(record)))

    def _check_limits(self, record: Record) -> None:
        super()._check_limits(record)
        if not isinstance(record, MessageRecord):
            size = self._record_size(record)
            if size > _ITEM_BYTES - _ITEM_OVERHEAD:
                what = "memory_entry" if isinstance(record, MemoryRecord) else "session"
                raise InvalidArgumentError(
                    what, f"too large ({size:,} bytes) for DynamoDB's 400 KB item size limit"
                )

    # ================================================================ conversations

    async def _claim_item(self, conversation_id: str) -> dict[str, Any] | None:
        return await self.table.get(claim_key(conversation_id))

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        item = await self._claim_item(conversation_id)
        return decode(item, "o") if item else None

    def _claim_update(self, conversation_id: str, user_id: str, count: int, enforce: bool) -> dict:
        """An ``UpdateItem`` that claims the conversation and reserves ``count`` seqs."""
        update: dict[str, Any] = {
            "Key": claim_key(conversation_id),
            "UpdateExpression": "SET o = if_not_exists(o, :u), gpk = if_not_exists(gpk, :g), "
            "gsk = if_not_exists(gsk, :s) ADD n :k",
            "ExpressionAttributeValues": {
                ":u": attr(user_id),
                ":g": attr(f"U#{user_id}"),
                ":s": attr(f"C#{conversation_id}"),
                ":k": attr(count),
            },
        }
        if enforce:
            update["ConditionExpression"] = _OWNED
        return update

    def _taken(self, conversation_id: str, operation: str) -> OwnershipError:
        return conversation_taken(conversation_id, backend=self.backend_name, operation=operation)

    # ================================================================ messages

    async def _guards(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The guards of these message ids whose message is stored, by id."""
        guards = {
            decode(g, "pk")[2:]: g for g in await self.table.get_many(list(map(guard_key, ids)))
        }
        keys = [key("C", decode(g, "c"), decode(g, "k")) for g in guards.values()]
        present = {(decode(m, "pk"), decode(m, "sk")) for m in await self.table.get_many(keys)}
        return {
            i: g for i, g in guards.items() if (f"C#{decode(g, 'c')}", decode(g, "k")) in present
        }

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        existing = set(await self._guards([r.id for r in records])) if records else set()
        new = [r for r in records if r.id not in existing]
        if records and not new:
            owner = await self._conversation_owner(conversation_id)
            if owner is not None and enforce_owner and owner != user_id:
                raise self._taken(conversation_id, "store_message")
            return AppendResult(owner or user_id, frozenset(existing))
        # The claim comes first: no message is ever stored without its conversation's claim.
        try:
            claim = await self.table.update(
                **self._claim_update(conversation_id, user_id, len(new), enforce_owner),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == _FAILED_CHECK:
                raise self._taken(conversation_id, "store_message") from None
            raise
        owner, last = decode(claim, "o"), decode(claim, "n")
        pairs: list[Pair] = []
        for seq, rec in enumerate(new, start=last - len(new) + 1):
            placed = dataclasses.replace(rec, user_id=owner, seq=seq)
            pairs.append((placed, self._pair_items(conversation_id, placed)))
        existing |= await self._write_pairs(pairs)
        return AppendResult(owner, frozenset(existing))

    @staticmethod
    def _pair_items(conversation_id: str, rec: MessageRecord) -> list[dict[str, Any]]:
        """A message's parts, its id guard, then its head (the order of ordered writes)."""
        *parts, head = message_items(conversation_id, rec, row_bytes(MESSAGES.row(rec)))
        guard = {**guard_key(rec.id), "c": attr(conversation_id), "k": head["sk"]}
        return [*parts, guard, head]

    async def _write_pairs(self, pairs: list[Pair]) -> set[str]:
        """Store each message with its guard unless its id is taken; return the taken ids.

        With transactions a message, its parts and its guard are written whole or not at
        all, many messages per transaction. Without, the parts and the guard (conditional)
        go first and the head last: a crash in between leaves a guard without its message,
        which readers ignore and the next writer of that id completes (:meth:`_complete`).
        """
        taken: set[str] = set()
        if self.transactions:
            for chunk in _chunks(pairs):
                try:
                    await self.table.transact([a for p in chunk for a in _pair_actions(p)])
                except ClientError as exc:
                    if "ConditionalCheckFailed" not in _cancelled(exc):
                        raise
                    if len(chunk) == 1:
                        taken |= await self._complete(chunk[0])
                        continue
                    for pair in chunk:  # one message per transaction finds the taken ids
                        try:
                            await self.table.transact(_pair_actions(pair))
                        except ClientError as again:
                            if "ConditionalCheckFailed" not in _cancelled(again):
                                raise
                            taken |= await self._complete(pair)
            return taken
        for pair in pairs:
            *parts, guard, head = pair[1]
            for part in parts:
                await self.table.put(part)
            try:
                await self.table.put(guard, **_new_guard())
            except ClientError as exc:
                if error_code(exc) != _FAILED_CHECK:
                    raise
                taken |= await self._complete(pair)
                continue
            await self.table.put(head)
        return taken

    async def _complete(self, pair: Pair) -> set[str]:
        """The id of ``pair``, taken: if its guard names this conversation and the guard's
        message is missing (a writer died, or is writing it now), the message is written
        where the guard says, so an id has one place and is never stored twice."""
        rec, items = pair
        conversation = decode(items[-1], "pk")
        old = await self.table.get(guard_key(rec.id))
        if old is None or f"C#{decode(old, 'c')}" != conversation:
            return {rec.id}
        seq = int(decode(old, "k").rpartition("#")[2])
        *parts, _guard, head = self._pair_items(conversation[2:], dataclasses.replace(rec, seq=seq))
        for part in parts:
            await self.table.put(part)
        with contextlib.suppress(ClientError):  # written meanwhile by the guard's writer
            await self.table.put(head, **_new_guard())
        return {rec.id}

    async def _messages(self, heads: list[dict[str, Any]]) -> list[MessageRecord]:
        """The records of message heads (in their order), their parts joined back."""
        wanted = [k for h in heads for k in part_keys(h)]
        parts = {
            (decode(p, "pk"), decode(p, "sk")): p["r"]["B"]
            for p in (await self.table.get_many(wanted) if wanted else [])
        }
        out = []
        for head in heads:
            row = head["r"]["B"] + b"".join(
                parts[(k["pk"]["S"], k["sk"]["S"])] for k in part_keys(head)
            )
            out.append(_with_vector(MESSAGES.from_row(loads(row)), head))
        return out

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        guards = await self.table.get_many(list(map(guard_key, ids)))
        keys = [key("C", decode(g, "c"), decode(g, "k")) for g in guards]
        return await self._messages(await self.table.get_many(keys))

    async def _conversation_messages(
        self, conversation_id: str, limit: int | None = None
    ) -> list[MessageRecord]:
        """The conversation's newest ``limit`` messages (all when ``None``), oldest first."""
        return await self._newest(limit, f"C#{conversation_id}")

    async def _user_messages(self, user_id: str, limit: int | None) -> list[MessageRecord]:
        """The user's newest ``limit`` messages (all when ``None``), oldest first: one
        ``Query`` on the owner index, which lists a user's messages by ``(ts, seq)``."""
        return await self._newest(limit, f"U#{user_id}", index=True)

    async def _newest(
        self, limit: int | None, partition: str, *, index: bool = False
    ) -> list[MessageRecord]:
        """The newest ``limit`` messages of a conversation's partition, or of a user's in the
        owner index (``index``), oldest first."""
        heads: list[dict[str, Any]] = []
        pk, sk = ("gpk", "gsk") if index else ("pk", "sk")
        async for page in self.table.query(
            index=index,
            limit=limit,
            KeyConditionExpression=f"{pk} = :p AND begins_with({sk}, :m)",
            ExpressionAttributeValues={":p": attr(partition), ":m": attr("M#")},
            ScanIndexForward=limit is None,
        ):
            heads += page
        out = await self._messages(heads)
        if limit is not None:
            out.reverse()
        return out

    async def _owned(self, user_id: str, kind: str) -> list[dict[str, Any]]:
        """The user's items of ``kind`` (``C``, ``E``, ``S``; ``S`` with the archive markers,
        or ``M$`` for those alone) through the owner index."""
        out: list[dict[str, Any]] = []
        for prefix in {"S": ["S#", MARKS], MARKS: [MARKS]}.get(kind, [f"{kind}#"]):
            async for page in self.table.query(
                index=True,
                KeyConditionExpression="gpk = :g AND begins_with(gsk, :k)",
                ExpressionAttributeValues={":g": attr(f"U#{user_id}"), ":k": attr(prefix)},
            ):
                out += (i for i in page if decode(i, "o") == user_id)
        return out

    async def _user_window(
        self, user_id: str, limit: int | None
    ) -> tuple[list[MessageRecord], list[SessionRecord]]:
        """The user's newest ``limit`` messages and their archive markers. The markers sort
        right above the messages in the owner index: one descending ``Query`` reads both
        unless the user has more markers than :data:`_MARKER_ROOM`; then both are read apart,
        at once."""
        if limit is not None:
            page = await self.table.page(
                index=True,
                KeyConditionExpression="gpk = :g AND begins_with(gsk, :m)",
                ExpressionAttributeValues={":g": attr(f"U#{user_id}"), ":m": attr("M")},
                ScanIndexForward=False,
                Limit=limit + _MARKER_ROOM,
            )
            items = page.get("Items", [])
            heads = [i for i in items if decode(i, "gsk").startswith("M#")]
            if len(heads) >= limit or "LastEvaluatedKey" not in page:
                marks = [i for i in items if decode(i, "gsk").startswith(MARKS)]
                window = await self._messages(heads[:limit])
                window.reverse()
                return window, _sessions(marks, user_id)
        window, marks = await asyncio.gather(
            self._user_messages(user_id, limit), self._owned(user_id, MARKS)
        )
        return window, _sessions(marks, user_id)

    async def _all(self, kind: str) -> list[dict[str, Any]]:
        """Every item of ``kind`` (a scan of the table)."""
        out: list[dict[str, Any]] = []
        async for page in self.table.scan(
            FilterExpression="begins_with(pk, :k) AND sk = :h",
            ExpressionAttributeValues={":k": attr(f"{kind}#"), ":h": attr(HEAD)},
        ):
            out += page
        return out

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        window, _markers = await self._window(conversation_id, user_id, limit, markers=False)
        return window

    async def _read_window_and_markers(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> tuple[list[MessageRecord], list[SessionRecord] | None]:
        return await self._window(conversation_id, user_id, limit, markers=True)

    async def _window(
        self, conversation_id: str | None, user_id: str | None, limit: int | None, *, markers: bool
    ) -> tuple[list[MessageRecord], list[SessionRecord] | None]:
        """A window and, with ``markers``, the archive markers of its conversations, read at
        once: a user's newest messages beside their markers (two index ``Query``s), or a
        conversation's beside its claim (for the owner) and marker (one ``BatchGetItem``)."""
        if conversation_id is None:
            assert user_id is not None
            if not markers:
                return await self._user_messages(user_id, limit), None
            return await self._user_window(user_id, limit)
        keys = [claim_key(conversation_id)] if user_id is not None else []
        if markers:
            keys.append(key("S", archive_marker(conversation_id)))
        if not keys:
            return await self._conversation_messages(conversation_id, limit), None

        def readable(heads: list[dict[str, Any]]) -> bool:
            claims = [decode(h, "o") for h in heads if decode(h, "pk")[0] == "C"]
            return user_id is None or claims == [user_id]

        if limit is None and user_id is not None:  # a whole conversation: for its owner only
            heads = await self.table.get_many(keys)
            window = await self._conversation_messages(conversation_id) if readable(heads) else []
        else:
            heads, window = await asyncio.gather(
                self.table.get_many(keys), self._conversation_messages(conversation_id, limit)
            )
            window = window if readable(heads) else []
        by_kind = {decode(h, "pk")[0]: h for h in heads}
        if not markers:
            return window, None
        return window, _sessions([by_kind["S"]] if "S" in by_kind else [], None)

    async def _message_items(
        self, conversation_id: str, keep: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        """The conversation's message heads that ``keep`` does not keep."""
        doomed: list[dict[str, Any]] = []
        async for page in self.table.query(
            KeyConditionExpression="pk = :p AND begins_with(sk, :m)",
            ExpressionAttributeValues={":p": attr(f"C#{conversation_id}"), ":m": attr("M#")},
        ):
            doomed += (m for m in page if not keep(m))
        return doomed

    async def _drop_message_items(self, doomed: list[dict[str, Any]]) -> None:
        # Heads go before their parts and guards: a crash leaves parts and guards without
        # messages (ignored), never a message without its parts.
        await self.table.delete_many([{"pk": m["pk"], "sk": m["sk"]} for m in doomed])
        await self.table.delete_many([k for m in doomed for k in part_keys(m)])
        await self.table.delete_many([guard_key(decode(m, "id")) for m in doomed])

    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        wanted = set(ids)
        doomed = await self._message_items(conversation_id, lambda m: decode(m, "id") not in wanted)
        await self._drop_message_items(doomed)
        return len(doomed)

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        claim = await self._claim_item(conversation_id)
        if claim is None:
            return 0
        doomed = await self._message_items(
            conversation_id, lambda m: decode(m, "role") in keep_roles
        )
        # The claim goes last: a crash leaves a claimed conversation, never a message
        # without its claim.
        await self._drop_message_items(doomed)
        if not keep_roles:
            owner = decode(claim, "o")
            sessions = [
                {"pk": s["pk"], "sk": s["sk"]}
                for s in await self._owned(owner, "S")
                if SESSIONS.from_row(decode(s)).conversation_id == conversation_id
            ]
            await self.table.delete_many(sessions)
            await self.table.delete(claim_key(conversation_id))
        return len(doomed)

    # ================================================================ memories

    async def _put_memory(self, record: MemoryRecord) -> None:
        item = {
            **key("E", record.id),
            **owner_keys("E", record.user_id, record.id),
            "r": attr(row_bytes(MEMORIES.row(record))),
        }
        if record.vector is not None:
            item["v"] = attr(vector_to_bytes(record.vector))
        if record.expires_us is not None:
            item["x"] = attr(record.expires_us)
            item["ttl"] = attr(math.ceil(record.expires_us / 1_000_000))
        try:
            await self.table.put(
                item,
                ConditionExpression=_OWNED,
                ExpressionAttributeValues={":u": attr(record.user_id)},
            )
        except ClientError as exc:
            if error_code(exc) == _FAILED_CHECK:
                raise memory_taken(record.id) from None
            raise

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        item = await self.table.get(key("E", memory_id))
        return _memory(item) if item else None

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        if flt.ids:
            items = await self.table.get_many([key("E", i) for i in flt.ids])
        elif flt.user_id is not None:
            items = await self._owned(flt.user_id, "E")
        else:
            items = await self._all("E")
        # Expired entries stay until DynamoDB's TTL sweep removes them: the filter drops them.
        found = [r for r in map(_memory, items) if flt.matches(r)]
        found.sort(key=memory_sort_key)
        return found[: flt.limit]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        condition: dict[str, Any] = {"ReturnValues": "ALL_OLD"}
        if user_id is not None:
            condition["ConditionExpression"] = _OWNED
            condition["ExpressionAttributeValues"] = {":u": attr(user_id)}
        try:
            old = await self.table.delete(key("E", memory_id), **condition)
        except ClientError as exc:
            if error_code(exc) == _FAILED_CHECK:
                raise memory_taken(memory_id) from None
            raise
        return bool(old)

    async def _purge_expired(self, now_us: int) -> int:
        purged = 0
        async for page in self.table.scan(
            FilterExpression="begins_with(pk, :k) AND x <= :now",
            ExpressionAttributeValues={":k": attr("E#"), ":now": attr(now_us)},
        ):
            for item in page:
                with contextlib.suppress(ClientError):  # replaced meanwhile: kept
                    await self.table.delete(
                        {"pk": item["pk"], "sk": item["sk"]},
                        ConditionExpression="x <= :now",
                        ExpressionAttributeValues={":now": attr(now_us)},
                    )
                    purged += 1
        return purged

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        item = {
            **key("S", record.session_id),
            **session_owner_keys(record.user_id, record.session_id),
            "r": attr(row_bytes(SESSIONS.row(record))),
        }
        owned = {
            "ConditionExpression": _OWNED,
            "ExpressionAttributeValues": {":u": attr(record.user_id)},
        }
        claim = self._claim_update(record.conversation_id, record.user_id, 0, True)
        if self.transactions:
            try:
                await self.table.transact([{"Put": {"Item": item, **owned}}, {"Update": claim}])
            except ClientError as exc:
                reasons = _cancelled(exc)
                if reasons[:1] == ["ConditionalCheckFailed"]:
                    raise session_taken(record.session_id) from None
                if reasons[1:2] == ["ConditionalCheckFailed"]:
                    raise self._taken(record.conversation_id, "create_session") from None
                raise
            return
        # Without transactions: the session's owner is checked first, then the claim, then
        # the conditional write (a race lost to another user there leaves the claim).
        held = await self.table.get(key("S", record.session_id))
        if held is not None and decode(held, "o") != record.user_id:
            raise session_taken(record.session_id)
        try:
            await self.table.update(**claim)
        except ClientError as exc:
            if error_code(exc) == _FAILED_CHECK:
                raise self._taken(record.conversation_id, "create_session") from None
            raise
        try:
            await self.table.put(item, **owned)
        except ClientError as exc:
            if error_code(exc) == _FAILED_CHECK:
                raise session_taken(record.session_id) from None
            raise

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        item = await self.table.get(key("S", session_id))
        return SESSIONS.from_row(decode(item)) if item else None

    async def _replace_session(self, record: SessionRecord, expected: SessionRecord) -> bool:
        try:
            await self.table.update(
                Key=key("S", record.session_id),
                UpdateExpression="SET r = :r",
                ConditionExpression="r = :was AND o = :u",
                ExpressionAttributeValues={
                    ":r": attr(row_bytes(SESSIONS.row(record))),
                    ":was": attr(row_bytes(SESSIONS.row(expected))),
                    ":u": attr(expected.user_id),
                },
            )
        except ClientError as exc:
            if error_code(exc) == _FAILED_CHECK:
                return False
            raise
        return True

    async def _get_markers(
        self, user_id: str | None, conversation_ids: Sequence[str]
    ) -> list[SessionRecord]:
        items = await self.table.get_many([key("S", archive_marker(c)) for c in conversation_ids])
        return markers_of((SESSIONS.from_row(decode(item)) for item in items), user_id)

    # ================================================================ vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        where = key("V", "space")
        if replace and space is not None:
            # Every vector goes first, then the new space is recorded.
            async for page in self.table.scan(FilterExpression="attribute_exists(v)"):
                for item in page:
                    with contextlib.suppress(ClientError):  # deleted meanwhile
                        await self.table.update(
                            Key={"pk": item["pk"], "sk": item["sk"]},
                            UpdateExpression="REMOVE v",
                            ConditionExpression="attribute_exists(pk)",
                        )
            await self.table.put({**where, "r": attr(row_bytes(list(space)))})
            return space
        if space is not None:
            try:
                await self.table.put({**where, "r": attr(row_bytes(list(space)))}, **_new_guard())
                return space
            except ClientError as exc:
                if error_code(exc) != _FAILED_CHECK:
                    raise
        held = await self.table.get(where)
        return VectorSpace(*decode(held)) if held else None

    async def _put_vectors(self, kind: str, items: Sequence[Any]) -> None:
        if kind == "message":
            guards = await self.table.get_many([guard_key(i) for i, _v in items])
            where = {decode(g, "pk")[2:]: key("C", decode(g, "c"), decode(g, "k")) for g in guards}
        else:
            where = {i: key("E", i) for i, _v in items}
        for record_id, vector in items:
            if record_id not in where:
                continue
            with contextlib.suppress(ClientError):  # deleted meanwhile: skipped
                await self.table.update(
                    Key=where[record_id],
                    UpdateExpression="SET v = :v",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":v": attr(vector_to_bytes(vector))},
                )

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        """Exact cosine over the user's vectors, read for this query (the kit's index)."""
        messages: dict[str, MessageRecord] = {}
        memories: dict[str, MemoryRecord] = {}
        by_message, by_memory = VectorIndex(), VectorIndex()
        if "message" in request.kinds:
            for rec in await self._collect("messages", request.user_id):
                if rec.vector is not None:
                    messages[rec.id] = rec
                    by_message.put(rec.id, rec.vector, conversation=rec.conversation_id)
        if "memory" in request.kinds:
            for mem in await self._collect("memories", request.user_id):
                if mem.vector is not None:
                    memories[mem.id] = mem
                    by_memory.put(MemoryKey(mem), mem.vector)
        found = nearest(
            request,
            vector,
            messages=by_message if len(by_message) else None,
            memories=by_memory if len(by_memory) else None,
        )
        return ranked_hits(found, messages, memories)

    # ================================================================ export

    async def _storage_bytes(self) -> int | None:
        return await self.table.size_bytes()

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        if kind in ("memories", "sessions"):
            short = "E" if kind == "memories" else "S"
            items = await (self._owned(user_id, short) if user_id else self._all(short))
            if items:
                yield [_memory(i) if short == "E" else SESSIONS.from_row(decode(i)) for i in items]
            return
        claims = await (self._owned(user_id, "C") if user_id else self._all("C"))
        pairs = [(decode(c, "pk")[2:], decode(c, "o")) for c in claims]
        if kind == "conversations":
            if pairs:
                yield list(pairs)
            return
        for conversation_id, _owner in pairs:
            messages = await self._conversation_messages(conversation_id)
            if messages:
                yield list(messages)


def _with_vector(rec: Any, item: dict[str, Any]) -> Any:
    """``rec`` with the vector its item holds, if any."""
    if "v" in item:
        rec.vector = vector_from_bytes(item["v"]["B"])
    return rec


def _memory(item: dict[str, Any]) -> MemoryRecord:
    return _with_vector(MEMORIES.from_row(decode(item)), item)


def _sessions(items: list[dict[str, Any]], owner: str | None) -> list[SessionRecord]:
    """The session records of items (those of ``owner`` when given)."""
    return [SESSIONS.from_row(decode(i)) for i in items if owner is None or decode(i, "o") == owner]


def _new_guard() -> dict[str, Any]:
    return {"ConditionExpression": "attribute_not_exists(pk)"}


def _pair_actions(pair: Pair) -> list[dict[str, Any]]:
    *parts, guard, head = pair[1]
    return [
        *({"Put": {"Item": p}} for p in parts),
        {"Put": {"Item": guard, **_new_guard()}},
        {"Put": {"Item": head}},
    ]


def _chunks(pairs: list[Pair]) -> list[list[Pair]]:
    """Pairs cut into transactions within the item and size limits."""
    out: list[list[tuple[str, dict, dict]]] = []
    size = TXN_BYTES
    count = TXN_ITEMS
    for pair in pairs:
        weight = sum(len(i.get("r", {}).get("B", b"")) + 512 for i in pair[1])
        if count + len(pair[1]) > TXN_ITEMS or size + weight > TXN_BYTES:
            out.append([])
            size = count = 0
        out[-1].append(pair)
        size += weight
        count += len(pair[1])
    return out
