"""The fake's data: collections, tenants, objects, and the query semantics Weaviate documents.

Each behaviour below follows a page of Weaviate's documentation (weaviate.io/developers/weaviate):

* Multi-tenancy ("Manage data > Multi-tenancy operations", "Concepts > Data > Multi-tenancy"):
  a multi-tenant collection keeps each tenant's objects apart; every object request names a
  tenant; a tenant that does not exist is an error (``tenant not found``), unless the
  collection enables ``autoTenantCreation``, which creates it on insert (never on read);
  deleting a tenant deletes its objects.
* Batch import ("Manage data > Import"): an object whose UUID exists is replaced (upsert);
  errors are reported per object, and the other objects of the batch are written.
* Filters ("Search > Filters"): Equal, NotEqual, the four comparisons, And, Or,
  ContainsAny / ContainsAll (on arrays: any element; on a scalar: the value itself), ``_id``
  as a filter target. Not and ContainsNone came with 1.33 and are refused (the fake reports
  1.32). A ``field``-tokenized property is filtered on its whole value with whitespace
  trimmed ("Config refs > Tokenization"), so ``" x"`` equals ``"x"`` there.
* Vector search ("Search > Similarity search"; "Config refs > Distance metrics"): filters
  narrow the candidates before ranking (pre-filtering); cosine distance is ``1 - cos``;
  objects without a vector are not candidates; every vector of an index has one length.
* Keyword search ("Search > Keyword search"; "Concepts > Search > Keyword search", BM25F):
  ``k1 = 1.2``, ``b = 0.75``, ``idf = ln(1 + (N - n + 0.5) / (n + 0.5))`` with the
  statistics of the tenant's objects in the collection, the query tokenized like the
  property (``whitespace``: split on whitespace, case kept), terms combined with OR, only
  objects matching a term returned.
* Sorting and pagination ("Search > Basics: sorting, limit, offset, cursor"): several sort
  keys in order; the cursor ``after`` walks objects by UUID and takes no filter.
* Limits ("Config refs > Environment variables": ``QUERY_DEFAULTS_LIMIT`` 10,
  ``QUERY_MAXIMUM_RESULTS`` 10,000; "Manage data > Delete objects"): a search without a
  limit returns 10 objects; ``offset + limit`` above the maximum is an error; one batch
  deletion deletes at most the maximum number of objects (run it again for the rest).
"""

from __future__ import annotations

import math
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Collection", "FakeError", "Obj", "Store"]

K1 = 1.2
B = 0.75
DEFAULT_LIMIT = 10  # QUERY_DEFAULTS_LIMIT
# What Weaviate fills into an HNSW index's configuration ("Config refs > Vector index").
HNSW: dict[str, Any] = {
    "cleanupIntervalSeconds": 300,
    "distance": "cosine",
    "dynamicEfMin": 100,
    "dynamicEfMax": 500,
    "dynamicEfFactor": 8,
    "ef": -1,
    "efConstruction": 128,
    "filterStrategy": "sweeping",
    "flatSearchCutoff": 40000,
    "maxConnections": 32,
    "skip": False,
    "vectorCacheMaxObjects": 1000000000000,
    "pq": {"enabled": False},
    "bq": {"enabled": False},
    "sq": {"enabled": False},
}


class FakeError(Exception):
    """An error the fake reports as Weaviate would (``status`` for REST)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Obj:
    uuid: str
    props: dict[str, Any]
    vector: np.ndarray | None
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass
class Collection:
    name: str
    config: dict[str, Any]  # the class as created, with defaults filled in
    multi_tenant: bool
    auto_tenants: bool
    tenants: dict[str, dict[str, Obj]] = field(default_factory=dict)

    def prop(self, name: str) -> dict[str, Any] | None:
        for p in self.config.get("properties", []):
            if p["name"] == name:
                return p
        return None

    def objects(self, tenant: str, *, create: bool = False) -> dict[str, Obj]:
        if not self.multi_tenant:
            if tenant:
                raise FakeError(
                    f"class {self.name} has multi-tenancy disabled, but request was with tenant"
                )
            return self.tenants.setdefault("", {})
        if not tenant:
            raise FakeError(
                f"class {self.name} has multi-tenancy enabled, but request was without tenant"
            )
        found = self.tenants.get(tenant)
        if found is None:
            if create and self.auto_tenants:
                found = self.tenants[tenant] = {}
            else:
                raise FakeError(f'tenant not found: "{tenant}"', 404)
        return found


def _tokens(text: str, tokenization: str) -> list[str]:
    if tokenization == "whitespace":
        return text.split()
    if tokenization == "lowercase":
        return text.lower().split()
    if tokenization == "field":
        return [text.strip()]
    # "word": alphanumeric runs, lowercased
    out, cur = [], []
    for ch in text.lower():
        if ch.isalnum():
            cur.append(ch)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


class Store:
    """Every collection, under one lock (requests come from REST and gRPC threads)."""

    def __init__(self, *, query_maximum_results: int = 10_000) -> None:
        self.max_results = query_maximum_results
        self.lock = threading.RLock()
        self.collections: dict[str, Collection] = {}
        # Fault injection for tests: objects for which this returns a message are refused.
        self.refuse: Callable[[str, dict[str, Any]], str | None] | None = None

    # ---------------------------------------------------------------- schema

    def collection(self, name: str) -> Collection:
        found = self.collections.get(name[:1].upper() + name[1:])
        if found is None:
            raise FakeError(f"class {name!r} not found", 404)
        return found

    def create(self, config: dict[str, Any]) -> dict[str, Any]:
        name = config["class"]
        name = name[:1].upper() + name[1:]
        if name in self.collections:
            raise FakeError(f"class name {name!r} already exists", 422)
        config = dict(config, **{"class": name})
        mt = config.setdefault("multiTenancyConfig", {"enabled": False})
        for p in config.setdefault("properties", []):
            p.setdefault("indexFilterable", True)
            p.setdefault("indexSearchable", p["dataType"][0] in ("text", "text[]"))
            p.setdefault("indexRangeFilters", False)
            if p["dataType"][0] in ("text", "text[]"):
                p.setdefault("tokenization", "word")
        config.setdefault(
            "invertedIndexConfig",
            {
                "bm25": {"b": B, "k1": K1},
                "cleanupIntervalSeconds": 60,
                "stopwords": {"preset": "en", "additions": None, "removals": None},
            },
        )
        for vector in (config.get("vectorConfig") or {}).values():
            if vector.get("vectorIndexType", "hnsw") == "hnsw":
                vector["vectorIndexType"] = "hnsw"
                vector["vectorIndexConfig"] = {**HNSW, **(vector.get("vectorIndexConfig") or {})}
        config.setdefault("replicationConfig", {"factor": 1, "asyncEnabled": False})
        config.setdefault(
            "shardingConfig",
            {
                "virtualPerPhysical": 128,
                "desiredCount": 1,
                "actualCount": 1,
                "desiredVirtualCount": 128,
                "actualVirtualCount": 128,
                "key": "_id",
                "strategy": "hash",
                "function": "murmur3",
            },
        )
        self.collections[name] = Collection(
            name,
            config,
            multi_tenant=bool(mt.get("enabled")),
            auto_tenants=bool(mt.get("autoTenantCreation")),
        )
        return config

    def drop(self, name: str) -> None:
        self.collections.pop(name[:1].upper() + name[1:], None)

    # ---------------------------------------------------------------- objects

    def put(
        self,
        name: str,
        tenant: str,
        obj_uuid: str,
        props: dict[str, Any],
        vector: np.ndarray | None,
    ) -> None:
        """One object of a batch (insert or replace); raises ``FakeError`` for this object."""
        coll = self.collection(name)
        for key, value in props.items():
            p = coll.prop(key)
            if p is None:
                raise FakeError(f"no such prop with name '{key}' found in class '{coll.name}'")
            _check_type(key, p["dataType"][0], value)
        if self.refuse is not None and (why := self.refuse(coll.name, props)) is not None:
            raise FakeError(why)
        objects = coll.objects(tenant, create=True)
        if vector is not None:
            for other in objects.values():
                if other.vector is not None and other.uuid != obj_uuid:
                    if len(other.vector) != len(vector):
                        raise FakeError(
                            f"insert to vector index: new node has a vector with length "
                            f"{len(vector)}. Existing nodes have vectors with length "
                            f"{len(other.vector)}"
                        )
                    break
        objects[obj_uuid] = Obj(obj_uuid, dict(props), vector)

    def delete_where(self, name: str, tenant: str, where: Callable[[Obj], bool] | None) -> int:
        coll = self.collection(name)
        objects = coll.objects(tenant)
        doomed = [u for u, o in objects.items() if where is None or where(o)]
        for u in doomed[: self.max_results]:
            del objects[u]
        return min(len(doomed), self.max_results)

    # ---------------------------------------------------------------- search

    def search(
        self,
        name: str,
        tenant: str,
        *,
        where: Callable[[Obj], bool] | None,
        near: np.ndarray | None = None,
        bm25: tuple[str, list[str]] | None = None,
        sort: list[tuple[str, bool]] = (),  # type: ignore[assignment]
        limit: int | None = None,
        offset: int = 0,
        after: str | None = None,
    ) -> list[tuple[Obj, float | None, float | None]]:
        """``(object, distance, score)`` of the matching objects, in the answer's order."""
        coll = self.collection(name)
        limit = limit or DEFAULT_LIMIT
        if offset + limit > self.max_results:
            raise FakeError(
                f"query maximum results exceeded: offset {offset} + limit {limit} > "
                f"QUERY_MAXIMUM_RESULTS {self.max_results}"
            )
        objects = list(coll.objects(tenant).values())
        candidates = [o for o in objects if where is None or where(o)]
        rows: list[tuple[Obj, float | None, float | None]]
        if near is not None:
            rows = []
            qn = near / (np.linalg.norm(near) or 1.0)
            for o in candidates:
                if o.vector is None or len(o.vector) != len(near):
                    continue
                v = o.vector / (np.linalg.norm(o.vector) or 1.0)
                rows.append((o, float(1.0 - float(np.dot(qn, v))), None))
            rows.sort(key=lambda r: (r[1], r[0].uuid))
        elif bm25 is not None:
            scores = _bm25(coll, objects, bm25[0], bm25[1])
            rows = [(o, None, scores[o.uuid]) for o in candidates if o.uuid in scores]
            rows.sort(key=lambda r: (-(r[2] or 0.0), r[0].uuid))
        else:
            rows = [(o, None, None) for o in candidates]
            if after is not None or not sort:
                rows.sort(key=lambda r: r[0].uuid)
                if after is not None:
                    rows = [r for r in rows if r[0].uuid > after]
            for key, ascending in reversed(list(sort)):
                rows.sort(key=lambda r, key=key: _sort_value(r[0], key), reverse=not ascending)
        return rows[offset : offset + limit]


def _sort_value(o: Obj, key: str) -> Any:
    if key == "_id":
        return o.uuid
    value = o.props.get(key)
    # Weaviate sorts missing values first in ascending order.
    return (value is not None, value if value is not None else 0)


def _check_type(key: str, data_type: str, value: Any) -> None:
    ok = {
        "text": lambda v: isinstance(v, str),
        "text[]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "int": lambda v: isinstance(v, (int, float)) and float(v).is_integer(),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }.get(data_type, lambda v: True)
    if value is not None and not ok(value):
        raise FakeError(
            f"invalid {data_type} property '{key}' on class: requires a {data_type}, "
            f"got {type(value).__name__}"
        )


def _bm25(coll: Collection, objects: list[Obj], query: str, props: list[str]) -> dict[str, float]:
    """BM25F over ``props`` (all searchable text properties when empty), statistics over
    every object of the tenant (Weaviate computes them per shard, and a tenant is a shard)."""
    names = props or [
        p["name"]
        for p in coll.config["properties"]
        if p["dataType"][0] in ("text", "text[]") and p.get("indexSearchable")
    ]
    scores: dict[str, float] = {}
    n_docs = len(objects)
    if not n_docs:
        return scores
    for name in names:
        p = coll.prop(name)
        if p is None:
            continue
        tokenization = p.get("tokenization", "word")
        docs: dict[str, list[str]] = {}
        for o in objects:
            value = o.props.get(name)
            if isinstance(value, list):
                value = " ".join(value)
            docs[o.uuid] = _tokens(value, tokenization) if isinstance(value, str) else []
        avg = sum(len(t) for t in docs.values()) / n_docs or 1.0
        for term in dict.fromkeys(_tokens(query, tokenization)):
            having = {u: t.count(term) for u, t in docs.items() if term in t}
            if not having:
                continue
            idf = math.log(1.0 + (n_docs - len(having) + 0.5) / (len(having) + 0.5))
            for u, tf in having.items():
                norm = tf + K1 * (1.0 - B + B * len(docs[u]) / avg)
                scores[u] = scores.get(u, 0.0) + idf * tf * (K1 + 1.0) / norm
    return scores


def new_uuid() -> str:
    return str(uuidlib.uuid4())
