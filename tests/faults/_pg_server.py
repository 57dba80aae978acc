"""A private PostgreSQL 15 for tests that stop, restart or crash the engine.

It gets a cluster of its own (Debian's ``initdb``) in a temporary directory, listens on a
free port in 20000-29999, and runs as the ``postgres`` system user when the tests run as
root (PostgreSQL refuses to run as root). The shared server on 5432 is never touched.
``fsync`` stays on, so a crashed server keeps every acknowledged transaction.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ._ports import free_port

__all__ = ["PG_BIN", "PostgresServer", "free_port"]

PG_BIN = Path(os.environ.get("BRUNO_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresServer:
    """One PostgreSQL cluster and its server process (``pg_ctl``)."""

    def __init__(self) -> None:
        for tool in ("initdb", "pg_ctl"):
            if not (PG_BIN / tool).exists():
                raise RuntimeError(f"{PG_BIN / tool} is missing (Debian postgresql-15)")
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="bruno-pg-"))
        self.directory.chmod(0o755)
        self.datadir = self.directory / "data"
        self.log = self.directory / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )

    @property
    def url(self) -> str:
        """``postgresql://`` URL of the ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, str(PG_BIN / tool), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def _ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.directory} -c max_connections=40"
        self._run(
            "pg_ctl", action, "-D", str(self.datadir), "-l", str(self.log), "-o", options,
            "-w", "-t", "60", *args,
        )  # fmt: skip

    def start(self) -> None:
        """Start and wait until connections are accepted."""
        self._ctl("start")

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast``: sessions are terminated, nothing is lost) and start again."""
        self._ctl("restart", "-m", mode)

    def stop(self, mode: str = "fast") -> None:
        """Stop; ``immediate`` is a crash: no shutdown checkpoint, recovery on next start."""
        self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60")

    def close(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        if (self.datadir / "postmaster.pid").exists():
            self._run(
                "pg_ctl", "stop", "-D", str(self.datadir), "-m", "immediate", "-w",
                check=False,
            )  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)
