"""Serving the fake: Weaviate's REST API (``http.server``) and gRPC API (grpcio's server) on
free local ports, both over one :class:`~.store.Store`."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc

from .grpc_api import add_services
from .store import FakeError, Store

__all__ = ["FakeWeaviate"]

VERSION = "1.32.0"  # the server version the fake reports (the client needs 1.27 or later)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _KeyCheck(grpc.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <key>`` (Weaviate's API-key auth)."""

    def __init__(self, api_key: str) -> None:
        self.expected = f"Bearer {api_key}"

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "anonymous access not enabled")

        self.deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        headers = dict(details.invocation_metadata or ())
        if headers.get("authorization") != self.expected:
            return self.deny
        return continuation(details)


class _Calls(grpc.ServerInterceptor):
    """Records the method of every gRPC call (``Search``, ``BatchObjects``, ...)."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        self.calls.append(details.method.rsplit("/", 1)[-1])
        return continuation(details)


class FakeWeaviate:
    """A fake Weaviate on ``127.0.0.1``: ``http_port`` (REST) and ``grpc_port`` (gRPC).

    Args:
        api_key: when given, every request must carry it as a bearer token.
        query_maximum_results: the server's ``QUERY_MAXIMUM_RESULTS``.
        http_port, grpc_port: where to serve (default: free ports).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        query_maximum_results: int = 10_000,
        http_port: int | None = None,
        grpc_port: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.store = Store(query_maximum_results=query_maximum_results)
        self.http_port = http_port or _free_port()
        self.grpc_port = grpc_port or _free_port()
        self.requests: list[str] = []  # "METHOD /path" of every REST request, in order
        self.calls: list[str] = []  # the method of every gRPC call, in order
        self._http: ThreadingHTTPServer | None = None
        self._grpc: grpc.Server | None = None

    @property
    def url(self) -> str:
        """The URL ``WeaviateMemory`` takes: ``weaviate://127.0.0.1:HTTP?grpc_port=GRPC``."""
        return f"weaviate://127.0.0.1:{self.http_port}?grpc_port={self.grpc_port}"

    def start(self) -> FakeWeaviate:
        handler = type("Handler", (_Rest,), {"fake": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        interceptors: list[grpc.ServerInterceptor] = [_Calls(self.calls)]
        if self.api_key:
            interceptors.append(_KeyCheck(self.api_key))
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8), interceptors=interceptors
        )
        add_services(self._grpc, self.store)
        self._grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        self._grpc.start()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> FakeWeaviate:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Rest(BaseHTTPRequestHandler):
    fake: FakeWeaviate
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    def _reply(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        size = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(size)) if size else None

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        body = self._body() if method in ("POST", "PUT", "DELETE", "PATCH") else None
        self.fake.requests.append(f"{method} {path}")
        if path.startswith("/v1/.well-known/"):
            return self._reply(200 if path.endswith(("ready", "live")) else 404)
        if self.fake.api_key and self.headers.get("Authorization") != f"Bearer {self.fake.api_key}":
            return self._reply(401, {"code": 401, "message": "anonymous access not enabled"})
        store = self.fake.store
        seg = path.split("/")[2:]  # after /v1
        try:
            with store.lock:
                answer = self._route(method, seg, body, parse_qs(parts.query))
        except FakeError as exc:
            return self._reply(exc.status, {"error": [{"message": str(exc)}]})
        status, payload = answer
        return self._reply(status, payload)

    def _route(
        self, method: str, seg: list[str], body: Any, query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        store = self.fake.store
        if seg == ["meta"] and method == "GET":
            return 200, {
                "hostname": "http://[::]:8080",
                "modules": {},
                "version": VERSION,
                "grpcMaxMessageSize": 104858000,
            }
        if seg[:1] == ["schema"]:
            if len(seg) == 1:
                if method == "GET":
                    return 200, {"classes": [c.config for c in store.collections.values()]}
                if method == "POST":
                    return 200, store.create(body)
            elif len(seg) == 2:
                if method == "GET":
                    return 200, store.collection(seg[1]).config
                if method == "DELETE":
                    store.drop(seg[1])
                    return 200, None
            elif len(seg) == 3 and seg[2] == "tenants":
                coll = store.collection(seg[1])
                if not coll.multi_tenant:
                    raise FakeError(f"multi-tenancy is not enabled for class {coll.name!r}")
                if method == "POST":
                    for t in body:
                        coll.tenants.setdefault(t["name"], {})
                    return 200, body
                if method == "DELETE":
                    for name in body:
                        coll.tenants.pop(name, None)
                    return 200, None
                if method == "GET":
                    return 200, [{"name": n, "activityStatus": "HOT"} for n in coll.tenants]
            elif len(seg) == 4 and seg[2] == "tenants" and method == "GET":
                coll = store.collection(seg[1])
                if seg[3] not in coll.tenants:
                    raise FakeError(f"tenant {seg[3]!r} not found", 404)
                return 200, {"name": seg[3], "activityStatus": "HOT"}
        raise FakeError(f"the fake does not serve {method} /v1/{'/'.join(seg)}", 404)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")
