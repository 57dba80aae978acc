"""Key names and sortable encodings of :class:`~bruno_memstore.backends.redis.RedisMemory`.

The Lua scripts build the same names (see ``scripts.PRELUDE``); this module is the Python
side, used to pass arguments, by tests and by the documentation. Layout (version
:data:`LAYOUT_VERSION`), with ``P`` the *key prefix* (the configured prefix with ``%`` and
``:`` escaped, see :func:`encode_prefix`) and ``T`` a user's tag ``{P:u:<user>}``:

==========================  ======  ==========================================================
key                         type    holds
==========================  ======  ==========================================================
``T:convs``                 set     the user's conversation ids
``T:recent``                zset    conversation -> microseconds of its newest message
``T:c:<conv>:o``            zset    ``<order key><message id>``, all scores 0 (lexicographic)
``T:c:<conv>:b``            hash    message id -> message body (JSON)
``T:c:<conv>:s``            set     the conversation's session ids
``T:seq``                   string  arrival counter (also numbers search documents)
``T:roles``                 hash    role -> message count
``T:doc``                   hash    document -> ``<what it is>\0<length>[\0<term>]*``
``T:ix``                    hash    ``len``: total terms of all documents (BM25 statistics)
``T:t:<term>``              hash    posting list: document -> ``length * 2**26 + tf``
``T:e``                     hash    memory id -> memory record (JSON)
``T:er``                    zset    memory rank ``<importance desc><created desc><id>``
``T:eexp`` / ``T:cexp``     zset    memory expiry (µs) / conversation deadline (ms)
``T:s`` / ``T:sl``          hash /  session id -> record; ``<started><session id>``
                            zset
``T:vm`` / ``T:ve``         set     ids of the user's message / memory vector documents
``T:vme``                   string  message-vector epoch: changes when one is removed/replaced
``T:vml``                   list    ids of message vectors added since (at most 10,000)
``T:vge``                   string  changes with every change of memory-entry vectors
``T:vgc`` / ``T:here``      string  cluster only: the user's counter for ``T:vme``/``T:vge``
                                    values; the user id while the user has data
``T:co:<conv>`` ...         string  cluster only: the user's copies of its directory keys
``T:gone``                  set     cluster only: ``<kind>:<id>`` of global keys to delete
``P:v:T:m<id>`` /           hash    a message's / memory entry's vector document: ``vec``
``P:v:T:e<id>``                     (float32 bytes) and the TAG/NUMERIC fields RediSearch
                                    filters on (``u``, ``k``, ``c``, ``t``, ``g``, ``tg``,
                                    ``f``, ``i``, ``x``); in the owner's slot
``P:co:<conv>``             string  conversation -> owner (the global directory)
``P:mo:<message id>``       string  message -> ``owner\0conversation\0order key+id``
``P:so:<sid>``/``P:eo:<id>`` string  session / memory entry -> owner
``P:users``                 set     every user with data (export, retention); standalone only
``P:cexp`` / ``P:eexp``     zset    due conversations / memory entries, for retention sweeps;
                                    standalone only
``P:vgen``                  string  the counter ``T:vme`` and ``T:vge`` values come from;
                                    standalone only
``P:meta``                  hash    ``analysis`` fingerprint; ``vspace`` (model, dimension),
                                    ``vepoch`` (changes when every vector is dropped)
==========================  ======  ==========================================================

Ids inside key names escape ``%``, ``{`` and ``}`` (``%25``, ``%7B``, ``%7D``), so a user id
can never end its hash tag early and no two ids share a key. The key prefix holds no ``:``, so
every name reads back to one (prefix, kind, id): the prefix is everything before the first
``:`` (after the ``{`` of a tag), the kind comes next, the id is the rest. Two stores on one
server therefore never share a key, whatever their prefixes (``pt`` and ``pt:co`` included).

On a Redis Cluster (``redis+cluster://``) the names are the same: each user's keys hash to
the slot of the user's tag ``T`` (users spread over the slots), each directory key and
``P:meta`` to a slot of its own by its whole name. There the scripts run on one user's slot
and keep that user's copies of its directory keys, ``T:co:<conv>``, ``T:mo:<id>``,
``T:so:<sid>``, ``T:eo:<id>`` (standalone values; :meth:`RedisKeys.local_pointer`), beside
the set ``T:gone`` of global keys left for the client to delete; the global ones hold the
owner only and are claimed, checked and deleted by the client (see ``cluster``). No write
for one user touches ``P:users``, ``P:cexp``, ``P:eexp`` or ``P:vgen`` there: users are
listed by their ``T:here`` keys (``SCAN``), retention is swept user by user and vector
values come from the server's clock and ``T:vgc``. The earlier cluster layout put every key
under ``{P}`` (one slot per store): :meth:`RedisKeys.one_slot_meta` recognises it.

Layout version 1 used the configured prefix as it was; a prefix without ``:`` or ``%`` has
the same key names in both versions. Under a prefix with either character, version 1's names
are found by :meth:`~bruno_memstore.backends.redis.RedisMemory.migrate_key_layout`.
"""

from __future__ import annotations

import re
import struct

__all__ = [
    "LAYOUT_VERSION",
    "ORDER_KEY_LEN",
    "RedisKeys",
    "decode_id",
    "encode_id",
    "encode_prefix",
    "member_seq",
    "rank_member",
    "ts_from_hex",
    "ts_hex",
]

TS_OFFSET = 1 << 62  # makes every representable datetime's microseconds non-negative
ORDER_KEY_LEN = 28  # 16 hex digits of time + 12 of arrival number
LAYOUT_VERSION = 2
_ESCAPE = re.compile(r"[%{}]")
_PREFIX_ESCAPE = re.compile(r"[%:]")
_U64 = (1 << 64) - 1
_I63 = (1 << 63) - 1


def encode_id(value: str) -> str:
    """``value`` with the characters that matter in key names percent-escaped."""
    if "%" not in value and "{" not in value and "}" not in value:
        return value
    return _ESCAPE.sub(lambda m: f"%{ord(m.group()):02X}", value)


def decode_id(text: str) -> str:
    """Inverse of :func:`encode_id`."""
    if "%" not in text:
        return text
    return text.replace("%7B", "{").replace("%7D", "}").replace("%25", "%")


def encode_prefix(prefix: str) -> str:
    """The key prefix of a configured prefix: ``%`` and ``:`` percent-escaped, so it holds no
    separator and no two prefixes give the same one."""
    if "%" not in prefix and ":" not in prefix:
        return prefix
    return _PREFIX_ESCAPE.sub(lambda m: f"%{ord(m.group()):02X}", prefix)


def ts_hex(us: int) -> str:
    """Fixed-width hex of a microsecond timestamp: string order is time order."""
    return format(us + TS_OFFSET, "016x")


def ts_from_hex(text: str) -> int:
    """Inverse of :func:`ts_hex` (reads the first 16 characters)."""
    return int(text[:16], 16) - TS_OFFSET


def member_seq(member: str) -> int:
    """The arrival number inside an order-zset member."""
    return int(member[16:ORDER_KEY_LEN], 16)


def rank_member(importance: float, created_us: int, memory_id: str) -> str:
    """Member of ``T:er`` whose byte order is: most important, then newest, then id."""
    # The bit pattern of a non-negative double grows with its value.
    (bits,) = struct.unpack(">Q", struct.pack(">d", importance + 0.0))
    newest = _I63 - (created_us + TS_OFFSET)
    return f"{_U64 - bits:016x}{newest:016x}{memory_id}"


class RedisKeys:
    """Key names under one configured prefix; ``prefix`` is its key prefix.

    The names are the same on a Redis Cluster (``cluster`` set), where a user's keys hash to
    the slot of the user's tag and each directory key to a slot of its own; there the
    scripts also keep the owner's copies of directory keys (:meth:`local_pointer`).
    """

    __slots__ = ("cluster", "prefix")

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        self.cluster = cluster
        self.prefix = encode_prefix(prefix)

    def tag(self, user_id: str) -> str:
        """The user's hash tag: every per-user key starts with it, so all share a slot."""
        return f"{{{self.prefix}:u:{encode_id(user_id)}}}"

    def user(self, user_id: str, part: str) -> str:
        """A per-user key, e.g. ``user(u, "convs")``."""
        return f"{self.tag(user_id)}:{part}"

    def conversation(self, user_id: str, conversation_id: str, part: str) -> str:
        """A per-conversation key (``o`` order, ``b`` bodies, ``s`` sessions)."""
        return f"{self.tag(user_id)}:c:{encode_id(conversation_id)}:{part}"

    def posting(self, user_id: str, term: str) -> str:
        """The posting list of one search term."""
        return f"{self.tag(user_id)}:t:{term}"

    def user_of(self, key: str) -> str | None:
        """The user whose per-user key ``key`` is (None if it is no per-user key)."""
        start = f"{{{self.prefix}:u:"
        end = key.find("}", len(start))
        if not key.startswith(start) or end < 0:
            return None
        return decode_id(key[len(start) : end])

    def vector(self, user_id: str, kind: str, record_id: str) -> str:
        """A record's vector document (``kind``: ``m`` message, ``e`` memory entry)."""
        return f"{self.prefix}:v:{self.tag(user_id)}:{kind}{encode_id(record_id)}"

    def pointer(self, kind: str, record_id: str) -> str:
        """A global directory key: ``co`` conversation, ``mo`` message, ``so``, ``eo``."""
        return f"{self.prefix}:{kind}:{encode_id(record_id)}"

    def local_pointer(self, user_id: str, kind: str, record_id: str) -> str:
        """Cluster only: the owner's copy of a directory key, in the owner's slot."""
        return f"{self.tag(user_id)}:{kind}:{encode_id(record_id)}"

    def glob(self, name: str) -> str:
        """A global singleton: ``users``, ``cexp``, ``eexp``, ``meta``."""
        return f"{self.prefix}:{name}"

    def script_head(self, home: str) -> tuple[list[str], str]:
        """The keys and first argument of a script call: on a cluster a key of ``home``'s
        slot (so the call is routed there) and the key prefix with ``home``; standalone the
        key prefix alone."""
        if self.cluster:
            return [self.user(home, "here")], f"{self.prefix}\0{home}"
        return [], self.prefix

    def one_slot_meta(self) -> str:
        """``P:meta`` of the earlier cluster layout, where every key was under ``{P}``."""
        return f"{{{self.prefix}}}:meta"
