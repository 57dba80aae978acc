"""A private MongoDB emulator (SecantusDB or nx-27017) for tests that stop and restart it.

The emulators come from the venv ``scripts/services/mongo.sh`` installs under the services
directory (the script is run when that venv is missing). The server listens on a free port
in 20000-29999 and keeps its data in a directory of its own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pymongo

from _server_process import ServerProcess

from ._ports import free_port

__all__ = ["MongoEmulator"]

SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services"


def _venv() -> Path:
    bin_dir = Path(os.environ.get("BRUNO_SERVICES_DIR", "/tmp/bruno-services")) / "mongo/venv/bin"
    if not (bin_dir / "nx-27017").exists():
        subprocess.run(["bash", str(SERVICES / "mongo.sh")], check=True, capture_output=True)
    return bin_dir


class MongoEmulator(ServerProcess):
    """One emulator process: ``"secantus"`` (transactions) or ``"nx"`` (no transactions)."""

    def __init__(self, kind: str, directory: Path) -> None:
        super().__init__(free_port(), directory)
        self.kind = self.name = kind

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def command(self) -> list[str]:
        assert self.directory is not None
        data, port = str(self.directory / "data"), str(self.port)
        if self.kind == "secantus":
            return [str(_venv() / "secantusd-py"), "--host", "127.0.0.1", "--port", port,
                    "--storage-path", data, "--log-level", "WARNING"]  # fmt: skip
        own = str(self.directory)  # nx-27017 refuses to start beside another's pid file
        return [str(_venv() / "nx-27017"), "--data-dir", data, "--host", "127.0.0.1", "-p", port,
                "--pid-file", f"{own}/nx.pid", "--log-file", f"{own}/nx.log"]  # fmt: skip

    def answers(self) -> bool:
        try:
            with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=300) as client:
                client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False

    def restart(self, down: float = 0.5, *, crash: bool = False) -> None:
        super().restart(down, crash=crash)
