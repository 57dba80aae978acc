"""Configuration of ``WeaviateMemory``: URLs, the client, and which errors are which.

API keys travel only as a URL password or a keyword, never in a query string, where
:func:`~bruno_memstore.url.redact_url` would not hide them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import weaviate
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.exceptions import (
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateClosedClientError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

from ...errors import InvalidArgumentError
from ...url import MemoryURL, check_header_secret

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_URL",
    "URL_OPTIONS",
    "is_missing_tenant",
    "is_timeout",
    "is_transient",
    "is_unavailable",
    "make_client",
    "parse_memory_url",
    "split_url",
]

DEFAULT_URL = "http://localhost:8080"
DEFAULT_GRPC_PORT = 50051
URL_OPTIONS: dict[str, type] = {
    "prefix": str,
    "grpc_port": int,
    "grpc_host": str,
    "timeout": float,
    "query_maximum_results": int,
    "context_window": int,
    "operation_timeout": float,
}


def parse_memory_url(url: MemoryURL, options: dict[str, Any]) -> str:
    """The server URL (``http://host:port``) of ``weaviate://host:port`` or
    ``weaviate+https://[:KEY@]host:port``; query options, and an API key given as the
    password, are added to ``options`` unless given there already."""
    if url.driver not in (None, "http", "https"):
        raise InvalidArgumentError(
            "url", f"unknown weaviate driver {url.driver!r}; use weaviate:// or weaviate+https://"
        )
    if not url.host:
        raise InvalidArgumentError("url", "a weaviate URL needs a host: weaviate://host:8080")
    if url.path.strip("/"):
        raise InvalidArgumentError("url", "a weaviate URL has no path: weaviate://host:port")
    options.update(url.key_options(options, URL_OPTIONS, example="weaviate+https://:KEY@host"))
    scheme = url.driver or "http"
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = url.port or (443 if scheme == "https" else 8080)
    return f"{scheme}://{host}:{port}"


def split_url(url: str, api_key: str | None) -> tuple[bool, str, int, str | None]:
    """``(secure, host, port, API key)`` of ``http(s)://[:KEY@]host[:port]``."""
    if not isinstance(url, str):
        raise InvalidArgumentError("url", "expected a string")
    MemoryURL.parse(url)  # the shared rule for the user part: refuses an ambiguous one
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise InvalidArgumentError("url", "the port is unreadable") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError("url", "expected http://host:port or https://host:port")
    if parts.username:
        raise InvalidArgumentError("url", "give the API key as the password: https://:KEY@host")
    if parts.path.strip("/") or parts.query:
        raise InvalidArgumentError("url", "expected http(s)://host:port, with no path or query")
    if parts.password is not None:
        if api_key is not None:
            raise InvalidArgumentError("api_key", "given twice (keyword and URL password)")
        api_key = parts.password
    secure = parts.scheme == "https"
    api_key = check_header_secret("api_key", api_key or None)
    return secure, parts.hostname, port or (443 if secure else 8080), api_key


def make_client(
    *,
    secure: bool,
    host: str,
    port: int,
    grpc_host: str,
    grpc_port: int,
    api_key: str | None,
    timeout: float,
) -> weaviate.WeaviateAsyncClient:
    """An unconnected async client. Its start-up checks are skipped: they ask pypi.org for
    the newest client version on every connect; the backend checks readiness itself."""
    return weaviate.use_async_with_custom(
        http_host=host,
        http_port=port,
        http_secure=secure,
        grpc_host=grpc_host,
        grpc_port=grpc_port,
        grpc_secure=secure,
        auth_credentials=Auth.api_key(api_key) if api_key else None,
        additional_config=AdditionalConfig(
            timeout=Timeout(init=timeout, query=timeout, insert=timeout)
        ),
        skip_init_checks=True,
    )


# ----------------------------------------------------------------------------- errors


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _grpc_code(exc: BaseException) -> Any:
    code = getattr(exc, "code", None)
    if isinstance(exc, grpc.RpcError) and callable(code):
        return code()
    return None


def is_timeout(exc: BaseException) -> bool:
    return any(
        isinstance(e, (WeaviateTimeoutError, httpx.TimeoutException, asyncio.TimeoutError))
        or _grpc_code(e) == grpc.StatusCode.DEADLINE_EXCEEDED
        for e in _chain(exc)
    )


def is_unavailable(exc: BaseException) -> bool:
    return any(
        isinstance(
            e,
            (
                WeaviateConnectionError,
                WeaviateGRPCUnavailableError,
                WeaviateStartUpError,
                httpx.TransportError,
                ConnectionError,
            ),
        )
        or _grpc_code(e) == grpc.StatusCode.UNAVAILABLE
        or (
            isinstance(e, WeaviateBaseError)
            and "StatusCode.UNAVAILABLE" in getattr(e, "message", str(e))
        )
        for e in _chain(exc)
    )


def is_transient(exc: BaseException) -> bool:
    """Errors a retry may cure: the server unreachable or slow, throttling, 5xx."""
    if isinstance(exc, WeaviateClosedClientError):
        return False
    if is_unavailable(exc) or is_timeout(exc):
        return True
    return any(
        (isinstance(e, UnexpectedStatusCodeError) and (e.status_code in (429, 502, 503, 504)))
        or _grpc_code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED
        for e in _chain(exc)
    )


def is_missing_tenant(exc: BaseException) -> bool:
    """Weaviate's answer to a read or deletion in a tenant that does not exist."""
    return isinstance(exc, WeaviateBaseError) and "tenant not found" in str(exc)
