"""A server process a test starts, waits for, stops, kills and restarts itself."""

from __future__ import annotations

import signal
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path

__all__ = ["ServerProcess"]


class ServerProcess(ABC):
    """One engine process on a port of its own: a subclass gives its :meth:`command` and
    how to tell it :meth:`answers`; output goes to ``server.log`` in :attr:`directory`
    (``None``: discarded)."""

    name = "server"
    stop_timeout = 20.0

    def __init__(self, port: int, directory: Path | None = None) -> None:
        self.port = port
        self.directory = None if directory is None else Path(directory)
        self.process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abstractmethod
    def answers(self) -> bool:
        """Whether the server answers a request now."""

    def environment(self) -> dict[str, str] | None:
        """The server's environment (``None``: this process's)."""
        return None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers; fail if it exits or stays silent."""
        if self.directory is None:
            log_path = None
            self.process = subprocess.Popen(
                self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=self.environment(),
            )  # fmt: skip
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            log_path = self.directory / "server.log"
            with open(log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment()
                )
        where = f"; see {log_path}" if log_path else ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited{where}")
            if self.answers():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} on port {self.port} did not answer in {timeout} s{where}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after :attr:`stop_timeout` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self, down: float = 0.0, *, crash: bool = False) -> None:
        """Stop (or kill) the server, wait ``down`` seconds, start it again on the same port
        and data."""
        self.kill() if crash else self.stop()
        time.sleep(down)
        self.start()
