"""The kit's key-value store over memcached's commands (``aiomcache``), with expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiomcache.exceptions import ClientException

from ..kit.kv import CAS_ATTEMPTS, KeyValueStore
from .client import HardenedClient

__all__ = ["Store"]

_MULTI_GET = 100  # keys per get command
_MONTH = 30 * 24 * 3600  # memcached reads a larger exptime as a Unix timestamp
_PARALLEL = 32  # commands in flight at once for bulk deletes


class Store(KeyValueStore):
    """One memcached: string keys, values up to its 1 MB item limit, expiry."""

    item_limit = 1_000_000  # memcached's default item limit is 1 MiB

    def __init__(self, client: HardenedClient, *, ttl: int | None) -> None:
        self.client = client
        self.ttl = ttl

    def exptime(self) -> int:
        """The exptime argument for a write now (0: never expires)."""
        if not self.ttl:
            return 0
        return self.ttl if self.ttl <= _MONTH else int(time.time()) + self.ttl

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _MULTI_GET):
            chunk = [k.encode() for k in unique[start : start + _MULTI_GET]]
            values = await self.client.multi_get(*chunk)
            out.update((k.decode(), v) for k, v in zip(chunk, values, strict=True) if v is not None)
        return out

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(key.encode())

    async def gets(self, key: str) -> tuple[bytes | None, int | None]:
        value, token = await self.client.gets(key.encode())
        return value, token

    async def add(self, key: str, value: bytes) -> bool:
        return await self.client.add(key.encode(), value, exptime=self.exptime())

    async def set(self, key: str, value: bytes) -> None:
        if not await self.client.set(key.encode(), value, exptime=self.exptime()):
            raise ClientException("memcached refused to store a value", key.encode())

    async def cas(self, key: str, value: bytes, token: int) -> bool:
        return await self.client.cas(key.encode(), value, token, exptime=self.exptime())

    async def append(self, key: str, value: bytes) -> bool:
        return await self.client.append(key.encode(), value)

    async def delete(self, *keys: str) -> None:
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _PARALLEL):
            batch = unique[start : start + _PARALLEL]
            await asyncio.gather(*(self.client.delete(k.encode()) for k in batch))

    async def delete_if_unchanged(self, key: str, token: int) -> bool | None:
        return await self.client.delete_if_unchanged(key.encode(), token)

    async def touch(self, *keys: str) -> None:
        if self.ttl:
            await asyncio.gather(*(self.client.touch(k.encode(), self.exptime()) for k in keys))

    async def incr(self, key: str, by: int) -> int:
        for _ in range(CAS_ATTEMPTS):
            value = await self.client.incr_or_none(key.encode(), by)
            if value is not None:
                return value
            await self.client.add(key.encode(), b"0", exptime=self.exptime())
        raise ClientException("counter vanished repeatedly", key.encode())
