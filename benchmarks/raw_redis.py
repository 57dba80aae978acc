"""Raw ``redis.asyncio`` baselines for ``RedisMemory`` in :mod:`benchmarks.throughput`.

Two drivers, registered for ``redis://`` and ``rediss://`` URLs when this module is imported:

:class:`ScriptsDriver` ("redis.asyncio scripts") runs the library's own Lua scripts
(``bruno_memstore.backends.redis.scripts``) with ``EVALSHA`` on the same key layout and with the
same argument values (analysed text included, computed inside the timing as the library
does). It is the analogue of the other engines' raw drivers, which execute the library's SQL:

* ``store_one``: the append script for one message: one round trip;
* ``store_batch``: the id lookup, then the append script for the whole batch;
* ``read_rows``: the user's newest 20 messages (the window script);
* ``search_rows``: the BM25 script, ties broken and the top 10 kept as the library does.

What the library adds on top: validation, bruno-core models, conflict checks, retries,
metrics.

:class:`PlainDriver` ("redis.asyncio plain") is the floor: a message hash and an order zset
per user, written with plain commands (``HSET`` + ``ZADD`` in one ``MULTI``/``EXEC``; one
pipelined transaction per batch), read with ``ZRANGE`` + ``HMGET``, no ownership rule, no
idempotency, no index: its search scans every message of the user.

:class:`ClusterPlainDriver` ("redis.asyncio cluster plain") is that floor on a Redis Cluster
(``redis+cluster://``): the same commands on the user's slot, sent in one pipeline with
``WAIT 1`` when the user's master has a replica, as ``RedisMemory`` confirms its writes there.

All work under a prefix of their own and delete their keys on close::

    python -m benchmarks.throughput "redis://127.0.0.1:6379/0?prefix=bench-1"

(``throughput`` must import this module; ``python -m benchmarks.raw_redis`` does both.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import redis.asyncio as aioredis
from bruno_core.models.message import Message
from redis.asyncio.cluster import RedisCluster

from bruno_memstore.backends.redis.backend import (
    _BM25,
    _append_args,
    _filter_json,
    _message,
    _user_messages,
)
from bruno_memstore.backends.redis.keys import RedisKeys, ts_hex
from bruno_memstore.backends.redis.scripts import SOURCES
from bruno_memstore.models import (
    MemoryFilter,
    MessageRecord,
    SearchHit,
    hit_order,
    message_to_record,
)
from bruno_memstore.models import record_to_message as _to_message
from bruno_memstore.search import query_words, terms
from bruno_memstore.url import MemoryURL, redact_url

from .throughput import CONTEXT_LIMIT, SEARCH_LIMIT, RawDriver, app, register_raw_driver

__all__ = ["ClusterPlainDriver", "PlainDriver", "ScriptsDriver"]


class _RedisRaw(RawDriver):
    """Connection set-up shared by both drivers: one client, its default pool."""

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        address = url.raw.split("?", 1)[0]
        self.client = aioredis.Redis.from_url(address, decode_responses=True)
        self.prefix = f"bench-raw-{uuid.uuid4().hex[:10]}"
        self.keys = RedisKeys(self.prefix)
        self.where = redact_url(address)

    async def close(self) -> None:
        doomed = []
        for pattern in (f"{self.prefix}:*", f"{{{self.prefix}:*"):
            doomed += [key async for key in self.client.scan_iter(match=pattern, count=1000)]
        for start in range(0, len(doomed), 1000):
            await self.client.delete(*doomed[start : start + 1000])
        await self.client.aclose()


class ScriptsDriver(_RedisRaw):
    """The library's Lua scripts called directly with ``EVALSHA``."""

    name: ClassVar[str] = "redis.asyncio scripts"

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        await super().open(url, workdir)
        self.scripts = {}
        for name in ("append", "get_messages", "read_user", "search"):
            script = self.client.register_script(SOURCES[name])
            await self.client.script_load(script.script)
            self.scripts[name] = script

    async def _eval(self, name: str, args: list[Any]) -> Any:
        return await self.scripts[name](args=[self.prefix, *args])

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        rec = message_to_record(message, conv)
        # Indexed as it is written: these scripts alone never index waiting messages.
        await self._eval("append", _append_args(conv, user, True, 0, [rec], defer=False))

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        recs = [message_to_record(m, conv) for m in messages]
        await self._eval("get_messages", [r.id for r in recs])
        await self._eval("append", _append_args(conv, user, True, 0, recs))

    async def read_rows(self, user: str) -> list[Any]:
        rows = _user_messages(await self._eval("read_user", [user, CONTEXT_LIMIT]), user)
        rows.reverse()  # newest first, as the harness expects raw rows
        return rows

    async def search_rows(self, user: str, query: str) -> list[Any]:
        words = list(dict.fromkeys(terms(query)))
        if not words:
            return []
        flt = _filter_json(MemoryFilter(user_id=user))
        reply = await self._eval(
            "search", [user, SEARCH_LIMIT, "m", "", _BM25.k1, _BM25.b, flt, *words]
        )
        hits = [
            SearchHit(
                "message",
                float(reply[i + 1]),
                message=_message(reply[i + 4], reply[i + 3], reply[i + 2], user),
            )
            for i in range(0, len(reply), 5)
        ]
        hits.sort(key=hit_order)
        return [h.message for h in hits[:SEARCH_LIMIT]]

    def to_messages(self, rows: list[Any]) -> list[Message]:
        return [_to_message(r) for r in rows]


class PlainDriver(_RedisRaw):
    """Plain commands, the least a message store can do: no ownership, no index."""

    name: ClassVar[str] = "redis.asyncio plain"

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        await super().open(url, workdir)
        self.arrivals = 0  # arrival numbers, kept by this one process

    def _row(self, conv: str, message: Message) -> tuple[str, str, str]:
        rec = message_to_record(message, conv)
        self.arrivals += 1
        member = f"{ts_hex(rec.ts_us)}{self.arrivals:012x}{rec.id}"
        body = json.dumps(
            [conv, rec.role, rec.content, rec.message_type, rec.timestamp, rec.metadata],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return rec.id, member, body

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        mid, member, body = self._row(conv, message)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.user(user, "b"), mid, body)
            pipe.zadd(self.keys.user(user, "o"), {member: 0})
            await pipe.execute()

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        rows = [self._row(conv, m) for m in messages]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.user(user, "b"), mapping={mid: body for mid, _, body in rows})
            pipe.zadd(self.keys.user(user, "o"), {member: 0 for _, member, _ in rows})
            await pipe.execute()

    async def read_rows(self, user: str) -> list[Any]:
        members = await self.client.zrange(self.keys.user(user, "o"), -CONTEXT_LIMIT, -1)
        bodies = await self.client.hmget(self.keys.user(user, "b"), [m[28:] for m in members])
        rows = list(zip(members, bodies, strict=True))
        rows.reverse()
        return rows

    async def search_rows(self, user: str, query: str) -> list[Any]:
        # Without an index: read every message of the user, count the query words it holds.
        words = query_words(query)
        if not words:
            return []
        bodies = await self.client.hgetall(self.keys.user(user, "b"))
        members = {m[28:]: m for m in await self.client.zrange(self.keys.user(user, "o"), 0, -1)}
        scored = []
        for mid, body in bodies.items():
            text = json.loads(body)[2].casefold()
            score = sum(1 for w in words if w in text)
            if score:
                scored.append((-score, members[mid], body))
        scored.sort()
        return [(member, body) for _, member, body in scored[:SEARCH_LIMIT]]

    def to_messages(self, rows: list[Any]) -> list[Message]:
        out = []
        for member, body in rows:
            conv, role, content, mtype, timestamp, metadata = json.loads(body)
            rec = MessageRecord(
                id=member[28:],
                conversation_id=conv,
                role=role,
                content=content,
                message_type=mtype,
                timestamp=timestamp,
                ts_us=0,
                metadata=metadata,
            )
            out.append(_to_message(rec))
        return out


class ClusterPlainDriver(PlainDriver):
    """:class:`PlainDriver`'s commands on a cluster, each write confirmed by a replica."""

    name: ClassVar[str] = "redis.asyncio cluster plain"

    async def open(self, url: MemoryURL, workdir: Path) -> None:
        address = url.raw.split("?", 1)[0].replace("+cluster", "", 1)
        self.client = RedisCluster.from_url(address, decode_responses=True)
        await self.client.initialize()
        self.prefix = f"bench-raw-{uuid.uuid4().hex[:10]}"
        self.keys = RedisKeys(self.prefix)
        self.where = redact_url(url.raw.split("?", 1)[0])
        self.arrivals = 0
        self.replicas: dict[str, int] = {}

    async def _write(self, user: str, rows: list[tuple[str, str, str]]) -> None:
        bodies, order = self.keys.user(user, "b"), self.keys.user(user, "o")
        node = self.client.get_node_from_key(bodies)
        if node.name not in self.replicas:
            info = await self.client.info("replication", target_nodes=node)
            self.replicas[node.name] = min(1, int(info.get("connected_slaves", 0)))
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(bodies, mapping={mid: body for mid, _, body in rows})
        pipe.zadd(order, {member: 0 for _, member, _ in rows})
        if self.replicas[node.name]:
            pipe.execute_command("WAIT", 1, 1000, target_nodes=node)
        await pipe.execute()

    async def store_one(self, user: str, conv: str, message: Message) -> None:
        await self._write(user, [self._row(conv, message)])

    async def store_batch(self, user: str, conv: str, messages: Sequence[Message]) -> None:
        await self._write(user, [self._row(conv, m) for m in messages])

    async def close(self) -> None:
        doomed = []
        for node in self.client.get_primaries():
            doomed += [
                key
                async for key in self.client.scan_iter(
                    match=f"{{{self.prefix}:*", count=1000, target_nodes=node
                )
            ]
        for key in doomed:  # keys of many slots: one call each
            await self.client.delete(key)
        await self.client.aclose()


register_raw_driver("redis+cluster", ClusterPlainDriver)
register_raw_driver("rediss+cluster", ClusterPlainDriver)
register_raw_driver("redis", ScriptsDriver)
register_raw_driver("redis", PlainDriver)
register_raw_driver("rediss", ScriptsDriver)
register_raw_driver("rediss", PlainDriver)


if __name__ == "__main__":
    app()
