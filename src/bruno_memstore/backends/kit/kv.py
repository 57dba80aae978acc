"""Building blocks over a key-value engine with ``add``, ``cas``, ``get`` and ``delete``.

* Keys: :func:`hash_id` turns any id (spaces, newlines, Unicode, 255 characters) into a
  short key component.
* Values: JSON, tagged with a format byte. A value above the engine's item limit is split
  into parts written first; the head, written last, lists them with a checksum, so a reader
  sees the whole value or nothing. Conditional writes and deletes run a gets/cas loop.
* Logs: an append-only list split into chunks of a fixed number of slots. A counter
  (``incr``) hands out slots; an entry is appended to its chunk with the engine's atomic
  ``append`` (``add`` for a new chunk), so concurrent writers never lose each other's
  entries and never retry. Removing entries rewrites a chunk with a gets/cas loop.

An engine subclasses :class:`KeyValueStore` with its client calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

__all__ = [
    "CAS_ATTEMPTS",
    "ChunkedLog",
    "KeyValueConflict",
    "KeyValueStore",
    "SortedLog",
    "dumps",
    "hash_id",
    "loads",
]

CAS_ATTEMPTS = 64  # tries of a gets/cas loop before it gives up
_SINGLE, _PARTS = b"J", b"P"


class KeyValueConflict(RuntimeError):
    """A value kept changing under a conditional write (a gets/cas loop gave up)."""


def hash_id(value: str) -> str:
    """A short key component naming ``value`` exactly (22 characters of base64url)."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def dumps(value: Any) -> bytes:
    """JSON bytes that bring back every string exactly (lone surrogates included)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


def loads(data: bytes) -> Any:
    """The value :func:`dumps` encoded."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # lone surrogates, which UTF-8 cannot hold, and the like
        return json.loads(data.decode("utf-8", "surrogatepass"))


def _lines(data: Iterable[str]) -> bytes:
    return "".join(f"{line}\n" for line in data).encode("utf-8", "surrogatepass")


class KeyValueStore(ABC):
    """JSON values of any size over an engine's byte commands, which a subclass provides."""

    item_limit = 1_000_000  # bytes of one stored value part

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored bytes of every present key (missing keys are left out)."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The stored bytes, or ``None``."""

    @abstractmethod
    async def gets(self, key: str) -> tuple[bytes | None, int | None]:
        """The stored bytes and their CAS token."""

    @abstractmethod
    async def add(self, key: str, value: bytes) -> bool:
        """Create ``key``; ``False`` if it already exists (atomic)."""

    @abstractmethod
    async def set(self, key: str, value: bytes) -> None:
        """Create or replace ``key``."""

    @abstractmethod
    async def cas(self, key: str, value: bytes, token: int) -> bool:
        """Replace ``key`` if unchanged since the ``gets`` that returned ``token``."""

    @abstractmethod
    async def append(self, key: str, value: bytes) -> bool:
        """Append to an existing ``key``; ``False`` if it does not exist."""

    @abstractmethod
    async def delete(self, *keys: str) -> None:
        """Delete keys (missing ones are fine)."""

    @abstractmethod
    async def delete_if_unchanged(self, key: str, token: int) -> bool | None:
        """Delete ``key`` if unchanged since ``token``: deleted, changed (kept), or no key."""

    @abstractmethod
    async def touch(self, *keys: str) -> None:
        """Restart the expiry clock of keys (no-op without expiry)."""

    @abstractmethod
    async def incr(self, key: str, by: int) -> int:
        """Add ``by`` to the counter (created at 0 when missing) and return the new value."""

    # ---------------------------------------------------------------- JSON values of any size

    async def put_value(self, key: str, value: Any, *, create: bool) -> bool:
        """Store ``value`` (``create``: only if ``key`` is absent; return whether stored).

        Parts are written before the head that names them, so readers never see half.
        """
        head, parts = await self._write_parts(key, value)
        if not create:
            old = await self.get(key)
            await self.set(key, head)
            if old is not None:
                await self._delete_parts(key, old)
            return True
        if await self.add(key, head):
            return True
        await self.delete(*parts)
        return False

    async def put_value_if(
        self, key: str, value: Any, allow: Callable[[Any], bool], *, create: bool = True
    ) -> bool:
        """Store ``value`` if ``key`` is absent (``add``; unless not ``create``) or its value
        passes ``allow`` (``cas``, against the value just checked); ``False``, storing
        nothing, if it fails.

        Each decision is atomic on the server: a value written after the check makes the
        ``add`` or ``cas`` fail, and the check is made again.
        """
        head, parts = await self._write_parts(key, value)
        for _ in range(CAS_ATTEMPTS):
            old, token = await self.gets(key)
            if old is None:
                if not create:
                    await self.delete(*parts)
                    return False
                if await self.add(key, head):
                    return True
                continue
            current = (await self._decode({key: old})).get(key)
            if current is not None and not allow(current):
                await self.delete(*parts)
                return False
            if token is not None and await self.cas(key, head, token):
                await self._delete_parts(key, old)
                return True
        await self.delete(*parts)
        raise KeyValueConflict(f"a value kept changing under a conditional write: {key}")

    async def delete_value_if(self, key: str, allow: Callable[[Any], bool]) -> Any | None:
        """Delete the value if it passes ``allow``; return the value found (``None``: none).

        The deletion carries the CAS token of the value checked, so a value written
        meanwhile is never deleted unchecked: the check is made again.
        """
        for _ in range(CAS_ATTEMPTS):
            old, token = await self.gets(key)
            if old is None or token is None:
                return None
            current = (await self._decode({key: old})).get(key)
            if current is None:
                return None  # a part is gone: so is the value
            if not allow(current):
                return current
            deleted = await self.delete_if_unchanged(key, token)
            if deleted is None:
                return None
            if deleted:
                await self._delete_parts(key, old)
                return current
        raise KeyValueConflict(f"a value kept changing under a conditional delete: {key}")

    async def _write_parts(self, key: str, value: Any) -> tuple[bytes, list[str]]:
        """The head to store under ``key`` for ``value``, after writing the parts it names
        (a large value); returns the head and the parts' keys."""
        data, limit = dumps(value), self.item_limit
        if len(data) + 1 <= limit:
            return _SINGLE + data, []
        nonce = secrets.token_hex(4)
        parts = [
            (f"{key}:{nonce}:{i}", data[start : start + limit])
            for i, start in enumerate(range(0, len(data), limit))
        ]
        manifest = {
            "nonce": nonce,
            "n": len(parts),
            "len": len(data),
            "sum": hashlib.blake2b(data, digest_size=16).hexdigest(),
        }
        for part_key, chunk in parts:
            await self.set(part_key, chunk)
        return _PARTS + dumps(manifest), [k for k, _ in parts]

    async def get_values(self, keys: Sequence[str]) -> dict[str, Any]:
        """Decoded values of the present keys; a value with a missing part counts as absent."""
        return await self._decode(await self.get_many(keys))

    async def get_value(self, key: str) -> Any | None:
        """The decoded value, or ``None``."""
        return (await self.get_values([key])).get(key)

    async def _decode(self, heads: dict[str, bytes]) -> dict[str, Any]:
        """The values the stored heads name (their parts read as needed)."""
        out: dict[str, Any] = {}
        wanted: dict[str, tuple[list[str], dict[str, Any]]] = {}
        for key, head in heads.items():
            if head[:1] == _SINGLE:
                out[key] = loads(head[1:])
            elif head[:1] == _PARTS:
                manifest = loads(head[1:])
                wanted[key] = (self._part_keys(key, manifest), manifest)
        if wanted:
            found = await self.get_many([n for names, _ in wanted.values() for n in names])
            for key, (names, manifest) in wanted.items():
                if not all(n in found for n in names):
                    continue  # a part was evicted: the value is gone
                data = b"".join(found[n] for n in names)
                digest = hashlib.blake2b(data, digest_size=16).hexdigest()
                if len(data) == manifest["len"] and digest == manifest["sum"]:
                    out[key] = loads(data)
        return out

    async def delete_values(self, keys: Iterable[str]) -> None:
        """Delete values and their parts."""
        keys = list(dict.fromkeys(keys))
        heads = await self.get_many(keys)
        await self.delete(*keys)
        for key, head in heads.items():
            await self._delete_parts(key, head)

    @staticmethod
    def _part_keys(key: str, manifest: dict[str, Any]) -> list[str]:
        return [f"{key}:{manifest['nonce']}:{i}" for i in range(manifest["n"])]

    async def _delete_parts(self, key: str, head: bytes) -> None:
        if head[:1] == _PARTS:
            await self.delete(*self._part_keys(key, loads(head[1:])))


class ChunkedLog:
    """An append-only list of one-line entries under ``base``, in chunks of ``per_chunk``.

    Each entry gets a slot number from the counter ``base:n`` (increasing, never reused
    while the counter lives) and is stored as ``"<slot> <entry>"`` in chunk
    ``base:<slot // per_chunk>``.
    """

    def __init__(self, store: KeyValueStore, base: str, per_chunk: int) -> None:
        self.store, self.base, self.per_chunk = store, base, per_chunk
        self.counter_key = f"{base}:n"

    def chunk_key(self, chunk: int) -> str:
        """The key of one chunk."""
        return f"{self.base}:{chunk}"

    def format(self, slot: int, entry: str) -> str:
        """The stored line of an entry (without the newline)."""
        return f"{slot} {entry}"

    def parse(self, line: str) -> tuple[int, str]:
        """``(slot, entry)`` of a stored line."""
        slot, _, entry = line.partition(" ")
        return int(slot), entry

    async def append(self, entries: Sequence[str]) -> list[int]:
        """Append entries (no newlines inside); return their slots, in order."""
        last = await self.store.incr(self.counter_key, len(entries))
        slots = list(range(last - len(entries) + 1, last + 1))
        by_chunk: dict[int, list[str]] = {}
        for slot, entry in zip(slots, entries, strict=True):
            by_chunk.setdefault(slot // self.per_chunk, []).append(self.format(slot, entry))
        for chunk, lines in by_chunk.items():
            data, key = _lines(lines), self.chunk_key(chunk)
            for _ in range(CAS_ATTEMPTS):
                if await self.store.append(key, data) or await self.store.add(key, data):
                    break
            else:
                raise KeyValueConflict(f"could not append to a log chunk: {key}")
        await self.store.touch(self.counter_key, *(self.chunk_key(c) for c in by_chunk))
        return slots

    async def chunk_count(self) -> int:
        """How many chunks the log spans (0 when empty or expired)."""
        raw = await self.store.get(self.counter_key)
        return int(raw) // self.per_chunk + 1 if raw is not None else 0

    async def keys(self) -> list[str]:
        """The counter's key and every chunk's."""
        return [self.counter_key, *map(self.chunk_key, range(await self.chunk_count()))]

    async def lines(self) -> list[bytes]:
        """Every stored line, as bytes, in no particular order."""
        count = await self.chunk_count()
        if not count:
            return []
        chunks = await self.store.get_many([self.chunk_key(c) for c in range(count)])
        return [line for data in chunks.values() for line in data.split(b"\n") if line]

    async def read(self) -> list[tuple[int, str]]:
        """Every ``(slot, entry)``, in slot order."""
        out = [self.parse(line.decode("utf-8", "surrogatepass")) for line in await self.lines()]
        out.sort(key=lambda pair: pair[0])
        return out

    async def remove(self, drop: Callable[[int, str], bool]) -> None:
        """Rewrite every chunk without the entries ``drop`` selects (gets/cas loop)."""
        for chunk in range(await self.chunk_count()):
            key = self.chunk_key(chunk)
            for _ in range(CAS_ATTEMPTS):
                data, token = await self.store.gets(key)
                if data is None or token is None:
                    break
                lines = data.decode("utf-8", "surrogatepass").splitlines()
                kept = [line for line in lines if not drop(*self.parse(line))]
                if len(kept) == len(lines) or await self.store.cas(key, _lines(kept), token):
                    break
            else:
                raise KeyValueConflict(f"log chunk kept changing under a rewrite: {key}")

    async def touch(self) -> None:
        """Restart the expiry clock of the whole log."""
        await self.store.touch(*await self.keys())

    async def destroy(self) -> None:
        """Delete the log."""
        await self.store.delete(*await self.keys())


class SortedLog(ChunkedLog):
    """A log of entries ``"<ts_us> <rest>"`` whose stored lines sort by ``(ts_us, slot)``.

    Lines are stored as ``<ts_us + 10**18, 20 digits> <slot, 12 digits> <rest>``: as bytes
    they sort by time, then arrival, so the newest entries are found by comparing lines,
    without parsing every one.
    """

    _OFFSET = 10**18  # makes every datetime's microseconds positive

    def format(self, slot: int, entry: str) -> str:
        ts, _, rest = entry.partition(" ")
        return f"{int(ts) + self._OFFSET:020d} {slot:012d} {rest}"

    def parse(self, line: str) -> tuple[int, str]:
        ts, slot, rest = line.split(" ", 2)
        return int(slot), f"{int(ts) - self._OFFSET} {rest}"

    def decode(self, line: bytes) -> tuple[int, int, str]:
        """``(ts_us, slot, last word)`` of a stored line (the last word: a record id)."""
        ts, slot, rest = line.split(b" ", 2)
        return int(ts) - self._OFFSET, int(slot), rest.rpartition(b" ")[2].decode("ascii")
