"""Lua scripts of :class:`~bruno_memstore.backends.redis.RedisMemory`.

Each primitive that touches more than one key is one script, so Redis runs it atomically.
Every script starts with :data:`PRELUDE`; ``ARGV[1]`` is always the key prefix. Scripts build
key names themselves (see ``keys``): all keys of one user share the user's hash tag;
only the small global directory keys (``P:co:``, ``P:mo:``, ``P:so:``, ``P:eo:``) and the
retention sets live elsewhere. On a Redis Cluster ``ARGV[1]`` also names ``HOME``, the user
whose slot the script runs on, and every key it touches is HOME's: the directory keys it
reads and writes are HOME's own copies (``ptr``), the global ones being claimed, checked and
deleted by the client (``cluster``); no write touches ``P:users``, ``P:cexp``, ``P:eexp`` or
``P:vgen`` there (see ``add_user``, ``next_vgen`` and ``PURGE_USER``).

Numbers in Redis' Lua are doubles: exact integers stop at 2**53. Timestamps therefore travel
as fixed-width hex strings computed in Python and are compared in 12-digit chunks; arrival
numbers and posting values stay far below 2**53.

Vectors are written and removed by the same scripts as their records (see the "vectors"
section of :data:`PRELUDE`), so a record and its vector document never disagree.
"""

from __future__ import annotations

import re

__all__ = ["PRELUDE", "SCRIPTS", "SOURCES", "source"]

PRELUDE = r"""
-- ARGV[1]: the key prefix; on a cluster, the prefix, NUL and HOME, the user whose slot the
-- script runs on (every key it touches is HOME's: see ptr).
local P, HOME = ARGV[1], nil
do
  local cut = string.find(P, '\0', 1, true)
  if cut then P, HOME = string.sub(P, 1, cut - 1), string.sub(P, cut + 1) end
end
local NUL = '\0'
local now_cache = nil

local function now_ms()
  if now_cache == nil then
    local t = redis.call('TIME')
    now_cache = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now_cache
end

local function enc(s)
  if not string.find(s, '[%%{}]') then return s end
  return (string.gsub(s, '[%%{}]', function(c) return string.format('%%%02X', string.byte(c)) end))
end
-- Each user has a hash tag of its own, standalone and on a cluster.
local CLUSTER = HOME ~= nil
local function ukey(user) return '{' .. P .. ':u:' .. enc(user) .. '}:' end
-- A directory key. Standalone, the global one (P:co:<conv>, ...). On a cluster the global
-- ones are in slots of their own, kept by the client (see cluster.py): a script sees only
-- HOME's copies, T:co:<conv>, ... (T being HOME's tag), written and deleted with HOME's data.
local function ptr(kind, id)
  if CLUSTER then return ukey(HOME) .. kind .. ':' .. enc(id) end
  return P .. ':' .. kind .. ':' .. enc(id)
end
-- Delete a directory key (when owner is given, only if it names owner). On a cluster the
-- global key is queued in HOME's T:gone, for the client to delete after this script.
local function unptr(kind, id, owner)
  local key = ptr(kind, id)
  if owner and redis.call('GET', key) ~= owner then return end
  redis.call('DEL', key)
  if CLUSTER then redis.call('SADD', ukey(HOME) .. 'gone', kind .. ':' .. id) end
end
-- Write a directory key (on a cluster HOME's copy: the global one is already claimed).
local function setptr(kind, id, value)
  redis.call('SET', ptr(kind, id), value)
  if CLUSTER then redis.call('SREM', ukey(HOME) .. 'gone', kind .. ':' .. id) end
end
local function ckey(u, conv, part) return u .. 'c:' .. enc(conv) .. ':' .. part end
-- A user with data: standalone, a member of the set P:users; on a cluster, the user's own
-- key T:here (holding the id), found by SCAN, so no per-user write touches a store-wide key.
local function add_user(user)
  if CLUSTER then redis.call('SET', ukey(user) .. 'here', user)
  else redis.call('SADD', P .. ':users', user) end
end

-- NUL-separated fields (no id, role or term contains NUL).
local function split(s)
  local out, pos = {}, 1
  while true do
    local i = string.find(s, NUL, pos, true)
    if not i then out[#out + 1] = string.sub(s, pos); return out end
    out[#out + 1] = string.sub(s, pos, i - 1)
    pos = i + 1
  end
end
-- The first n fields, and the position where the rest starts (nil when there is none).
local function head(s, n)
  local out, pos = {}, 1
  for k = 1, n do
    local i = string.find(s, NUL, pos, true)
    if not i then out[k] = string.sub(s, pos); return out, nil end
    out[k] = string.sub(s, pos, i - 1)
    pos = i + 1
  end
  return out, pos
end

-- Order keys are 28 hex digits (time, then arrival); compare them without locale rules.
local function key3(m)
  return {tonumber(string.sub(m, 1, 12), 16), tonumber(string.sub(m, 13, 24), 16),
          tonumber(string.sub(m, 25, 28), 16)}
end
local function newer(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[3] > b[3]
end
-- Microseconds of an order key as a double: exact below 2**53, else correctly rounded.
local function ts_num(m)
  return (tonumber(string.sub(m, 1, 8), 16) - 1073741824) * 4294967296
    + tonumber(string.sub(m, 9, 16), 16)
end
local function hex_le(a, b) -- 16-digit hex strings: a <= b
  local a1, b1 = tonumber(string.sub(a, 1, 8), 16), tonumber(string.sub(b, 1, 8), 16)
  if a1 ~= b1 then return a1 < b1 end
  return tonumber(string.sub(a, 9, 16), 16) <= tonumber(string.sub(b, 9, 16), 16)
end
local function bytes_gt(a, b) -- byte order, as Redis sorts members (no locale rules)
  for k = 1, math.min(#a, #b) do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then return x > y end
  end
  return #a > #b
end
-- The bodies of order-zset members[first..last] (false where a body has expired).
local function bodies_of(bkey, members, first, last)
  local out = {}
  for s = first, last, 500 do
    local ids = {}
    for k = s, math.min(s + 499, last) do ids[#ids + 1] = string.sub(members[k], 29) end
    if #ids > 0 then
      local got = redis.call('HMGET', bkey, unpack(ids))
      for k = 1, #ids do out[#out + 1] = got[k] end
    end
  end
  return out
end
local function seq_of(member) return tostring(tonumber(string.sub(member, 17, 28), 16)) end

-- ------------------------------------------------------------------ vectors
-- A record's vector is a hash of its own, P:v:T:m<message id> or P:v:T:e<memory id> with T
-- the owner's tag (so it shares the owner's slot; RediSearch indexes the prefix P:v:):
-- vec (float32 bytes), u (SHA-1 of P\0owner), k (m or e), c (SHA-1 of the conversation),
-- and for memory entries the filter fields t, g, tg (SHA-1s of type, category and each
-- tag, comma-joined), f, i (confidence, importance), x (expiry in microseconds, 1e18 for
-- none).
-- For search in the client: T:vm / T:ve list the ids of the user's vector documents; T:vge
-- changes with every change of the memory-entry vectors; T:vme changes when a message vector
-- is removed or replaced, and T:vml lists the message ids whose vectors were added since
-- (a reader then loads just those). Values come from the global counter P:vgen, so a
-- deleted and recreated key never repeats one.
local VML_MAX = 10000 -- a longer log starts a new message epoch instead (readers reload)
local function vkey(u, kind, id) return P .. ':v:' .. u .. kind .. enc(id) end
local function vtag(s) return redis.sha1hex(s) end
-- On a cluster the value is the server's time and the user's own counter T:vgc instead
-- (unique as long as the clock does not go back), so no per-user write touches P:vgen.
local function next_vgen(u)
  if CLUSTER then
    local t = redis.call('TIME')
    return t[1] .. string.format('%06d', tonumber(t[2])) .. '.' .. redis.call('INCR', u .. 'vgc')
  end
  return redis.call('INCR', P .. ':vgen')
end
local function memories_changed(u) redis.call('SET', u .. 'vge', next_vgen(u)) end
local function messages_changed(u)
  redis.call('SET', u .. 'vme', next_vgen(u))
  redis.call('DEL', u .. 'vml')
end
local function numstr(n) return string.format('%.17g', n) end

local function put_message_vector(u, owner, conv, id, vec)
  redis.call('HSET', vkey(u, 'm', id), 'vec', vec, 'u', vtag(P .. NUL .. owner), 'k', 'm',
             'c', vtag(conv))
  redis.call('SADD', u .. 'vm', id)
end

-- m: the entry's filter record (put_memory's meta: t c g f i x v).
local function put_memory_vector(u, owner, id, m, vec)
  local key = vkey(u, 'e', id)
  redis.call('DEL', key)
  local x = 1e18
  if m.x ~= cjson.null then x = ts_num(m.x) end
  local args = {'vec', vec, 'u', vtag(P .. NUL .. owner), 'k', 'e', 't', vtag(m.t),
                'f', numstr(m.f), 'i', numstr(m.i), 'x', numstr(x)}
  if m.c ~= cjson.null then args[#args + 1] = 'g'; args[#args + 1] = vtag(m.c) end
  if m.v ~= cjson.null then args[#args + 1] = 'c'; args[#args + 1] = vtag(m.v) end
  if #m.g > 0 then
    local tags = {}
    for k, tag in ipairs(m.g) do tags[k] = vtag(tag) end
    args[#args + 1] = 'tg'; args[#args + 1] = table.concat(tags, ',')
  end
  redis.call('HSET', key, unpack(args))
  redis.call('SADD', u .. 've', id)
end

-- Remove a record's vector document; true if there was one.
local function drop_vector(u, kind, id)
  redis.call('SREM', u .. 'v' .. kind, id)
  return redis.call('DEL', vkey(u, kind, id)) == 1
end

-- ------------------------------------------------------------------ inverted index
-- T:doc holds, per document, <head>\0<length>[\0term]*: the head says what the document is
-- (message: role\0order member\0conversation; memory: a JSON filter record), the terms say
-- which posting lists to leave when it is deleted. BM25's N is HLEN T:doc.
-- A message stored on its own is not analysed at once: its document is written with length
-- 0 and no terms, and its number goes into the set T:pend; the client writes its posting
-- entries later (index_pending), in batches, and always before a search reads the lists.

local function index_doc(u, doc, meta, len, terms, values)
  if terms == '' then
    redis.call('HSET', u .. 'doc', doc, meta .. NUL .. len)
  else
    redis.call('HSET', u .. 'doc', doc, meta .. NUL .. len .. NUL .. terms)
    local p, q = 1, 1
    while p do
      local i = string.find(terms, NUL, p, true)
      local j = string.find(values, NUL, q, true)
      redis.call('HSET', u .. 't:' .. string.sub(terms, p, (i or 0) - 1), doc,
                 string.sub(values, q, (j or 0) - 1))
      p, q = i and i + 1, j and j + 1
    end
  end
  redis.call('HINCRBY', u .. 'ix', 'len', len)
end

-- Remove a document from every posting list; returns its head fields (nil if absent).
local function unindex_doc(u, doc, nhead)
  local meta = redis.call('HGET', u .. 'doc', doc)
  if not meta then return nil end
  local fields, rest = head(meta, nhead + 1)
  if rest then
    for _, term in ipairs(split(string.sub(meta, rest))) do
      redis.call('HDEL', u .. 't:' .. term, doc)
    end
  end
  redis.call('HDEL', u .. 'doc', doc)
  redis.call('SREM', u .. 'pend', doc)
  -- A waiting document's length is 0 (and -0 would reach HINCRBY as the text '-0').
  local len = tonumber(fields[nhead + 1])
  if len ~= 0 then redis.call('HINCRBY', u .. 'ix', 'len', -len) end
  return fields
end

-- ------------------------------------------------------------------ conversations

local function refresh_recent(u, conv)
  local top = redis.call('ZRANGE', ckey(u, conv, 'o'), -1, -1)[1]
  if top then
    redis.call('ZADD', u .. 'recent', string.format('%.17g', ts_num(top)), conv)
  else
    redis.call('ZREM', u .. 'recent', conv)
  end
end

local function drop_message(u, conv, member)
  local fields = unindex_doc(u, seq_of(member), 3)
  if fields then
    local role = fields[1]
    if redis.call('HINCRBY', u .. 'roles', role, -1) <= 0 then
      redis.call('HDEL', u .. 'roles', role)
    end
  end
  local id = string.sub(member, 29)
  redis.call('HDEL', ckey(u, conv, 'b'), id)
  redis.call('ZREM', ckey(u, conv, 'o'), member)
  unptr('mo', id)
  return drop_vector(u, 'm', id)
end

local function drop_session(owner, sid)
  local u = ukey(owner)
  local rec = redis.call('HGET', u .. 's', sid)
  if rec then
    local f = head(rec, 3)
    redis.call('ZREM', u .. 'sl', f[2])
    redis.call('SREM', ckey(u, f[3], 's'), sid)
    redis.call('HDEL', u .. 's', sid)
  end
  unptr('so', sid, owner)
  return rec and 1 or 0
end

-- Delete the conversation's messages whose role is not in keep (a set), or, with keep nil,
-- the whole conversation: messages, sessions, indexes and its directory entry.
local function drop_conversation(owner, conv, keep)
  local u = ukey(owner)
  local n, vectors = 0, false
  for _, m in ipairs(redis.call('ZRANGE', ckey(u, conv, 'o'), 0, -1)) do
    local gone = true
    if keep then
      local meta = redis.call('HGET', u .. 'doc', seq_of(m))
      if meta and keep[head(meta, 1)[1]] then gone = false end
    end
    if gone then
      if drop_message(u, conv, m) then vectors = true end
      n = n + 1
    end
  end
  if vectors then messages_changed(u) end
  refresh_recent(u, conv)
  if keep then return n, 0 end
  local sessions = redis.call('SMEMBERS', ckey(u, conv, 's'))
  for _, sid in ipairs(sessions) do drop_session(owner, sid) end
  redis.call('DEL', ckey(u, conv, 'o'), ckey(u, conv, 'b'), ckey(u, conv, 's'))
  redis.call('SREM', u .. 'convs', conv)
  redis.call('ZREM', u .. 'cexp', conv)
  if not CLUSTER then redis.call('ZREM', P .. ':cexp', owner .. NUL .. conv) end
  unptr('co', conv, owner)
  return n, #sessions
end

-- Conversations past their TTL disappear before anything of their owner is read or written.
-- True if any did.
local function purge_due(owner)
  local u = ukey(owner)
  if redis.call('EXISTS', u .. 'cexp') == 0 then return false end
  local due = redis.call('ZRANGEBYSCORE', u .. 'cexp', '-inf', now_ms())
  for _, conv in ipairs(due) do
    drop_conversation(owner, conv, nil)
  end
  return #due > 0
end

local function touch(owner, conv, ttl)
  if ttl <= 0 then return end
  local u = ukey(owner)
  local deadline = now_ms() + ttl
  redis.call('ZADD', u .. 'cexp', deadline, conv)
  if not CLUSTER then redis.call('ZADD', P .. ':cexp', deadline, owner .. NUL .. conv) end
  redis.call('PEXPIREAT', ckey(u, conv, 'b'), deadline)
end

-- The conversation's owner, after purging the owner's conversations that are past TTL.
-- On a cluster a pointer counts only if the owner's T:convs holds the conversation too
-- (a pointer left without its data is nobody's).
local function conversation_owner(conv)
  local owner = redis.call('GET', ptr('co', conv))
  if owner and purge_due(owner) then owner = redis.call('GET', ptr('co', conv)) end
  if owner and CLUSTER and redis.call('SISMEMBER', ukey(owner) .. 'convs', conv) == 0 then
    return nil
  end
  return owner
end

-- Where a stored message is (its P:mo value: owner, conversation, order member), after
-- purging its owner's conversations past their TTL; nil when it is not stored. On a
-- cluster a pointer counts only if the owner's conversation holds the body.
local function message_where(id)
  local where = redis.call('GET', ptr('mo', id))
  if where then
    purge_due(head(where, 1)[1])
    where = redis.call('GET', ptr('mo', id))
  end
  if where and CLUSTER then
    local f = head(where, 2)
    if redis.call('HEXISTS', ckey(ukey(f[1]), f[2], 'b'), id) == 0 then return nil end
  end
  return where
end

-- The conversation's owner, claiming it for user when it has none. Returns nil and the
-- owner when enforce is set and someone else owns it (nothing is written then). known: the
-- owner conversation_owner gave in this call (false: none), to skip asking again.
local function claim(conv, user, enforce, known)
  local owner = known
  if owner == nil then owner = conversation_owner(conv) end
  if not owner then
    setptr('co', conv, user)
    redis.call('SADD', ukey(user) .. 'convs', conv)
    add_user(user)
    return user
  end
  if enforce and owner ~= user then return nil, owner end
  return owner
end

-- ------------------------------------------------------------------ memory entries

-- The owner of a stored entry (nil when there is none, or only a pointer left behind),
-- and the user the pointer names.
local function memory_owner(id)
  local named = redis.call('GET', ptr('eo', id))
  if named and redis.call('HEXISTS', ukey(named) .. 'e', id) == 1 then return named, named end
  return nil, named
end

local function drop_memory(owner, id)
  local u = ukey(owner)
  local fields = unindex_doc(u, 'e' .. id, 1)
  if fields then redis.call('ZREM', u .. 'er', cjson.decode(fields[1])['r']) end
  local existed = redis.call('HDEL', u .. 'e', id)
  if drop_vector(u, 'e', id) then memories_changed(u) end
  redis.call('ZREM', u .. 'eexp', id)
  if not CLUSTER then redis.call('ZREM', P .. ':eexp', id) end
  unptr('eo', id, owner)
  return existed
end

local function set_of(list)
  if list == nil or #list == 0 then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function prepare_filter(text)
  local f = cjson.decode(text)
  f.ts, f.cs, f.gs = set_of(f.t), set_of(f.c), set_of(f.g)
  return f
end

local function memory_ok(m, f, conv)
  if f.ts and not f.ts[m.t] then return false end
  if f.cs and (m.c == cjson.null or not f.cs[m.c]) then return false end
  if f.gs then
    local any = false
    for _, tag in ipairs(m.g) do if f.gs[tag] then any = true; break end end
    if not any then return false end
  end
  if m.f < f.mc or m.i < f.mi then return false end
  if not f.x and m.x ~= cjson.null and hex_le(m.x, f.now) then return false end
  if conv and m.v ~= conv then return false end
  return true
end
"""

# --------------------------------------------------------------------------- messages

APPEND = r"""
-- ARGV: P header, then per record: header body terms values vector('' none)
--   header: user\0enforce\0conv\0ttl_ms\0newest_ts_us\0nrec (fields joined, fewer arguments)
--   record header: id\0role\0ts_hex\0length; terms, values: NUL-joined. A header without
--   the length: the record is indexed later (its document goes into T:pend).
--   enforce: '1' refuses another user's conversation; '2' (a cluster's speculative step)
--   writes only into a conversation user already holds, else returns {'new'} untouched.
-- -> {'ok', owner, pending documents of the owner, id already stored*} | {'owner', owner}
--    | {'new'}
local h = head(ARGV[2], 6)
local user, enforce, conv = h[1], h[2] == '1', h[3]
local ttl, newest, nrec = tonumber(h[4]), h[5], tonumber(h[6])
local known = conversation_owner(conv) or false
if h[2] == '2' and known ~= user then return {'new'} end
if nrec > 0 and not known then
  -- A new conversation is claimed only if something goes into it.
  local out = {'ok', user, 0}
  for i = 3, 2 + 5 * nrec, 5 do
    local id = head(ARGV[i], 1)[1]
    if not message_where(id) then out = nil; break end
    out[#out + 1] = id
  end
  if out then return out end
end
local owner, other = claim(conv, user, enforce, known)
if not owner then return {'owner', other} end
local u = ukey(owner)
local okey, bkey = ckey(u, conv, 'o'), ckey(u, conv, 'b')
local out = {'ok', owner, 0}
local added, vectors, deferred = 0, false, false
local seq = redis.call('INCRBY', u .. 'seq', nrec) - nrec
for i = 3, 2 + 5 * nrec, 5 do
  local r = head(ARGV[i], 4)
  local id, role = r[1], r[2]
  seq = seq + 1
  local member = r[3] .. string.format('%012x', seq) .. id
  local pk = ptr('mo', id)
  -- Claim the id; if it is taken, its conversation may be past its TTL and not yet purged
  -- (or, on a cluster, the pointer may be all that is left of it).
  local taken = redis.call('SET', pk, owner .. NUL .. conv .. NUL .. member, 'NX', 'GET')
  if taken and not message_where(id) then
    redis.call('SET', pk, owner .. NUL .. conv .. NUL .. member)
    taken = false
  end
  if taken then
    out[#out + 1] = id
  else
    redis.call('ZADD', okey, 0, member)
    redis.call('HSET', bkey, id, ARGV[i + 1])
    redis.call('HINCRBY', u .. 'roles', role, 1)
    if r[4] then
      index_doc(u, tostring(seq), role .. NUL .. member .. NUL .. conv, r[4], ARGV[i + 2],
                ARGV[i + 3])
    else
      -- Length 0 until indexed: what the document is reads the same either way.
      redis.call('HSET', u .. 'doc', seq, role .. NUL .. member .. NUL .. conv .. NUL .. '0')
      redis.call('SADD', u .. 'pend', seq)
      deferred = true
    end
    if ARGV[i + 4] ~= '' then
      put_message_vector(u, owner, conv, id, ARGV[i + 4])
      redis.call('RPUSH', u .. 'vml', id)
      vectors = true
    end
    added = added + 1
  end
end
if vectors then
  if redis.call('EXISTS', u .. 'vme') == 0 then
    -- A first epoch (no epoch is what readers of a user without message vectors hold);
    -- the log so far belongs to it.
    redis.call('SET', u .. 'vme', next_vgen(u))
  elseif redis.call('LLEN', u .. 'vml') > VML_MAX then
    messages_changed(u)
  end
end
if added > 0 then
  -- The conversation's newest message only moves forward on insert.
  redis.call('ZADD', u .. 'recent', 'GT', newest, conv)
  touch(owner, conv, ttl)
end
if deferred then out[3] = redis.call('SCARD', u .. 'pend') end
return out
"""

GET_MESSAGES = r"""
-- ARGV: P id*  ->  (owner conv member body)*
local out = {}
for k = 2, #ARGV do
  local id = ARGV[k]
  local where = redis.call('GET', ptr('mo', id))
  if where then
    purge_due(split(where)[1])
    where = redis.call('GET', ptr('mo', id))
  end
  if where then
    local f = split(where)
    local body = redis.call('HGET', ckey(ukey(f[1]), f[2], 'b'), id)
    if body then
      out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]; out[#out + 1] = body
    end
  end
end
return out
"""

READ_CONVERSATION = r"""
-- ARGV: P conv user('' any) limit(0 all) marker('' none) [start count]
--   ->  {owner, {member*}, {body*}, marker record or false}
-- The marker is a session id of the owner's (the conversation's archive marker), read in
-- the same call so that a window needs no second round trip to learn its archive state.
local conv, user, limit, marker = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local owner = conversation_owner(conv)
if not owner or (user ~= '' and owner ~= user) then return {} end
local u = ukey(owner)
local okey = ckey(u, conv, 'o')
local members
if ARGV[6] then
  members = redis.call('ZRANGE', okey, tonumber(ARGV[6]), tonumber(ARGV[6]) + tonumber(ARGV[7]) - 1)
elseif limit > 0 then
  members = redis.call('ZRANGE', okey, -limit, -1)
else
  members = redis.call('ZRANGE', okey, 0, -1)
end
local rec = false
if marker ~= '' then rec = redis.call('HGET', u .. 's', marker) end
return {owner, members, bodies_of(ckey(u, conv, 'b'), members, 1, #members), rec}
"""

GET_MARKERS = r"""
-- ARGV: P user sid*  ->  {record or false}*: the user's sessions of these ids.
return redis.call('HMGET', ukey(ARGV[2]) .. 's', unpack(ARGV, 3))
"""

READ_USER = r"""
-- ARGV: P user limit(0 all)  ->  (conv {member*} {body*})*, oldest first.
-- Walks conversations newest first (T:recent) and stops once no older conversation can
-- hold one of the newest `limit` messages: cost O(limit * conversations touched).
local user, limit = ARGV[2], tonumber(ARGV[3])
purge_due(user)
local u = ukey(user)
local function tail(conv, n)
  if n > 0 then return redis.call('ZRANGE', ckey(u, conv, 'o'), -n, -1) end
  return redis.call('ZRANGE', ckey(u, conv, 'o'), 0, -1)
end
local pool = {} -- newest first: {key3..., member, conv}
if limit > 0 then
  local recent = redis.call('ZREVRANGE', u .. 'recent', 0, 63, 'WITHSCORES')
  if #recent == 0 then return {} end
  local first = tail(recent[1], limit)
  -- Usually the newest conversation alone holds the whole window.
  if #first == limit and (#recent == 2 or tonumber(recent[4]) < ts_num(first[1])) then
    return {recent[1], first, bodies_of(ckey(u, recent[1], 'b'), first, 1, #first)}
  end
  local start = 0
  while #recent > 0 do
    for k = 1, #recent, 2 do
      -- Scores round the same way on both sides, so '<' never stops too early.
      if #pool >= limit and tonumber(recent[k + 1]) < ts_num(pool[limit][4]) then
        recent = {}
        break
      end
      local conv = recent[k]
      local t = (k == 1 and start == 0) and first or tail(conv, limit)
      -- Merge the conversation's tail (oldest first) into the pool (newest first).
      local merged, i, j, e = {}, 1, #t, nil
      while #merged < limit and (i <= #pool or j >= 1) do
        if j >= 1 and e == nil then
          e = key3(t[j]); e[4] = t[j]; e[5] = conv
        end
        if e == nil or (i <= #pool and newer(pool[i], e)) then
          merged[#merged + 1] = pool[i]; i = i + 1
        else
          merged[#merged + 1] = e; j = j - 1; e = nil
        end
      end
      pool = merged
    end
    if #recent > 0 then
      start = start + 64
      recent = redis.call('ZREVRANGE', u .. 'recent', start, start + 63, 'WITHSCORES')
    end
  end
else
  for _, conv in ipairs(redis.call('SMEMBERS', u .. 'convs')) do
    for _, m in ipairs(tail(conv, 0)) do
      local e = key3(m); e[4] = m; e[5] = conv
      pool[#pool + 1] = e
    end
  end
  table.sort(pool, newer)
end
-- Oldest first, one group per run of the same conversation.
local out = {}
local k = #pool
while k >= 1 do
  local conv, members = pool[k][5], {}
  while k >= 1 and pool[k][5] == conv do
    members[#members + 1] = pool[k][4]
    k = k - 1
  end
  out[#out + 1] = conv
  out[#out + 1] = members
  out[#out + 1] = bodies_of(ckey(u, conv, 'b'), members, 1, #members)
end
return out
"""

DELETE_MESSAGES = r"""
-- ARGV: P conv keep_role*  ->  deleted count (no roles kept: the conversation goes too)
local conv = ARGV[2]
local owner = conversation_owner(conv)
if not owner then return 0 end
local keep = nil
if #ARGV > 2 then
  keep = {}
  for k = 3, #ARGV do keep[ARGV[k]] = true end
end
local n = drop_conversation(owner, conv, keep)
return n
"""

DELETE_MESSAGE_IDS = r"""
-- ARGV: P conv id*  ->  deleted count (the conversation and its sessions stay)
local conv = ARGV[2]
local owner = conversation_owner(conv)
if not owner then return 0 end
local u = ukey(owner)
local n, vectors = 0, false
for k = 3, #ARGV do
  local where = redis.call('GET', ptr('mo', ARGV[k]))
  if where then
    local f = split(where)
    if f[1] == owner and f[2] == conv and (not CLUSTER or
        redis.call('HEXISTS', ckey(u, conv, 'b'), ARGV[k]) == 1) then
      if drop_message(u, conv, f[3]) then vectors = true end
      n = n + 1
    end
  end
end
if vectors then messages_changed(u) end
if n > 0 then refresh_recent(u, conv) end
return n
"""

CONVERSATION_OWNER = r"""
-- ARGV: P conv  ->  owner or nil
return conversation_owner(ARGV[2]) or false
"""

# --------------------------------------------------------------------------- memories

PUT_MEMORY = r"""
-- ARGV: P user id record meta rank expires_hex('' none) expires_us length terms values
--       vector('' none)  ->  1, or 0 when the id holds another user's entry (nothing written)
local user, id = ARGV[2], ARGV[3]
local old, named = memory_owner(id)
if old and old ~= user then return 0 end
if named then drop_memory(named, id) end
local u = ukey(user)
setptr('eo', id, user)
add_user(user)
redis.call('HSET', u .. 'e', id, ARGV[4])
redis.call('ZADD', u .. 'er', 0, ARGV[6])
if ARGV[7] ~= '' then
  redis.call('ZADD', u .. 'eexp', ARGV[8], id)
  if not CLUSTER then redis.call('ZADD', P .. ':eexp', ARGV[8], id) end
end
index_doc(u, 'e' .. id, ARGV[5], ARGV[9], ARGV[10], ARGV[11])
if ARGV[12] ~= '' then
  put_memory_vector(u, user, id, cjson.decode(ARGV[5]), ARGV[12])
  memories_changed(u)
end
return 1
"""

GET_MEMORY = r"""
-- ARGV: P id  ->  record or nil
local owner = redis.call('GET', ptr('eo', ARGV[2]))
if not owner then return false end
return redis.call('HGET', ukey(owner) .. 'e', ARGV[2])
"""

DELETE_OWN_MEMORY = r"""
-- ARGV: P id user('' anyone's)  ->  1 deleted, 0 no such entry, -1 another user's (kept)
local id, user = ARGV[2], ARGV[3]
local owner, named = memory_owner(id)
if owner and user ~= '' and owner ~= user then return -1 end
if not named then return 0 end
return drop_memory(named, id)
"""

FORGET_MEMORIES = r"""
-- ARGV: P user id*  ->  how many of the user's existed. The ids were read before this
-- script: one deleted and stored again by another user since is that user's, and stays.
local user, n = ARGV[2], 0
for k = 3, #ARGV do
  local owner, named = memory_owner(ARGV[k])
  if owner == user or (not owner and named == user) then
    n = n + drop_memory(user, ARGV[k])
  end
end
return n
"""

QUERY_MEMORIES = r"""
-- ARGV: P user filter_json limit  ->  record*, most important first, then newest, then id
local u = ukey(ARGV[2])
local f = prepare_filter(ARGV[3])
local limit = tonumber(ARGV[4])
local out = {}
local start = 0
while #out < limit do
  local batch = redis.call('ZRANGE', u .. 'er', start, start + 255)
  if #batch == 0 then break end
  for _, m in ipairs(batch) do
    local id = string.sub(m, 33)
    local meta = redis.call('HGET', u .. 'doc', 'e' .. id)
    if meta and memory_ok(cjson.decode(head(meta, 1)[1]), f, nil) then
      out[#out + 1] = redis.call('HGET', u .. 'e', id)
      if #out >= limit then break end
    end
  end
  start = start + 256
end
return out
"""

PURGE_EXPIRED = r"""
-- ARGV: P now_us batch  ->  {memories deleted, more to do (0/1)}
local batch = tonumber(ARGV[3])
local n = 0
local ids = redis.call('ZRANGEBYSCORE', P .. ':eexp', '-inf', ARGV[2], 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  local owner = redis.call('GET', ptr('eo', id))
  if owner then n = n + drop_memory(owner, id) else redis.call('ZREM', P .. ':eexp', id) end
end
local convs = redis.call('ZRANGEBYSCORE', P .. ':cexp', '-inf', now_ms(), 'LIMIT', 0, batch)
for _, item in ipairs(convs) do
  local f = split(item)
  drop_conversation(f[1], f[2], nil)
  redis.call('ZREM', P .. ':cexp', item)
end
return {n, (#ids == batch or #convs == batch) and 1 or 0}
"""

PURGE_USER = r"""
-- ARGV: P user now_us batch  ->  {memories deleted, more to do (0/1)}. The retention sweep
-- of one user, from the user's own sets (on a cluster the sweep goes user by user).
local user, batch = ARGV[2], tonumber(ARGV[4])
local u = ukey(user)
local n = 0
local ids = redis.call('ZRANGEBYSCORE', u .. 'eexp', '-inf', ARGV[3], 'LIMIT', 0, batch)
for _, id in ipairs(ids) do n = n + drop_memory(user, id) end
purge_due(user)
return {n, #ids == batch and 1 or 0}
"""

# --------------------------------------------------------------------------- sessions

PUT_SESSION = r"""
-- ARGV: P user sid conv active lexmember payload ttl_ms [expected]
--   ->  {'ok'}, {'owner', other} (another's conversation), {'session'} (another's session)
--       or {'stale'} (with expected: the session is not stored as expected)
local user, sid, conv = ARGV[2], ARGV[3], ARGV[4]
local old = redis.call('GET', ptr('so', sid))
if ARGV[9] then
  if old ~= user then return {'stale'} end
  purge_due(user) -- a session of an expired conversation is gone, as for GET_SESSION
  if redis.call('HGET', ukey(user) .. 's', sid) ~= ARGV[9] then return {'stale'} end
end
if old and old ~= user then
  purge_due(old) -- a session of an expired conversation is gone, as for GET_SESSION
  if redis.call('HEXISTS', ukey(old) .. 's', sid) == 1 then return {'session'} end
end
local owner, other = claim(conv, user, true)
if not owner then return {'owner', other} end
if old then drop_session(old, sid) end
local u = ukey(user)
setptr('so', sid, user)
redis.call('HSET', u .. 's', sid, ARGV[5] .. NUL .. ARGV[6] .. NUL .. conv .. NUL .. ARGV[7])
redis.call('ZADD', u .. 'sl', 0, ARGV[6])
redis.call('SADD', ckey(u, conv, 's'), sid)
touch(user, conv, tonumber(ARGV[8]))
return {'ok'}
"""

GET_SESSION = r"""
-- ARGV: P sid  ->  {owner, record} or nil
local sid = ARGV[2]
local owner = redis.call('GET', ptr('so', sid))
if not owner then return false end
purge_due(owner)
local rec = redis.call('HGET', ukey(owner) .. 's', sid)
if not rec then return false end
return {owner, rec}
"""

LATEST_SESSION = r"""
-- ARGV: P user conv('' any) active_only(0/1)  ->  {sid, record} or nil
local user, conv, active_only = ARGV[2], ARGV[3], ARGV[4] == '1'
purge_due(user)
local u = ukey(user)
if conv ~= '' then
  -- A conversation has few sessions: take the latest of its set.
  local best, best_rec = nil, nil
  for _, sid in ipairs(redis.call('SMEMBERS', ckey(u, conv, 's'))) do
    local rec = redis.call('HGET', u .. 's', sid)
    if rec then
      local f = head(rec, 2)
      if (not active_only or f[1] == '1') and (best == nil or bytes_gt(f[2], best)) then
        best, best_rec = f[2], {sid, rec}
      end
    end
  end
  return best_rec or false
end
local start = 0
while true do
  local batch = redis.call('ZREVRANGE', u .. 'sl', start, start + 63)
  if #batch == 0 then return false end
  for _, m in ipairs(batch) do
    local sid = string.sub(m, 17)
    local rec = redis.call('HGET', u .. 's', sid)
    if rec and (not active_only or string.sub(rec, 1, 1) == '1') then return {sid, rec} end
  end
  start = start + 64
end
"""

# --------------------------------------------------------------------------- search

SEARCH = r"""
-- ARGV: P user limit kinds('m','e','me') conv('' any) k1 b memory_filter('' no memories) term*
-- BM25 over the posting lists of the query terms only: O(sum of their lengths).
-- Returns whole groups of equal score until `limit` hits pass the filters; the caller
-- breaks ties and trims. Hit: 'm' score conv member body | 'e' score record '' ''.
-- kinds ending in '!': documents still pending are left out (the caller has just indexed
-- those that waited); otherwise any pending document makes the answer {'pending'}.
local user, limit, kinds, conv = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local k1, b = tonumber(ARGV[6]), tonumber(ARGV[7])
local F = 67108864 -- posting value = document length * F + term frequency
purge_due(user)
local u = ukey(user)
if string.sub(kinds, -1) ~= '!' and redis.call('EXISTS', u .. 'pend') == 1 then
  return {'pending'}
end
local want_msg, want_mem = string.find(kinds, 'm', 1, true), string.find(kinds, 'e', 1, true)
local n = redis.call('HLEN', u .. 'doc')
if n == 0 then return {} end
local avg = (tonumber(redis.call('HGET', u .. 'ix', 'len')) or 0) / n
if avg == 0 then avg = 1.0 end
local scores, docs = {}, {}
local byte, num = string.byte, tonumber
for t = 9, #ARGV do
  local flat = redis.call('HGETALL', u .. 't:' .. ARGV[t])
  local df = #flat / 2
  if df > 0 then
    local idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
    for j = 1, #flat, 2 do
      local doc = flat[j]
      local is_mem = byte(doc, 1) == 101
      if (is_mem and want_mem) or (not is_mem and want_msg) then
        local v = num(flat[j + 1])
        local tf = v % F
        local norm = tf + k1 * (1.0 - b + b * ((v - tf) / F) / avg)
        local s = scores[doc]
        if s == nil then
          s = 0.0
          docs[#docs + 1] = doc
        end
        scores[doc] = s + idf * tf * (k1 + 1.0) / norm
      end
    end
  end
end
if #docs == 0 then return {} end
-- The best scores first, without sorting every candidate: take those at or above the
-- score of the k-th best, walk them in groups of equal score, and lower the bar only if
-- the filters rejected too many.
local values = {}
for i = 1, #docs do values[i] = scores[docs[i]] end
table.sort(values)
local f = nil
if ARGV[8] ~= '' then f = prepare_filter(ARGV[8]) end
local scope = nil
if conv ~= '' then scope = conv end
local out, hits, k, above = {}, 0, limit * 2, math.huge
while hits < limit and above > values[1] do
  local bar = values[math.max(1, #values - k + 1)]
  local group = {}
  for i = 1, #docs do
    local s = scores[docs[i]]
    if s >= bar and s < above then group[#group + 1] = docs[i] end
  end
  table.sort(group, function(x, y) return scores[x] > scores[y] end)
  local i = 1
  while i <= #group and hits < limit do
    local s = scores[group[i]]
    local j = i
    while j <= #group and scores[group[j]] == s do j = j + 1 end
    local text = string.format('%.17g', s)
    for g = i, j - 1 do
      local doc = group[g]
      local meta = redis.call('HGET', u .. 'doc', doc)
      if meta then
        if byte(doc, 1) == 101 then
          if memory_ok(cjson.decode(head(meta, 1)[1]), f, scope) then
            local rec = redis.call('HGET', u .. 'e', string.sub(doc, 2))
            if rec then
              out[#out + 1] = 'e'; out[#out + 1] = text; out[#out + 1] = rec
              out[#out + 1] = ''; out[#out + 1] = ''
              hits = hits + 1
            end
          end
        else
          local h = head(meta, 3)
          if scope == nil or h[3] == scope then
            local body = redis.call('HGET', ckey(u, h[3], 'b'), string.sub(h[2], 29))
            if body then
              out[#out + 1] = 'm'; out[#out + 1] = text; out[#out + 1] = h[3]
              out[#out + 1] = h[2]; out[#out + 1] = body
              hits = hits + 1
            end
          end
        end
      end
    end
    i = j
  end
  above = bar
  k = k * 4
end
return out
"""

# --------------------------------------------------------------------------- users

STATISTICS = r"""
-- ARGV: P user  ->  {conversations, sessions, active, memories, first_hex, last_hex, role n*}
local user = ARGV[2]
purge_due(user)
local u = ukey(user)
local convs = redis.call('SMEMBERS', u .. 'convs')
local first, last = nil, nil
for _, conv in ipairs(convs) do
  local okey = ckey(u, conv, 'o')
  local a = redis.call('ZRANGE', okey, 0, 0)[1]
  if a then
    local z = redis.call('ZRANGE', okey, -1, -1)[1]
    if first == nil or newer(key3(first), key3(a)) then first = a end
    if last == nil or newer(key3(z), key3(last)) then last = z end
  end
end
local active = 0
for _, rec in ipairs(redis.call('HVALS', u .. 's')) do
  if string.sub(rec, 1, 1) == '1' then active = active + 1 end
end
local out = {#convs, redis.call('HLEN', u .. 's'), active, redis.call('HLEN', u .. 'e'),
             first and string.sub(first, 1, 16) or '', last and string.sub(last, 1, 16) or ''}
for _, v in ipairs(redis.call('HGETALL', u .. 'roles')) do out[#out + 1] = v end
return out
"""

DROP_CONVERSATION = r"""
-- ARGV: P owner conv  ->  {messages, sessions} deleted
local n, s = drop_conversation(ARGV[2], ARGV[3], nil)
return {n, s}
"""

FORGET_REST = r"""
-- ARGV: P user  ->  sessions deleted. Runs after every conversation and memory entry of
-- the user is gone: removes what is left (stray sessions, index residue, counters).
local user = ARGV[2]
local u = ukey(user)
local s = 0
for _, sid in ipairs(redis.call('HKEYS', u .. 's')) do s = s + drop_session(user, sid) end
for _, doc in ipairs(redis.call('HKEYS', u .. 'doc')) do
  unindex_doc(u, doc, string.byte(doc, 1) == 101 and 1 or 3)
end
for _, kind in ipairs({'m', 'e'}) do
  for _, id in ipairs(redis.call('SMEMBERS', u .. 'v' .. kind)) do
    redis.call('DEL', vkey(u, kind, id))
  end
end
redis.call('DEL', u .. 'seq', u .. 'convs', u .. 'recent', u .. 'cexp', u .. 'ix', u .. 'doc',
           u .. 'roles', u .. 's', u .. 'sl', u .. 'e', u .. 'er', u .. 'eexp', u .. 'vm',
           u .. 've', u .. 'vme', u .. 'vml', u .. 'vge', u .. 'pend', u .. 'vgc', u .. 'here')
if not CLUSTER then redis.call('SREM', P .. ':users', user) end
return s
"""

TOUCH_USER = r"""
-- ARGV: P user  ->  1. Purges the user's conversations that are past their TTL.
purge_due(ARGV[2])
return 1
"""

REINDEX = r"""
-- ARGV: P user (doc length terms values)*  ->  documents re-indexed.
-- Replaces the posting entries of documents whose text analysis changed; keeps what each
-- document is. Documents deleted meanwhile are skipped.
local u = ukey(ARGV[2])
local n = 0
for i = 3, #ARGV, 4 do
  local doc = ARGV[i]
  local nhead = string.byte(doc, 1) == 101 and 1 or 3
  local fields = unindex_doc(u, doc, nhead)
  if fields then
    fields[nhead + 1] = nil
    index_doc(u, doc, table.concat(fields, NUL), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    n = n + 1
  end
end
return n
"""

PENDING = r"""
-- ARGV: P user max  ->  (doc body)* of at most max documents waiting in T:pend (a message
-- whose body is gone meanwhile has body false; index_pending then just clears it).
local user, max = ARGV[2], tonumber(ARGV[3])
purge_due(user)
local u = ukey(user)
local out = {}
for _, doc in ipairs(redis.call('SRANDMEMBER', u .. 'pend', max)) do
  local meta = redis.call('HGET', u .. 'doc', doc)
  local body = false
  if meta then
    local h = head(meta, 3)
    body = redis.call('HGET', ckey(u, h[3], 'b'), string.sub(h[2], 29))
  end
  out[#out + 1] = doc
  out[#out + 1] = body
end
return out
"""

INDEX_PENDING = r"""
-- ARGV: P user (doc length terms values)*  ->  documents indexed. Writes the posting entries
-- of documents still pending; those indexed or deleted meanwhile are skipped.
local u = ukey(ARGV[2])
local n = 0
for i = 3, #ARGV, 4 do
  local doc = ARGV[i]
  if redis.call('SREM', u .. 'pend', doc) == 1 then
    local meta = redis.call('HGET', u .. 'doc', doc)
    local h, rest = nil, nil
    if meta then h, rest = head(meta, 4) end
    -- Only a document still as the append script wrote it (length 0, no terms).
    if h and h[4] == '0' and not rest then
      index_doc(u, doc, table.concat({h[1], h[2], h[3]}, NUL), ARGV[i + 1], ARGV[i + 2],
                ARGV[i + 3])
      n = n + 1
    end
  end
end
return n
"""

# --------------------------------------------------------------------------- vectors

VECTOR_STATE = r"""
-- ARGV: P user [with_epoch (0: no)]  ->  {message epoch, message log length, memory
-- generation, store epoch} ('' when unset; the store epoch also with_epoch 0, when the
-- caller reads P:meta itself). Purges the user's conversations past their TTL first, so no
-- search sees their vectors.
purge_due(ARGV[2])
local u = ukey(ARGV[2])
local epoch = ''
if ARGV[3] ~= '0' then epoch = redis.call('HGET', P .. ':meta', 'vepoch') or '' end
return {redis.call('GET', u .. 'vme') or '', redis.call('LLEN', u .. 'vml'),
        redis.call('GET', u .. 'vge') or '', epoch}
"""

VECTOR_DELTA = r"""
-- ARGV: P user message_epoch start nbytes  ->  {log length, ids, extras, vectors} as
-- vector_load returns them, for the message vectors logged from position start on; or
-- {'stale'} when the message epoch is no longer message_epoch (the reader reloads).
local u, nbytes = ukey(ARGV[2]), tonumber(ARGV[5])
if (redis.call('GET', u .. 'vme') or '') ~= ARGV[3] then return {'stale'} end
local ids, extras, vecs = {}, {}, {}
for _, id in ipairs(redis.call('LRANGE', u .. 'vml', ARGV[4], -1)) do
  local f = redis.call('HMGET', vkey(u, 'm', id), 'vec', 'c')
  if f[1] and #f[1] == nbytes then
    ids[#ids + 1] = id; extras[#extras + 1] = f[2] or ''; vecs[#vecs + 1] = f[1]
  end
end
return {redis.call('LLEN', u .. 'vml'), table.concat(ids, NUL), table.concat(extras, NUL),
        table.concat(vecs)}
"""

VECTOR_LOAD = r"""
-- ARGV: P user kind(m/e) cursor count nbytes  ->  {cursor, ids, extras, vectors}
-- One SSCAN step over the user's vector documents of one kind, those of nbytes bytes only
-- (another model's are not comparable). ids and extras are NUL-joined (no id holds NUL, and
-- JSON escapes it); an extra is the conversation's SHA-1 for a message, the memory record
-- (JSON) for a memory entry. vectors are the documents' vectors back to back, in that order:
-- four values instead of three per document keep the client's parsing cheap.
local u, kind, nbytes = ukey(ARGV[2]), ARGV[3], tonumber(ARGV[6])
local scan = redis.call('SSCAN', u .. 'v' .. kind, ARGV[4], 'COUNT', ARGV[5])
local ids, extras, vecs = {}, {}, {}
for _, id in ipairs(scan[2]) do
  local f = redis.call('HMGET', vkey(u, kind, id), 'vec', 'c')
  local extra = nil
  if f[1] and #f[1] == nbytes then
    if kind == 'm' then extra = f[2] or '' else extra = redis.call('HGET', u .. 'e', id) end
  end
  if extra then
    ids[#ids + 1] = id; extras[#extras + 1] = extra; vecs[#vecs + 1] = f[1]
  end
end
return {scan[1], table.concat(ids, NUL), table.concat(extras, NUL), table.concat(vecs)}
"""

VECTOR_FETCH = r"""
-- ARGV: P user (kind id)*  ->  per pair: kind conv member body (a message), kind record ''
-- '' (a memory entry), or '' '' '' '' (gone, or not the user's).
local user = ARGV[2]
local u = ukey(user)
local out = {}
for k = 3, #ARGV, 2 do
  local kind, id = ARGV[k], ARGV[k + 1]
  local a, b, c = nil, '', ''
  if kind == 'm' then
    local where = redis.call('GET', ptr('mo', id))
    if where then
      local f = split(where)
      if f[1] == user then
        local body = redis.call('HGET', ckey(u, f[2], 'b'), id)
        if body then a, b, c = f[2], f[3], body end
      end
    end
  elseif redis.call('GET', ptr('eo', id)) == user then
    a = redis.call('HGET', u .. 'e', id)
  end
  if a then
    out[#out + 1] = kind; out[#out + 1] = a; out[#out + 1] = b; out[#out + 1] = c
  else
    out[#out + 1] = ''; out[#out + 1] = ''; out[#out + 1] = ''; out[#out + 1] = ''
  end
end
return out
"""

PUT_VECTORS = r"""
-- ARGV: P kind(m/e) (id vector)*  ->  vectors written (ids no longer stored are skipped)
local kind = ARGV[2]
local n, owners = 0, {}
local changed = kind == 'm' and messages_changed or memories_changed
for k = 3, #ARGV, 2 do
  local id, vec = ARGV[k], ARGV[k + 1]
  if kind == 'm' then
    local where = redis.call('GET', ptr('mo', id))
    if where then
      purge_due(split(where)[1])
      where = redis.call('GET', ptr('mo', id))
    end
    if where then
      local f = split(where)
      local u = ukey(f[1])
      if redis.call('HEXISTS', ckey(u, f[2], 'b'), id) == 1 then
        put_message_vector(u, f[1], f[2], id, vec)
        owners[f[1]] = true
        n = n + 1
      end
    end
  else
    local owner = redis.call('GET', ptr('eo', id))
    local meta = owner and redis.call('HGET', ukey(owner) .. 'doc', 'e' .. id)
    if meta then
      put_memory_vector(ukey(owner), owner, id, cjson.decode(head(meta, 1)[1]), vec)
      owners[owner] = true
      n = n + 1
    end
  end
end
for owner in pairs(owners) do changed(ukey(owner)) end
return n
"""

DROP_VECTORS = r"""
-- ARGV: P user  ->  vector documents deleted (all of the user's, both kinds)
local u = ukey(ARGV[2])
local n = 0
for _, kind in ipairs({'m', 'e'}) do
  for _, id in ipairs(redis.call('SMEMBERS', u .. 'v' .. kind)) do
    n = n + redis.call('DEL', vkey(u, kind, id))
  end
  redis.call('DEL', u .. 'v' .. kind)
end
messages_changed(u)
memories_changed(u)
return n
"""

SCRIPTS: dict[str, str] = {
    "append": APPEND,
    "get_messages": GET_MESSAGES,
    "read_conversation": READ_CONVERSATION,
    "read_user": READ_USER,
    "get_markers": GET_MARKERS,
    "delete_messages": DELETE_MESSAGES,
    "delete_message_ids": DELETE_MESSAGE_IDS,
    "conversation_owner": CONVERSATION_OWNER,
    "put_memory": PUT_MEMORY,
    "get_memory": GET_MEMORY,
    "forget_memories": FORGET_MEMORIES,
    "delete_own_memory": DELETE_OWN_MEMORY,
    "query_memories": QUERY_MEMORIES,
    "purge_expired": PURGE_EXPIRED,
    "purge_user": PURGE_USER,
    "put_session": PUT_SESSION,
    "get_session": GET_SESSION,
    "latest_session": LATEST_SESSION,
    "search": SEARCH,
    "statistics": STATISTICS,
    "drop_conversation": DROP_CONVERSATION,
    "forget_rest": FORGET_REST,
    "touch_user": TOUCH_USER,
    "reindex": REINDEX,
    "pending": PENDING,
    "index_pending": INDEX_PENDING,
    "vector_state": VECTOR_STATE,
    "vector_load": VECTOR_LOAD,
    "vector_delta": VECTOR_DELTA,
    "vector_fetch": VECTOR_FETCH,
    "put_vectors": PUT_VECTORS,
    "drop_vectors": DROP_VECTORS,
}
"""Script name -> Lua body (without the prelude)."""


# Each script runs its prelude on every call, and defining the prelude's ~40 functions costs
# the server more than the few commands of a short script: each script gets only the
# definitions it uses (directly or through another definition), in the prelude's order.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _chunks(prelude: str) -> list[tuple[frozenset[str], str]]:
    """The prelude's top-level statements (each starts with ``local``) with the names
    each defines."""
    out: list[tuple[frozenset[str], str]] = []
    lines: list[str] = []
    for line in prelude.splitlines(keepends=True):
        if line.startswith("local ") and lines:
            out.append(_defined(lines))
            lines = []
        lines.append(line)
    if lines:
        out.append(_defined(lines))
    return out


def _defined(lines: list[str]) -> tuple[frozenset[str], str]:
    first = lines[0][len("local ") :]
    if first.startswith("function "):
        names = [_NAME.match(first, len("function ")).group()]  # type: ignore[union-attr]
    else:
        names = [n.strip() for n in first.split("=", 1)[0].split(",")]
    return frozenset(names), "".join(lines)


_PRELUDE_CHUNKS = _chunks(PRELUDE)


def source(body: str) -> str:
    """``body`` after the part of :data:`PRELUDE` it needs."""
    wanted = set(_NAME.findall(body))
    keep = [False] * len(_PRELUDE_CHUNKS)
    # A definition only refers to earlier ones: one pass from the end finds them all.
    for i in range(len(_PRELUDE_CHUNKS) - 1, -1, -1):
        names, text = _PRELUDE_CHUNKS[i]
        if names & wanted:
            keep[i] = True
            wanted |= set(_NAME.findall(text))
    return "".join(text for (_, text), k in zip(_PRELUDE_CHUNKS, keep, strict=True) if k) + body


SOURCES: dict[str, str] = {name: source(body) for name, body in SCRIPTS.items()}
"""Each script's full text, as loaded on the server."""
