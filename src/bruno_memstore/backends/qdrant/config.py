"""Configuration of ``QdrantMemory``: URLs, client construction, error classes.

API keys travel only as a URL password or a keyword, never in a query string, where
:func:`~bruno_memstore.url.redact_url` would not hide them.
"""

from __future__ import annotations

import inspect
import math
import sqlite3
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from qdrant_client import AsyncQdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ...errors import InvalidArgumentError
from ...url import MemoryURL, check_header_secret

__all__ = [
    "DEFAULT_PORT",
    "LOCAL_OPTIONS",
    "SERVER_OPTIONS",
    "LocalClient",
    "is_throttled",
    "is_timeout",
    "is_unavailable",
    "make_client",
    "parse_memory_url",
    "split_server_url",
]

DEFAULT_PORT = 6333
LOCAL_OPTIONS: dict[str, type] = {
    "prefix": str,
    "text_cache_users": int,
    "context_window": int,
    "operation_timeout": float,
}
SERVER_OPTIONS: dict[str, type] = {
    **LOCAL_OPTIONS,
    "timeout": float,
    "prefer_grpc": bool,
    "grpc_port": int,
}


def parse_memory_url(url: MemoryURL, options: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(local path, None)`` or ``(None, server URL)`` for a ``qdrant`` memory URL; its
    query options (and an API key given as the password) are added to ``options`` unless
    given there already."""
    if url.driver is None:
        path = url.local_path(
            remote="qdrant:// is local mode and has no host: use qdrant:///relative/dir or "
            "qdrant:////absolute/dir, or qdrant+http://host:6333 for a server",
            missing="qdrant:/// needs a directory path",
        )
        options.update(url.apply_options(options, LOCAL_OPTIONS))
        return path, None
    if url.driver not in ("http", "https"):
        raise InvalidArgumentError(
            "url", f"unknown qdrant driver {url.driver!r}; use qdrant+http or qdrant+https"
        )
    if not url.host:
        raise InvalidArgumentError("url", "a qdrant+http(s) URL needs a host")
    example = "qdrant+https://:KEY@host:6333"
    options.update(url.key_options(options, SERVER_OPTIONS, example=example))
    host = f"[{url.host}]" if ":" in (url.host or "") else url.host
    return None, f"{url.driver}://{host}:{url.port or DEFAULT_PORT}{url.path.rstrip('/')}"


def split_server_url(url: str, api_key: str | None) -> tuple[str, str | None, str | None]:
    """``(scheme://host:port, path prefix or None, API key or None)`` of a server URL."""
    if not isinstance(url, str):
        raise InvalidArgumentError("url", "expected a string")
    MemoryURL.parse(url)  # the shared rule for the user part: refuses an ambiguous one
    parts = urlsplit(url)
    port = parts.port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError("url", "expected http://host:port or https://host:port")
    if parts.username:
        raise InvalidArgumentError("url", "give the API key as the password: https://:KEY@host")
    if parts.password is not None:
        if api_key is not None:
            raise InvalidArgumentError("api_key", "given twice (keyword and URL password)")
        api_key = unquote(parts.password)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    prefix = parts.path.rstrip("/") or None
    api_key = check_header_secret("api_key", api_key or None)
    return f"{parts.scheme}://{host}:{port or DEFAULT_PORT}", prefix, api_key


def make_client(
    *,
    path: str | None,
    url: str | None,
    api_key: str | None,
    url_prefix: str | None,
    timeout: float,
    prefer_grpc: bool,
    grpc_port: int,
) -> AsyncQdrantClient:
    """A client for local mode (``path``; ``":memory:"`` keeps nothing) or a server."""
    if path == ":memory:":
        return LocalClient(location=":memory:")
    if path is not None:
        return LocalClient(path=path)
    kwargs: dict[str, Any] = {
        "url": url,
        "api_key": api_key,
        "timeout": max(1, math.ceil(timeout)),
        "prefer_grpc": prefer_grpc,
        "grpc_port": grpc_port,
    }
    if url_prefix:
        kwargs["prefix"] = url_prefix
    if "check_compatibility" in inspect.signature(AsyncQdrantClient).parameters:
        kwargs["check_compatibility"] = False  # it would block the event loop on a request
    return AsyncQdrantClient(**kwargs)


class LocalClient(AsyncQdrantClient):
    """qdrant-client's local mode, which keeps each collection in a SQLite file of its own."""

    def secure_deletes(self) -> None:
        """Have SQLite overwrite deleted points with zeros (``secure_delete``), whatever its
        build default, in every collection opened so far."""
        local = getattr(self, "_client", None)  # the in-process engine this client wraps
        for collection in getattr(local, "collections", {}).values():
            conn = getattr(getattr(collection, "storage", None), "storage", None)
            if isinstance(conn, sqlite3.Connection):
                conn.execute("PRAGMA secure_delete = ON")


def _cause(exc: BaseException) -> BaseException:
    return exc.source if isinstance(exc, ResponseHandlingException) else exc


def _grpc_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        return str(getattr(code(), "name", ""))
    except Exception:
        return None


def is_timeout(exc: BaseException) -> bool:
    cause = _cause(exc)
    return (
        isinstance(cause, (TimeoutError, httpx.TimeoutException))
        or _grpc_code(cause) == "DEADLINE_EXCEEDED"
    )


def is_unavailable(exc: BaseException) -> bool:
    cause = _cause(exc)
    if isinstance(cause, UnexpectedResponse):
        return cause.status_code in (502, 503, 504)
    return (
        isinstance(cause, (ConnectionError, httpx.TransportError))
        or _grpc_code(cause) == "UNAVAILABLE"
    )


def is_throttled(exc: BaseException) -> bool:
    cause = _cause(exc)
    return (isinstance(cause, UnexpectedResponse) and cause.status_code == 429) or _grpc_code(
        cause
    ) == "RESOURCE_EXHAUSTED"
