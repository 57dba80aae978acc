"""A private ``mariadbd`` for tests that kill, restart or starve the engine.

It gets a data directory of its own (``mariadb-install-db``), listens on a free port in
20000-29999 and runs as the ``mysql`` user, as Debian's package does. The shared server on
3306 is never touched. Commits are flushed to disk (``innodb_flush_log_at_trx_commit=1``),
so a killed server keeps every acknowledged transaction.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ._ports import free_port

__all__ = ["MariaDBServer", "free_port"]

MARIADBD = "/usr/sbin/mariadbd"


class MariaDBServer:
    """One ``mariadbd`` process with its own data directory.

    Args:
        options: extra server options (``--max-connections=5``, ...).
    """

    def __init__(self, options: Sequence[str] = ()) -> None:
        for tool in (MARIADBD, shutil.which("mariadb-install-db"), shutil.which("mariadb")):
            if tool is None or not os.path.exists(tool):
                raise RuntimeError("MariaDB server tools are missing (Debian mariadb-server)")
        self.options = list(options)
        self.port = free_port()
        # The server drops to the mysql user, which must be able to reach its directory.
        self.directory = Path(tempfile.mkdtemp(prefix="bruno-mariadb-"))
        self.directory.chmod(0o755)
        self.datadir = self.directory / "data"
        # A private temp dir: at start-up mariadbd deletes leftover #sql* files in its tmpdir,
        # which in the shared /tmp would include the machine's own server's temporary tables.
        self.tmpdir = self.directory / "tmp"
        self.tmpdir.mkdir()
        self.process: subprocess.Popen[bytes] | None = None
        shutil.chown(self.directory, "mysql", "mysql")
        shutil.chown(self.tmpdir, "mysql", "mysql")
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={self.datadir}",
                f"--tmpdir={self.tmpdir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        """``mysql://`` URL of database ``test`` as root."""
        return f"mysql://root@127.0.0.1:{self.port}/test"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts queries."""
        self.process = subprocess.Popen(
            [
                MARIADBD,
                "--no-defaults",
                "--user=mysql",
                f"--datadir={self.datadir}",
                f"--tmpdir={self.tmpdir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.directory / 'mysqld.sock'}",
                f"--pid-file={self.directory / 'mysqld.pid'}",
                f"--log-error={self.directory / 'error.log'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=8M",
                "--innodb-flush-log-at-trx-commit=1",
                "--character-set-server=utf8mb4",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while self.sql("CREATE DATABASE IF NOT EXISTS test", check=False) != 0:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not come up: {self.log_tail()}")
            time.sleep(0.1)

    def sql(self, statement: str, *, check: bool = True) -> int:
        """Run a statement as root with the command-line client; return its exit status."""
        done = subprocess.run(
            [
                "mariadb",
                "--protocol=tcp",
                "-h127.0.0.1",
                f"-P{self.port}",
                "-uroot",
                "--connect-timeout=2",
                "-e",
                statement,
            ],
            capture_output=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace"))
        return done.returncode

    def kill(self) -> None:
        """Crash the server (SIGKILL): no shutdown, no flush beyond what was committed."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM)."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)
        self.process = None

    def restart(self) -> None:
        """Kill the server, then start it again on the same port and data."""
        self.kill()
        self.start()

    def log_tail(self) -> str:
        """The end of the server's error log."""
        log = self.directory / "error.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def destroy(self) -> None:
        """Stop the server and delete its data."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
