"""A private MongoDB emulator (SecantusDB or nx-27017) for tests that stop and restart it.

The emulators come from the venv ``scripts/services/mongo.sh`` installs under the services
directory (the script is run when that venv is missing). The server listens on a free port
in 20000-29999 and keeps its data in a directory of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pymongo

from ._ports import free_port

__all__ = ["MongoEmulator"]

SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services"


def _venv() -> Path:
    bin_dir = Path(os.environ.get("BRUNO_SERVICES_DIR", "/tmp/bruno-services")) / "mongo/venv/bin"
    if not (bin_dir / "nx-27017").exists():
        subprocess.run(["bash", str(SERVICES / "mongo.sh")], check=True, capture_output=True)
    return bin_dir


class MongoEmulator:
    """One emulator process: ``"secantus"`` (transactions) or ``"nx"`` (no transactions)."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def command(self) -> list[str]:
        data, port = str(self.directory / "data"), str(self.port)
        if self.kind == "secantus":
            return [str(_venv() / "secantusd-py"), "--host", "127.0.0.1", "--port", port,
                    "--storage-path", data, "--log-level", "WARNING"]  # fmt: skip
        own = str(self.directory)  # nx-27017 refuses to start beside another's pid file
        return [str(_venv() / "nx-27017"), "--data-dir", data, "--host", "127.0.0.1", "-p", port,
                "--pid-file", f"{own}/nx.pid", "--log-file", f"{own}/nx.log"]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers a ping."""
        with open(self.directory / "server.log", "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited; see {self.directory / 'server.log'}")
            if self.answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} on port {self.port} did not answer in {timeout}s")

    def answers(self) -> bool:
        try:
            with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=300) as client:
                client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush anything."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, down: float = 0.5, *, crash: bool = False) -> None:
        """Stop (or kill) the server, and start it again on the same port and data."""
        self.kill() if crash else self.stop()
        time.sleep(down)
        self.start()
