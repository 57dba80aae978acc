"""``RedisMemory``: Redis 7 through ``redis.asyncio``, no modules needed (RediSearch is used
for vector search when the server has it). On a Redis Cluster (``redis.asyncio.cluster``),
each user's keys in the slot of the user's own tag, the same scripts run on that slot's
master, and ``cluster.ClusterDirectory`` keeps the directory keys (in slots of their own)
consistent with the owners' data; writes wait for replicas (``WAIT``).

Every primitive is one Lua script (``scripts``), so each change is atomic on the server:
the ownership check and the insert, a message and all of its index entries, a deletion and
everything that refers to the deleted records. All of a user's keys share one hash tag
(``keys``); a small global directory maps conversation, message, session and memory
ids to their owner. Search is BM25 computed in Lua from per-user posting lists, with the
same analysis and formula as :class:`~bruno_memstore.search.BM25Index`.

Vectors: each record's vector is a small hash of its own (``P:v:...``), written and deleted
by the record's own script. Where the server has RediSearch, one HNSW index over those
hashes answers KNN queries with the user, kind, conversation and memory filters inside the
query; elsewhere search is exact, in the client, over the user's vectors loaded into a
:class:`~bruno_memstore.backends.kit.vectors.UserVectorCache` (kept while the user's generation key,
bumped by those scripts, is unchanged).

See ``docs/backends/redis.md`` for the key layout, costs, TTL and durability.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE

from ...base import archive_marker
from ...capabilities import SEARCHABLE_STORE, Capability
from ...embeddings.adapter import VectorSpace
from ...errors import (
    BackendError,
    BackendUnavailableError,
    InvalidArgumentError,
    OwnershipError,
    SchemaError,
)
from ...models import (
    MemoryFilter,
    MemoryRecord,
    MessageRecord,
    SearchHit,
    SearchRequest,
    SessionRecord,
    hit_order,
    load_json,
)
from ...primitives import (
    AppendResult,
    ExportKind,
    MessagePruning,
    VectorPrimitives,
    memory_taken,
    session_taken,
)
from ...retry import RetryPolicy
from ...search import ANALYSIS_VERSION, BM25Index, index_text, terms
from ...url import MemoryURL, redact_url
from ..kit.batches import EXPORT_BATCH, batches
from ..kit.codec import MEMORIES, MESSAGES
from ..kit.driver_url import DriverURLBackend
from ..kit.hits import Found
from ..kit.settings import positive_int
from ..kit.vectors import ExactVectors, StaleLog, VectorIndex, nearest, vector_to_bytes
from .cluster import CLUSTER_SOURCES, ClusterDirectory, ContendedError, Wire
from .held import HeldConnections
from .keys import (
    LAYOUT_VERSION,
    RedisKeys,
    decode_id,
    member_seq,
    rank_member,
    ts_from_hex,
    ts_hex,
)
from .quiet import QUIET_BATCH, QuietIndexer
from .scripts import SOURCES

__all__ = ["VECTOR_MODES", "RedisMemory", "vector_tag"]

log = logging.getLogger("bruno_memstore.redis")

VECTOR_MODES = ("auto", "redisearch", "client")
"""``vector_search`` values: use RediSearch when the server has it, insist on it, or never."""
# HNSW graph parameters of the RediSearch index (RediSearch's defaults are 16 and 200).
_HNSW_M = 16
_HNSW_EF_CONSTRUCTION = 200
_LOAD_BATCH = 1000  # vector documents per loading step (search in the client)

# Posting value = document length * _F + term frequency (see _redis_lua); both stay below
# _F, so every value is below 2**52, exact in Lua's doubles.
_F = 1 << 26
_BM25 = BM25Index()
_REWRITE_POLL = 0.05  # seconds between two looks at a running append-only file rewrite
_INDEX_POLL = 0.05  # seconds between two looks at a vector index scanning stored documents
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# A memory entry is stored as the codec's row; a message body as these fields (its id,
# conversation, owner and arrival number live in the keys around it).
_BODY = MESSAGES.ordered(
    ("role", "content", "message_type", "timestamp", "ts_us", "metadata", "parent_id")
)

# Our URL query options (name -> type), and redis-py's TLS options, passed through to it.
_OPTIONS: dict[str, type] = {
    "prefix": str,
    "conversation_ttl": float,
    "socket_timeout": float,
    "connect_timeout": float,
    "max_connections": int,
    "pool_timeout": float,
    "require_durable": bool,
    "vector_search": str,
    "vector_cache_users": int,
    "hnsw_ef_runtime": int,
    "operation_timeout": float,
    "context_window": int,
    "cluster": bool,
    "wait_replicas": int,
    "wait_timeout": float,
}
_PASSTHROUGH = frozenset(
    {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
)
# The declared analysis version plus the analysed form of text that exercises every step of
# the shared analysis (so a change the version forgot still shows): what the stored posting
# lists were built with. A different fingerprint at connect re-indexes every document.
_PROBE = "Children's bicycles WERE parked; the 3rd rider didn't stop at Zürich's 駅前 café"
ANALYZER_FINGERPRINT = (
    f"{ANALYSIS_VERSION}:{hashlib.sha256(index_text(_PROBE).encode()).hexdigest()[:16]}"
)
_LOCK_MS = 60_000
# A message stored on its own waits in T:pend for its posting entries. With this many
# waiting for a user, they are written at the next quiet moment (quiet.py), or by a search of
# the user first, one script per batch; a store that finds INDEX_BACKLOG waiting writes a batch
# itself.
INDEX_BATCH = 256
INDEX_BACKLOG = 8 * INDEX_BATCH

_DEFAULTS: dict[str, Any] = {
    "prefix": "bruno",
    "conversation_ttl": None,
    "socket_timeout": 5.0,
    "connect_timeout": 5.0,
    "max_connections": 50,
    "pool_timeout": 5.0,
    "require_durable": False,
    "vector_search": "auto",
    "vector_cache_users": 64,
    "hnsw_ef_runtime": 100,
    "cluster": False,
    "wait_replicas": None,
    "wait_timeout": 1.0,
}
# The scripts that write: on a cluster, each is followed by WAIT on the same connection.
_WRITES = frozenset(
    {
        "append", "delete_messages", "put_memory", "delete_own_memory", "forget_memories",
        "purge_expired", "purge_user", "put_session", "drop_conversation", "forget_rest",
        "put_vectors", "drop_vectors", "reindex", "index_pending", "undo",
    }
)  # fmt: skip


class NotReplicatedError(rexc.RedisError):
    """A write ran on the master but WAIT did not see it on enough replicas in time."""


class RedisMemory(DriverURLBackend, VectorPrimitives, MessagePruning):
    """Memory in Redis 7: a standalone server (or a primary behind a stable address), or a
    Redis Cluster; no modules needed.

    Args:
        redis_url: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://`` for TLS;
            ``redis+cluster://host:port`` (``rediss+cluster://``) for a Redis Cluster.
            Query options (``?prefix=app&conversation_ttl=86400``) set the keywords below;
            a keyword given explicitly wins.
        prefix: namespace of every key (no ``{``, ``}``); several apps can share a server.
        conversation_ttl: seconds a conversation lives after its last write (``None``: no
            expiry, the default). Expiry is judged on the Redis server's clock.
        socket_timeout: seconds any single Redis call may take.
        connect_timeout: seconds to open a connection.
        max_connections: size of the connection pool; more concurrent calls wait for one.
        pool_timeout: seconds to wait for a free pooled connection.
        require_durable: refuse to connect unless the server persists every acknowledged
            write (``appendonly yes``, ``appendfsync always``).
        vector_search: ``"auto"`` (RediSearch's HNSW index when the server has the module,
            else exact search in the client), ``"redisearch"`` (refuse to connect without
            it) or ``"client"`` (never use it). :attr:`vector_mode` says what is used.
        vector_cache_users: users whose vectors are kept loaded (search in the client).
        hnsw_ef_runtime: candidates the HNSW graph search keeps (RediSearch's
            ``EF_RUNTIME``, at least the number of results asked for): higher finds the
            true nearest neighbours more often, at some cost in time.
        cluster: open a Redis Cluster (as ``redis+cluster://`` does): the store's users
            spread over the slots, each script sent to its user's master.
        wait_replicas: on a cluster, replicas that must confirm each write (``WAIT``) before
            it is acknowledged; ``None``: 1 when the master of ``P:meta`` has a replica, else 0.
        wait_timeout: seconds ``WAIT`` may take; an unconfirmed write is retried.
        **options: see :class:`~bruno_memstore.base.MemoryBackend` (``context_window``,
            ``operation_timeout``, ``retry``; the default retry is :attr:`DEFAULT_RETRY`).

    ``DURABLE`` is declared once connected, and only if the server (on a cluster, every
    node) runs with ``appendonly yes`` and ``appendfsync always``. See
    ``docs/backends/redis.md`` ("Durability", "Cluster").
    """

    backend_name: ClassVar[str] = "redis"
    loop_bound = True  # redis.asyncio's connections
    capabilities: ClassVar[frozenset[Capability]] = SEARCHABLE_STORE | {
        Capability.TTL,
        Capability.VECTORS,
        Capability.PRUNING,
    }

    DEFAULT_RETRY: ClassVar[RetryPolicy] = RetryPolicy(
        attempts=8, initial_backoff=0.05, max_backoff=1.0, deadline=15.0
    )
    """Bridges a server restart or a failover (a few seconds) without failing calls."""

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "bruno",
        conversation_ttl: float | None = None,
        socket_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        max_connections: int = 50,
        pool_timeout: float = 5.0,
        require_durable: bool = False,
        vector_search: str = "auto",
        vector_cache_users: int = 64,
        hnsw_ef_runtime: int = 100,
        cluster: bool = False,
        wait_replicas: int | None = None,
        wait_timeout: float = 1.0,
        **options: Any,
    ) -> None:
        url = MemoryURL.parse(redis_url)
        if url.scheme not in ("redis", "rediss") or url.driver not in (None, "cluster"):
            raise InvalidArgumentError(
                "redis_url",
                f"expected a redis://, rediss:// or redis+cluster:// URL, got {url.scheme!r}"
                + (f" with driver {url.driver!r}" if url.driver else ""),
            )
        given = {
            "prefix": prefix,
            "conversation_ttl": conversation_ttl,
            "socket_timeout": socket_timeout,
            "connect_timeout": connect_timeout,
            "max_connections": max_connections,
            "pool_timeout": pool_timeout,
            "require_durable": require_durable,
            "vector_search": vector_search,
            "vector_cache_users": vector_cache_users,
            "hnsw_ef_runtime": hnsw_ef_runtime,
            "cluster": cluster,
            "wait_replicas": wait_replicas,
            "wait_timeout": wait_timeout,
        }
        settings, base_options, driver_query = _merge_options(url, given, options)
        base_options.setdefault("retry", self.DEFAULT_RETRY)
        super().__init__(**base_options)
        self._url = url
        self._driver_url = _driver_url(url, driver_query)
        self.cluster = bool(settings["cluster"]) or url.driver == "cluster"
        self.prefix = _check_prefix(settings["prefix"])
        self.keys = RedisKeys(self.prefix, cluster=self.cluster)
        # On a cluster, scripts run on their user's slot (see cluster.py); P:meta's master
        # answers the store-wide checks at connect.
        self._slot_key = self.keys.glob("meta")
        self._directory = (
            ClusterDirectory(
                self,
                lambda: Wire(self._client, self._shas, self._scripts, self._wait, self._command),
            )
            if self.cluster
            else None
        )
        if self.cluster:
            _check_cluster_url(url)
            if settings["vector_search"] == "redisearch":
                raise InvalidArgumentError(
                    "vector_search", "RediSearch is not used on a Redis Cluster; use 'auto'"
                )
        replicas = settings["wait_replicas"]
        if replicas is not None and (isinstance(replicas, bool) or replicas < 0):
            raise InvalidArgumentError("wait_replicas", "must be a number of replicas >= 0")
        if not settings["wait_timeout"] > 0:
            raise InvalidArgumentError("wait_timeout", "must be a positive number of seconds")
        self._wait: tuple[int, int] = (0, 0)  # replicas, milliseconds; set at connect
        ttl = settings["conversation_ttl"]
        if ttl is not None and (isinstance(ttl, bool) or not ttl > 0):
            raise InvalidArgumentError("conversation_ttl", "must be a positive number of seconds")
        self.conversation_ttl: float | None = None if ttl is None else float(ttl)
        self._ttl_ms = 0 if ttl is None else max(1, round(float(ttl) * 1000))
        for name in ("socket_timeout", "connect_timeout", "pool_timeout"):
            if not settings[name] > 0:
                raise InvalidArgumentError(name, "must be a positive number of seconds")
        if isinstance(settings["max_connections"], bool) or settings["max_connections"] < 1:
            raise InvalidArgumentError("max_connections", "must be at least 1")
        if settings["vector_search"] not in VECTOR_MODES:
            raise InvalidArgumentError(
                "vector_search", f"expected one of {', '.join(VECTOR_MODES)}"
            )
        for name in ("vector_cache_users", "hnsw_ef_runtime"):
            positive_int(name, settings[name])
        users = settings["vector_cache_users"]
        self._settings = settings
        self._client: Any = None
        self._pool: Any = None
        self._scripts: dict[str, Any] = {}
        self._shas: dict[str, str] = {}
        self._indexing: set[str] = set()  # users whose pending documents this process indexes
        self._quiet = QuietIndexer(self._index_batch, self.describe)
        self._io_timeout: float | None = None  # socket_timeout, when _command applies it
        self._held: HeldConnections | None = None  # standalone: the scripts' connections
        self._slots = asyncio.Semaphore(max(1, settings["max_connections"]))
        self._vector_mode: str | None = None
        self._index_dimension: int | None = None  # of the RediSearch index, once checked
        # Two per user: message vectors, memory-entry vectors.
        # Search in the client: each user's message vectors follow the user's append log.
        self._vectors = ExactVectors(max_users=users)
        self._vector_cache = self._vectors.cache

    def describe(self) -> str:
        shown = (
            self._url.raw.split("?", 1)[0].split("#", 1)[0] if self.cluster else self._driver_url
        )
        text = f"{redact_url(shown)}, prefix={self.prefix!r}"
        return f"{text}, vectors={self._vector_mode}" if self._vector_mode else text

    @property
    def vector_mode(self) -> str | None:
        """How vectors are searched, once connected: ``"redisearch"`` (the server's HNSW
        index) or ``"client"`` (exact, in this process)."""
        return self._vector_mode

    @property
    def vector_index_name(self) -> str:
        """The name of this store's RediSearch index (used in ``"redisearch"`` mode)."""
        return f"{self.keys.prefix}:vectors"

    # ================================================================ lifecycle

    async def _connect(self) -> None:
        if self.cluster:
            await self._connect_cluster()
            return
        s = self._settings
        # The checks run on a connection of their own, with redis-py's socket timeout.
        client = aioredis.Redis.from_url(
            self._driver_url,
            socket_timeout=s["socket_timeout"],
            socket_connect_timeout=s["connect_timeout"],
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            cluster = await client.info("cluster")
            if int(cluster.get("cluster_enabled", 0)):
                raise BackendError(
                    "the server is a Redis Cluster node: open it with a redis+cluster:// URL "
                    "(or ?cluster=true)",
                    backend=self.backend_name,
                    operation="connect",
                )
            memory = await client.info("memory")
            policy = str(memory.get("maxmemory_policy", "noeviction"))
            if policy.startswith("allkeys-"):
                # Evicting any key would silently drop stored messages and leave the
                # indexes pointing at them.
                raise BackendError(
                    f"the server evicts keys under memory pressure (maxmemory-policy "
                    f"{policy}); a memory store needs noeviction (or a volatile-* policy)",
                    backend=self.backend_name,
                    operation="connect",
                )
            lacking = await _not_durable(client)
            durable = lacking is None
            if s["require_durable"] and lacking is not None:
                raise BackendError(
                    f"require_durable is set but the server does not persist every "
                    f"acknowledged write ({lacking})",
                    backend=self.backend_name,
                    operation="connect",
                )
            await self._check_layout(client)
            scripts = {}
            for name, text in SOURCES.items():
                script = client.register_script(text)
                await client.script_load(script.script)
                scripts[name] = script
            await self._check_analysis(client, scripts)
            mode = await self._detect_vector_mode(client)
        finally:
            await client.aclose()
        # A plain pool behind our own semaphore: redis-py's BlockingConnectionPool costs
        # tens of microseconds per command, a third of a local round trip.
        pool = aioredis.ConnectionPool.from_url(
            self._driver_url,
            max_connections=s["max_connections"],
            # socket_timeout is applied by _command, once per call: redis-py's own wraps
            # every write in asyncio.wait_for (a task per command) and every read in a
            # timeout, a third of the client's cost of a one-message store.
            socket_timeout=None,
            socket_connect_timeout=s["connect_timeout"],
            decode_responses=True,
            # Retries belong to MemoryBackend._run (bounded, only for transient errors).
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis(connection_pool=pool)
        caps = type(self).capabilities
        self.capabilities = caps | {Capability.DURABLE} if durable else caps  # type: ignore[misc]
        self._client, self._pool, self._scripts = client, pool, scripts
        self._shas = {name: script.sha for name, script in scripts.items()}
        self._io_timeout = s["socket_timeout"]
        self._slots = asyncio.Semaphore(s["max_connections"])
        self._held = HeldConnections(pool, s["max_connections"])
        self._vector_mode, self._index_dimension = mode, None
        log.info(
            "%s: vector search %s",
            self.describe(),
            "by RediSearch (HNSW index, filters inside the KNN query)"
            if mode == "redisearch"
            else "exact, in the client (the server has no RediSearch)"
            if s["vector_search"] == "auto"
            else "exact, in the client (vector_search='client')",
        )

    async def _connect_cluster(self) -> None:
        """Connect to a Redis Cluster: each user's keys in the slot of the user's tag, whose
        master answers the user's scripts; writes wait for ``wait_replicas`` replicas."""
        s = self._settings
        client = RedisCluster.from_url(
            self._driver_url,
            max_connections=s["max_connections"],
            socket_timeout=s["socket_timeout"],
            socket_connect_timeout=s["connect_timeout"],
            decode_responses=True,
        )
        try:
            try:
                await client.initialize()
            except (rexc.RedisClusterException, rexc.ConnectionError, OSError) as exc:
                if "cluster mode is not enabled" in str(exc).lower():
                    raise BackendError(
                        f"the server at {self.describe()} is not in cluster mode: open it "
                        f"with a redis:// URL",
                        backend=self.backend_name,
                        operation="connect",
                    ) from None
                raise BackendUnavailableError(
                    f"cannot reach the Redis Cluster at {self.describe()}: "
                    f"{self._redact(str(exc))}",
                    backend=self.backend_name,
                    operation="connect",
                ) from None
            master = client.get_node_from_key(self._slot_key)
            state = await client.cluster_info(target_nodes=master)
            if state.get("cluster_state") != "ok":
                raise BackendUnavailableError(
                    f"the Redis Cluster at {self.describe()} is not serving "
                    f"(cluster_state {state.get('cluster_state')!r})",
                    backend=self.backend_name,
                    operation="connect",
                )
            lacking: str | None = None
            for node in client.get_nodes():
                memory = await client.info("memory", target_nodes=node)
                policy = str(memory.get("maxmemory_policy", "noeviction"))
                if policy.startswith("allkeys-"):
                    raise BackendError(
                        f"node {node.name} evicts keys under memory pressure (maxmemory-policy "
                        f"{policy}); a memory store needs noeviction (or a volatile-* policy)",
                        backend=self.backend_name,
                        operation="connect",
                    )
                lacking = lacking or await _not_durable(client, target_nodes=node)
            durable = lacking is None
            if s["require_durable"] and lacking is not None:
                raise BackendError(
                    f"require_durable is set but not every cluster node persists every "
                    f"acknowledged write ({lacking})",
                    backend=self.backend_name,
                    operation="connect",
                )
            replicas = s["wait_replicas"]
            if replicas is None:
                replication = await client.info("replication", target_nodes=master)
                replicas = min(1, int(replication.get("connected_slaves", 0)))
            self._wait = (replicas, max(1, round(s["wait_timeout"] * 1000)))
            await self._refuse_one_slot_layout(client)
            scripts = {}
            for name, text in {**SOURCES, **CLUSTER_SOURCES}.items():
                script = client.register_script(text)
                await client.script_load(script.script)  # on every master
                scripts[name] = script
            await self._check_analysis(client, scripts)
        except BaseException:
            await client.aclose()
            raise
        caps = type(self).capabilities
        self.capabilities = caps | {Capability.DURABLE} if durable else caps  # type: ignore[misc]
        self._client, self._pool, self._scripts = client, None, scripts
        self._shas = {name: script.sha for name, script in scripts.items()}
        self._io_timeout = None  # the cluster client's connections time out themselves
        self._slots = asyncio.Semaphore(s["max_connections"])
        self._vector_mode, self._index_dimension = "client", None
        log.info(
            "%s: users spread over the cluster's slots, writes wait for %d replica(s), "
            "vector search in the client",
            self.describe(),
            self._wait[0],
        )

    async def _detect_vector_mode(self, client: Any) -> str:
        """``"redisearch"`` if the server answers RediSearch commands (and that is wanted)."""
        wanted = self._settings["vector_search"]
        if wanted == "client":
            return "client"
        try:
            await client.execute_command("FT._LIST")
        except rexc.ResponseError as exc:
            if wanted == "redisearch":
                raise BackendError(
                    f"vector_search='redisearch' but the server has no RediSearch module ({exc})",
                    backend=self.backend_name,
                    operation="connect",
                ) from exc
            return "client"
        return "redisearch"

    async def _check_analysis(self, client: Any, scripts: dict[str, Any]) -> None:
        """Re-index every document if the shared text analysis changed since it was indexed.

        One process re-indexes (under a lock key); others connecting meanwhile wait for it.
        """
        meta, lock = self.keys.glob("meta"), self.keys.glob("reindex-lock")
        if await client.hget(meta, "analysis") == ANALYZER_FINGERPRINT:
            return
        token = uuid.uuid4().hex
        while not await client.set(lock, token, nx=True, px=_LOCK_MS):
            await asyncio.sleep(0.1)
            if await client.hget(meta, "analysis") == ANALYZER_FINGERPRINT:
                return
        try:
            if await client.hget(meta, "analysis") != ANALYZER_FINGERPRINT:
                await self._reindex(client, scripts["reindex"], lock)
                await client.hset(meta, "analysis", ANALYZER_FINGERPRINT)
        finally:
            if await client.get(lock) == token:
                await client.delete(lock)

    async def _refuse_one_slot_layout(self, client: Any) -> None:
        """Refuse a store of the earlier cluster layout, where every key was under ``{P}``
        in one slot: no key name of that layout is one of this layout's."""
        old = self.keys.one_slot_meta()
        if not await client.exists(old):
            return
        raise SchemaError(
            f"prefix {self.prefix!r} holds a store of the earlier Redis Cluster layout (every "
            f"key in the one slot of {old.split(':', 1)[0]}), which this version no longer "
            f"reads: copy it out with the earlier version (`bruno-memstore copy` to another "
            f"store), delete its keys ({old.split(':', 1)[0]}*), then copy it in with this one",
            backend=self.backend_name,
            operation="connect",
        )

    async def _user_ids(self, client: Any) -> AsyncIterator[str]:
        """Every user with data, each once: standalone the members of ``P:users``, on a
        cluster the users whose marker ``T:here`` a SCAN of every master finds."""
        seen: set[str] = set()  # SSCAN and SCAN may repeat an element
        if self.cluster:
            marker = self.keys.user("*", "here")
            glob = "".join("\\" + c if c in "?[]\\" else c for c in marker)
            async for key in client.scan_iter(match=glob, count=1000):
                user = self.keys.user_of(key)
                if user is not None and key == self.keys.user(user, "here") and user not in seen:
                    seen.add(user)
                    yield user
            return
        cursor: int | None = None
        while cursor != 0:
            cursor, users = await client.sscan(self.keys.glob("users"), cursor or 0, count=500)
            for user in users:
                if user not in seen:
                    seen.add(user)
                    yield user

    async def _check_layout(self, client: Any) -> None:
        """Refuse to work over keys that key layout 1 named differently (see ``keys``)."""
        old = self.prefix
        if self.cluster or old == self.keys.prefix:
            return
        if not await client.hexists(f"{old}:meta", "analysis"):
            return
        raise SchemaError(
            f"the keys of prefix {old!r} are in Redis key layout 1, where a prefix holding "
            f"':' could share keys with another store's; stop every process using this prefix "
            f"and run `bruno-memstore migrate --url URL` (RedisMemory.migrate_key_layout) to "
            f"move them to layout {LAYOUT_VERSION}",
            backend=self.backend_name,
            operation="connect",
        )

    async def migrate_key_layout(self) -> int:
        """Rename the keys key layout 1 gave this store to their layout-2 names; return how
        many moved (0 when the prefix holds neither ``:`` nor ``%``: its names did not change).

        Stop every process using the prefix first. Nothing is overwritten, and an interrupted
        run can be run again: the ``meta`` hash, which marks layout 1, moves last.
        """
        old, new = self.prefix, self.keys.prefix
        if self.cluster or old == new:
            return 0  # layout 1 never ran on a cluster
        s = self._settings
        client = aioredis.Redis.from_url(
            self._driver_url,
            decode_responses=True,
            socket_timeout=s["socket_timeout"],
            socket_connect_timeout=s["connect_timeout"],
        )
        try:
            return await _move_layout_1(client, old, new)
        except Exception as exc:
            raise self._translate("migrate_key_layout", exc) from exc
        finally:
            await client.aclose()

    async def _reindex(self, client: Any, script: Any, lock: str) -> None:
        async for user in self._user_ids(client):
            docs_cursor: int | None = None
            while docs_cursor != 0:
                docs_cursor, docs = await client.hscan(
                    self.keys.user(user, "doc"), docs_cursor or 0, count=500
                )
                args = await self._reindex_args(client, user, docs)
                if args:
                    keys, head = self.keys.script_head(user)
                    await script(keys=keys, args=[head, user, *args])
                await client.pexpire(lock, _LOCK_MS)

    async def _reindex_args(self, client: Any, user: str, docs: dict[str, str]) -> list[Any]:
        """``(doc, length, terms, values)*`` for the documents, from their stored text."""
        pipe = client.pipeline(transaction=False)
        for doc, meta in docs.items():
            if doc.startswith("e"):
                pipe.hget(self.keys.user(user, "e"), doc[1:])
            else:
                _role, member, conv = meta.split("\x00", 3)[:3]
                pipe.hget(self.keys.conversation(user, conv, "b"), member[28:])
        args: list[Any] = []
        for doc, text in zip(docs, await pipe.execute(), strict=True):
            if text is not None:
                args.append(doc)
                # The content is field 2 of a memory record, field 1 of a message body.
                _index_args(json.loads(text)[2 if doc.startswith("e") else 1], args)
        return args

    async def _close(self) -> None:
        await self._quiet.stop()
        client, pool = self._client, self._pool
        self._client = self._pool = None
        self._scripts, self._shas = {}, {}
        self._held = None  # closed with the pool
        if client is not None:
            await client.aclose()
        if pool is not None:
            await pool.aclose()

    async def _eval(self, name: str, args: Sequence[Any], home: str | None = None) -> Any:
        """Run one script, waiting (at most ``pool_timeout``) for a free connection. On a
        cluster it runs on ``home``'s slot (by default the user ``args[0]``)."""
        if self._directory is not None:
            return await self._directory.eval(name, args, home)
        assert self._held is not None
        call, prefix = self._held.run, self.keys.prefix
        try:
            # EVALSHA by the digest taken at connect: no per-call script object work.
            return await self._limited(call, "EVALSHA", self._shas[name], 0, prefix, *args)
        except rexc.NoScriptError:  # the server's script cache was flushed (or a failover)
            await self._command(self._client.script_load, self._scripts[name].script)
            return await self._limited(call, "EVALSHA", self._shas[name], 0, prefix, *args)

    writes = _WRITES
    """The scripts that write: on a cluster, each is followed by ``WAIT``."""

    @staticmethod
    def not_replicated(acked: int, replicas: int, ms: int) -> NotReplicatedError:
        return NotReplicatedError(
            f"{acked} of {replicas} replica(s) confirmed the write within {ms} ms"
        )

    async def _command(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)``, a call of the client's, under the store's limits."""
        if self._held is not None:
            return await self._limited(self._held.pooled, method, *args, **kwargs)
        return await self._limited(method, *args, **kwargs)

    async def _limited(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` once a call slot is free (at most ``pool_timeout``),
        cut off after ``socket_timeout``."""
        self._quiet.touch()
        slots = self._slots
        if slots.locked():
            async with asyncio.timeout(self._settings["pool_timeout"]):
                await slots.acquire()
        else:
            await slots.acquire()
        try:
            if self._io_timeout is None:
                return await method(*args, **kwargs)
            try:
                return await self._time_limits.within(self._io_timeout, method(*args, **kwargs))
            except TimeoutError:
                # The connection was dropped on cancellation (redis-py disconnects a
                # connection interrupted mid-reply); transient like redis-py's own timeout.
                raise rexc.TimeoutError(
                    f"no reply within socket_timeout ({self._io_timeout} s)"
                ) from None
        finally:
            slots.release()

    # ================================================================ error handling

    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, (rexc.AuthenticationError, rexc.AuthorizationError)):
            return False
        # Lost connections, socket timeouts, a server loading its AOF after a restart, and
        # a replica promoted under us (READONLY) may all succeed a moment later.
        # On a cluster: a master being replaced (CLUSTERDOWN, MASTERDOWN, slots not covered
        # for a moment, no node answering), and a write not yet confirmed by its replicas.
        return isinstance(
            exc,
            (
                rexc.ConnectionError,
                rexc.TimeoutError,
                rexc.TryAgainError,
                rexc.ReadOnlyError,
                ConnectionError,
                rexc.ClusterDownError,
                rexc.SlotNotCoveredError,
                rexc.RedisClusterUnreachableError,
                NotReplicatedError,
                ContendedError,
            ),
        )

    def _is_unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, rexc.ConnectionError):
            return not isinstance(exc, (rexc.AuthenticationError, rexc.AuthorizationError))
        return isinstance(exc, (ConnectionError, OSError, rexc.RedisClusterUnreachableError))

    def _is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, (TimeoutError, rexc.TimeoutError))

    # ================================================================ conversations, messages

    async def _conversation_owner(self, conversation_id: str) -> str | None:
        home = await self._home("co", conversation_id)
        if home is None:
            return None
        return await self._eval("conversation_owner", [conversation_id], home) or None

    async def _append_messages(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        *,
        enforce_owner: bool,
    ) -> AppendResult:
        if self._directory is not None:
            ttl = self._ttl_ms
            result, pending = await self._directory.append(
                conversation_id,
                user_id,
                records,
                enforce_owner,
                lambda owner, todo, held=False: _append_args(
                    conversation_id, owner, "held" if held else False, ttl, todo
                ),
            )
            await self._after_append(result.owner, pending)
            return result
        args = _append_args(conversation_id, user_id, enforce_owner, self._ttl_ms, records)
        reply = await self._eval("append", args)
        if reply[0] == "owner":
            raise OwnershipError(
                f"conversation {conversation_id!r} belongs to another user",
                backend=self.backend_name,
                operation="store_message",
            )
        owner = reply[1]
        await self._after_append(owner, reply[2])
        return AppendResult(owner, frozenset(reply[3:]))

    async def _after_append(self, owner: str, pending: int) -> None:
        """After a store that left ``pending`` documents waiting for ``owner``: a batch is
        written at the next quiet moment, or now when the backlog is full."""
        if pending < INDEX_BATCH:
            return
        if pending < INDEX_BACKLOG:
            self._quiet.note(owner)
        elif owner not in self._indexing:
            try:
                await self._index_pending(owner, batches=1)
            except Exception:  # stored all the same; the next search or batch indexes them
                log.warning("%s: indexing waiting messages failed", self.describe(), exc_info=True)

    async def _index_batch(self, user_id: str) -> bool:
        """One small batch of the user's waiting documents (the quiet-time task's step)."""
        if user_id in self._indexing:
            return False
        return await self._index_pending(user_id, batches=1, size=QUIET_BATCH)

    async def _index_pending(
        self, user_id: str, *, batches: int | None = None, size: int = INDEX_BATCH
    ) -> bool:
        """Write the posting entries of the user's messages still waiting in ``T:pend``,
        ``size`` per script (at most ``batches`` scripts); those stored meanwhile may be left
        for later. True when more may wait."""
        self._indexing.add(user_id)
        try:
            while True:
                reply = await self._eval("pending", [user_id, size])
                args: list[Any] = [user_id]
                for i in range(0, len(reply), 2):
                    args.append(reply[i])
                    body = reply[i + 1]
                    if body is None:  # deleted meanwhile: index_pending clears it
                        args += ("0", "", "")
                    else:
                        _index_args(load_json(body)[1], args)
                if len(args) > 1:
                    await self._eval("index_pending", args)
                if len(reply) < 2 * size:
                    return False
                if batches is not None:
                    batches -= 1
                    if batches == 0:
                        return True
        finally:
            self._indexing.discard(user_id)

    async def _get_messages(self, ids: Sequence[str]) -> list[MessageRecord]:
        if not ids:
            return []
        if self._directory is not None:
            reply = await self._directory.get_messages(ids)
        else:
            reply = await self._eval("get_messages", list(ids))
        return [
            _message(reply[i + 3], reply[i + 2], reply[i + 1], reply[i])
            for i in range(0, len(reply), 4)
        ]

    async def _home(self, kind: str, record_id: str) -> str | None:
        """Where a script about this record runs: on a cluster the owner the directory
        names (``None``: nobody's, the record does not exist); standalone ``""`` (the
        script finds the owner itself)."""
        if self._directory is None:
            return ""
        return await self._directory.owner(kind, record_id)

    async def _read_window(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> list[MessageRecord]:
        if conversation_id is not None:
            window, _ = await self._conversation_window(conversation_id, user_id, limit, "")
            return window
        assert user_id is not None
        return _user_messages(await self._eval("read_user", [user_id, limit or 0]), user_id)

    async def _read_window_and_markers(
        self, *, conversation_id: str | None, user_id: str | None, limit: int | None
    ) -> tuple[list[MessageRecord], list[SessionRecord] | None]:
        if conversation_id is not None:
            marker = archive_marker(conversation_id)
            window, rec = await self._conversation_window(conversation_id, user_id, limit, marker)
            return window, [] if rec is None else [rec]
        assert user_id is not None
        window = await self._read_window(conversation_id=None, user_id=user_id, limit=limit)
        convs = list(dict.fromkeys(r.conversation_id for r in window))
        return window, await self._get_markers(user_id, convs)

    async def _get_markers(
        self, user_id: str | None, conversation_ids: Sequence[str]
    ) -> list[SessionRecord]:
        if user_id is None:
            return await super()._get_markers(user_id, conversation_ids)
        # The user's marker sessions, in one call per 1,000.
        ids = [archive_marker(c) for c in conversation_ids]
        markers: list[SessionRecord] = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            reply = await self._eval("get_markers", [user_id, *chunk], user_id)
            markers += [_session(i, user_id, r) for i, r in zip(chunk, reply, strict=True) if r]
        return markers

    async def _conversation_window(
        self, conversation_id: str, user_id: str | None, limit: int | None, marker: str
    ) -> tuple[list[MessageRecord], SessionRecord | None]:
        """The conversation's newest ``limit`` messages (the owner's, if ``user_id`` is
        given) and the owner's session ``marker`` (``""``: none read), in one call."""
        # On a cluster the user's own slot answers for the user (its copy of the directory
        # key says whether the user holds the conversation); else the owner the directory
        # names.
        home = user_id if user_id is not None else await self._home("co", conversation_id)
        if home is None:
            return [], None
        reply = await self._eval(
            "read_conversation", [conversation_id, user_id or "", limit or 0, marker], home
        )
        found = _session(marker, reply[0], reply[3]) if reply and reply[3] else None
        return _conversation_messages(reply, conversation_id), found

    async def _delete_messages(self, conversation_id: str, keep_roles: frozenset[str]) -> int:
        home = await self._home("co", conversation_id)
        if home is None:
            return 0
        return int(
            await self._eval("delete_messages", [conversation_id, *sorted(keep_roles)], home)
        )

    async def _delete_message_ids(self, conversation_id: str, ids: Sequence[str]) -> int:
        home = await self._home("co", conversation_id)
        if home is None:
            return 0
        deleted = 0
        for start in range(0, len(ids), 256):  # a script at a time holds the server briefly
            chunk = list(ids[start : start + 256])
            deleted += int(await self._eval("delete_message_ids", [conversation_id, *chunk], home))
        return deleted

    # ================================================================ memory entries

    async def _put_memory(self, record: MemoryRecord) -> None:
        expires = record.expires_us
        meta = _dumps(
            {
                "t": record.memory_type,
                "c": record.category,
                "g": record.tags,
                "f": record.confidence,
                "i": record.importance,
                "x": ts_hex(expires) if expires is not None else None,
                "v": record.conversation_id,
                "r": rank_member(record.importance, record.created_us, record.id),
            }
        )
        body = _dumps(MEMORIES.row(record))
        args: list[Any] = [
            record.user_id,
            record.id,
            body,
            meta,
            rank_member(record.importance, record.created_us, record.id),
            ts_hex(expires) if expires is not None else "",
            expires if expires is not None else 0,
        ]
        _index_args(record.content, args)
        args.append(b"" if record.vector is None else vector_to_bytes(record.vector))
        if self._directory is not None:
            await self._directory.put_memory(record.user_id, record.id, args)
            return
        if not await self._eval("put_memory", args):
            raise memory_taken(record.id)

    async def _get_memory(self, memory_id: str) -> MemoryRecord | None:
        home = await self._home("eo", memory_id)
        if home is None:
            return None
        text = await self._eval("get_memory", [memory_id], home)
        return _memory(text) if text else None

    async def _query_memories(self, flt: MemoryFilter) -> list[MemoryRecord]:
        reply = await self._eval("query_memories", [flt.user_id, _filter_json(flt), flt.limit])
        return [_memory(text) for text in reply]

    async def _delete_memory(self, memory_id: str, user_id: str | None = None) -> bool:
        home = await self._home("eo", memory_id)
        if home is None:
            return False
        deleted = int(await self._eval("delete_own_memory", [memory_id, user_id or ""], home))
        if deleted < 0:
            raise memory_taken(memory_id)
        return deleted > 0

    async def _purge_expired(self, now_us: int) -> int:
        total = 0
        if self.cluster:  # user by user: no store-wide retention set
            async for user in self._users(None):
                while True:
                    deleted, more = await self._eval("purge_user", [user, now_us, 256])
                    total += int(deleted)
                    if not int(more):
                        break
            return total
        while True:
            deleted, more = await self._eval("purge_expired", [now_us, 256])
            total += int(deleted)
            if not int(more):
                return total

    # ================================================================ sessions

    async def _put_session(self, record: SessionRecord) -> None:
        args = [
            record.user_id,
            record.session_id,
            record.conversation_id,
            *_session_fields(record),
            self._ttl_ms,
        ]
        if self._directory is not None:
            await self._directory.put_session(
                record.user_id, record.session_id, record.conversation_id, args
            )
            return
        await self._put_session_args(record, args)

    async def _replace_session(self, record: SessionRecord, expected: SessionRecord) -> bool:
        # One script on the user's slot, on a cluster too: the session is the user's already,
        # so no directory key changes hands.
        args = [record.user_id, record.session_id, record.conversation_id]
        return await self._put_session_args(
            record, [*args, *_session_fields(record), self._ttl_ms, _session_text(expected)]
        )

    async def _put_session_args(self, record: SessionRecord, args: list[Any]) -> bool:
        """Run the put script; ``False`` when its condition (a last argument) failed."""
        reply = await self._eval("put_session", args)
        if reply[0] == "stale":
            return False
        if reply[0] == "owner":
            raise OwnershipError(
                f"conversation {record.conversation_id!r} belongs to another user",
                backend=self.backend_name,
                operation="session",
            )
        if reply[0] == "session":
            raise session_taken(record.session_id)
        return True

    async def _get_session(self, session_id: str) -> SessionRecord | None:
        home = await self._home("so", session_id)
        if home is None:
            return None
        reply = await self._eval("get_session", [session_id], home)
        return _session(session_id, reply[0], reply[1]) if reply else None

    async def _latest_session(
        self, user_id: str, conversation_id: str | None, *, active_only: bool
    ) -> SessionRecord | None:
        reply = await self._eval(
            "latest_session", [user_id, conversation_id or "", "1" if active_only else "0"]
        )
        return _session(reply[0], user_id, reply[1]) if reply else None

    # ================================================================ search and statistics

    async def _text_search(self, request: SearchRequest) -> list[SearchHit]:
        user_id, kinds, limit = request.user_id, request.kinds, request.limit
        words = list(dict.fromkeys(terms(request.query)))
        if not words:
            return []
        code = ("m" if "message" in kinds else "") + ("e" if "memory" in kinds else "")
        flt = _filter_json(request.memories()) if "memory" in kinds else ""
        args = [user_id, limit, code, request.conversation_id or "", _BM25.k1, _BM25.b, flt]
        reply = await self._eval("search", [*args, *words])
        if reply == ["pending"]:
            # Messages stored on their own wait for their posting entries: write those of
            # every message stored so far, then search (what arrives meanwhile may wait).
            await self._index_pending(user_id)
            args[2] = code + "!"
            reply = await self._eval("search", [*args, *words])
        hits: list[SearchHit] = []
        for i in range(0, len(reply), 5):
            score = float(reply[i + 1])
            if reply[i] == "m":
                rec = _message(reply[i + 4], reply[i + 3], reply[i + 2], user_id)
                hits.append(SearchHit("message", score, message=rec))
            else:
                hits.append(SearchHit("memory", score, memory=_memory(reply[i + 2])))
        # Equal scores: newest first, then id (the order of the in-process BM25 backends).
        hits.sort(key=hit_order)
        return hits[:limit]

    async def _statistics(self, user_id: str) -> dict[str, object]:
        reply = await self._eval("statistics", [user_id])
        convs, sessions, active, memories, first, last = reply[:6]
        roles = {reply[i]: int(reply[i + 1]) for i in range(6, len(reply), 2)}
        return {
            "messages": sum(roles.values()),
            "conversations": int(convs),
            "sessions": int(sessions),
            "active_sessions": int(active),
            "memories": int(memories),
            "messages_by_role": roles,
            "first_message_us": ts_from_hex(first) if first else None,
            "last_message_us": ts_from_hex(last) if last else None,
        }

    # ================================================================ vectors

    async def _claim_vector_space(
        self, space: VectorSpace | None, *, replace: bool = False
    ) -> VectorSpace | None:
        if space is None:
            text = await self._command(self._client.hget, self.keys.glob("meta"), "vspace")
            if not text:
                return None
            model, dimension = json.loads(text)
            return VectorSpace(model, dimension)
        meta = self.keys.glob("meta")
        text = _dumps([space.model, space.dimension])
        if replace:
            # Vectors first: an interrupted run leaves the old model recorded over fewer
            # vectors, never the new one over old vectors.
            if self._vector_mode == "redisearch":
                await self._drop_index()
            async for user in self._users(None):
                await self._eval("drop_vectors", [user])
            await self._command(self._client.hset, meta, "vspace", text)
            await self._command(self._client.hincrby, meta, "vepoch", 1)
            self._vectors.clear()
            recorded = space
        else:
            await self._command(self._client.hsetnx, meta, "vspace", text)
            found = await self._claim_vector_space(None)
            assert found is not None
            recorded = found
        if self._vector_mode == "redisearch":
            await self._ensure_index(recorded.dimension)
        return recorded

    async def _put_vectors(self, kind: Literal["message", "memory"], items: Sequence[Any]) -> None:
        code = "m" if kind == "message" else "e"
        flat: list[Any] = []
        for rid, vec in items:
            flat += (str(rid), vector_to_bytes(vec))
        for start in range(0, len(flat), 512):
            if self._directory is not None:
                await self._directory.put_vectors(code, flat[start : start + 512])
            else:
                await self._eval("put_vectors", [code, *flat[start : start + 512]])

    async def _vector_search(self, request: SearchRequest, vector: Any) -> list[SearchHit]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self._vector_mode == "redisearch":
            found = await self._knn(request, query)
        else:
            found = await self._exact(request, query)
        return await self._fetch_hits(request.user_id, found)

    # ---------------------------------------------------------------- RediSearch

    async def _ensure_index(self, dimension: int) -> None:
        """Create the HNSW index for ``dimension`` unless it exists with that dimension.

        Created over documents already stored, which RediSearch indexes in the background:
        this waits until that scan is over (here or in the process that created the index),
        so a store written before the server had RediSearch, or just migrated, is wholly
        searchable once connected.
        """
        if self._index_dimension == dimension:
            return
        current = await self._index_info()
        if current is not None:
            if _index_dimension(current) == dimension:
                await self._await_index_scan(current)
                self._index_dimension = dimension
                return
            await self._drop_index()
        schema: list[Any] = [
            "vec", "VECTOR", "HNSW", 10, "TYPE", "FLOAT32", "DIM", dimension,
            "DISTANCE_METRIC", "COSINE", "M", _HNSW_M, "EF_CONSTRUCTION", _HNSW_EF_CONSTRUCTION,
        ]  # fmt: skip
        for name in ("u", "k", "c", "t", "g", "tg"):
            schema += (name, "TAG")
        for name in ("f", "i", "x"):
            schema += (name, "NUMERIC")
        try:
            await self._command(
                self._client.execute_command,
                "FT.CREATE",
                self.vector_index_name,
                "ON",
                "HASH",
                "PREFIX",
                1,
                f"{self.keys.prefix}:v:",
                "SCHEMA",
                *schema,
            )
        except rexc.ResponseError as exc:
            if "already exists" not in str(exc).lower():  # another process was first
                raise
        await self._await_index_scan(await self._index_info())
        self._index_dimension = dimension

    async def _await_index_scan(self, info: dict[str, Any] | None) -> None:
        """Wait until the index has scanned the documents stored before it (polling
        ``FT.INFO``, for at most most of the operation timeout, or a minute)."""
        deadline = time.monotonic() + 0.8 * (self.operation_timeout or 60.0)
        while info is not None and int(info.get("indexing", 0)):
            if time.monotonic() > deadline:
                log.warning(
                    "%s: the vector index is still scanning stored documents; vector search "
                    "may miss some until it ends",
                    self.describe(),
                )
                return
            await asyncio.sleep(_INDEX_POLL)
            info = await self._index_info()

    async def _index_info(self) -> dict[str, Any] | None:
        try:
            reply = await self._command(
                self._client.execute_command, "FT.INFO", self.vector_index_name
            )
        except rexc.ResponseError as exc:
            if _no_index(exc):
                return None
            raise
        return _pairs(reply)

    async def _drop_index(self) -> None:
        self._index_dimension = None
        try:
            await self._command(
                self._client.execute_command, "FT.DROPINDEX", self.vector_index_name
            )
        except rexc.ResponseError as exc:
            if not _no_index(exc):
                raise

    async def vector_index_info(self) -> dict[str, Any]:
        """What answers vector queries: ``mode``, and in ``"redisearch"`` mode the index's
        ``name``, ``dimension``, ``documents``, ``indexing`` (still scanning: 0/1) and
        ``failures`` (documents it could not index)."""
        await self._ensure_connected()
        out: dict[str, Any] = {"mode": self._vector_mode}
        if self._vector_mode == "redisearch":
            info = await self._index_info() or {}
            out.update(
                name=self.vector_index_name,
                dimension=_index_dimension(info) if info else None,
                documents=int(info.get("num_docs", 0)),
                indexing=int(info.get("indexing", 0)),
                failures=int(info.get("hash_indexing_failures", 0)),
            )
        return out

    def _user_tag(self, user_id: str) -> str:
        """The ``u`` field of the user's vector documents (the store's key prefix is in it)."""
        return vector_tag(self.keys.prefix + "\0" + user_id)

    def _knn_query(
        self,
        user_id: str,
        kinds: frozenset[str],
        conversation_id: str | None,
        flt: MemoryFilter,
    ) -> str:
        """The filter of a KNN query; every value is a hex digest, so nothing needs escaping."""
        parts = [f"@u:{{{self._user_tag(user_id)}}}"]
        if conversation_id is not None:
            parts.append(f"@c:{{{vector_tag(conversation_id)}}}")
        alternatives: list[str] = []
        if "message" in kinds:
            alternatives.append("@k:{m}")
        if "memory" in kinds:
            memory = ["@k:{e}"]
            for field, values in (("t", flt.memory_types), ("g", flt.categories), ("tg", flt.tags)):
                if values:
                    memory.append(f"@{field}:{{{'|'.join(vector_tag(v) for v in values)}}}")
            if flt.min_confidence > 0:
                memory.append(f"@f:[{float(flt.min_confidence)!r} +inf]")
            if flt.min_importance > 0:
                memory.append(f"@i:[{float(flt.min_importance)!r} +inf]")
            if not flt.include_expired:
                memory.append(f"@x:[({int(flt.now_us)} +inf]")
            alternatives.append(f"({' '.join(memory)})")
        if len(alternatives) == 1:
            parts.append(alternatives[0])
        else:
            parts.append(f"({' | '.join(alternatives)})")
        return f"({' '.join(parts)})=>[KNN $k @vec $blob EF_RUNTIME $ef AS dist]"

    async def _knn(self, request: SearchRequest, query: np.ndarray) -> list[Found]:
        user_id, kinds, limit = request.user_id, request.kinds, request.limit
        flt, conversation_id = request.memories(), request.conversation_id
        if self._index_dimension != query.size:
            space = await self._claim_vector_space(None)
            await self._ensure_index(space.dimension if space else query.size)
        args = [
            "FT.SEARCH",
            self.vector_index_name,
            self._knn_query(user_id, kinds, conversation_id, flt),
            "PARAMS",
            6,
            "blob",
            query.astype("<f4").tobytes(),
            "k",
            limit,
            "ef",
            max(limit, self._settings["hnsw_ef_runtime"]),
            "SORTBY",
            "dist",
            "ASC",
            "LIMIT",
            0,
            limit,
            "RETURN",
            1,
            "dist",
            "DIALECT",
            2,
        ]
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            # Conversations past their TTL leave first (with their vectors), then the query.
            await self._scripts["vector_state"](args=[self.keys.prefix, user_id], client=pipe)
            pipe.execute_command(*args)
            try:
                _state, reply = await self._command(pipe.execute)
                break
            except rexc.ResponseError as exc:
                if attempt == 2 or not _no_index(exc):
                    raise
            # The index was dropped under us (a reindex elsewhere, FLUSHALL): recreate it.
            self._index_dimension = None
            space = await self._claim_vector_space(None)
            await self._ensure_index(space.dimension if space else query.size)
        found: list[Found] = []
        for key, fields in _search_results(reply):
            # P:v:{P:u:<user>}:<kind><id>; the escaped user id holds no '}'.
            cut = key.index("}:", len(self.keys.prefix)) + 2
            kind = "message" if key[cut] == "m" else "memory"
            found.append((kind, decode_id(key[cut + 1 :]), 1.0 - float(fields["dist"])))
        return found

    # ---------------------------------------------------------------- search in the client

    async def _exact(self, request: SearchRequest, query: np.ndarray) -> list[Found]:
        user_id = request.user_id
        if self.cluster:
            # The store's epoch is read on its own: the script reads only the user's keys.
            state, epoch = await asyncio.gather(
                self._eval("vector_state", [user_id, "0"]),
                self._command(self._client.hget, self.keys.glob("meta"), "vepoch"),
            )
            message_epoch, logged, memory_generation, _ = state
            epoch = epoch or ""
        else:
            message_epoch, logged, memory_generation, epoch = await self._eval(
                "vector_state", [user_id]
            )
        nbytes = 4 * query.size
        messages = memories = None
        if "message" in request.kinds:
            messages = await self._message_index(
                user_id, (message_epoch, epoch), int(logged), nbytes
            )
        if "memory" in request.kinds:
            memories = await self._vectors.memories(
                user_id,
                (memory_generation, epoch),
                lambda: self._load_vectors(user_id, "e", nbytes),
            )
        cid = request.conversation_id
        # Messages are labelled by the digest of their conversation id.
        label = None if cid is None else vector_tag(cid)
        return nearest(request, query, messages=messages, memories=memories, conversation=label)

    async def _message_index(
        self, user_id: str, generation: tuple[str, str], logged: int, nbytes: int
    ) -> VectorIndex:
        """The user's message vectors as of now: the index loaded for this message epoch,
        plus the vectors logged (appended) since it was loaded or last brought up to date."""

        async def delta(after: int) -> tuple[list[tuple[Any, ...]], int] | None:
            reply = await self._eval_bytes("vector_delta", [user_id, generation[0], after, nbytes])
            if reply[0] == b"stale":  # the epoch moved meanwhile
                return None
            return _rows("m", reply[1:], nbytes, set()), int(reply[0])

        try:
            return await self._vectors.messages(
                user_id, generation, logged, lambda: self._load_vectors(user_id, "m", nbytes), delta
            )
        except StaleLog as exc:  # pragma: no cover - only under a storm of deletions
            raise BackendError(
                str(exc), backend=self.backend_name, operation="vector_search"
            ) from exc

    async def _load_vectors(self, user_id: str, kind: str, nbytes: int) -> list[tuple[Any, ...]]:
        """The user's vectors of one kind with what the filters need, SSCAN step by step."""
        out: list[tuple[Any, ...]] = []
        seen: set[str] = set()  # SSCAN may repeat an element
        cursor = 0
        while True:
            cursor_text, ids, extras, blob = await self._eval_bytes(
                "vector_load", [user_id, kind, cursor, _LOAD_BATCH, nbytes]
            )
            cursor = int(cursor_text)
            out += _rows(kind, (ids, extras, blob), nbytes, seen)
            if cursor == 0:
                return out

    async def _eval_bytes(self, name: str, args: Sequence[Any]) -> Any:
        """Run a script whose reply holds binary values (returned undecoded)."""
        if self._directory is not None:
            return await self._directory.eval(name, args, raw=True)
        script = self._scripts[name]

        def call() -> Any:
            return self._client.execute_command(
                "EVALSHA",
                script.sha,
                0,
                self.keys.prefix,
                *args,
                **{NEVER_DECODE: True},
            )

        try:
            return await self._command(call)
        except rexc.NoScriptError:  # the server's script cache was flushed
            await self._command(self._client.script_load, script.script)
            return await self._command(call)

    async def _fetch_hits(self, user_id: str, found: list[Found]) -> list[SearchHit]:
        """The records of a search answer, re-checked to be the user's; those deleted
        meanwhile are left out."""
        if not found:
            return []
        flat: list[str] = []
        for kind, rid, _score in found:
            flat += ("m" if kind == "message" else "e", rid)
        reply = await self._eval("vector_fetch", [user_id, *flat])
        hits: list[SearchHit] = []
        for (_, _, score), i in zip(found, range(0, len(reply), 4), strict=True):
            kind = reply[i]
            if kind == "m":
                rec = _message(reply[i + 3], reply[i + 2], reply[i + 1], user_id)
                hits.append(SearchHit("message", score, message=rec))
            elif kind == "e":
                hits.append(SearchHit("memory", score, memory=_memory(reply[i + 1])))
        return hits

    # ================================================================ whole-store operations

    async def _forget_user(self, user_id: str) -> dict[str, int]:
        # One script per conversation, then the memory entries, then the rest: each step is
        # atomic and idempotent, and none blocks the server for the whole user at once.
        stats = await self._statistics(user_id)
        convs = await self._command(self._client.smembers, self.keys.user(user_id, "convs"))
        for conv in convs:
            await self._eval("drop_conversation", [user_id, conv])
        memory_ids = list(await self._command(self._client.hkeys, self.keys.user(user_id, "e")))
        await self._forget_memories(user_id, memory_ids)
        await self._eval("forget_rest", [user_id])
        return {
            "messages": int(stats["messages"]),  # type: ignore[call-overload]
            "conversations": int(stats["conversations"]),  # type: ignore[call-overload]
            "sessions": int(stats["sessions"]),  # type: ignore[call-overload]
            "memories": int(stats["memories"]),  # type: ignore[call-overload]
        }

    async def _forget_memories(self, user_id: str, memory_ids: Sequence[str]) -> None:
        """Delete the ids that are still the user's entries (the list was read earlier)."""
        for start in range(0, len(memory_ids), 256):
            await self._eval("forget_memories", [user_id, *memory_ids[start : start + 256]])

    async def _storage_bytes(self) -> int | None:
        # The server's own count (MEMORY USAGE) for every key of the store, 500 at a time.
        prefix = self.keys.prefix
        patterns = [f"{prefix}:*", f"{{{prefix}:*"]
        total, keys = 0, []
        for pattern in patterns:
            async for key in self._client.scan_iter(match=pattern, count=1000):
                keys.append(key)
                if len(keys) == 500:
                    total += await self._memory_usage(keys)
                    keys = []
        return total + (await self._memory_usage(keys) if keys else 0)

    async def _memory_usage(self, keys: list[Any]) -> int:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key)
        return sum(int(n or 0) for n in await pipe.execute())

    async def _compact(self) -> None:
        # Deletions leave nothing in the keyspace; the append-only file still holds the
        # commands that wrote the erased records until it is rewritten from the keyspace.
        # On a cluster every node rewrites its own (the master's replicas hold the store too).
        for node in self._client.get_nodes() if self.cluster else [None]:
            await self._compact_node(node)

    async def _compact_node(self, node: Any) -> None:
        target = {} if node is None else {"target_nodes": node}
        if not await self._aof_idle(target):
            return  # no append-only file
        try:
            await self._command(self._client.execute_command, "BGREWRITEAOF", **target)
        except rexc.ResponseError as exc:
            # One started meanwhile, after the erasures: it serves as well.
            if "in progress" not in str(exc):
                raise
        await self._aof_idle(target)
        info = await self._command(self._client.info, "persistence", **target)
        if info.get("aof_last_bgrewrite_status") != "ok":
            raise BackendError(
                "the server could not rewrite its append-only file (see its log)",
                backend=self.backend_name,
                operation="compact",
            )

    async def _aof_idle(self, target: dict[str, Any]) -> bool:
        """Wait until no append-only file rewrite runs or waits; ``False``: AOF is off."""
        while True:
            info = await self._command(self._client.info, "persistence", **target)
            if not int(info.get("aof_enabled", 0)):
                return False
            busy = int(info.get("aof_rewrite_in_progress", 0))
            if not busy and not int(info.get("aof_rewrite_scheduled", 0)):
                return True
            await asyncio.sleep(_REWRITE_POLL)

    async def _export(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[list[object]]:
        async for batch in batches(self._records(kind, user_id)):
            yield batch

    async def _records(self, kind: ExportKind, user_id: str | None) -> AsyncIterator[object]:
        async for user in self._users(user_id):
            await self._eval("touch_user", [user])
            async for item in self._export_user(kind, user):
                yield item

    async def _users(self, user_id: str | None) -> AsyncIterator[str]:
        if user_id is not None:
            yield user_id
            return
        async for user in self._user_ids(self._client):
            yield user

    async def _export_user(self, kind: ExportKind, user: str) -> AsyncIterator[object]:
        convs = sorted(await self._command(self._client.smembers, self.keys.user(user, "convs")))
        if kind == "conversations":
            for conv in convs:
                yield (conv, user)
        elif kind == "messages":
            for conv in convs:
                start = 0
                while True:
                    reply = await self._eval(
                        "read_conversation", [conv, user, 0, "", start, EXPORT_BATCH], user
                    )
                    for rec in _conversation_messages(reply, conv):
                        yield rec
                    if not reply or len(reply[1]) < EXPORT_BATCH:
                        break
                    start += EXPORT_BATCH
        else:
            part = "e" if kind == "memories" else "s"
            seen: set[str] = set()  # HSCAN may repeat a field
            cursor = None
            while cursor != 0:
                cursor, items = await self._command(
                    self._client.hscan, self.keys.user(user, part), cursor or 0, count=500
                )
                for rid, text in items.items():
                    if rid not in seen:
                        seen.add(rid)
                        yield _memory(text) if kind == "memories" else _session(rid, user, text)


# ==================================================================== helpers


def _rows(kind: str, reply: Sequence[bytes], nbytes: int, seen: set[str]) -> list[tuple[Any, ...]]:
    """Index items from a loading script's ``ids, extras, vectors`` (ids in ``seen`` are
    skipped, then added): messages labelled by conversation digest, memory entries as
    ``(record, vector)``."""
    ids, extras, blob = reply
    if not ids:
        return []
    rows = np.frombuffer(blob, dtype="<f4").reshape(-1, nbytes // 4)
    out: list[tuple[Any, ...]] = []
    for rid_bytes, extra, vec in zip(ids.split(b"\0"), extras.split(b"\0"), rows, strict=True):
        rid = rid_bytes.decode()
        if rid in seen:
            continue
        seen.add(rid)
        if kind == "m":
            out.append((rid, vec, None, extra.decode()))
        else:
            out.append((_memory(extra.decode()), vec))
    return out


def vector_tag(value: str) -> str:
    """The TAG value indexed for ``value`` (the scripts' ``redis.sha1hex``): hex digits only,
    so any user id, conversation id, category or tag is matched exactly, unescaped."""
    return hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()


def _no_index(exc: BaseException) -> bool:
    """Whether a RediSearch error says the index does not exist."""
    text = str(exc).lower()
    return "unknown index" in text or "no such index" in text or "not found" in text


# Layout 1's names under prefix P that were P's own: P:<global>, P:<kind>:<id>, and (below)
# P:v:{P:u:... vector documents and {P:u:... per-user keys. P:meta moves last.
_LAYOUT_1_GLOBALS = frozenset({"users", "cexp", "eexp", "vgen"})
_LAYOUT_1_POINTERS = ("co:", "mo:", "so:", "eo:")


def _layout_2_name(key: str, old: str, new: str) -> str | None:
    """The layout-2 name of a layout-1 key of prefix ``old``, or None if it is not one."""
    tag_old, tag_new = f"{{{old}:u:", f"{{{new}:u:"
    if key.startswith(tag_old):
        return tag_new + key[len(tag_old) :]
    rest = key[len(old) + 1 :]
    if rest.startswith("v:" + tag_old):
        return f"{new}:v:{tag_new}{rest[len(tag_old) + 2 :]}"
    if rest in _LAYOUT_1_GLOBALS or rest.startswith(_LAYOUT_1_POINTERS):
        return f"{new}:{rest}"
    return None


async def _move_layout_1(client: Any, old: str, new: str) -> int:
    """Rename every layout-1 key of prefix ``old`` (see ``RedisMemory.migrate_key_layout``)."""
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in old)
    found: set[str] = set()
    for match in (f"{pattern}:*", f"{{{pattern}:u:*"):
        found.update([key async for key in client.scan_iter(match=match, count=1000)])
    moved, clashes = 0, []
    vectors = f"{new}:v:{{{new}:u:"
    for key in sorted(found):
        target = _layout_2_name(key, old, new)
        if target is None:
            continue
        if not await client.renamenx(key, target):
            clashes.append(target)
            continue
        moved += 1
        if target.startswith(vectors):
            # The owner filter of a vector document holds the key prefix.
            owner = decode_id(target[len(vectors) : target.index("}", len(vectors))])
            await client.hset(target, "u", vector_tag(new + "\0" + owner))
    if clashes:
        raise SchemaError(
            f"{len(clashes)} keys of layout 1 did not move: their new names exist already "
            f"(first: {clashes[0]!r}); nothing was overwritten"
        )
    if await client.exists(f"{old}:meta"):
        if not await client.renamenx(f"{old}:meta", f"{new}:meta"):
            raise SchemaError(f"both {old}:meta and {new}:meta exist; nothing was overwritten")
        moved += 1
    # RediSearch's index of layout 1 covered the old names; a new one is made on first use.
    with contextlib.suppress(rexc.ResponseError):
        await client.execute_command("FT.DROPINDEX", f"{old}:vectors")
    return moved


def _pairs(reply: Any) -> dict[str, Any]:
    """A RESP2 flat ``[name, value, ...]`` list as a dict."""
    if isinstance(reply, dict):
        return reply
    return {str(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


def _search_results(reply: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(key, fields)`` of each document in an ``FT.SEARCH`` reply (RESP2 or RESP3)."""
    if isinstance(reply, dict):
        return [(r["id"], r.get("extra_attributes") or {}) for r in reply.get("results", [])]
    return [(reply[i], _pairs(reply[i + 1])) for i in range(1, len(reply), 2)]


def _index_dimension(info: dict[str, Any]) -> int | None:
    """The vector field's dimension in an ``FT.INFO`` reply."""
    for attribute in info.get("attributes", []):
        fields = _pairs(attribute)
        if fields.get("identifier") == "vec":
            dim = fields.get("dim")
            return int(dim) if dim is not None else None
    return None


async def _not_durable(client: Any, **target: Any) -> str | None:
    """Why a server (``target``: one cluster node) may lose an acknowledged write in a
    crash of its process, or ``None`` if it cannot.

    Only ``appendonly yes`` with ``appendfsync always`` writes every command to the file
    before replying: under ``everysec`` Redis holds the file write back for up to two
    seconds while a background ``fsync`` is slow, and replies meanwhile.
    """
    persistence = await client.info("persistence", **target)
    if not int(persistence.get("aof_enabled", 0)):
        return "appendonly is off"
    try:
        policy = (await client.config_get("appendfsync", **target)).get("appendfsync")
    except rexc.ResponseError:  # CONFIG renamed or refused, as on managed services
        return "its appendfsync policy cannot be read (CONFIG GET is refused)"
    if policy != "always":
        return f"appendfsync is {policy}, not always"
    return None


def _merge_options(
    url: MemoryURL, given: dict[str, Any], options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """``(settings, the base class's options, redis-py's query options)``: URL query options
    under keyword arguments; a keyword equal to its default counts as not given."""
    explicit = {name: value for name, value in given.items() if value != _DEFAULTS[name]}
    base = url.apply_options({**options, **explicit}, _OPTIONS, also=_PASSTHROUGH)
    settings = {name: base.pop(name, value) for name, value in given.items()}
    passthrough = {k: v for k, v in url.query.items() if k in _PASSTHROUGH}
    return settings, base, passthrough


def _driver_url(url: MemoryURL, query: dict[str, str]) -> str:
    """The URL handed to redis-py: ours without the options it does not know."""
    raw = url.raw.split("?", 1)[0].split("#", 1)[0]
    if url.driver:  # redis+cluster:// -> redis://
        scheme, rest = raw.split("://", 1)
        raw = f"{scheme.partition('+')[0]}://{rest}"
    if query:
        raw += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return raw


def _check_cluster_url(url: MemoryURL) -> None:
    """A cluster has one database, 0."""
    if url.path not in ("", "/", "/0"):
        raise InvalidArgumentError(
            "redis_url", "a Redis Cluster has only database 0: leave the path out (or /0)"
        )


def _check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise InvalidArgumentError("prefix", "must be a non-empty string")
    if any(c in prefix for c in "{}\x00"):
        raise InvalidArgumentError("prefix", "must not contain '{', '}' or NUL")
    return prefix


def _index_args(text: str, out: list[Any]) -> None:
    """Append: document length, its distinct terms and their posting values (NUL-joined)."""
    toks = terms(text)
    if len(toks) >= _F:
        raise InvalidArgumentError("content", f"has more than {_F - 1} words to index")
    counts = Counter(toks)
    base = len(toks) * _F
    out.append(len(toks))
    out.append("\x00".join(counts))
    out.append("\x00".join([str(base + tf) for tf in counts.values()]))


def _append_args(
    conversation_id: str,
    user_id: str,
    enforce_owner: bool | Literal["held"],
    ttl_ms: int,
    records: Sequence[MessageRecord],
    *,
    defer: bool = True,
) -> list[Any]:
    """Arguments of the append script. Small fields travel NUL-joined: each argument costs
    the client more to encode than the server to split. ``defer``: a single record's text is
    analysed later (see :data:`INDEX_BATCH`). ``enforce_owner="held"``: the script writes
    only into a conversation the user already holds (a cluster's speculative step)."""
    # With no records the script only claims the conversation and never reads ``newest``.
    newest = records[0].ts_us if len(records) == 1 else max((r.ts_us for r in records), default=0)
    enforce = "2" if enforce_owner == "held" else "1" if enforce_owner else "0"
    args: list[Any] = [
        f"{user_id}\x00{enforce}\x00{conversation_id}\x00{ttl_ms}\x00{newest}\x00{len(records)}"
    ]
    if defer and len(records) == 1 and len(records[0].content) < _F:
        # One message: its text is analysed later, in a batch (see INDEX_BATCH). (A text
        # of _F characters or more may hold too many words: it is checked now.)
        rec = records[0]
        args += (
            f"{rec.id}\x00{rec.role}\x00{ts_hex(rec.ts_us)}",
            _dumps(_BODY.row(rec)),
            "",
            "",
            b"" if rec.vector is None else vector_to_bytes(rec.vector),
        )
        return args
    for rec in records:
        toks = terms(rec.content)
        if len(toks) >= _F:
            raise InvalidArgumentError("content", f"has more than {_F - 1} words to index")
        counts = Counter(toks)
        base = len(toks) * _F
        args.append(f"{rec.id}\x00{rec.role}\x00{ts_hex(rec.ts_us)}\x00{len(toks)}")
        args.append(_dumps(_BODY.row(rec)))
        args.append("\x00".join(counts))
        args.append("\x00".join([str(base + tf) for tf in counts.values()]))
        args.append(b"" if rec.vector is None else vector_to_bytes(rec.vector))
    return args


def _message(body: str, member: str, conversation_id: str, owner: str) -> MessageRecord:
    # The body's only number is the timestamp in microseconds (metadata is JSON text inside
    # it), which orjson reads exactly: no need for load_json's scan for long numbers.
    try:
        row = orjson.loads(body)
    except orjson.JSONDecodeError:
        row = load_json(body)
    role, content, message_type, timestamp, ts_us, metadata, parent_id = row
    return MessageRecord(
        member[28:],
        conversation_id,
        role,
        content,
        message_type,
        timestamp,
        int(ts_us),
        metadata,
        parent_id,
        owner,
        member_seq(member),
    )


def _conversation_messages(reply: list[Any], conversation_id: str) -> list[MessageRecord]:
    if not reply:
        return []
    owner, members, bodies = reply[0], reply[1], reply[2]
    return [
        _message(body, member, conversation_id, owner)
        for member, body in zip(members, bodies, strict=True)
        if body is not None
    ]


def _user_messages(reply: list[Any], user_id: str) -> list[MessageRecord]:
    out: list[MessageRecord] = []
    for i in range(0, len(reply), 3):
        conv = reply[i]
        out += [
            _message(body, member, conv, user_id)
            for member, body in zip(reply[i + 1], reply[i + 2], strict=True)
            if body is not None
        ]
    return out


def _memory(text: str) -> MemoryRecord:
    return MEMORIES.from_row(load_json(text))


def _session_fields(record: SessionRecord) -> tuple[str, str, str]:
    """A session's stored fields the put script takes: active flag, order member, payload."""
    return (
        "1" if record.is_active else "0",
        ts_hex(record.started_us) + record.session_id,
        record.payload,
    )


def _session_text(record: SessionRecord) -> str:
    """The value the put script stores for a session (what :func:`_session` reads)."""
    active, lex, payload = _session_fields(record)
    return "\x00".join((active, lex, record.conversation_id, payload))


def _session(session_id: str, owner: str, text: str) -> SessionRecord:
    active, lex, conv, payload = text.split("\x00", 3)
    return SessionRecord(
        session_id=session_id,
        user_id=owner,
        conversation_id=conv,
        is_active=active == "1",
        started_us=ts_from_hex(lex),
        payload=payload,
    )


def _filter_json(flt: MemoryFilter) -> str:
    return _dumps(
        {
            "t": list(flt.memory_types),
            "c": list(flt.categories),
            "g": list(flt.tags),
            "mc": flt.min_confidence,
            "mi": flt.min_importance,
            "x": flt.include_expired,
            "now": ts_hex(flt.now_us),
        }
    )
