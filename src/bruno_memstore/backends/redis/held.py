"""Connections a Redis store keeps out of its pool for its scripts.

redis-py's pool checks a connection out and back in around every command: a lock, a check
that the connection has nothing left to read, and observability hooks, about a tenth of the
client's time on a script call to a local server. Nearly every call a store makes is a
script, so a script runs on a connection held here instead: taken from the pool the first
time no held one is free, then kept, and used through redis-py's own connection (which
connects, parses the reply, and drops the connection on an error or a cancellation, to be
connected again by its next command). Other commands go through the pool as before; when
the pool would otherwise be full, an idle held connection goes back to it first, so a store
never opens more than its ``max_connections``. Closing the pool closes the held ones too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

try:  # redis-py packs through hiredis too, after encoding each argument itself
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - redis[hiredis] installs it
    _pack = None

__all__ = ["HeldConnections"]

T = TypeVar("T")


class HeldConnections:
    """Connections held from ``pool`` for single commands, at most ``limit`` open in all."""

    __slots__ = ("_held", "_idle", "_limit", "_pool", "_pooled")

    def __init__(self, pool: Any, limit: int) -> None:
        self._pool = pool
        self._limit = limit
        self._idle: list[Any] = []
        self._held = 0  # connections taken from the pool and not handed back
        self._pooled = 0  # calls through the pool under way

    @property
    def held(self) -> int:
        """Connections held now (busy or idle)."""
        return self._held

    async def run(self, *command: Any) -> Any:
        """One command on a held connection; its reply as redis-py reads it. The command's
        arguments are text, bytes or numbers (text as UTF-8, as redis-py sends it)."""
        idle = self._idle
        conn = idle.pop() if idle else await self._take()
        try:
            packed = _pack(command) if _pack is not None else conn.pack_command(*command)
            await conn.send_packed_command(packed, False)
            return await conn.read_response()
        finally:
            idle.append(conn)

    async def pooled(self, method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``method(*args, **kwargs)``, a client call that takes a connection from the pool,
        once the pool has one to give."""
        if self._idle and self._held + self._pooled >= self._limit:
            self._held -= 1
            await self._pool.release(self._idle.pop())
        self._pooled += 1
        try:
            return await method(*args, **kwargs)
        finally:
            self._pooled -= 1

    async def _take(self) -> Any:
        conn = await self._pool.get_connection()
        self._held += 1
        return conn
