"""The fake Pinecone index (:mod:`fakes.pinecone_server`) as a process of its own.

The conformance classes use it: in the test process, the fake's request handling would take
the interpreter lock from the client for every request. Tests that look inside the index
(:meth:`FakePinecone.visible`, ``requests``) use the in-process :class:`FakePinecone`.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from _server_process import ServerProcess
from faults._ports import free_port

__all__ = ["PineconeFakeProcess"]

SERVER = Path(__file__).with_name("pinecone_server.py")


class PineconeFakeProcess(ServerProcess):
    """``python pinecone_server.py`` on a free port: one fake index, writes visible after
    ``lag`` seconds."""

    name = "fake Pinecone"

    def __init__(self, dimension: int, api_key: str, lag: float = 0.0) -> None:
        super().__init__(free_port())
        self.dimension, self.api_key, self.lag = dimension, api_key, lag

    def command(self) -> list[str]:
        return [
            sys.executable, str(SERVER), "--port", str(self.port),
            "--dimension", str(self.dimension), "--key", self.api_key, "--lag", str(self.lag),
        ]  # fmt: skip

    def answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"
