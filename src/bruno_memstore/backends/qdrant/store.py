"""The open side of a Qdrant store: clients shared per location, collections, aliases.

One process keeps one client per location (a local directory holds a file lock, so a second
client on it would be refused) and one :class:`Store` per location and prefix, shared by
every ``QdrantMemory`` instance on it: they then serialise their read-modify-write steps on
the same lock and see the same caches, as one store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from ..kit.batches import chunks
from ..kit.keyword_index import KeywordIndex, KeywordIndexes
from .config import LocalClient
from .layout import INDEXES, VECTOR, Layout, point_id

__all__ = ["SeqClock", "Store", "acquire_store", "release_store"]

_PAGE = 512


class SeqClock:
    """Write numbers: increasing in this process, and above every number already stored.

    A number is the larger of the previous one plus one and the wall clock in microseconds,
    so processes writing to one server order their writes by time (up to clock skew).
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def observe(self, value: int) -> None:
        self.last = max(self.last, value)

    def next(self) -> int:
        self.last = max(self.last + 1, time.time_ns() // 1000)
        return self.last


class Store:
    """A client, the collection layout, the write lock, the write clock and the keyword
    indexes (one per user, versioned by :meth:`KeywordIndex.stamps`)."""

    def __init__(self, client: AsyncQdrantClient, layout: Layout, *, local: bool) -> None:
        self.client = client
        self.layout = layout
        self.local = local
        self.refs = 0
        self.ready = False
        self.prepare_lock = asyncio.Lock()
        self.write_lock = asyncio.Lock()
        self.clock = SeqClock()
        self.text = KeywordIndexes(version_of=KeywordIndex.stamps)

    # ---------------------------------------------------------------- schema

    async def prepare(self, dimension: Callable[[], Any]) -> None:
        """Create what is missing; ``dimension()`` gives the vector size for new collections
        (awaited only when one is needed and no vector space is recorded)."""
        async with self.prepare_lock:
            if self.ready:
                return
            for name in self.layout.plain():
                await self._ensure_collection(name, 0, _kind_of(self.layout, name))
            recorded = await self.read_space()
            for alias in self.layout.with_vectors():
                if await self.alias_target(alias) is None:
                    dim = recorded[1] if recorded is not None else int(await dimension() or 0)
                    await self._point_alias(alias, dim)
            for alias in self.layout.with_vectors():
                top = await self.highest(alias, "seq")
                if top is not None:
                    self.clock.observe(top)
            self.ready = True

    async def _ensure_collection(self, name: str, dimension: int, kind: str) -> None:
        if await self.client.collection_exists(name):
            return
        vectors: dict[str, qm.VectorParams] = {}
        if dimension:
            vectors[VECTOR] = qm.VectorParams(size=dimension, distance=qm.Distance.COSINE)
        try:
            await self.client.create_collection(name, vectors_config=vectors)
        except Exception:
            # Another process created it first.
            if not await self.client.collection_exists(name):
                raise
        if not self.local:
            for field_name, schema in INDEXES[kind].items():
                await self.client.create_payload_index(name, field_name, field_schema=schema)

    async def alias_target(self, alias: str) -> str | None:
        for item in (await self.client.get_aliases()).aliases:
            if item.alias_name == alias:
                return item.collection_name
        return None

    async def _point_alias(self, alias: str, dimension: int) -> str:
        """Point ``alias`` at an (existing or new, empty) collection for ``dimension``."""
        target = self.layout.physical(alias, dimension)
        await self._ensure_collection(target, dimension, _kind_of(self.layout, alias))
        try:
            await self.client.update_collection_aliases(
                change_aliases_operations=[
                    qm.CreateAliasOperation(
                        create_alias=qm.CreateAlias(collection_name=target, alias_name=alias)
                    )
                ]
            )
        except Exception:
            # Another process created the alias first: use what it points to.
            current = await self.alias_target(alias)
            if current is None:
                raise
            return current
        return target

    async def set_dimension(self, dimension: int, *, drop_vectors: bool) -> None:
        """Make message and memory points take vectors of ``dimension``.

        A new dimension gets new collections: every point is copied without its vector, the
        alias switched in one operation, the old collection deleted. With the same dimension,
        ``drop_vectors`` deletes the stored vectors in place. Run under the write lock.
        """
        for alias in self.layout.with_vectors():
            current = await self.alias_target(alias)
            if current is None:
                await self._point_alias(alias, dimension)
                continue
            if Layout.dimension_of(current) == dimension:
                if drop_vectors and dimension:
                    await self.client.delete_vectors(
                        alias, vectors=[VECTOR], points=qm.FilterSelector(filter=qm.Filter())
                    )
                continue
            target = self.layout.physical(alias, dimension)
            if await self.client.collection_exists(target):
                # Left by an interrupted switch: start that copy again.
                await self.client.delete_collection(target)
            await self._ensure_collection(target, dimension, _kind_of(self.layout, alias))
            async for page in self.pages(current, None, payload=True):
                await self.client.upsert(
                    target,
                    points=[qm.PointStruct(id=r.id, vector={}, payload=r.payload) for r in page],
                )
            await self.client.update_collection_aliases(
                change_aliases_operations=[
                    qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)),
                    qm.CreateAliasOperation(
                        create_alias=qm.CreateAlias(collection_name=target, alias_name=alias)
                    ),
                ]
            )
            await self.client.delete_collection(current)

    async def read_space(self) -> tuple[str, int] | None:
        found = await self.client.retrieve(
            self.layout.meta, [point_id("meta", "vector_space")], with_payload=True
        )
        if not found or not found[0].payload:
            return None
        return (str(found[0].payload["model"]), int(found[0].payload["dimension"]))

    async def write_space(self, model: str, dimension: int) -> None:
        await self.client.upsert(
            self.layout.meta,
            points=[
                qm.PointStruct(
                    id=point_id("meta", "vector_space"),
                    vector={},
                    payload={"model": model, "dimension": dimension},
                )
            ],
        )

    # ---------------------------------------------------------------- reading helpers

    async def pages(
        self, collection: str, flt: qm.Filter | None, *, payload: Any = True
    ) -> AsyncIterator[list[Any]]:
        """Every point matching ``flt``, a page at a time (point id order)."""
        offset: Any = None
        while True:
            page, offset = await self.client.scroll(
                collection,
                scroll_filter=flt,
                limit=_PAGE,
                offset=offset,
                with_payload=payload,
                with_vectors=False,
            )
            if page:
                yield page
            if offset is None:
                return

    async def all(self, collection: str, flt: qm.Filter | None, *, payload: Any = True):
        return [r async for page in self.pages(collection, flt, payload=payload) for r in page]

    async def count(self, collection: str, flt: qm.Filter) -> int:
        return int((await self.client.count(collection, count_filter=flt, exact=True)).count)

    async def edge(
        self, collection: str, flt: qm.Filter | None, key: str, *, newest: bool, limit: int = 1
    ) -> list[Any]:
        """The ``limit`` points with the highest (``newest``) or lowest value of ``key``."""
        direction = qm.Direction.DESC if newest else qm.Direction.ASC
        page, _ = await self.client.scroll(
            collection,
            scroll_filter=flt,
            limit=limit,
            order_by=qm.OrderBy(key=key, direction=direction),
            with_payload=True,
            with_vectors=False,
        )
        return page

    async def highest(self, collection: str, key: str, flt: qm.Filter | None = None) -> int | None:
        page, _ = await self.client.scroll(
            collection,
            scroll_filter=flt,
            limit=1,
            order_by=qm.OrderBy(key=key, direction=qm.Direction.DESC),
            with_payload=[key],
            with_vectors=False,
        )
        return int(page[0].payload[key]) if page else None

    def secure_deletes(self) -> None:
        """Local mode keeps each collection in a SQLite file of its own: have SQLite
        overwrite deleted points with zeros there (``secure_delete``), whatever its build
        default. Called before deleting (collections may have been opened since)."""
        if isinstance(self.client, LocalClient):
            self.client.secure_deletes()

    async def delete_ids(self, collection: str, ids: list[str]) -> None:
        for part in chunks(ids, 1000):
            await self.client.delete(collection, points_selector=qm.PointIdsList(points=list(part)))


def _kind_of(layout: Layout, name: str) -> str:
    for kind in ("conversations", "sessions", "messages", "memories"):
        if name.startswith(getattr(layout, kind)):
            return kind
    return "meta"


# ----------------------------------------------------------------------------- registry

_CLIENTS: dict[Hashable, tuple[AsyncQdrantClient, int]] = {}
_STORES: dict[Hashable, Store] = {}


def acquire_store(
    location: Hashable, prefix: str, make_client: Callable[[], AsyncQdrantClient], *, local: bool
) -> Store:
    """The process's store at ``location`` and ``prefix`` (created on first use); release it
    with :func:`release_store`. Keys include the running event loop: locks and HTTP clients
    belong to one loop."""
    loop = asyncio.get_running_loop()
    client_key = (loop, location)
    entry = _CLIENTS.get(client_key)
    if entry is None:
        client = make_client()
        entry = (client, 0)
    _CLIENTS[client_key] = (entry[0], entry[1] + 1)
    store_key = (loop, location, prefix)
    store = _STORES.get(store_key)
    if store is None:
        store = _STORES[store_key] = Store(entry[0], Layout(prefix), local=local)
    store.refs += 1
    return store


async def release_store(location: Hashable, store: Store) -> None:
    """Drop one reference; the last one closes the client (and frees a local directory)."""
    loop = asyncio.get_running_loop()
    store.refs -= 1
    if store.refs <= 0:
        _STORES.pop((loop, location, store.layout.prefix), None)
    client_key = (loop, location)
    entry = _CLIENTS.get(client_key)
    if entry is None:
        return
    client, refs = entry
    if refs > 1:
        _CLIENTS[client_key] = (client, refs - 1)
        return
    del _CLIENTS[client_key]
    with contextlib.suppress(Exception):
        await client.close()
