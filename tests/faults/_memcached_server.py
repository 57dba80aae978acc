"""A private ``memcached`` for tests that stop or restart the engine.

It runs in the foreground as ``nobody`` on a free port in 20000-29999, so a test can kill
and restart it without touching the shared one on 21211.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

from ._ports import free_port

__all__ = ["MemcachedServer"]


class MemcachedServer:
    """One ``memcached`` process (memory only: a restart starts empty)."""

    def __init__(self) -> None:
        binary = shutil.which("memcached")
        if binary is None:
            raise RuntimeError("memcached is missing: run scripts/services/memcached.sh")
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``memcached://`` URL of the server."""
        return f"memcached://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers ``version``."""
        self.process = subprocess.Popen(
            [self.binary, "-u", "nobody", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("memcached did not come up")
            time.sleep(0.05)

    def answers(self) -> bool:
        """Whether the server replies to ``version``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"version\r\n")
                return sock.recv(64).startswith(b"VERSION")
        except OSError:
            return False

    def kill(self) -> None:
        """Stop the server at once (SIGKILL); everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None
