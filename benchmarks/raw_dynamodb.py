"""The raw aiobotocore baseline for ``DynamoDBMemory`` in :mod:`benchmarks.throughput`.

:class:`AiobotocoreDriver` runs each benchmarked operation with an aiobotocore DynamoDB
client alone, on the library's own single-table layout
(``bruno_memstore.backends.dynamodb.layout``: keys, items, the table's definition) and with
the same requests:

* ``store_one`` / ``store_batch``: the id lookup (``BatchGetItem`` of the id guards), the
  conversation claim (``UpdateItem`` that reserves the seqs, ``ReturnValues=ALL_NEW``), then
  each message with its guard: one ``TransactWriteItems`` per chunk where the server has
  transactions (DynamoDB, moto), else a conditional ``PutItem`` of the guard and a
  ``PutItem`` of the message (dynalite);
* ``read_rows``: one ``Query`` of the conversation's messages, descending, ``Limit`` 20 (the
  library's user-wide window is one ``Query`` on the owner index, ``Limit`` 25: the user's
  newest messages and the archive markers above them);
* ``search_rows``: the user's messages read by ``Query`` and ranked by the kit's keyword
  index built for the query, as the library does (it reads per query, with no cache).

What the library adds on top: validation, the ownership and idempotency rules (a taken id
is completed or reported, a foreign claim refused), retries, metrics and bruno-core models.
Importing this module registers the driver for ``dynamodb://`` URLs; credentials come from
AWS's usual chain (``AWS_ACCESS_KEY_ID`` … for an emulator)::

    python -m benchmarks.raw_dynamodb --quick \\
        "dynamodb://bench_b1?region=us-east-1&endpoint=http://127.0.0.1:8000"

The raw driver works in a table of its own (``bench_raw_<random>``), deleted on close.
With ``--preload`` the users after the first are written into both tables by
:func:`bulk_store` (the same items, in ``BatchWriteItem``s), untimed, so that reads can be
measured at 100,000 messages on the slow emulators.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from aiobotocore.session import get_session
from bruno_core.models.message import Message

from bruno_memstore.backends.dynamodb.backend import DynamoDBMemory, _chunks, _pair_actions
from bruno_memstore.backends.dynamodb.layout import attr, claim_key, decode, guard_key
from bruno_memstore.backends.dynamodb.table import Table
from bruno_memstore.backends.kit.codec import MESSAGES
from bruno_memstore.backends.kit.keyword_index import KeywordIndex
from bruno_memstore.backends.kit.kv import loads
from bruno_memstore.models import MessageRecord, SearchRequest, message_to_record
from bruno_memstore.models import record_to_message as _to_message
from bruno_memstore.url import MemoryURL

from .throughput import (
    CONTEXT_LIMIT,
    PRELOADERS,
    SEARCH_LIMIT,
    RawDriver,
    app,
    register_raw_driver,
)

__all__ = ["AiobotocoreDriver"]


def _messages_of(conv: str, **query: Any) -> dict[str, Any]:
    return {
        "KeyConditionExpression": "pk = :p AND begins_with(sk, :m)",
        "ExpressionAttributeValues": {":p": attr(f"C#{conv}"), ":m": attr("M#")},
        "ConsistentRead": True,
        **query,
    }


async def _claimed_pairs(
    client: Any, table: str, user: str, conv: str, recs: list[MessageRecord]
) -> list[tuple[MessageRecord, list[dict[str, Any]]]]:
    """The conversation's claim (reserving the records' seqs), then each record placed with
    its items, as the library makes them."""
    claim = await client.update_item(
        TableName=table,
        Key=claim_key(conv),
        UpdateExpression="SET o = if_not_exists(o, :u), gpk = if_not_exists(gpk, :g), "
        "gsk = if_not_exists(gsk, :s) ADD n :k",
        ExpressionAttributeValues={
            ":u": attr(user),
            ":g": attr(f"U#{user}"),
            ":s": attr(f"C#{conv}"),
            ":k": attr(len(recs)),
        },
        ReturnValues="ALL_NEW",
    )
    last = decode(claim["Attributes"], "n")
    pairs = []
    for seq, rec in enumerate(recs, start=last - len(recs) + 1):
        rec.seq, rec.user_id = seq, user
        pairs.append((rec, DynamoDBMemory._pair_items(conv, rec)))
    return pairs


async def bulk_store(
    client: Any, table: str, user: str, conv: str, messages: Sequence[Message]
) -> None:
    """``--preload``: the items a store of ``messages`` writes (claim, guards, messages), in
    ``BatchWriteItem``s of 25 items, four at a time, untimed and unchecked."""
    recs = [message_to_record(m, conv) for m in messages]
    items = [
        i for _rec, pair in await _claimed_pairs(client, table, user, conv, recs) for i in pair
    ]

    async def write(chunk: list[dict[str, Any]]) -> None:
        request = {table: [{"PutRequest": {"Item": i}} for i in chunk]}
        while request:
            answer = await client.batch_write_item(RequestItems=request)
            request = answer.get("UnprocessedItems") or {}

    chunks = [items[i : i + 25] for i in range(0, len(items), 25)]
    for start in range(0, len(chunks), 4):
        await asyncio.gather(*(write(c) for c in chunks[start : start + 4]))


async def _preload_ours(memory: Any, user: str, conv: str, messages: Sequence[Message]) -> None:
    await bulk_store(memory.table.client, memory.table.name, user, conv, messages)


class AiobotocoreDriver(RawDriver):
    """The library's DynamoDB requests run by hand."""

    name: ClassVar[str] = "aiobotocore"

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        memory = DynamoDBMemory.from_url(url)  # only to read the URL as the library does
        self.stack = contextlib.AsyncExitStack()
        self.client: Any = await self.stack.enter_async_context(
            get_session().create_client(
                "dynamodb", region_name=memory.region or None, endpoint_url=memory.endpoint_url
            )
        )
        self.name_ = f"bench_raw_{uuid.uuid4().hex[:10]}"
        table = Table(self.client, self.name_)
        await table.ensure(create=True)
        self.transactions = await table.supports_transactions()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.delete_table(TableName=self.name_)
        await self.stack.aclose()

    async def _store(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        recs = [message_to_record(m, conv) for m in messages]
        keys = [guard_key(r.id) for r in recs]
        for start in range(0, len(keys), 100):  # BatchGetItem takes 100 keys
            chunk = keys[start : start + 100]
            await self.client.batch_get_item(
                RequestItems={self.name_: {"Keys": chunk, "ConsistentRead": True}}
            )
        pairs = await _claimed_pairs(self.client, self.name_, user, conv, recs)
        if self.transactions:
            for chunk in _chunks(pairs):
                actions = [a for p in chunk for a in _pair_actions(p)]
                await self.client.transact_write_items(
                    TransactItems=[
                        {k: {"TableName": self.name_, **v} for k, v in a.items()} for a in actions
                    ]
                )
            return
        for _rec, (*parts, guard, head) in pairs:
            for part in parts:
                await self.client.put_item(TableName=self.name_, Item=part)
            await self.client.put_item(
                TableName=self.name_, Item=guard, ConditionExpression="attribute_not_exists(pk)"
            )
            await self.client.put_item(TableName=self.name_, Item=head)

    async def preload(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        await bulk_store(self.client, self.name_, user, conv, messages)

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        await self._store(user, conv, [message])

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        await self._store(user, conv, messages)

    async def read_rows(self, user: str) -> list[Any]:
        page = await self.client.query(
            TableName=self.name_,
            **_messages_of(f"{user}-conv", ScanIndexForward=False, Limit=CONTEXT_LIMIT),
        )
        return page["Items"]

    async def search_rows(self, user: str, query: str) -> list[Any]:
        index = KeywordIndex()
        found: dict[str, MessageRecord] = {}
        args: dict[str, Any] = {"TableName": self.name_, **_messages_of(f"{user}-conv")}
        while True:
            page = await self.client.query(**args)
            for item in page["Items"]:
                rec = MESSAGES.from_row(loads(item["r"]["B"]))
                found[rec.id] = rec
                index.add_message(rec)
            if "LastEvaluatedKey" not in page:
                break
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        request = SearchRequest(user, query, frozenset({"message"}), limit=SEARCH_LIMIT)
        return [found[rid] for _kind, rid, _score in index.search(request)]

    def to_messages(self, rows: list[Any]) -> list[Message]:
        return [
            _to_message(
                r if isinstance(r, MessageRecord) else MESSAGES.from_row(loads(r["r"]["B"]))
            )
            for r in rows
        ]


register_raw_driver("dynamodb", AiobotocoreDriver)
PRELOADERS["dynamodb"] = _preload_ours


if __name__ == "__main__":
    app()
