"""A private ``memcached`` for tests that stop or restart the engine.

It runs in the foreground as ``nobody`` on a free port in 20000-29999, so a test can kill
and restart it without touching the shared one on 21211.
"""

from __future__ import annotations

import shutil
import socket

from _server_process import ServerProcess

from ._ports import free_port

__all__ = ["MemcachedServer"]


class MemcachedServer(ServerProcess):
    """One ``memcached`` process (memory only: a restart starts empty)."""

    name = "memcached"

    def __init__(self) -> None:
        binary = shutil.which("memcached")
        if binary is None:
            raise RuntimeError("memcached is missing: run scripts/services/memcached.sh")
        super().__init__(free_port())
        self.binary = binary

    @property
    def url(self) -> str:
        """``memcached://`` URL of the server."""
        return f"memcached://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [self.binary, "-u", "nobody", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]

    def start(self, timeout: float = 10.0) -> None:
        super().start(timeout)

    def answers(self) -> bool:
        """Whether the server replies to ``version``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"version\r\n")
                return sock.recv(64).startswith(b"VERSION")
        except OSError:
            return False
