"""The conformance suite against ChromaMemory: embedded, a shared server, a restarted server.

* Embedded: a ``PersistentClient`` directory per test (``tmp_path``); reopening opens the
  same directory again.
* Server: the project's Chroma server (``BRUNO_TEST_CHROMA_URL``, default: the one
  ``scripts/services/chroma.sh`` starts on 127.0.0.1:28100, started here if needed); each
  test gets collections of its own (a fresh collection prefix), removed after the module.
  An unreachable server fails every test: this engine is required, never skipped.
* Server restart: the durability tests against a private ``chroma run``, where reopening
  means stopping the server process and starting it again on the same data directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import chromadb
import pytest
from chromadb.config import Settings

import _engines as engines
from bruno_memstore.backends.chroma import ChromaMemory
from bruno_memstore.base import MemoryBackend
from bruno_memstore.errors import BackendUnavailableError
from bruno_memstore.testing import DurabilitySuite, MemoryConformance
from faults._ports import free_port

RUN = f"t{uuid.uuid4().hex[:10]}"  # every collection this run creates starts with it
# Not UTF-8, so Chroma cannot hold it (bruno-core already refuses it in message content).
SURROGATE = ("\udfff",)


class ChromaServer:
    """A private ``chroma run`` on a free port, with its own data directory."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        binary = Path(sys.executable).with_name("chroma")
        self.binary = str(binary) if binary.exists() else shutil.which("chroma")
        if self.binary is None:
            raise RuntimeError("the chroma command is missing: install bruno-memstore[chroma]")

    def start(self, timeout: float = 60.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the process keeps it
        data = str(self.directory / "data")
        self.process = subprocess.Popen(
            [self.binary, "run", "--path", data, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chroma run exited; see {self.directory / 'server.log'}")
            if self.answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"chroma run did not answer within {timeout} s")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 8000


def drop_collections(url: str, prefix: str) -> None:
    """Delete every collection whose name starts with ``prefix`` from a server."""
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


def same_mode(reopened: MemoryBackend, before: MemoryBackend) -> MemoryBackend:
    """A reopened memory ranks as the one it replaces: suites that check keyword ranking set
    ``search_mode`` on the test's memory."""
    reopened.search_mode = before.search_mode
    return reopened


async def connect(memory: ChromaMemory) -> ChromaMemory:
    """Connect now, failing the test (never skipping it) when the server cannot be reached."""
    try:
        await memory.initialize()
    except BackendUnavailableError as exc:
        pytest.fail(
            f"the Chroma server is required for these tests and is unreachable: {exc}. "
            "Run scripts/services/chroma.sh or set BRUNO_TEST_CHROMA_URL.",
            pytrace=False,
        )
    return memory


@pytest.fixture(scope="module")
def chroma_url() -> Iterator[str]:
    """The shared server; afterwards the run's collections are removed from it."""
    url = engines.chroma_url()
    yield url
    drop_collections(url, RUN)


class TestChromaEmbedded(MemoryConformance):
    capabilities = ChromaMemory.capabilities
    forbidden_metadata_text: ClassVar[tuple[str, ...]] = SURROGATE

    async def make_memory(self) -> MemoryBackend:
        # The same directory on every call within a test, so reopen_memory finds the data.
        return ChromaMemory(persist_directory=self.tmp_path / "chroma")

    async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
        return same_mode(await self.make_memory(), memory)

    async def make_private_memory(self) -> MemoryBackend:
        # Another directory of the test's own: model changes must not touch make_memory's.
        return ChromaMemory(persist_directory=self.tmp_path / "private")


class TestChromaServer(MemoryConformance):
    capabilities = ChromaMemory.capabilities
    forbidden_metadata_text: ClassVar[tuple[str, ...]] = SURROGATE

    def prefix(self) -> str:
        """A collection prefix of this test's own (stable across its calls)."""
        digest = hashlib.sha1(self._request.node.nodeid.encode()).hexdigest()[:12]
        return f"{RUN}-{digest}"

    async def make_memory(self) -> MemoryBackend:
        host, port = host_port(self._request.getfixturevalue("chroma_url"))
        return await connect(ChromaMemory(host=host, port=port, prefix=self.prefix()))

    async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
        return same_mode(await self.make_memory(), memory)

    async def make_private_memory(self) -> MemoryBackend:
        # Model changes replace a whole store's vectors: a prefix no other test uses. Not
        # connected yet: the tests choose its embedding model first.
        host, port = host_port(self._request.getfixturevalue("chroma_url"))
        return ChromaMemory(host=host, port=port, prefix=f"{self.prefix()}-p")


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server"))
    server.start()
    yield server
    server.stop()


class TestChromaServerRestart(DurabilitySuite):
    """Acknowledged writes survive stopping and restarting the server process."""

    capabilities = ChromaMemory.capabilities

    async def make_memory(self) -> MemoryBackend:
        server: ChromaServer = self._request.getfixturevalue("private_server")
        return await connect(ChromaMemory(host="127.0.0.1", port=server.port, prefix=RUN))

    async def reopen_memory(self, memory: MemoryBackend) -> MemoryBackend:
        server: ChromaServer = self._request.getfixturevalue("private_server")
        server.restart()
        return same_mode(await self.make_memory(), memory)
