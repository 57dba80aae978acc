"""A private dynalite (a DynamoDB emulator) keeping its tables in LevelDB files, for tests
that stop, kill and restart it on the same data.

dynalite comes from the npm folder ``scripts/services/dynamodb.sh`` installs under the
services directory (the script is run when it is missing). The server listens on a free
port in 20000-29999.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from _server_process import ServerProcess

from ._ports import free_port

__all__ = ["DynaliteServer"]

SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services"


def _cli() -> Path:
    services = Path(os.environ.get("BRUNO_SERVICES_DIR", "/tmp/bruno-services"))
    cli = services / "dynamodb" / "npm" / "node_modules" / "dynalite" / "cli.js"
    if not cli.exists():
        subprocess.run(["bash", str(SERVICES / "dynamodb.sh")], check=True, capture_output=True)
    return cli


class DynaliteServer(ServerProcess):
    """One dynalite process whose tables live in ``directory/data`` (LevelDB)."""

    name = "dynalite"

    def __init__(self, directory: Path) -> None:
        super().__init__(free_port(), directory)
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is missing: run scripts/services/dynamodb.sh")
        self.node = node

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        assert self.directory is not None
        return [self.node, str(_cli()), "--host", "127.0.0.1", "--port", str(self.port),
                "--path", str(self.directory / "data"), "--createTableMs", "0",
                "--deleteTableMs", "0", "--updateTableMs", "0"]  # fmt: skip

    def answers(self) -> bool:
        # Any HTTP answer (dynalite refuses a bare GET with 400) means it is serving.
        try:
            with urllib.request.urlopen(self.url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
