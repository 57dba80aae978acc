"""A fake server (``python -m fakes.<module>``) run as a process of its own.

The conformance classes use these: served from the test process, a fake's request handling
would take the interpreter lock from the client on every request. Tests that look inside a
fake (what it holds, the requests it saw) use the in-process fake instead.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from _server_process import ServerProcess
from faults._ports import free_port

__all__ = ["FakeProcess", "PineconeFakeProcess", "WeaviateFakeProcess"]

TESTS = Path(__file__).resolve().parent.parent


class FakeProcess(ServerProcess):
    """``python -m <module> --port P <options>``, started in the foreground; it answers once
    every port in :attr:`ports` accepts a connection."""

    def __init__(self, module: str, *options: str, ports: tuple[int, ...] = ()) -> None:
        super().__init__(free_port())
        self.name = f"fake server {module}"
        self.module, self.options = module, options
        self.ports = (self.port, *ports)

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--port", str(self.port), *self.options]

    def environment(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path}

    def answers(self) -> bool:
        for port in self.ports:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                return False
        return True


class PineconeFakeProcess(FakeProcess):
    """The fake Pinecone index (:mod:`fakes.pinecone_server`); writes visible after ``lag``
    seconds."""

    def __init__(self, dimension: int, api_key: str, lag: float = 0.0) -> None:
        options = ("--dimension", str(dimension), "--key", api_key, "--lag", str(lag))
        super().__init__("fakes.pinecone_server", *options)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class WeaviateFakeProcess(FakeProcess):
    """The fake Weaviate (:mod:`fakes.weaviate`): REST on :attr:`port`, gRPC beside it."""

    def __init__(self) -> None:
        grpc_port = free_port()
        super().__init__("fakes.weaviate", "--grpc-port", str(grpc_port), ports=(grpc_port,))
        self.grpc_port = grpc_port

    @property
    def url(self) -> str:
        return f"weaviate://127.0.0.1:{self.port}?grpc_port={self.grpc_port}"
