"""``MemcachedMemory``: a cache-grade memory in memcached, through ``aiomcache``.

It keeps conversations, sessions and memory entries (the kit's
:class:`~bruno_memstore.backends.kit.kv_memory.KeyValueMemory` does, over memcached's
commands), and what it keeps it keeps correctly. It is not durable (a restart or an
eviction loses data), cannot search and cannot list users; those operations raise
``CapabilityError`` -- pair it with a durable store in ``HybridMemory``.

Layout (``P`` is the prefix, ``h(x)`` a 22-character hash of ``x``): ``P:c:h(conv)`` the
conversation's owner and generation, ``P:c:h(conv):gen:i`` its message index, ``P:m:h(id)``
a message, ``P:s:h(id)`` and ``P:e:h(id)`` sessions and memory entries,
``P:u:h(user):c|s|e`` the user's conversations, sessions and memory entries, ``P:x`` the
entries that expire.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar, NoReturn

from ...capabilities import Capability
from ...errors import BackendUnavailableError, CapabilityError, InvalidArgumentError
from ...limits import Limits
from ...models import SearchHit, SearchRequest
from ...primitives import ExportKind
from ...url import MemoryURL, redact_url
from ..kit.kv import hash_id
from ..kit.kv_memory import KeyValueMemory
from ..kit.settings import positive_int
from .client import HardenedClient
from .store import Store

__all__ = ["MemcachedKeys", "MemcachedMemory"]

_DEFAULT_URL = "memcached://127.0.0.1:21211"
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_HYBRID_HINT = (
    "; memcached is a cache: compose it with a durable backend, e.g. "
    "HybridMemory(cache=MemcachedMemory(...), persistent=SQLiteMemory())"
)


class MemcachedKeys:
    """The key layout (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def record(self, kind: str, record_id: str) -> str:
        return f"{self.prefix}:{kind}:{hash_id(record_id)}"

    def index(self, conversation_id: str, gen: str) -> str:
        return f"{self.record('c', conversation_id)}:{gen}:i"

    def user_list(self, user_id: str, kind: str) -> str:
        return f"{self.record('u', user_id)}:{kind}"

    def expiring(self) -> str:
        return f"{self.prefix}:x"


class MemcachedMemory(KeyValueMemory):
    """A cache-grade memory in memcached: messages, sessions, memory entries, expiry.

    Args:
        url: ``memcached://host[:port][?option=value...]``; the options below may be
            given in the URL too (keyword arguments win).
        prefix: namespace of every key, so that several memories share one memcached.
        ttl: seconds after its last write that data expires (``None``: kept until
            memcached evicts it). A write refreshes the conversation it touches.
        pool_size: most open connections.
        connect_timeout: seconds to wait for the server when connecting.
        max_message_bytes: largest encoded message accepted (larger ones raise
            ``InvalidArgumentError`` before anything is written). Values above memcached's
            1 MB item limit are split into parts.
        **options: see :class:`~bruno_memstore.base.MemoryBackend` (``context_window``,
            ``operation_timeout``, default 10 seconds, and ``retry``).

    Raises:
        MissingDependencyError: ``aiomcache`` is not installed.
        InvalidArgumentError: a malformed URL or option.
    """

    backend_name: ClassVar[str] = "memcached"
    loop_bound = True  # aiomcache's connections
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.MESSAGES, Capability.SESSIONS, Capability.MEMORIES, Capability.TTL}
    )
    _URL_OPTIONS: ClassVar[dict[str, type]] = {
        "prefix": str,
        "ttl": int,
        "pool_size": int,
        "connect_timeout": float,
        "max_message_bytes": int,
        "operation_timeout": float,
        "context_window": int,
    }

    def __init__(
        self,
        url: str = _DEFAULT_URL,
        *,
        prefix: str | None = None,
        ttl: int | None = None,
        **options: Any,
    ) -> None:
        parsed = MemoryURL.parse(url)
        if parsed.scheme != "memcached":
            raise InvalidArgumentError("url", f"expected memcached://, got {parsed}")
        given = {n: v for n, v in (("prefix", prefix), ("ttl", ttl)) if v is not None}
        merged = parsed.apply_options({**given, **options}, self._URL_OPTIONS)
        prefix = merged.pop("prefix", "bruno")
        ttl = merged.pop("ttl", None)
        pool_size = merged.pop("pool_size", 8)
        connect_timeout = merged.pop("connect_timeout", 5.0)
        max_bytes = merged.pop("max_message_bytes", 16 * 1024 * 1024)
        merged.setdefault("operation_timeout", 10.0)
        super().__init__(**merged)
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise InvalidArgumentError("prefix", "1 to 64 letters, digits, '_', '.' or '-'")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
            raise InvalidArgumentError("ttl", "must be a positive number of seconds, or None")
        positive_int("pool_size", pool_size)
        positive_int("max_message_bytes", max_bytes)
        if not isinstance(connect_timeout, (int, float)) or connect_timeout <= 0:
            raise InvalidArgumentError("connect_timeout", "must be a positive number")
        if parsed.path not in ("", "/"):
            raise InvalidArgumentError("url", "memcached URLs have no path")
        if parsed.username or parsed.password is not None:
            # Silently ignored, a password would only end up in logs.
            raise InvalidArgumentError(
                "url", "memcached takes no user or password: memcached://host:port"
            )
        self._url = parsed
        self._host = parsed.host or "127.0.0.1"
        self._port = parsed.port or 11211
        self.prefix = prefix
        self.keys = MemcachedKeys(prefix)
        self.ttl = ttl
        self._pool_size = pool_size
        self._connect_timeout = float(connect_timeout)
        self._max_bytes = max_bytes
        self.limits = Limits(
            max_record_bytes=max_bytes, size_limit=f"max_message_bytes={max_bytes}"
        )
        self._client: HardenedClient | None = None

    @classmethod
    def from_url(cls, url: MemoryURL, **options: Any) -> MemcachedMemory:
        """Build from a parsed ``memcached://`` URL."""
        return cls(url.raw, **options)

    def describe(self) -> str:
        return f"{redact_url(self._url.raw)} (prefix {self.prefix!r})"

    # ================================================================ errors and lifecycle

    def _is_transient(self, exc: BaseException) -> bool:
        return self._is_unavailable(exc) and not isinstance(exc, TimeoutError)

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, (ConnectionError, OSError, asyncio.IncompleteReadError))

    async def _connect(self) -> None:
        client = HardenedClient(self._host, self._port, pool_size=self._pool_size, pool_minsize=1)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await client.version()
        except Exception as exc:
            await client.close()
            raise BackendUnavailableError(
                f"cannot reach memcached at {self.describe()} within "
                f"{self._connect_timeout:g}s: {type(exc).__name__}: {exc}",
                backend=self.backend_name,
                operation="connect",
                cause=exc,
            ) from exc
        self._client = client
        self._store = Store(client, ttl=self.ttl)

    async def _close(self) -> None:
        client, self._client, self._store = self._client, None, None
        if client is not None:
            await client.close()

    async def server_stats(self) -> dict[str, str]:
        """memcached's ``stats`` (items, memory, evictions), for monitoring."""
        await self._ensure_connected()
        assert self._client is not None
        raw = await self._client.stats()
        return {k.decode(): (v or b"").decode() for k, v in raw.items()}

    # ================================================================ what a cache cannot do

    def _refuse(self, operation: str, capability: Capability) -> NoReturn:
        raise CapabilityError(
            f"MemcachedMemory does not support {capability.value!r}{_HYBRID_HINT}",
            backend=self.backend_name,
            operation=operation,
        )

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        self._refuse("search", Capability.FULL_TEXT)

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        self._refuse("forget_user", Capability.LISTING)

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        self._refuse("export", Capability.LISTING)
        yield []  # pragma: no cover - makes this an async generator
