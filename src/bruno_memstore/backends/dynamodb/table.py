"""Calls on one DynamoDB table through an aiobotocore client: paging, batching in the
service's limits, unprocessed items sent again, transactions in chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from botocore.exceptions import ClientError

from .layout import INDEX, table_spec

__all__ = ["TXN_BYTES", "TXN_ITEMS", "Table", "error_code"]

_BATCH_GET = 100  # keys per BatchGetItem
_BATCH_WRITE = 25  # requests per BatchWriteItem
TXN_ITEMS = 100  # actions per TransactWriteItems
TXN_BYTES = 3_500_000  # bytes of item data per transaction (the service allows 4 MB)


def error_code(exc: BaseException) -> str:
    """The service's error code of a ``ClientError`` (``""`` for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


class Table:
    """One table, read with strong consistency wherever the service offers it."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    async def ensure(self, *, create: bool) -> None:
        """Create the table (on-demand billing) unless it exists; wait until it is active."""
        try:
            described = await self.client.describe_table(TableName=self.name)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException" or not create:
                raise
            try:
                created = await self.client.create_table(**table_spec(self.name))
                described = {"Table": created.get("TableDescription", {})}
            except ClientError as again:
                if error_code(again) != "ResourceInUseException":
                    raise
                described = await self.client.describe_table(TableName=self.name)
        for _ in range(600):
            if described["Table"].get("TableStatus") == "ACTIVE":
                return
            await asyncio.sleep(0.5)
            described = await self.client.describe_table(TableName=self.name)
        raise TimeoutError(f"table {self.name!r} did not become active")

    async def size_bytes(self) -> int | None:
        """The service's figure for the table's size (DynamoDB updates it every few hours)."""
        described = await self.client.describe_table(TableName=self.name)
        size = described["Table"].get("TableSizeBytes")
        return None if size is None else int(size)

    async def enable_ttl(self) -> bool:
        """Turn on expiry by the ``ttl`` attribute; ``False`` where the server has no TTL API."""
        try:
            await self.client.update_time_to_live(
                TableName=self.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
            )
        except ClientError as exc:
            code = error_code(exc)
            if code == "ValidationException" and "already enabled" in str(exc).lower():
                return True
            if code in ("UnknownOperationException", "ValidationException"):
                return False
            raise
        return True

    async def supports_transactions(self) -> bool:
        """Whether ``TransactWriteItems`` works here (a no-op condition check tells)."""
        probe = {"pk": {"S": "#probe"}, "sk": {"S": "#"}}
        check = {
            "TableName": self.name,
            "Key": probe,
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        try:
            await self.client.transact_write_items(TransactItems=[{"ConditionCheck": check}])
        except ClientError as exc:
            if error_code(exc) in ("UnknownOperationException", "UnrecognizedClientException"):
                return False
            raise
        return True

    async def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        found = await self.client.get_item(TableName=self.name, Key=key, ConsistentRead=True)
        return found.get("Item")

    async def get_many(self, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items of these keys that exist (any order)."""
        unique = list({(k["pk"]["S"], k["sk"]["S"]): k for k in keys}.values())
        out: list[dict[str, Any]] = []
        for start in range(0, len(unique), _BATCH_GET):
            request = {
                self.name: {"Keys": unique[start : start + _BATCH_GET], "ConsistentRead": True}
            }
            while request:
                answer = await self.client.batch_get_item(RequestItems=request)
                out += answer.get("Responses", {}).get(self.name, [])
                request = answer.get("UnprocessedKeys") or {}
        return out

    async def put(self, item: dict[str, Any], **condition: Any) -> None:
        await self.client.put_item(TableName=self.name, Item=item, **condition)

    async def update(self, **update: Any) -> dict[str, Any]:
        """One ``UpdateItem`` (``Key`` among the arguments); the attributes it returns."""
        answer = await self.client.update_item(TableName=self.name, **update)
        return answer.get("Attributes", {})

    async def delete(self, key: dict[str, Any], **condition: Any) -> dict[str, Any] | None:
        answer = await self.client.delete_item(TableName=self.name, Key=key, **condition)
        return answer.get("Attributes")

    async def delete_many(self, keys: Sequence[dict[str, Any]]) -> None:
        unique = list({(k["pk"]["S"], k["sk"]["S"]): k for k in keys}.values())
        for start in range(0, len(unique), _BATCH_WRITE):
            chunk = unique[start : start + _BATCH_WRITE]
            request = {self.name: [{"DeleteRequest": {"Key": k}} for k in chunk]}
            while request:
                answer = await self.client.batch_write_item(RequestItems=request)
                request = answer.get("UnprocessedItems") or {}

    async def transact(self, actions: Sequence[dict[str, Any]]) -> None:
        """One ``TransactWriteItems`` of ``actions`` (each ``{"Put": {...}}`` and so on)."""
        await self.client.transact_write_items(
            TransactItems=[
                {k: {"TableName": self.name, **v} for k, v in a.items()} for a in actions
            ]
        )

    async def page(self, *, index: bool = False, **query: Any) -> dict[str, Any]:
        """One page of a ``Query`` (on the owner index when ``index``): the service's answer."""
        args: dict[str, Any] = {"TableName": self.name, **query}
        if index:
            args["IndexName"] = INDEX
        else:
            args["ConsistentRead"] = True
        return await self.client.query(**args)

    async def query(
        self, *, index: bool = False, limit: int | None = None, **query: Any
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of a ``Query`` (on the owner index when ``index``), at most ``limit`` items."""
        args = dict(query)
        left = limit
        while True:
            if left is not None:
                args["Limit"] = left
            page = await self.page(index=index, **args)
            items = page.get("Items", [])
            if items:
                yield items
            if left is not None:
                left -= len(items)
                if left <= 0:
                    return
            if "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def scan(self, **scan: Any) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of a whole-table ``Scan``."""
        args: dict[str, Any] = {"TableName": self.name, "ConsistentRead": True, **scan}
        while True:
            page = await self.client.scan(**args)
            if page.get("Items"):
                yield page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
