"""An ``aiomcache`` client that never reuses a connection left out of step.

aiomcache marks a connection broken only when a command raises an ``Exception``. Two cases
escape that: a command cancelled mid-reply (a timeout), whose connection would go back to
the pool with the rest of the reply still unread, and a server that closes the connection
mid-reply, where the reply loop reads empty lines forever without yielding. Both are fatal
for a cache that must survive restarts, so both are handled here: any interruption poisons
the connection (the pool then drops it) and end-of-stream raises ``ConnectionResetError``.
"""

from __future__ import annotations

from typing import Any

import aiomcache
from aiomcache.client import acquire
from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

__all__ = ["HardenedClient"]


def _poison(conn: Connection, exc: BaseException) -> None:
    if conn.reader.exception() is None:
        conn.reader.set_exception(
            exc if isinstance(exc, Exception) else ConnectionAbortedError("interrupted")
        )
    conn.writer.close()


class HardenedClient(aiomcache.Client):
    """``aiomcache.Client`` with safe cancellation and end-of-stream detection."""

    async def _execute_simple_command(self, conn: Connection, raw_command: bytes) -> bytes:
        try:
            conn.writer.write(raw_command)
            await conn.writer.drain()
            response = bytearray()
            while not response.endswith(b"\r\n"):
                line = await conn.reader.readline()
                if not line:
                    raise ConnectionResetError("memcached closed the connection")
                response.extend(line)
            return bytes(response[:-2])
        except BaseException as exc:
            _poison(conn, exc)
            raise

    async def _multi_get(  # type: ignore[override]
        self, conn: Connection, *keys: bytes, with_cas: bool = True
    ) -> Any:
        try:
            return await super()._multi_get(conn, *keys, with_cas=with_cas)
        except BaseException as exc:
            if conn.reader.at_eof():
                lost = ConnectionResetError("memcached closed the connection")
                _poison(conn, lost)
                raise lost from exc
            _poison(conn, exc)
            raise

    @acquire
    async def incr_or_none(self, conn: Connection, key: bytes, by: int) -> int | None:
        """``incr``, returning ``None`` for a missing key instead of raising.

        aiomcache raises on ``NOT_FOUND``, which also discards a healthy connection.
        """
        self._validate_key(key)
        reply = await self._execute_simple_command(conn, b"incr %s %d\r\n" % (key, by))
        if reply == b"NOT_FOUND":
            return None
        if not reply.isdigit():
            raise ClientException("memcached incr failed", reply)
        return int(reply)

    @acquire
    async def delete_if_unchanged(self, conn: Connection, key: bytes, token: int) -> bool | None:
        """Delete ``key`` only if unchanged since the ``gets`` that returned ``token``.

        memcached's meta delete with a CAS token (``md <key> C<token>``, memcached 1.6+):
        ``True`` deleted, ``False`` changed meanwhile (kept), ``None`` no such key.
        """
        self._validate_key(key)
        reply = await self._execute_simple_command(conn, b"md %s C%d\r\n" % (key, token))
        if reply == b"HD":
            return True
        if reply == b"EX":
            return False
        if reply == b"NF":
            return None
        raise ClientException("memcached meta delete failed", reply)
