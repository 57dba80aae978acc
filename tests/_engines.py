"""The engines the tests run against: where each one is, starting it when it is down, private
servers for restart tests, a loud failure when one is unreachable, and removal of what a run
left behind.

Each ``*_url()`` returns its ``BRUNO_TEST_*_URL`` environment variable when set. Otherwise the
machine's own servers are used (PostgreSQL, MariaDB, Redis), or the engine's script in
``scripts/services`` is run (it installs and starts the engine when needed) and the URL it
prints is returned. The fixtures in ``tests/conftest.py`` hand these out and clean up.

Every name a run creates on a shared server (key prefix, schema, table prefix, collection)
starts with one of the run's prefixes below, so that the clean-up removes exactly that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
import redis

from _server_process import ServerProcess
from bruno_memstore.base import MemoryBackend
from bruno_memstore.errors import BackendUnavailableError
from faults._ports import free_port

__all__ = [
    "CHROMA_PREFIX",
    "MONGO_PREFIX",
    "QDRANT_PREFIX",
    "REDIS_PREFIX",
    "RUN",
    "SQL_PREFIX",
    "ChromaServer",
    "chroma_url",
    "connected",
    "drop_chroma_collections",
    "drop_mongo_collections",
    "drop_mysql_tables",
    "drop_postgres_schemas",
    "drop_qdrant_collections",
    "drop_redis_cluster_keys",
    "drop_redis_indexes",
    "drop_redis_keys",
    "drop_ttl_indexes",
    "host_port",
    "memcached_url",
    "mongo_nx_url",
    "mongo_url",
    "mongodb_url",
    "mysql_url",
    "pgvector_url",
    "postgres_url",
    "qdrant_api_key",
    "qdrant_url",
    "redis_cluster_url",
    "redis_search_url",
    "redis_url",
]

SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services"

RUN = os.urandom(5).hex()  # ten hex digits naming this test run
REDIS_PREFIX = f"bruno-{RUN}"  # Redis and memcached key prefixes
SQL_PREFIX = f"bruno_{RUN}_"  # PostgreSQL schemas, MariaDB table prefixes
CHROMA_PREFIX = f"t{RUN}"  # Chroma collection prefixes (a name starts with a letter or digit)
QDRANT_PREFIX = f"q{RUN}"  # Qdrant collection prefixes
MONGO_PREFIX = f"m{RUN}"  # MongoDB collection prefixes
WEAVIATE_PREFIX = f"W{RUN}"  # Weaviate collection prefixes (a class name starts with a capital)
PINECONE_PREFIX = f"p{RUN}"  # namespace prefixes of the run on a real Pinecone index
PINECONE_FAKE_KEY = "fake-pinecone-key"
PINECONE_FAKE_DIMENSION = 384  # the default model's

M = TypeVar("M", bound=MemoryBackend)

# engine -> (what to call it, what to do when it is unreachable)
_HINTS = {
    "postgres": ("PostgreSQL", "Start it or point BRUNO_TEST_POSTGRES_URL at a server."),
    "pgvector": ("PostgreSQL with pgvector", "Run scripts/services/pgvector.sh."),
    "mysql": ("MariaDB/MySQL", "Start it or point BRUNO_TEST_MYSQL_URL at a server."),
    "redis": ("Redis", "Start it or point BRUNO_TEST_REDIS_URL at a server."),
    "redis-search": ("Redis with RediSearch", "Run scripts/services/redis-search.sh."),
    "redis-cluster": (
        "The Redis Cluster",
        "Run scripts/services/redis-cluster.sh or set BRUNO_TEST_REDIS_CLUSTER_URL.",
    ),
    "memcached": (
        "memcached",
        "Run scripts/services/memcached.sh or set BRUNO_TEST_MEMCACHED_URL.",
    ),
    "chroma": ("The Chroma server", "Run scripts/services/chroma.sh or set BRUNO_TEST_CHROMA_URL."),
    "qdrant": ("The Qdrant server", "Check QDRANT_URL and QDRANT_API_KEY."),
    "weaviate": ("The Weaviate server", "Check WEAVIATE_URL and WEAVIATE_API_KEY."),
    "mongo": (
        "The MongoDB emulators",
        "Run scripts/services/mongo.sh or set BRUNO_TEST_MONGO_URL and BRUNO_TEST_MONGO_NX_URL.",
    ),
    "mongodb": ("The MongoDB server at MONGODB_URL", "Check MONGODB_URL."),
}


# ---------------------------------------------------------------- where the engines are


def postgres_url() -> str:
    """``BRUNO_TEST_POSTGRES_URL``, or the machine's PostgreSQL 15 (no pgvector)."""
    return os.environ.get("BRUNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def mysql_url() -> str:
    """``BRUNO_TEST_MYSQL_URL``, or the machine's MariaDB."""
    return os.environ.get("BRUNO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def redis_url() -> str:
    """``BRUNO_TEST_REDIS_URL``, or the machine's Redis (no modules, no persistence)."""
    return os.environ.get("BRUNO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def qdrant_url() -> str:
    """``QDRANT_URL``: a Qdrant server, or ``""`` when none is configured."""
    return os.environ.get("QDRANT_URL", "")


def qdrant_api_key() -> str | None:
    return os.environ.get("QDRANT_API_KEY") or None


def weaviate_url() -> str:
    """``WEAVIATE_URL``: a real Weaviate server as a memory URL (``weaviate://host:8080``,
    ``weaviate+https://host?grpc_port=443``), or ``""`` when none is configured."""
    return os.environ.get("WEAVIATE_URL", "")


def weaviate_api_key() -> str | None:
    return os.environ.get("WEAVIATE_API_KEY") or None


def _engine_url(variable: str, script: str, line: int = -1) -> str:
    """``$variable``, or the last line (or ``line``) printed by ``scripts/services/<script>``.

    Fails the calling test, never skips it: the project's engines are required.
    """
    configured = os.environ.get(variable)
    if configured:
        return configured
    path = SERVICES / script
    done = subprocess.run(["bash", str(path)], capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or len(lines) < abs(line):
        pytest.fail(
            f"could not start the engine with {path} (exit {done.returncode}): "
            f"{done.stderr.strip()}",
            pytrace=False,
        )
    return lines[line]


def memcached_url() -> str:
    """``BRUNO_TEST_MEMCACHED_URL``, or the project's own memcached (started if it is down)."""
    return _engine_url("BRUNO_TEST_MEMCACHED_URL", "memcached.sh")


def pgvector_url() -> str:
    """``BRUNO_TEST_PGVECTOR_URL``, or the project's PostgreSQL 18 with pgvector (database
    ``bruno_test``, extension ``vector`` created), started if it is down."""
    return _engine_url("BRUNO_TEST_PGVECTOR_URL", "pgvector.sh")


def redis_search_url() -> str:
    """``BRUNO_TEST_REDIS_SEARCH_URL``, or the project's Redis with RediSearch and RedisJSON,
    started if it is down."""
    return _engine_url("BRUNO_TEST_REDIS_SEARCH_URL", "redis-search.sh")


def redis_cluster_url() -> str:
    """``BRUNO_TEST_REDIS_CLUSTER_URL``, or the project's Redis Cluster (three masters, three
    replicas, ``redis+cluster://host:port``), started if it is down."""
    return _engine_url("BRUNO_TEST_REDIS_CLUSTER_URL", "redis-cluster.sh")


def chroma_url() -> str:
    """``BRUNO_TEST_CHROMA_URL``, or the project's Chroma server (``http://host:port``),
    started if it is down."""
    return _engine_url("BRUNO_TEST_CHROMA_URL", "chroma.sh")


def mongo_url() -> str:
    """``BRUNO_TEST_MONGO_URL``, or the project's SecantusDB, a MongoDB wire-protocol emulator
    with transactions and no text index, started if it is down."""
    return _engine_url("BRUNO_TEST_MONGO_URL", "mongo.sh", line=-2)


def mongo_nx_url() -> str:
    """``BRUNO_TEST_MONGO_NX_URL``, or the project's nx-27017, a MongoDB wire-protocol
    emulator with ``$text`` and no transactions, started if it is down."""
    return _engine_url("BRUNO_TEST_MONGO_NX_URL", "mongo.sh")


def mongodb_url() -> str:
    """``MONGODB_URL``: a real MongoDB deployment, or ``""`` when none is configured."""
    return os.environ.get("MONGODB_URL", "")


def host_port(url: str, default_port: int = 8000) -> tuple[str, int]:
    """The host and port of an ``http://host:port`` URL."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


async def connected(memory: M, engine: str) -> M:
    """``memory``, connected now; fails the test (never skips it) when its engine cannot be
    reached. ``engine`` is one of ``postgres``, ``pgvector``, ``mysql``, ``redis``,
    ``redis-search``, ``memcached``, ``chroma``, ``qdrant``, ``mongo``, ``mongodb``."""
    try:
        await memory.initialize()
    except BackendUnavailableError as exc:
        name, hint = _HINTS[engine]
        pytest.fail(
            f"{name} is required for these tests and is unreachable: {exc}. {hint}",
            pytrace=False,
        )
    return memory


# ---------------------------------------------------------------- private servers


class ChromaServer(ServerProcess):
    """A private ``chroma run`` on a free port with its own data directory, for tests that
    stop and restart the server process."""

    name = "chroma run"

    def __init__(self, directory: Path, port: int | None = None) -> None:
        super().__init__(port or free_port(), directory)
        beside = Path(sys.executable).with_name("chroma")
        binary = str(beside) if beside.exists() else shutil.which("chroma")
        if binary is None:
            raise RuntimeError("the chroma command is missing: install bruno-memstore[chroma]")
        self.binary = binary

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        assert self.directory is not None
        data = str(self.directory / "data")
        return [self.binary, "run", "--path", data, "--host", "127.0.0.1", "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "ANONYMIZED_TELEMETRY": "False"}

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False


# ---------------------------------------------------------------- clean-up


def drop_redis_keys(url: str, prefix: str) -> None:
    """Delete a run's keys (``prefix*`` and hash-tagged ``{prefix*``) from a shared Redis."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            for pattern in (f"{prefix}*", f"{{{prefix}*"):
                keys = list(client.scan_iter(match=pattern, count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
    except redis.RedisError:
        pass  # unreachable: the tests already failed saying so


def drop_redis_cluster_keys(url: str, prefix: str) -> None:
    """Delete a run's keys (``{prefix*``: a store's keys on a cluster) from every master."""
    parts = urlsplit(url)
    try:
        with redis.RedisCluster(
            host=parts.hostname or "127.0.0.1", port=parts.port or 6379, socket_timeout=5
        ) as client:
            for node in client.get_primaries():
                keys = list(client.scan_iter(match=f"{{{prefix}*", count=1000, target_nodes=node))
                for key in keys:
                    client.delete(key)
    except (redis.RedisError, redis.exceptions.RedisClusterException):
        pass  # unreachable: the tests already failed saying so


def drop_redis_indexes(url: str, prefix: str) -> None:
    """Drop the RediSearch indexes whose names start with ``prefix``."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, decode_responses=True) as client:
            for name in client.execute_command("FT._LIST"):
                if name.startswith(prefix):
                    with contextlib.suppress(redis.ResponseError):  # dropped meanwhile
                        client.execute_command("FT.DROPINDEX", name)
    except redis.RedisError:
        pass


def drop_chroma_collections(url: str, prefix: str) -> None:
    """Delete every collection whose name starts with ``prefix`` from a Chroma server."""
    import chromadb
    from chromadb.config import Settings

    host, port = host_port(url)
    try:
        client = chromadb.HttpClient(host, port, settings=Settings(anonymized_telemetry=False))
    except ValueError:
        return  # unreachable: the tests already failed saying so
    try:
        for collection in client.list_collections():
            name = collection if isinstance(collection, str) else collection.name
            if name.startswith(prefix):
                client.delete_collection(name)
    finally:
        client.close()


def drop_postgres_schemas(url: str, prefix: str) -> None:
    """Drop every schema whose name starts with ``prefix`` (letters, digits, ``_``)."""
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            names = await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", prefix
            )
            for (name,) in names:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()

    with contextlib.suppress(OSError, asyncpg.PostgresError):
        asyncio.run(drop())


def drop_mysql_tables(url: str, prefix: str) -> None:
    """Drop every table of the URL's database whose name starts with ``prefix``."""
    import asyncmy

    parts = urlsplit(url)

    async def drop() -> None:
        conn = await asyncmy.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=parts.path.lstrip("/"),
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name LIKE %s",
                    (prefix.replace("_", "\\_") + "%",),
                )
                tables = [row[0] for row in await cur.fetchall()]
                if tables:
                    await cur.execute("DROP TABLE " + ", ".join(f"`{t}`" for t in tables))
        finally:
            conn.close()

    with contextlib.suppress(OSError, asyncmy.errors.Error):
        asyncio.run(drop())


def drop_mongo_collections(url: str, prefix: str) -> None:
    """Drop every collection whose name starts with ``prefix`` from the URL's database (or
    ``bruno_memory``)."""
    import pymongo

    try:
        with pymongo.MongoClient(url, serverSelectionTimeoutMS=2000) as client:
            db = client.get_default_database("bruno_memory")
            for name in db.list_collection_names():
                if name.startswith(prefix):
                    db.drop_collection(name)
    except pymongo.errors.PyMongoError:
        pass  # unreachable: the tests already failed saying so


def drop_ttl_indexes(url: str, collection: str) -> None:
    """Drop the TTL indexes of a collection of the URL's database (or ``bruno_memory``)."""
    import pymongo

    with pymongo.MongoClient(url, serverSelectionTimeoutMS=2000) as client:
        coll = client.get_default_database("bruno_memory")[collection]
        for name, spec in coll.index_information().items():
            if "expireAfterSeconds" in spec:
                coll.drop_index(name)


def drop_qdrant_collections(url: str, api_key: str | None, prefix: str) -> None:
    """Delete every alias and collection of a Qdrant server whose name starts with ``prefix``."""
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    with contextlib.closing(QdrantClient(url=url, api_key=api_key)) as client:
        drop = [
            qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=a.alias_name))
            for a in client.get_aliases().aliases
            if a.alias_name.startswith(prefix)
        ]
        if drop:
            client.update_collection_aliases(change_aliases_operations=drop)
        for coll in client.get_collections().collections:
            if coll.name.startswith(prefix):
                client.delete_collection(coll.name)


async def drop_weaviate_collections(url: str, api_key: str | None, prefix: str) -> None:
    """Delete every collection of a Weaviate server whose name starts with ``prefix``."""
    from bruno_memstore.backends.weaviate import WeaviateMemory
    from bruno_memstore.url import MemoryURL

    memory = WeaviateMemory.from_url(MemoryURL.parse(url), api_key=api_key, embedding_model=None)
    client = memory._make_client()
    await client.connect()
    try:
        for name in await client.collections.list_all(simple=True):
            if name.startswith(prefix):
                await client.collections.delete(name)
    finally:
        await client.close()


# ---------------------------------------------------------------- DynamoDB emulators

DYNAMODB_PREFIX = f"bruno_{RUN}_"  # DynamoDB table names of this run
DYNAMODB_KEYS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}  # emulators
_HINTS["dynamodb"] = (
    "A DynamoDB endpoint",
    "Run scripts/services/dynamodb.sh, or set BRUNO_TEST_DYNAMODB_URL (moto), "
    "BRUNO_TEST_DYNALITE_URL (dynalite) or DYNAMODB_ENDPOINT (DynamoDB, DynamoDB Local).",
)


def dynamodb_emulator_url(emulator: str) -> str:
    """The endpoint of ``moto`` (``BRUNO_TEST_DYNAMODB_URL``) or ``dynalite``
    (``BRUNO_TEST_DYNALITE_URL``), else the project's own (both started if they are down)."""
    variable = "BRUNO_TEST_DYNAMODB_URL" if emulator == "moto" else "BRUNO_TEST_DYNALITE_URL"
    if os.environ.get(variable):
        return os.environ[variable]
    # The script prints "moto=URL dynalite=URL".
    urls = dict(part.split("=", 1) for part in _engine_url("", "dynamodb.sh").split())
    return urls[emulator]


def drop_dynamodb_tables(endpoint: str, prefix: str, **credentials: str) -> None:
    """Delete every table of an endpoint whose name starts with ``prefix``."""

    async def drop() -> None:
        from aiobotocore.session import get_session

        async with get_session().create_client(
            "dynamodb", region_name="us-east-1", endpoint_url=endpoint, **credentials
        ) as client:
            names = (await client.list_tables(Limit=100)).get("TableNames", [])
            while names:
                for name in names:
                    if name.startswith(prefix):
                        await client.delete_table(TableName=name)
                page = await client.list_tables(ExclusiveStartTableName=names[-1], Limit=100)
                names = page.get("TableNames", [])

    with contextlib.suppress(Exception):  # an endpoint gone by the end leaves nothing to drop
        asyncio.run(drop())


def pinecone_index() -> str:
    """The Pinecone index the service tests use (it must exist: dense, metric cosine,
    dimension at least 384)."""
    return os.environ.get("PINECONE_INDEX") or "bruno-memstore-test"


def drop_pinecone_namespaces(index: str, host: str | None, prefix: str) -> None:
    """Delete the namespaces of an index whose names start with ``prefix``."""
    from pinecone import Pinecone

    client = Pinecone()
    handle = client.index(name=index, host=host) if host else client.index(name=index)
    names = [ns.name for page in handle.list_namespaces(prefix=prefix) for ns in page.namespaces]
    for name in names:
        handle.delete_namespace(name=name)
