"""A private ``redis-server`` for tests that stop, restart or starve the engine.

It listens on a free port in 20000-29999, keeps its data in a directory of its own and never
touches the shared server on 6379.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from ._ports import free_port

__all__ = ["RedisServer", "free_port"]


class RedisServer:
    """One ``redis-server`` process.

    Args:
        directory: where the server keeps its AOF files and log.
        appendonly: persist every write to the append-only file.
        appendfsync: the file's ``fsync`` policy; ``always`` (the default here) writes every
            command to the file before replying, which is what ``DURABLE`` needs.
        port: fixed port (default: a free one, kept across restarts).
        extra_args: more ``redis-server`` options, e.g. ``("--enable-debug-command", "yes")``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = True,
        appendfsync: str = "always",
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.port = port or free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", self.appendfsync,
                "--save", "",
                "--logfile", str(self.directory / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.directory / 'redis.log'}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout}s")

    def ping(self) -> bool:
        """Whether the server answers ``PING`` (and is done loading its data)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def shutdown(self, timeout: float = 10.0) -> None:
        """``SHUTDOWN``: the server flushes its AOF and exits (acknowledged data is kept)."""
        if self.process is None:
            return
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"SHUTDOWN\r\n")
                sock.recv(64)
        except OSError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, downtime: float = 0.0) -> None:
        """Shut down, stay down ``downtime`` seconds, start again on the same port and data."""
        self.shutdown()
        time.sleep(downtime)
        self.start()

    def kill(self) -> None:
        """SIGKILL: a crash. Only what reached the append-only file survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """Shut down if running (for fixture teardown)."""
        self.shutdown()
