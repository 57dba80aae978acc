"""The Redis Cluster side of :class:`~bruno_memstore.backends.redis.RedisMemory`.

On a cluster each user's keys hash to the slot of the user's own tag ``{P:u:<user>}`` (the
standalone names), and each global directory key (``P:co:<conv>``, ``P:mo:<id>``,
``P:so:<sid>``, ``P:eo:<id>``) to a slot of its own. A script runs on one user's slot only
(``HOME``, named in its first argument), so it cannot read or write a global directory key:
it keeps HOME's own copies of them beside HOME's data (``T:co:<conv>``, ...), written and
deleted in the same script as the data, and the client keeps the global keys by this
protocol:

1. **Lookup, then check.** An operation by id reads the global key (its value is the owner),
   then runs the standalone script on the owner's slot, where the owner's copy says whether
   the owner really holds the record: a global key whose owner holds nothing is nobody's.
2. **Claim first.** A writer claims the global keys of what it creates (``SET … NX GET``)
   before its data step, and reads them again after it: if one is no longer exactly its own
   (another owner, gone, or marked), it undoes its data step (``UNDO``) and starts over.
   The second read after the data step is what makes the write safe (a taker must mark,
   then check the owner's slot, after it), so a store sends its data step with its claims,
   speculatively: one that writes only into a conversation the user already holds (checked
   in the script), taken back (the messages it added, never the conversation) if a claim or
   the second read is not the user's. A conversation this client saw the user hold is not
   claimed first: the second read covers it (the hint is checked by the step).
3. **Mark, check, replace.** A key naming an owner that holds nothing (a *dangling* claim,
   left by a writer that is slow or died) is taken over only by marking it (``owner NUL !
   token``, compare-and-set), checking the owner's slot, then replacing the mark by the new
   owner (compare-and-set). A writer whose second read finds a mark undoes its step, so a
   slow writer and a taker never both acknowledge. A mark found on a key whose owner does
   hold the record is removed (a taker that died after marking).
4. **Deletions.** Scripts delete their copies with the data and queue the global keys in
   HOME's set ``T:gone``; the client then deletes each global key that still names HOME,
   by the same mark, check, delete (a record stored again meanwhile keeps its key).
5. **WAIT** follows every write, on every master written, on a connection whose last write
   there came after it (a master's replication stream is ordered, so ``WAIT`` after a later
   write on a connection covers every earlier write on that master). A single script's
   write is followed by ``WAIT`` on its own connection; a claiming writer's claims and data
   step by the second read, which rewrites each claim it finds its own (compare-and-set to
   the same value) and the writer's marker key ``T:here`` on the data's master, then
   ``WAIT`` s on each of those masters: one wait for the whole write.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from redis import exceptions as rexc
from redis.client import NEVER_DECODE

from ...errors import OwnershipError
from ...models import MessageRecord
from ...primitives import AppendResult, memory_taken, session_taken
from .scripts import source

if TYPE_CHECKING:
    from .backend import RedisMemory

__all__ = ["CLUSTER_SOURCES", "ClusterDirectory", "ContendedError", "Wire"]

log = logging.getLogger("bruno_memstore.redis")

MARK = "\x00!"
"""Between an owner and a taker's token in a marked directory key."""
_ATTEMPTS = 50  # rounds of claim, data step, second read before giving up (transiently)
_DRAIN_BATCH = 256
_NAMES = {"co": "conversation", "mo": "message", "so": "session", "eo": "memory entry"}
_HELD_HINTS = 4096  # (user, conversation) pairs remembered as held (hints, see append)

HOLDS = r"""
-- ARGV: P\0HOME kind id*  ->  per id 1 if HOME holds the record (after purging HOME's
-- conversations past their TTL), else 0. kind: co, mo, so, eo.
local kind, out = ARGV[2], {}
if kind == 'so' then purge_due(HOME) end
for k = 3, #ARGV do
  local id, yes = ARGV[k], false
  if kind == 'co' then yes = conversation_owner(id) == HOME
  elseif kind == 'mo' then yes = message_where(id) and true or false
  elseif kind == 'eo' then yes = memory_owner(id) == HOME
  else yes = redis.call('HEXISTS', ukey(HOME) .. 's', id) == 1 end
  out[#out + 1] = yes and 1 or 0
end
return out
"""

UNDO = r"""
-- ARGV: P\0HOME what ...  ->  1. Undoes a data step whose directory claim was lost:
--   m conv id*: the messages (those still in conv); then the conversation if left empty
--   M conv id*: the messages only (a speculative step, into a conversation already held)
--   s sid conv: the session; then the conversation if left empty
--   e id: the memory entry
local what, u = ARGV[2], ukey(HOME)
local conv = nil
if what == 'm' or what == 'M' then
  conv = ARGV[3]
  local vectors = false
  for k = 4, #ARGV do
    local where = redis.call('GET', ptr('mo', ARGV[k]))
    if where then
      local f = split(where)
      if f[2] == conv and drop_message(u, conv, f[3]) then vectors = true end
    end
  end
  if vectors then messages_changed(u) end
  refresh_recent(u, conv)
  if what == 'M' then conv = nil end
elseif what == 's' then
  drop_session(HOME, ARGV[3])
  conv = ARGV[4]
else
  drop_memory(HOME, ARGV[3])
end
if conv and redis.call('EXISTS', ckey(u, conv, 'o'), ckey(u, conv, 's')) == 0 then
  drop_conversation(HOME, conv, nil)
end
return 1
"""

# One directory key: the second read; rewritten when it is ARGV[1] (a write, so that WAIT
# after it covers the claim). -> 1, or 0 when it differed.
TOUCH = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# One directory key: compare-and-set (ARGV[2] '' deletes). -> 1, or 0 when it differed.
CAS = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
"""

CLUSTER_SOURCES: dict[str, str] = {
    "holds": source(HOLDS),
    "undo": source(UNDO),
    "cas": CAS,
    "touch": TOUCH,
}
"""The cluster's own scripts (loaded beside ``scripts.SOURCES``)."""

# Scripts that find their owner by id: on a cluster the caller names the owner (``home``).
BY_ID = frozenset(
    {
        "append", "get_messages", "read_conversation", "delete_messages",
        "delete_message_ids", "conversation_owner", "get_memory", "delete_own_memory",
        "get_session", "put_vectors", "holds", "undo",
    }
)  # fmt: skip


class ContendedError(rexc.RedisError):
    """A directory key kept changing under a writer: transient, the call is retried."""


def owner_of(value: str) -> str:
    """The owner a directory key's value names (marked or not)."""
    return value.split("\x00", 1)[0]


Item = tuple[str, str]  # (kind, id) of a directory key


class Wire(NamedTuple):
    """The store's connection as the directory uses it (read again at every call: it
    changes when the store reconnects)."""

    client: Any  # the RedisCluster client
    shas: dict[str, str]  # script name -> digest
    scripts: dict[str, Any]  # script name -> redis-py script (its text, to load again)
    wait: tuple[int, int]  # replicas that must confirm a write, WAIT's timeout in ms
    command: Callable[..., Awaitable[Any]]  # runs one client call under the store's limits


class ClusterDirectory:
    """Runs a :class:`RedisMemory`'s scripts on a cluster and keeps its global directory."""

    def __init__(self, memory: RedisMemory, wire: Callable[[], Wire]) -> None:
        self.memory = memory
        self.wire = wire
        self.keys = memory.keys
        # (user, conversation) pairs this client last saw the user hold: a hint only (a
        # store then leaves the conversation's claim to the second read), checked by the
        # data step against the user's copy T:co.
        self._held: dict[tuple[str, str], None] = {}

    # ------------------------------------------------------------ running scripts

    async def eval(
        self,
        name: str,
        args: Sequence[Any],
        home: str | None = None,
        *,
        raw: bool = False,
        wait: bool = True,
    ) -> Any:
        """Run a script on ``home``'s slot (by default the user in ``args[0]``); a writing
        one waits for replicas (unless ``wait`` is off: the caller's :meth:`confirm` does),
        then the global keys its deletions queued are deleted."""
        if home is None:
            assert name not in BY_ID, name
            home = str(args[0])
        memory, w = self.memory, self.wire()
        call = self._call(name, args, home)
        if name not in memory.writes:
            kwargs = {NEVER_DECODE: True} if raw else {}
            try:
                return await w.command(w.client.execute_command, "EVALSHA", *call, **kwargs)
            except rexc.NoScriptError:  # a promoted replica has no scripts loaded yet
                await w.command(w.client.script_load, w.scripts[name].script)
                return await w.command(w.client.execute_command, "EVALSHA", *call, **kwargs)
        gone_key = self.keys.user(home, "gone")
        result, gone = await self.pipe(
            [("evalsha", *call), ("scard", gone_key)], [call[2]] if wait else (), reload=name
        )
        await self._drain_after(home, gone)
        return result

    def _call(self, name: str, args: Sequence[Any], home: str) -> tuple[Any, ...]:
        """The ``EVALSHA`` arguments running ``name`` on ``home``'s slot."""
        keys, head = self.keys.script_head(home)
        return (self.wire().shas[name], len(keys), *keys, head, *args)

    async def _drain_after(self, home: str, gone: Any) -> None:
        """After a writing script: delete the global keys it queued in ``T:gone``, if any."""
        if int(gone):
            try:
                await self.drain(home)
            except Exception:  # the keys stay queued: the next write or sweep deletes them
                log.warning(
                    "%s: deleting directory keys failed", self.memory.describe(), exc_info=True
                )

    async def pipe(
        self,
        ops: Sequence[Any],
        written: Iterable[str] = (),
        *,
        reload: str | None = None,
        check: bool = True,
    ) -> list[Any]:
        """Run ``ops`` (each a pipeline method's name and arguments) and, if ``written`` names
        keys they wrote, ``WAIT`` on each of their masters after them, on the connection
        that wrote there: :class:`NotReplicatedError` when a master's replicas fall short
        (with ``check`` off, the replies are followed by the replica count each ``WAIT``
        reported instead)."""
        memory = self.memory
        w = self.wire()
        client = w.client
        replicas, ms = w.wait
        for attempt in (1, 2):
            nodes: dict[str, Any] = {}
            if replicas:
                for key in written:
                    node = client.get_node_from_key(key)
                    nodes[node.name] = node
            pipe = client.pipeline(transaction=False)
            for method, *args in ops:
                if method == "setnx":  # SET NX GET: the old value, set only if there was none
                    pipe.set(*args, nx=True, get=True)
                else:
                    getattr(pipe, method)(*args)
            for node in nodes.values():
                pipe.execute_command("WAIT", replicas, ms, target_nodes=node)
            try:
                reply = await w.command(pipe.execute)
                break
            except rexc.NoScriptError:  # a promoted replica has no scripts loaded yet
                if attempt == 2:
                    raise
                for name in (reload, "cas", "touch"):
                    if name:
                        await w.command(client.script_load, w.scripts[name].script)
        acked = [int(n) for n in reply[len(ops) :]]
        if not check:
            return [*reply[: len(ops)], *acked]
        if any(n < replicas for n in acked):
            raise memory.not_replicated(min(acked), replicas, ms)
        return reply[: len(ops)]

    # ------------------------------------------------------------ directory keys

    def _key(self, item: Item) -> str:
        return self.keys.pointer(*item)

    async def lookup(self, items: Sequence[Item]) -> list[str | None]:
        """The owner each global key names (None: no key)."""
        keys = [self._key(item) for item in items]
        values = await self.pipe([("get", k) for k in keys])
        return [None if v is None else owner_of(v) for v in values]

    async def holds(self, owner: str, kind: str, ids: Sequence[str]) -> list[bool]:
        """Whether ``owner``'s slot holds each record (checked there, after its purges)."""
        reply = await self.eval("holds", [kind, *ids], home=owner)
        return [bool(int(n)) for n in reply]

    async def cas(self, item: Item, old: str, new: str) -> bool:
        key = self._key(item)
        sha = self.wire().shas["cas"]
        (done,) = await self.pipe([("evalsha", sha, 1, key, old, new)], [key])
        return bool(int(done))

    async def claim(self, items: Sequence[Item], owner: str) -> tuple[dict[Item, str], set[Item]]:
        """Claim each global key for ``owner`` (``SET … NX GET``; a dangling one by mark,
        check, replace). Returns who holds each (``owner``: the writer may write its data)
        and those that were nobody's (claimed anew)."""
        keys = [self._key(item) for item in items]
        # No WAIT yet: the second read (confirm) waits for the claims with the data.
        found = await self.pipe([("setnx", k, owner) for k in keys])
        return await self._holders(items, found, owner)

    async def _holders(
        self, items: Sequence[Item], found: Sequence[str | None], owner: str
    ) -> tuple[dict[Item, str], set[Item]]:
        """:meth:`claim`'s answer from the values its ``SET … NX GET`` found."""
        holders: dict[Item, str] = {}
        new: set[Item] = set()
        for item, value in zip(items, found, strict=True):
            if value is None:
                holders[item] = owner
                new.add(item)
            elif value == owner:
                holders[item] = owner
            else:
                holder, taken = await self._settle(item, value, owner)
                holders[item] = holder
                if taken:
                    new.add(item)
        return holders, new

    async def _settle(self, item: Item, value: str | None, owner: str) -> tuple[str, bool]:
        """Who holds a global key found naming another owner (or marked): its owner if that
        owner holds the record, else ``owner`` after taking it over; and whether taken."""
        kind, rid = item
        key = self._key(item)
        for _ in range(_ATTEMPTS):
            if value is None:
                (value,) = await self.pipe([("setnx", key, owner)], [key])
                if value is None:
                    return owner, True
            if value == owner:
                return owner, False
            holder = owner_of(value)
            if (await self.holds(holder, kind, [rid]))[0]:
                if value != holder:  # marked by a taker that will find the data (or died)
                    await self.cas(item, value, holder)
                return holder, False
            mark = f"{holder}{MARK}{uuid.uuid4().hex}"
            if await self.cas(item, value, mark):
                if (await self.holds(holder, kind, [rid]))[0]:
                    await self.cas(item, mark, holder)
                    return holder, False
                if await self.cas(item, mark, owner):
                    return owner, True
            (value,) = await self.pipe([("get", key)])
        raise ContendedError(f"directory key {key!r} kept changing")

    async def confirm(self, items: Sequence[Item], owner: str, home: str) -> bool:
        """The second read: whether every key still names exactly ``owner`` (no mark). Each
        one that does is rewritten, and so is ``home``'s marker key, then ``WAIT`` runs on
        their masters: the claims and ``home``'s data step are then replicated (or
        :class:`NotReplicatedError`, when every key was still the writer's)."""
        keys = [self._key(item) for item in items]
        here = self.keys.user(home, "here")
        sha = self.wire().shas["touch"]
        ops: list[tuple[Any, ...]] = [("evalsha", sha, 1, k, owner) for k in keys]
        reply = await self.pipe([*ops, ("set", here, home)], [*keys, here], check=False)
        if not all(int(n) for n in reply[: len(keys)]):
            return False
        acked = reply[len(keys) + 1 :]
        replicas, ms = self.wire().wait
        if any(n < replicas for n in acked):
            raise self.memory.not_replicated(min(acked), replicas, ms)
        return True

    async def release(self, items: Iterable[Item], owner: str) -> None:
        """Give up claims made by a call that then wrote nothing under them."""
        items = list(items)
        if not items:
            return
        keys = [self._key(item) for item in items]
        sha = self.wire().shas["cas"]
        await self.pipe([("evalsha", sha, 1, k, owner, "") for k in keys], keys)

    async def drain(self, home: str) -> None:
        """Delete the global keys of records ``home``'s scripts deleted (``T:gone``): each
        one still naming ``home`` is marked, checked against ``home``'s slot, then deleted
        (or unmarked, if the record was stored again meanwhile)."""
        gone_key = self.keys.user(home, "gone")
        w = self.wire()
        sha = w.shas["cas"]
        while True:
            entries = await w.command(w.client.srandmember, gone_key, _DRAIN_BATCH)
            if not entries:
                return
            items = [(e[:2], e[3:]) for e in entries]
            keys = [self._key(item) for item in items]
            values = await self.pipe([("get", k) for k in keys])
            mine = [i for i, v in enumerate(values) if v == home]
            marks = {i: f"{home}{MARK}{uuid.uuid4().hex}" for i in mine}
            done = await self.pipe([("evalsha", sha, 1, keys[i], home, marks[i]) for i in mine])
            marked = [i for i, ok in zip(mine, done, strict=True) if int(ok)]
            by_kind: dict[str, list[int]] = {}
            for i in marked:
                by_kind.setdefault(items[i][0], []).append(i)
            final: list[Any] = []
            for kind, idx in by_kind.items():
                held = await self.holds(home, kind, [items[i][1] for i in idx])
                for i, h in zip(idx, held, strict=True):
                    final.append(("evalsha", sha, 1, keys[i], marks[i], home if h else ""))
            if final:
                await self.pipe(final, [keys[i] for i in marked])
            await w.command(w.client.srem, gone_key, *entries)
            if len(entries) < _DRAIN_BATCH:
                return

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * attempt)))

    # ------------------------------------------------------------ operations by id

    async def append(
        self,
        conversation_id: str,
        user_id: str,
        records: Sequence[MessageRecord],
        enforce_owner: bool,
        build_args: Any,
    ) -> tuple[AppendResult, int]:
        """Store messages: claim the conversation and the message ids, append on the
        owner's slot, read the claims again (undo and start over if one was lost).
        Returns the result and the owner's count of documents waiting for indexing.

        The first attempt sends the data step with the claims, speculatively (see
        :meth:`_claim_and_step`): into a conversation the user already holds, with every
        claim the user's or new, a store is two round trips (claims and step, second read)."""
        conv_item: Item = ("co", conversation_id)
        ids = list(dict.fromkeys(r.id for r in records))
        items = [conv_item] + [("mo", i) for i in ids]
        speculate = bool(records)
        for attempt in range(_ATTEMPTS):
            if attempt:
                await self._pause(attempt)
            if speculate:
                speculate = False
                hint = (user_id, conversation_id)
                sent = items[1:] if hint in self._held else items
                found, step = await self._claim_and_step(
                    sent, user_id, build_args(user_id, records, True)
                )
                if step[0] == "ok":  # the user held the conversation: the step wrote
                    done = await self._speculated(items, found, step, user_id)
                    if done is not None:
                        return done
                    continue
                # Nothing written: the user does not hold the conversation (yet).
                self._held.pop(hint, None)
                if len(sent) < len(items):
                    found = [*(await self.pipe([("setnx", self._key(conv_item), user_id)])), *found]
                holders, new = await self._holders(items, found, user_id)
            else:
                holders, new = await self.claim(items, user_id)
            owner = holders[conv_item]
            if owner != user_id:
                await self.release([i for i in new if i[0] == "mo"], user_id)
                if enforce_owner:
                    raise OwnershipError(
                        f"conversation {conversation_id!r} belongs to another user",
                        backend=self.memory.backend_name,
                        operation="store_message",
                    )
                mine, new = await self.claim(items[1:], owner)
                holders.update(mine)
            elsewhere = {i for i in ids if holders[("mo", i)] != owner}
            if records and len(elsewhere) == len(ids):
                # Nothing goes into the conversation: a new one is not claimed.
                if conv_item in new:
                    await self.release([conv_item], owner)
                return AppendResult(owner, frozenset(ids)), 0
            todo = [r for r in records if r.id not in elsewhere]
            reply = await self.eval("append", build_args(owner, todo), home=owner, wait=False)
            stored = set(reply[3:])
            claimed = [conv_item] + [("mo", i) for i in ids if i not in elsewhere]
            if await self.confirm(claimed, owner, owner):
                if todo and conv_item in new and all(r.id in stored for r in todo):
                    # Every message was stored already: the script claimed no conversation.
                    await self.release([conv_item], owner)
                elif owner == user_id:
                    self._hold(user_id, conversation_id)
                return AppendResult(owner, frozenset(stored | elsewhere)), int(reply[2])
            added = [r.id for r in todo if r.id not in stored]
            await self.eval("undo", ["m", conversation_id, *added], home=owner)
        raise ContendedError(f"conversation {conversation_id!r} kept changing")

    async def _claim_and_step(
        self, items: Sequence[Item], owner: str, args: Sequence[Any]
    ) -> tuple[list[str | None], list[Any]]:
        """The claims' ``SET … NX GET`` and a speculative data step (``append`` that writes
        only into a conversation ``owner`` already holds, else answers ``['new']``), in one
        pipeline: the claims' nodes and ``owner``'s answer concurrently. Returns what each
        claim found and the step's reply."""
        keys = [self._key(item) for item in items]
        ops: list[tuple[Any, ...]] = [("setnx", k, owner) for k in keys]
        ops += [
            ("evalsha", *self._call("append", args, owner)),
            ("scard", self.keys.user(owner, "gone")),
        ]
        reply = await self.pipe(ops, reload="append")
        await self._drain_after(owner, reply[-1])
        return reply[: len(keys)], reply[len(keys)]

    async def _speculated(
        self, items: Sequence[Item], found: Sequence[str | None], step: list[Any], owner: str
    ) -> tuple[AppendResult, int] | None:
        """Finish a speculative data step that wrote (``owner`` held the conversation): the
        store is acknowledged if every claim was ``owner``'s or nobody's and the second read
        finds them all ``owner``'s. Otherwise the messages the step added are taken back
        (never the conversation, which it did not create) and None is returned: the caller
        starts over, claims first."""
        stored = set(step[3:])
        if all(v is None or v == owner for v in found) and await self.confirm(items, owner, owner):
            self._hold(owner, items[0][1])
            return AppendResult(owner, frozenset(stored)), int(step[2])
        added = [rid for _kind, rid in items[1:] if rid not in stored]
        if added:
            await self.eval("undo", ["M", items[0][1], *added], home=owner)
        return None

    def _hold(self, user: str, conversation_id: str) -> None:
        if len(self._held) >= _HELD_HINTS:
            self._held.clear()
        self._held[(user, conversation_id)] = None

    async def put_memory(self, user_id: str, memory_id: str, args: Sequence[Any]) -> None:
        item: Item = ("eo", memory_id)
        await self._claimed_step([item], user_id, "put_memory", args, ["e", memory_id])

    async def put_session(
        self, user_id: str, session_id: str, conversation_id: str, args: Sequence[Any]
    ) -> None:
        items: list[Item] = [("so", session_id), ("co", conversation_id)]
        undo = ["s", session_id, conversation_id]
        await self._claimed_step(items, user_id, "put_session", args, undo)

    async def _claimed_step(
        self, items: Sequence[Item], user_id: str, script: str, args: Sequence[Any], undo: list[str]
    ) -> None:
        """Claim ``items`` for ``user_id``, run ``script`` on the user's slot, then read the
        claims again: undo the step (``undo``'s arguments) and start over when one was lost.
        A key another owner holds refuses the write, the keys claimed for it given up."""
        for attempt in range(_ATTEMPTS):
            if attempt:
                await self._pause(attempt)
            holders, new = await self.claim(items, user_id)
            lost = next((item for item in items if holders[item] != user_id), None)
            if lost is not None:
                await self.release(new, user_id)
                raise self._taken(lost)
            await self.eval(script, args, wait=False)
            if await self.confirm(items, user_id, user_id):
                return
            await self.eval("undo", undo, home=user_id)
        kind, rid = items[0]
        raise ContendedError(f"{_NAMES[kind]} {rid!r} kept changing")

    def _taken(self, item: Item) -> Exception:
        """The error for a write refused because another owner holds ``item``."""
        kind, rid = item
        if kind == "eo":
            return memory_taken(rid)
        if kind == "so":
            return session_taken(rid)
        return OwnershipError(
            f"conversation {rid!r} belongs to another user",
            backend=self.memory.backend_name,
            operation="session",
        )

    async def by_owner(self, kind: str, ids: Sequence[str]) -> dict[str, list[str]]:
        """The ids grouped by the owner their global keys name (ids without one left out)."""
        owners = await self.lookup([(kind, i) for i in ids])
        groups: dict[str, list[str]] = {}
        for rid, owner in zip(ids, owners, strict=True):
            if owner is not None:
                groups.setdefault(owner, []).append(rid)
        return groups

    async def owner(self, kind: str, rid: str) -> str | None:
        return (await self.lookup([(kind, rid)]))[0]

    async def get_messages(self, ids: Sequence[str]) -> list[Any]:
        """The ``get_messages`` reply for ``ids``, in their order, from each owner's slot."""
        groups = await self.by_owner("mo", list(dict.fromkeys(ids)))
        replies = await asyncio.gather(
            *(self.eval("get_messages", group, home=owner) for owner, group in groups.items())
        )
        found: dict[str, list[Any]] = {}
        for reply in replies:
            for i in range(0, len(reply), 4):
                found[reply[i + 2][28:]] = reply[i : i + 4]
        out: list[Any] = []
        for rid in ids:
            out += found.get(rid, ())
        return out

    async def put_vectors(self, code: str, flat: Sequence[Any]) -> None:
        vectors = dict(zip(flat[0::2], flat[1::2], strict=True))
        groups = await self.by_owner("mo" if code == "m" else "eo", list(vectors))
        for owner, group in groups.items():
            args: list[Any] = [code]
            for rid in group:
                args += (rid, vectors[rid])
            await self.eval("put_vectors", args, home=owner)
