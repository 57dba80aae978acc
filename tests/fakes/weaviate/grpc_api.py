"""The fake's gRPC API: the ``weaviate.v1.Weaviate`` service (Search, BatchObjects,
BatchDelete, TenantsGet) and the health check, built from the protobuf modules the official
client ships (``weaviate.proto.v1``)."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict
from weaviate.proto.v1 import (
    base_pb2,
    batch_delete_pb2,
    batch_pb2,
    health_weaviate_pb2,
    properties_pb2,
    search_get_pb2,
    tenants_pb2,
    weaviate_pb2_grpc,
)

from .store import Collection, FakeError, Obj, Store

__all__ = ["add_services"]

_OP = base_pb2.Filters


def _vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


# Go's unicode.IsSpace: what strings.TrimSpace removes from a `field` token.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _field_token(value: Any) -> Any:
    """A value of a ``field``-tokenized property as Weaviate indexes and filters it: the
    whole value, whitespace trimmed ("Config refs > Tokenization")."""
    return value.strip(_GO_SPACE) if isinstance(value, str) else value


def _predicate(f: base_pb2.Filters, coll: Collection) -> Any:
    """A Python predicate over objects for a ``Filters`` message."""
    op = f.operator
    if op in (_OP.OPERATOR_NOT, _OP.OPERATOR_CONTAINS_NONE):
        # Both came with Weaviate 1.33; the fake reports an older version.
        raise FakeError(f"filter operator {_OP.Operator.Name(op)} needs Weaviate 1.33")
    if op in (_OP.OPERATOR_AND, _OP.OPERATOR_OR):
        parts = [_predicate(x, coll) for x in f.filters]
        if op == _OP.OPERATOR_AND:
            return lambda o: all(p(o) for p in parts)
        return lambda o: any(p(o) for p in parts)
    key = f.target.property if f.HasField("target") else f.on[0]
    which = f.WhichOneof("test_value")
    value: Any = getattr(f, which) if which else None
    if which in ("value_text_array", "value_int_array", "value_number_array"):
        value = list(value.values)
    prop = coll.prop(key)
    field = prop is not None and prop.get("tokenization") == "field"
    if field:
        value = [_field_token(v) for v in value] if isinstance(value, list) else _field_token(value)

    def get(o: Obj) -> Any:
        found = o.uuid if key == "_id" else o.props.get(key)
        if field:
            return (
                [_field_token(v) for v in found] if isinstance(found, list) else _field_token(found)
            )
        return found

    def as_list(v: Any) -> list[Any]:
        return v if isinstance(v, list) else ([] if v is None else [v])

    compare = {
        _OP.OPERATOR_EQUAL: lambda v: v == value,
        _OP.OPERATOR_NOT_EQUAL: lambda v: v != value,
        _OP.OPERATOR_GREATER_THAN: lambda v: v is not None and v > value,
        _OP.OPERATOR_GREATER_THAN_EQUAL: lambda v: v is not None and v >= value,
        _OP.OPERATOR_LESS_THAN: lambda v: v is not None and v < value,
        _OP.OPERATOR_LESS_THAN_EQUAL: lambda v: v is not None and v <= value,
        _OP.OPERATOR_IS_NULL: lambda v: (v is None) == bool(value),
        _OP.OPERATOR_CONTAINS_ANY: lambda v: any(x in value for x in as_list(v)),
        _OP.OPERATOR_CONTAINS_ALL: lambda v: all(x in as_list(v) for x in value),
        _OP.OPERATOR_CONTAINS_NONE: lambda v: not any(x in value for x in as_list(v)),
    }.get(op)
    if compare is None:
        raise FakeError(f"the fake does not support filter operator {op}")
    if op in (_OP.OPERATOR_EQUAL, _OP.OPERATOR_NOT_EQUAL) and not isinstance(value, list):
        # Equal on an array property matches when any element is equal.
        def test(o: Obj) -> bool:
            v = get(o)
            if isinstance(v, list):
                hit = value in v
                return hit if op == _OP.OPERATOR_EQUAL else not hit
            return compare(v)

        return test
    return lambda o: compare(get(o))


def _value(v: Any) -> properties_pb2.Value:
    if isinstance(v, bool):
        return properties_pb2.Value(bool_value=v)
    if isinstance(v, int):
        return properties_pb2.Value(int_value=v)
    if isinstance(v, float):
        return properties_pb2.Value(number_value=v)
    if isinstance(v, str):
        return properties_pb2.Value(text_value=v)
    if isinstance(v, list):
        texts = properties_pb2.TextValues(values=[str(x) for x in v])
        return properties_pb2.Value(list_value=properties_pb2.ListValue(text_values=texts))
    return properties_pb2.Value(null_value=0)


def _typed(store: Store, collection: str, props: dict[str, Any]) -> dict[str, Any]:
    """Struct numbers arrive as floats: store int properties as ints, as Weaviate does."""
    coll = store.collection(collection)
    out: dict[str, Any] = {}
    for key, value in props.items():
        p = coll.prop(key)
        is_int = p is not None and p["dataType"][0] == "int"
        if is_int and isinstance(value, float) and value.is_integer():
            value = int(value)
        out[key] = value
    return out


class WeaviateService(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    def _fail(self, context: grpc.ServicerContext, exc: FakeError) -> Any:
        code = grpc.StatusCode.NOT_FOUND if exc.status == 404 else grpc.StatusCode.UNKNOWN
        context.abort(code, str(exc))

    def Search(self, request: search_get_pb2.SearchRequest, context: Any) -> Any:
        started = time.perf_counter()
        try:
            with self.store.lock:
                coll = self.store.collection(request.collection)
            where = _predicate(request.filters, coll) if request.HasField("filters") else None
        except FakeError as exc:
            return self._fail(context, exc)
        near = bm25 = None
        if request.HasField("near_vector"):
            nv = request.near_vector
            if nv.vector_bytes:
                near = _vector(nv.vector_bytes)
            elif len(nv.vectors):
                near = _vector(nv.vectors[0].vector_bytes)
            else:
                near = np.asarray(list(nv.vector), dtype=np.float32)
        if request.HasField("bm25_search"):
            bm25 = (request.bm25_search.query, list(request.bm25_search.properties))
        if request.HasField("hybrid_search"):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fake has no hybrid search")
        sort = [(".".join(s.path), s.ascending) for s in request.sort_by]
        try:
            with self.store.lock:
                rows = self.store.search(
                    request.collection,
                    request.tenant,
                    where=where,
                    near=near,
                    bm25=bm25,
                    sort=sort,
                    limit=request.limit or None,
                    offset=request.offset,
                    after=request.after or None,
                )
        except FakeError as exc:
            return self._fail(context, exc)
        wanted = list(request.properties.non_ref_properties)
        # No properties request: every non-reference property, as Weaviate answers.
        every = (
            not request.HasField("properties") or request.properties.return_all_nonref_properties
        )
        results = []
        for obj, distance, score in rows:
            fields = {k: _value(v) for k, v in obj.props.items() if every or k in wanted}
            meta = search_get_pb2.MetadataResult(
                id=obj.uuid, id_as_bytes=uuidlib.UUID(obj.uuid).bytes
            )
            if distance is not None:
                meta.distance = distance
                meta.distance_present = True
                meta.certainty = 1.0 - distance / 2.0
                meta.certainty_present = True
            if score is not None:
                meta.score = score
                meta.score_present = True
            if request.metadata.creation_time_unix:
                meta.creation_time_unix = obj.created_ms
                meta.creation_time_unix_present = True
            results.append(
                search_get_pb2.SearchResult(
                    properties=search_get_pb2.PropertiesResult(
                        non_ref_props=properties_pb2.Properties(fields=fields),
                        target_collection=request.collection,
                    ),
                    metadata=meta,
                )
            )
        return search_get_pb2.SearchReply(took=time.perf_counter() - started, results=results)

    def BatchObjects(self, request: batch_pb2.BatchObjectsRequest, context: Any) -> Any:
        started = time.perf_counter()
        errors = []
        with self.store.lock:
            for index, obj in enumerate(request.objects):
                props = MessageToDict(obj.properties.non_ref_properties)
                for arr in obj.properties.text_array_properties:
                    props[arr.prop_name] = list(arr.values)
                for name in obj.properties.empty_list_props:
                    props[name] = []
                vector = None
                if obj.vector_bytes:
                    vector = _vector(obj.vector_bytes)
                elif len(obj.vectors):
                    vector = _vector(obj.vectors[0].vector_bytes)
                try:
                    props = _typed(self.store, obj.collection, props)
                    self.store.put(obj.collection, obj.tenant, obj.uuid, props, vector)
                except FakeError as exc:
                    errors.append(
                        batch_pb2.BatchObjectsReply.BatchError(index=index, error=str(exc))
                    )
        return batch_pb2.BatchObjectsReply(took=time.perf_counter() - started, errors=errors)

    def BatchDelete(self, request: batch_delete_pb2.BatchDeleteRequest, context: Any) -> Any:
        started = time.perf_counter()
        try:
            with self.store.lock:
                coll = self.store.collection(request.collection)
            where = _predicate(request.filters, coll) if request.HasField("filters") else None
            with self.store.lock:
                if request.dry_run:
                    rows = self.store.search(
                        request.collection,
                        request.tenant,
                        where=where,
                        limit=self.store.max_results,
                    )
                    count = len(rows)
                else:
                    count = self.store.delete_where(request.collection, request.tenant, where)
        except FakeError as exc:
            return self._fail(context, exc)
        return batch_delete_pb2.BatchDeleteReply(
            took=time.perf_counter() - started, failed=0, matches=count, successful=count
        )

    def TenantsGet(self, request: tenants_pb2.TenantsGetRequest, context: Any) -> Any:
        started = time.perf_counter()
        try:
            with self.store.lock:
                coll = self.store.collection(request.collection)
                names = list(coll.tenants)
        except FakeError as exc:
            return self._fail(context, exc)
        if request.HasField("names"):
            names = [n for n in names if n in set(request.names.values)]
        return tenants_pb2.TenantsGetReply(
            took=time.perf_counter() - started,
            tenants=[
                tenants_pb2.Tenant(name=n, activity_status=tenants_pb2.TENANT_ACTIVITY_STATUS_HOT)
                for n in names
            ],
        )


def _health(request: Any, context: Any) -> Any:
    return health_weaviate_pb2.WeaviateHealthCheckResponse(
        status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING
    )


def add_services(server: grpc.Server, store: Store) -> None:
    """Register the Weaviate service (and the health check) on ``server``."""
    service = WeaviateService(store)
    weaviate_pb2_grpc.add_WeaviateServicer_to_server(service, server)
    health = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                _health,
                request_deserializer=health_weaviate_pb2.WeaviateHealthCheckRequest.FromString,
                response_serializer=health_weaviate_pb2.WeaviateHealthCheckResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((health,))
