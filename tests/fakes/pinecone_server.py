"""A fake Pinecone index: the data-plane REST API of one serverless index, in process.

It is a fake, not Pinecone: it serves the subset ``PineconeMemory`` uses, so that the
unmodified official SDK (``pinecone.AsyncIndex(host="http://127.0.0.1:PORT")``) can be
tested without the service. Request and response shapes follow the SDK's own models
(``pinecone/models/vectors/responses.py`` and ``vector.py``: camelCase on the wire, e.g.
``upsertedCount``, ``vectorCount``, ``pagination.next``; in SDK 10 the generated
``pinecone/core/openapi/db_data/models.py`` only re-exports them) and the requests its
``AsyncIndex`` builds (``async_client/async_index.py``).

Documented behaviour it reproduces, each with the page it follows:

* Namespaces (https://docs.pinecone.io/guides/index-data/indexing-overview#namespaces):
  every operation reads and writes one namespace; one is created by its first upsert and
  removed by ``DELETE /namespaces/{name}``; ``describe_index_stats`` and
  ``GET /namespaces`` (by prefix, one page) list them.
* Metadata (https://docs.pinecone.io/guides/index-data/indexing-overview#metadata and
  .../reference/api/database-limits): values are strings, numbers, booleans or lists of
  strings (no null); at most 40 KB per record, else ``400``; ids of 1 to 512 characters;
  at most 1,000 records and 2 MB per upsert; at most 1,000 ids per fetch.
* Filters (https://docs.pinecone.io/guides/search/filter-by-metadata): ``$eq $ne $gt
  $gte $lt $lte $in $nin $exists $and $or``, a bare value meaning ``$eq``; on a list of
  strings, ``$eq``/``$in`` match when any element does, ``$ne``/``$nin`` when none does.
* List (https://docs.pinecone.io/guides/manage-data/list-record-ids): ids under a prefix,
  in id order, pages of at most 100 (``limit``), an opaque ``pagination.next`` token
  until the last page.
* Eventual consistency (https://docs.pinecone.io/guides/index-data/check-data-freshness):
  a write is acknowledged with its log sequence number in ``x-pinecone-request-lsn``,
  LSNs increase per namespace, and a query reports how far the namespace is indexed in
  ``x-pinecone-max-indexed-lsn``. Writes become visible to fetch, list, query and stats
  only when applied: after ``lag`` seconds, or not at all while :meth:`hold` is in force
  (tests use it to show lag deterministically).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

__all__ = ["FakePinecone"]

MAX_METADATA_BYTES = 40 * 1024
MAX_UPSERT_BYTES = 2 * 1024 * 1024
MAX_BATCH = 1000
MAX_ID = 512
LIST_PAGE = 100


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


class FakePinecone:
    """One fake index, served on ``127.0.0.1`` on a free port (see the module docstring).

    Args:
        dimension: the dimension of every record's dense vector.
        api_key: the key requests must carry in ``Api-Key``.
        lag: seconds before a write becomes visible.
    """

    def __init__(self, dimension: int, api_key: str, lag: float = 0.0) -> None:
        self.dimension = dimension
        self.api_key = api_key
        self.lag = lag
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, tuple[list[float], dict[str, Any]]]] = {}
        self._pending: dict[str, list[tuple[int, float, tuple[Any, ...]]]] = {}
        self._lsn: dict[str, int] = {}
        self._applied: dict[str, int] = {}
        self._held = 0
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self._server: ThreadingHTTPServer | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self, port: int = 0) -> FakePinecone:
        """Serve on ``127.0.0.1:port`` (``0``: a free port) from a thread of this process."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One send per response, no Nagle: small replies would otherwise wait ~40 ms
            # for a delayed acknowledgement.
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._serve(self, "GET")

            def do_POST(self) -> None:
                fake._serve(self, "POST")

            def do_DELETE(self) -> None:
                fake._serve(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Apply no write while inside: reads see the index as it was on entry."""
        with self._lock:
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1

    # ---------------------------------------------------------------- for tests

    def visible(self, namespace: str) -> dict[str, tuple[list[float], dict[str, Any]]]:
        """The records of a namespace that reads see now (a copy)."""
        with self._lock:
            self._apply()
            return dict(self._data.get(namespace, {}))

    def namespaces(self) -> list[str]:
        with self._lock:
            self._apply()
            return sorted(self._data)

    def settle(self) -> None:
        """Apply every write now (lag or not), unless held."""
        with self._lock:
            self._apply(force=True)

    # ---------------------------------------------------------------- the log

    def _write(self, namespace: str, op: tuple[Any, ...]) -> int:
        lsn = self._lsn[namespace] = self._lsn.get(namespace, 0) + 1
        self._pending.setdefault(namespace, []).append((lsn, time.monotonic() + self.lag, op))
        self._apply()
        return lsn

    def _apply(self, force: bool = False) -> None:
        if self._held:
            return
        now = time.monotonic()
        for namespace, ops in self._pending.items():
            while ops and (force or ops[0][1] <= now):
                lsn, _at, op = ops.pop(0)
                self._applied[namespace] = lsn
                records = self._data.setdefault(namespace, {})
                if op[0] == "upsert":
                    records.update(op[1])
                elif op[0] == "delete":
                    for rid in op[1]:
                        records.pop(rid, None)
                elif op[0] == "delete_filter":
                    for rid in [r for r, (_v, m) in records.items() if _matches(m, op[1])]:
                        del records[rid]
                else:  # delete_all, drop
                    records.clear()
                if not records:  # an empty namespace does not exist
                    self._data.pop(namespace, None)

    # ---------------------------------------------------------------- HTTP

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        headers: dict[str, str] = {}
        try:
            length = int(handler.headers.get("Content-Length") or 0)
            raw = handler.rfile.read(length) if length else b""
            if handler.headers.get("Api-Key") != self.api_key:
                raise ApiError(401, "UNAUTHENTICATED", "Invalid API Key")
            if length > MAX_UPSERT_BYTES:
                raise ApiError(413, "OUT_OF_RANGE", "Request size exceeds the 2 MB limit")
            body = json.loads(raw) if raw else {}
            query = parse_qs(url.query)
            with self._lock:
                self.requests.append((method, url.path))
                self._apply()
                status, payload = self._route(method, url.path, body, query, headers)
        except ApiError as exc:
            status = exc.status
            payload = {"error": {"code": exc.code, "message": exc.message}, "status": exc.status}
        except (ValueError, KeyError, TypeError) as exc:
            status = 400
            payload = {"error": {"code": "INVALID_ARGUMENT", "message": str(exc)}, "status": 400}
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _route(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        query: dict[str, list[str]],
        headers: dict[str, str],
    ) -> tuple[int, dict[str, Any]]:
        namespace = body.get("namespace") or (query.get("namespace") or [""])[0]
        usage = {"readUnits": 1}
        if (method, path) == ("POST", "/vectors/upsert"):
            records = self._records(body.get("vectors"))
            headers["x-pinecone-request-lsn"] = str(self._write(namespace, ("upsert", records)))
            return 200, {"upsertedCount": len(records)}
        if (method, path) == ("POST", "/query"):
            headers["x-pinecone-max-indexed-lsn"] = str(self._applied.get(namespace, 0))
            return 200, {**self._query(namespace, body), "namespace": namespace, "usage": usage}
        if (method, path) == ("GET", "/vectors/fetch"):
            ids = query.get("ids") or []
            if not ids or len(ids) > MAX_BATCH:
                raise _bad("fetch takes 1 to 1000 ids")
            records = self._data.get(namespace, {})
            found = {
                i: {"id": i, "values": records[i][0], "metadata": records[i][1]}
                for i in ids
                if i in records
            }
            return 200, {"vectors": found, "namespace": namespace, "usage": usage}
        if (method, path) == ("GET", "/vectors/list"):
            return 200, {**self._list(namespace, query), "namespace": namespace, "usage": usage}
        if (method, path) == ("POST", "/vectors/delete"):
            if body.get("deleteAll"):
                op: tuple[Any, ...] = ("delete_all",)
            elif body.get("ids"):
                op = ("delete", list(body["ids"]))
            elif body.get("filter"):
                _check_filter(body["filter"])
                op = ("delete_filter", body["filter"])
            else:
                raise _bad("Delete request must specify ids, deleteAll or filter")
            headers["x-pinecone-request-lsn"] = str(self._write(namespace, op))
            return 200, {}
        if (method, path) == ("POST", "/describe_index_stats"):
            counts = {ns: {"vectorCount": len(r)} for ns, r in self._data.items()}
            return 200, {
                "namespaces": counts,
                "dimension": self.dimension,
                "indexFullness": 0.0,
                "totalVectorCount": sum(c["vectorCount"] for c in counts.values()),
                "metric": "cosine",
                "vectorType": "dense",
            }
        if (method, path) == ("GET", "/namespaces"):
            # Snake case here, and counts as strings, as the SDK's lax decoding of
            # ListNamespacesResponse (pinecone/models/namespaces/models.py) expects.
            prefix = (query.get("prefix") or [""])[0]
            names = sorted(n for n in self._data if n.startswith(prefix))
            listed = [{"name": n, "record_count": str(len(self._data[n]))} for n in names]
            return 200, {"namespaces": listed, "total_count": len(listed)}
        if method == "DELETE" and path.startswith("/namespaces/"):
            name = unquote(path.removeprefix("/namespaces/"))
            if name not in self._data and not self._pending.get(name):
                raise ApiError(404, "NOT_FOUND", f"Namespace {name} not found")
            self._write(name, ("drop",))
            return 202, {}
        raise ApiError(404, "NOT_FOUND", f"{method} {path} is not served by this fake")

    def _records(self, vectors: Any) -> dict[str, tuple[list[float], dict[str, Any]]]:
        if not isinstance(vectors, list) or not 1 <= len(vectors) <= MAX_BATCH:
            raise _bad("upsert takes 1 to 1000 vectors")
        out: dict[str, tuple[list[float], dict[str, Any]]] = {}
        for vec in vectors:
            rid = vec.get("id")
            if not isinstance(rid, str) or not 1 <= len(rid) <= MAX_ID:
                raise _bad(f"Vector ID must be 1 to {MAX_ID} characters")
            values = vec.get("values")
            if not isinstance(values, list) or len(values) != self.dimension:
                raise _bad(
                    f"Vector dimension {len(values or [])} does not match the dimension "
                    f"of the index {self.dimension}"
                )
            if not any(values):
                raise _bad("Dense vectors must contain at least one non-zero value")
            metadata = vec.get("metadata") or {}
            _check_metadata(rid, metadata)
            out[rid] = ([float(v) for v in values], metadata)
        return out

    def _query(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        top_k = body.get("topK")
        if not isinstance(top_k, int) or not 1 <= top_k <= 10_000:
            raise _bad("topK must be from 1 to 10000")
        vector = body.get("vector")
        if not isinstance(vector, list) or len(vector) != self.dimension:
            raise _bad("query vector dimension does not match the index")
        flt = body.get("filter") or {}
        _check_filter(flt)
        kept = [
            (rid, values, meta)
            for rid, (values, meta) in self._data.get(namespace, {}).items()
            if _matches(meta, flt)
        ]
        scores = _cosines(vector, [values for _rid, values, _meta in kept])
        scored = [(score, *rec) for score, rec in zip(scores, kept, strict=True)]
        scored.sort(key=lambda s: (-s[0], s[1]))
        matches = []
        for score, rid, values, meta in scored[:top_k]:
            match: dict[str, Any] = {"id": rid, "score": score}
            if body.get("includeValues"):
                match["values"] = values
            if body.get("includeMetadata"):
                match["metadata"] = meta
            matches.append(match)
        return {"matches": matches}

    def _list(self, namespace: str, query: dict[str, list[str]]) -> dict[str, Any]:
        prefix = (query.get("prefix") or [""])[0]
        limit = int((query.get("limit") or [LIST_PAGE])[0])
        if not 1 <= limit <= LIST_PAGE:
            raise _bad(f"limit must be from 1 to {LIST_PAGE}")
        token = (query.get("paginationToken") or [""])[0]
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else None
        ids = sorted(r for r in self._data.get(namespace, {}) if r.startswith(prefix))
        if after is not None:
            ids = [r for r in ids if r > after]
        page = ids[:limit]
        out: dict[str, Any] = {"vectors": [{"id": r} for r in page]}
        if len(ids) > limit:
            out["pagination"] = {"next": base64.urlsafe_b64encode(page[-1].encode()).decode()}
        return out


def _check_metadata(rid: str, metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise _bad("metadata must be an object")
    for key, value in metadata.items():
        ok = isinstance(value, (str, bool, int, float)) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
        if not ok:
            raise _bad(
                f"Metadata value for field {key!r} must be a string, number, boolean or "
                "list of strings"
            )
    size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise _bad(
            f"Metadata size is {size} bytes, which exceeds the limit of "
            f"{MAX_METADATA_BYTES} bytes per vector (id {rid!r})"
        )


_OPS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"}


def _check_filter(flt: Any) -> None:
    if not isinstance(flt, dict):
        raise _bad("filter must be an object")
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise _bad(f"{key} takes a non-empty list")
            for c in cond:
                _check_filter(c)
        elif key.startswith("$"):
            raise _bad(f"unknown operator {key}")
        elif isinstance(cond, dict):
            for op in cond:
                if op not in _OPS:
                    raise _bad(f"unknown operator {op}")


def _matches(meta: dict[str, Any], flt: dict[str, Any]) -> bool:
    for key, cond in flt.items():
        if key == "$and":
            if not all(_matches(meta, c) for c in cond):
                return False
        elif key == "$or":
            if not any(_matches(meta, c) for c in cond):
                return False
        else:
            conds = cond if isinstance(cond, dict) else {"$eq": cond}
            if not all(_test(meta, key, op, arg) for op, arg in conds.items()):
                return False
    return True


def _test(meta: dict[str, Any], key: str, op: str, arg: Any) -> bool:
    if op == "$exists":
        return (key in meta) == bool(arg)
    if key not in meta:
        return op in ("$ne", "$nin")
    value = meta[key]
    values = value if isinstance(value, list) else [value]
    if op == "$eq":
        return any(_same(v, arg) for v in values)
    if op == "$ne":
        return not any(_same(v, arg) for v in values)
    if op == "$in":
        return any(_same(v, a) for v in values for a in arg)
    if op == "$nin":
        return not any(_same(v, a) for v in values for a in arg)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return {
        "$gt": value > arg,
        "$gte": value >= arg,
        "$lt": value < arg,
        "$lte": value <= arg,
    }[op]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _cosines(query: list[float], rows: list[list[float]]) -> list[float]:
    """Cosine similarity of ``query`` with each row (the index's metric)."""
    if not rows:
        return []
    matrix = np.asarray(rows, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(q)
    return [float(x) for x in (matrix @ q) / np.where(norms == 0, 1.0, norms)]


def main(argv: list[str] | None = None) -> None:
    """``python -m fakes.pinecone_server``: serve one fake index until killed."""
    import argparse

    parser = argparse.ArgumentParser(description="Serve a fake Pinecone index.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dimension", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--lag", type=float, default=0.0)
    args = parser.parse_args(argv)
    fake = FakePinecone(args.dimension, args.key, lag=args.lag)
    fake.start(port=args.port)
    threading.Event().wait()


if __name__ == "__main__":
    main()
