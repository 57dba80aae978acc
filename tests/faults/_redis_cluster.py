"""A private Redis Cluster (three masters, three replicas) for tests that kill its nodes.

Six ``redis-server`` processes (see ``_redis_server``) on free ports whose cluster-bus ports
(port + 10000) are free too, created with ``redis-cli --cluster create``. It never touches
the project's cluster on 27001-27006.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from ._redis_server import RedisServer

__all__ = ["RedisClusterServers"]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cluster_ports(count: int) -> list[int]:
    """``count`` consecutive ports in 21000-29000 free with their bus ports (port + 10000)."""
    for first in range(21000 + (time.monotonic_ns() // 1000) % 400 * 20, 29000, 20):
        ports = list(range(first, first + count))
        if all(_free(p) and _free(p + 10000) for p in ports):
            return ports
    raise RuntimeError("no free range of ports for a Redis Cluster")


class RedisClusterServers:
    """Three masters and three replicas; ``node_timeout`` (ms) is how long a master may stay
    silent before its replica takes over."""

    def __init__(self, directory: Path, *, node_timeout: int = 1500) -> None:
        self.directory = Path(directory)
        self.ports = _cluster_ports(6)
        args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout),
        )  # fmt: skip
        self.servers = {
            port: RedisServer(
                self.directory / str(port), appendonly=False, port=port, extra_args=args
            )
            for port in self.ports
        }

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the nodes, create the cluster, wait until every node says it is ok."""
        for server in self.servers.values():
            server.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (Debian package redis-tools)")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait(lambda: all(self.info(p).get("cluster_state") == "ok" for p in self.ports),
                  "every node to say cluster_state:ok", timeout)  # fmt: skip

    def command(self, port: int, *args: str) -> str:
        """One ``redis-cli`` command on a node; its output ("" when the node is down)."""
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout if done.returncode == 0 else ""

    def info(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` of a node as a dict (empty when it is down)."""
        lines = self.command(port, "cluster", "info").splitlines()
        return dict(line.strip().split(":", 1) for line in lines if ":" in line)

    def role(self, port: int) -> str:
        """``master`` or ``slave`` as the node itself says ("" when it is down)."""
        for line in self.command(port, "cluster", "nodes").splitlines():
            fields = line.split()
            if "myself" in fields[2]:
                return "master" if "master" in fields[2] else "slave"
        return ""

    def replica_link_up(self, port: int) -> bool:
        """Whether a replica has finished syncing with its master."""
        return "master_link_status:up" in self.command(port, "info", "replication")

    def wait(self, condition, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def kill(self, port: int) -> None:
        """SIGKILL one node."""
        self.servers[port].kill()

    def restart(self, port: int) -> None:
        """Start a killed node again on its port, with its ``nodes.conf``."""
        self.servers[port].start()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
