"""The open side of a Weaviate store: one client per server and process, the collections,
and the reads and writes every primitive is made of.

Weaviate has no transactions and no conditional writes. Every ``WeaviateMemory`` on one
server and prefix in a process shares one :class:`Store`, whose lock serialises the
read-modify-write steps (claims, idempotent appends, replacements); multi-step changes write
in an order a crash can only leave incomplete, never wrong (``docs/backends/weaviate.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import Any

import weaviate
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, MetadataQuery, Sort
from weaviate.exceptions import WeaviateInsertManyAllFailedError

from ...errors import BackendError
from ..kit.batches import chunks
from .config import is_missing_tenant
from .layout import Layout, RegistryKind, all_of, exact, registry_id, unexact

__all__ = ["PAGE", "BatchRefused", "SeqClock", "Store", "acquire_store", "release_store"]

PAGE = 1000
"""Objects per read at most: under Weaviate's ``QUERY_MAXIMUM_RESULTS`` (10,000 by
default), which caps ``offset + limit``."""


class BatchRefused(BackendError):
    """Weaviate refused some objects of a batch; what the batch wrote was taken back."""

    def __init__(self, collection: str, failed: dict[str, str], total: int) -> None:
        shown = "; ".join(f"{u}: {m}" for u, m in list(failed.items())[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        super().__init__(
            f"Weaviate refused {len(failed)} of {total} objects written to {collection}: "
            f"{shown}{more}; nothing of this write was kept"
        )
        self.failed = failed


class SeqClock:
    """Write numbers: increasing in this process, and following the wall clock (in
    microseconds) across processes and restarts."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last = max(self.last + 1, time.time_ns() // 1000)
        return self.last


class Store:
    """A connected client, the layout, the write lock and the write clock."""

    def __init__(
        self, client: weaviate.WeaviateAsyncClient, layout: Layout, max_results: int
    ) -> None:
        self.client = client
        self.layout = layout
        # One read asks for at most `page` objects; one delete_many deletes at most
        # `max_results` (the server's QUERY_MAXIMUM_RESULTS), so one that did runs again.
        self.max_results = max_results
        self.page = min(PAGE, max_results)
        self.refs = 0
        self.ready = False
        self.prepare_lock = asyncio.Lock()
        self.write_lock = asyncio.Lock()
        self.clock = SeqClock()

    # ---------------------------------------------------------------- schema

    async def prepare(self) -> None:
        async with self.prepare_lock:
            if self.ready:
                return
            if not self.client.is_connected():
                await self.client.connect()
            if not await self.client.is_ready():
                raise ConnectionError("Weaviate is not ready (/v1/.well-known/ready)")
            for name, definition in self.layout.definitions().items():
                if await self.client.collections.exists(name):
                    continue
                try:
                    await self.client.collections.create(name, **definition)
                except Exception:
                    # Another process created it first.
                    if not await self.client.collections.exists(name):
                        raise
            self.ready = True

    def collection(self, name: str, tenant: str | None = None) -> Any:
        coll = self.client.collections.use(name)
        return coll if tenant is None else coll.with_tenant(tenant)

    async def tenants(self, name: str) -> list[str]:
        return sorted(await self.collection(name).tenants.get())

    # ---------------------------------------------------------------- reads

    async def fetch(
        self,
        name: str,
        tenant: str | None,
        where: Any = None,
        *,
        sort: Any = None,
        limit: int | None = None,
        props: Sequence[str] | None = ("doc",),
    ) -> list[Any]:
        """Objects matching ``where`` (a tenant that does not exist holds none)."""
        try:
            res = await self.collection(name, tenant).query.fetch_objects(
                filters=where,
                sort=sort,
                limit=self.page if limit is None else limit,
                return_properties=list(props or []),
            )
        except Exception as exc:
            if is_missing_tenant(exc):
                return []
            raise
        return list(res.objects)

    async def pages(
        self,
        name: str,
        tenant: str | None,
        where: Any,
        key: str,
        *,
        props: Sequence[str] = ("doc",),
    ) -> AsyncIterator[list[Any]]:
        """Every object matching ``where``, a page at a time, in order of the unique text
        property ``key`` (each page starts after the last key of the one before: no offset,
        so no ``QUERY_MAXIMUM_RESULTS`` ceiling)."""
        last: str | None = None
        wanted = list(dict.fromkeys([*props, key]))
        while True:
            after = None if last is None else Filter.by_property(key).greater_than(last)
            page = await self.fetch(
                name,
                tenant,
                all_of([where, after]),
                sort=Sort.by_property(key, ascending=True),
                props=wanted,
            )
            if page:
                yield page
            if len(page) < self.page:
                return
            last = str(page[-1].properties[key])

    async def by_ids(
        self, name: str, tenant: str | None, uuids: Sequence[str], props: Sequence[str] = ("doc",)
    ) -> list[Any]:
        found: list[Any] = []
        for part in chunks(list(uuids), self.page):
            found += await self.fetch(
                name, tenant, Filter.by_id().contains_any(list(part)), limit=len(part), props=props
            )
        return found

    async def owners(self, kind: RegistryKind, ids: Sequence[str]) -> dict[str, str]:
        """``{id: owner}`` of the registered ids among ``ids``."""
        rows = await self.by_ids(
            self.layout.registry,
            None,
            [registry_id(kind, i) for i in ids],
            props=("key", "user_id"),
        )
        return {unexact(r.properties["key"]): unexact(r.properties["user_id"]) for r in rows}

    # ---------------------------------------------------------------- writes

    async def insert(
        self,
        name: str,
        tenant: str | None,
        objects: Sequence[tuple[str, dict[str, Any], list[float] | None]],
        *,
        new: bool,
    ) -> None:
        """Write ``(uuid, properties, vector)`` objects (an object with a stored UUID is
        replaced). Weaviate reports errors object by object and keeps the others; when any
        object is refused, a batch of ``new`` objects (none stored before) is taken back
        whole and :class:`BatchRefused` raised, so the write is all or nothing."""
        coll = self.collection(name, tenant)
        for part in chunks(list(objects), self.page):
            batch = [DataObject(properties=p, uuid=u, vector=v) for u, p, v in part]
            try:
                res = await coll.data.insert_many(batch)
                failed = {
                    str(part[i][0]): str(getattr(err, "message", err))
                    for i, err in res.errors.items()
                }
            except WeaviateInsertManyAllFailedError as exc:
                failed = {str(u): str(exc) for u, _, _ in part}
            if failed:
                if new:
                    await self.delete_ids(name, tenant, [u for u, _, _ in objects])
                raise BatchRefused(name, failed, len(objects))

    async def delete_where(self, name: str, tenant: str | None, where: Any) -> int:
        """Delete every object matching ``where``; how many (a missing tenant holds none)."""
        coll = self.collection(name, tenant)
        total = 0
        while True:
            try:
                res = await coll.data.delete_many(where=where)
            except Exception as exc:
                if is_missing_tenant(exc):
                    return total
                raise
            total += int(res.successful)
            if res.failed:
                raise BackendError(f"Weaviate could not delete {res.failed} objects of {name}")
            if res.matches < self.max_results:
                return total

    async def delete_ids(self, name: str, tenant: str | None, uuids: Sequence[str]) -> int:
        total = 0
        for part in chunks(list(uuids), self.page):
            total += await self.delete_where(name, tenant, Filter.by_id().contains_any(list(part)))
        return total

    async def register(self, kind: RegistryKind, pairs: Sequence[tuple[str, str]]) -> None:
        """Record the owners of new ids (``(id, owner)`` pairs), all or nothing."""
        await self.insert(
            self.layout.registry,
            None,
            [
                (
                    registry_id(kind, i),
                    {"kind": exact(kind), "key": exact(i), "user_id": exact(u)},
                    None,
                )
                for i, u in pairs
            ],
            new=True,
        )

    async def unregister(self, kind: RegistryKind, ids: Sequence[str]) -> None:
        await self.delete_ids(self.layout.registry, None, [registry_id(kind, i) for i in ids])

    async def near(
        self, name: str, tenant: str, vector: list[float], where: Any, limit: int
    ) -> list[Any]:
        try:
            res = await self.collection(name, tenant).query.near_vector(
                vector,
                filters=where,
                limit=limit,
                return_metadata=MetadataQuery(distance=True),
                return_properties=["doc"],
            )
        except Exception as exc:
            if is_missing_tenant(exc):
                return []
            raise
        return list(res.objects)

    async def bm25(self, name: str, tenant: str, query: str, where: Any, limit: int) -> list[Any]:
        try:
            res = await self.collection(name, tenant).query.bm25(
                query,
                query_properties=["terms"],
                filters=where,
                limit=limit,
                return_metadata=MetadataQuery(score=True),
                return_properties=["doc"],
            )
        except Exception as exc:
            if is_missing_tenant(exc):
                return []
            raise
        return list(res.objects)


# ----------------------------------------------------------------------------- sharing

_STORES: dict[Hashable, Store] = {}


def acquire_store(
    location: Hashable,
    layout: Layout,
    make_client: Callable[[], weaviate.WeaviateAsyncClient],
    max_results: int,
) -> Store:
    """The process's store for ``location`` and the layout's prefix (created on first use);
    release it with :func:`release_store`. Keys include the running event loop: the client's
    connections belong to one loop."""
    key = (asyncio.get_running_loop(), location, layout.prefix)
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = Store(make_client(), layout, max_results)
    store.refs += 1
    return store


async def release_store(location: Hashable, store: Store) -> None:
    """Drop one reference; the last one closes the client."""
    store.refs -= 1
    if store.refs > 0:
        return
    _STORES.pop((asyncio.get_running_loop(), location, store.layout.prefix), None)
    with contextlib.suppress(Exception):
        await store.client.close()
