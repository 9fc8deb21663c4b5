//! ferry's Lua scripts. Each runs atomically on the server; their effects (not the
//! scripts) reach the replication stream, inside the applying `MULTI`.
//!
//! Versions (two-way, `ferry:v:<key>`): a hash of `t` (µs by the server's clock), `s`
//! (site), `f` (fingerprint: SHA-1 of the key's type, absolute expiry and value in a
//! canonical form, `none` when absent; not of its `DUMP`, whose bytes follow a hash
//! table's order and change when it rehashes) and `pt`/`ps` (the version it replaced). A value whose fingerprint matches its
//! version hash is versioned; any other value was written by an application since, and
//! the first script that sees it (a capture on its side, or an apply) stamps it with the
//! server's time then, never earlier than the version it replaced.

/// Shared: the key's fingerprint and whether it exists.
const FINGERPRINT: &str = r"
local function flat(v, out)
  if type(v) == 'table' then
    if v['ok'] then out[#out + 1] = v['ok']; return end
    out[#out + 1] = '[' .. #v
    for i = 1, #v do flat(v[i], out) end
  elseif v == false or v == nil then
    out[#out + 1] = 'nil'
  else
    out[#out + 1] = tostring(v)
  end
end
local function canonical(key, kind)
  local parts = {}
  if kind == 'string' then
    parts[1] = redis.call('GET', key)
  elseif kind == 'list' or kind == 'zset' then
    if kind == 'list' then parts = redis.call('LRANGE', key, 0, -1)
    else parts = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES') end
  elseif kind == 'set' then
    parts = redis.call('SMEMBERS', key)
    table.sort(parts)
  elseif kind == 'hash' then
    local h = redis.call('HGETALL', key)
    for i = 1, #h, 2 do parts[#parts + 1] = #h[i] .. ':' .. h[i] .. #h[i + 1] .. ':' .. h[i + 1] end
    table.sort(parts)
  elseif kind == 'stream' then
    flat(redis.call('XRANGE', key, '-', '+'), parts)
    local info = redis.call('XINFO', 'STREAM', key)
    for i = 1, #info, 2 do
      local f = info[i]
      if f == 'length' or f == 'last-generated-id' or f == 'entries-added' or f == 'max-deleted-entry-id' then
        parts[#parts + 1] = f
        flat(info[i + 1], parts)
      end
    end
    flat(redis.call('XINFO', 'GROUPS', key), parts)
  else
    parts[1] = redis.call('DUMP', key)
  end
  local out = {}
  for i = 1, #parts do out[i] = #parts[i] .. ':' .. parts[i] end
  return table.concat(out)
end
-- The key's fingerprint (its type, value and absolute expiry, in a canonical form: the
-- same content always has the same one, whatever its encoding or hash-table order),
-- its DUMP, and its expiry.
local function fingerprint(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return 'none', false, -1 end
  local exp = redis.call('PEXPIRETIME', key)
  local body = canonical(key, kind)
  return redis.sha1hex(kind .. ':' .. string.format('%.0f', exp) .. ':' .. body), redis.call('DUMP', key), exp
end
local function now_after(prev)
  local tm = redis.call('TIME')
  local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
  if prev and tonumber(prev) and tonumber(prev) >= now then now = tonumber(prev) + 1 end
  return string.format('%.0f', now)
end
";

/// Capture (a two-way source, for a key its application wrote): KEYS = key, version key;
/// ARGV = site, tombstone TTL (s). Returns {dump|nil, expiry ms|-1, t, s, pt, ps}.
pub fn capture() -> String {
    format!(
        r"{FINGERPRINT}
local fp, d, exp = fingerprint(KEYS[1])
local v = redis.call('HMGET', KEYS[2], 't', 's', 'f', 'pt', 'ps')
if v[1] and v[3] == fp then
  return {{d, exp, v[1], v[2], v[4] or '', v[5] or ''}}
end
local now = now_after(v[1])
redis.call('HSET', KEYS[2], 't', now, 's', ARGV[1], 'f', fp, 'pt', v[1] or '', 'ps', v[2] or '')
if d then redis.call('PERSIST', KEYS[2]) else redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return {{d, exp, now, ARGV[1], v[1] or '', v[2] or ''}}
"
    )
}

/// Apply (a two-way sink): KEYS = key, version key, conflict log; ARGV = payload, absent
/// (1/0), expiry ms (-1 none), t, s, seen t, seen s, local site, policy (`lww`, `log`,
/// `prefer:SITE`), task, direction, tombstone TTL (s). Returns {applied 1/0, conflict 1/0}.
pub fn apply() -> String {
    format!(
        r"{FINGERPRINT}
local fp, present = fingerprint(KEYS[1])
local v = redis.call('HMGET', KEYS[2], 't', 's', 'f', 'pt', 'ps')
local lt, ls, lpt, lps = nil, nil, v[4], v[5]
if v[1] and v[3] == fp then
  lt, ls = v[1], v[2]
elseif v[1] or present then
  lt = now_after(v[1])
  ls = ARGV[8]
  lpt, lps = v[1] or '', v[2] or ''
  redis.call('HSET', KEYS[2], 't', lt, 's', ls, 'f', fp, 'pt', lpt, 'ps', lps)
  if present then redis.call('PERSIST', KEYS[2]) else redis.call('EXPIRE', KEYS[2], ARGV[12]) end
end
-- The incoming version is the local one, or the one the local one replaced (a write
-- delivered again, or old news): nothing to do, and no conflict.
if lt == ARGV[4] and ls == ARGV[5] then return {{0, 0}} end
if lpt == ARGV[4] and lps == ARGV[5] then return {{0, 0}} end
local conflict = (lt ~= nil) and not (lt == ARGV[6] and ls == ARGV[7])
local wins = true
if conflict then
  local tin, tl = tonumber(ARGV[4]), tonumber(lt)
  if ARGV[9] == 'lww' then
    wins = tin > tl or (tin == tl and ARGV[5] > ls)
  elseif ARGV[9] == 'log' then
    wins = false
  else
    wins = (ARGV[5] == string.sub(ARGV[9], 8))
  end
end
if wins then
  if ARGV[2] == '1' then
    redis.call('DEL', KEYS[1])
  else
    local ttl = tonumber(ARGV[3])
    if ttl < 0 then ttl = 0 end
    redis.call('RESTORE', KEYS[1], string.format('%.0f', ttl), ARGV[1], 'REPLACE', 'ABSTTL')
  end
  local nfp = fingerprint(KEYS[1])
  redis.call('HSET', KEYS[2], 't', ARGV[4], 's', ARGV[5], 'f', nfp, 'pt', ARGV[6], 'ps', ARGV[7])
  if nfp == 'none' then redis.call('EXPIRE', KEYS[2], ARGV[12]) else redis.call('PERSIST', KEYS[2]) end
end
if conflict then
  local tm = redis.call('TIME')
  local winner = ls
  if wins then winner = ARGV[5] end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100000', '*',
    'task', ARGV[10], 'direction', ARGV[11], 'key', KEYS[1], 'policy', ARGV[9], 'winner', winner,
    'incoming_site', ARGV[5], 'incoming_t', ARGV[4], 'local_site', ls, 'local_t', lt,
    'detected_us', string.format('%.0f', tonumber(tm[1]) * 1000000 + tonumber(tm[2])))
end
if wins then return {{1, conflict and 1 or 0}} end
return {{0, conflict and 1 or 0}}
"
    )
}

/// Sweep (two-way, after a full resync): KEYS = key, version key; ARGV = the source's
/// site. Deletes the key when its value is the one last applied from the source (the
/// source no longer has it); keeps what this side wrote. Returns 1 when deleted.
pub fn sweep() -> String {
    format!(
        r"{FINGERPRINT}
local fp = fingerprint(KEYS[1])
local v = redis.call('HMGET', KEYS[2], 's', 'f')
if v[1] == ARGV[1] and v[2] == fp and fp ~= 'none' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'f', 'none')
  return 1
end
return 0
"
    )
}

/// Flush (the source ran FLUSHDB/FLUSHALL): deletes every key matching ARGV's patterns
/// but ferry's own. Returns the count.
pub const FLUSH: &str = r"
local n = 0
for i = 1, #ARGV do
  local cursor = '0'
  repeat
    local r = redis.call('SCAN', cursor, 'MATCH', ARGV[i], 'COUNT', 1000)
    cursor = r[1]
    for _, k in ipairs(r[2]) do
      if string.sub(k, 1, 6) ~= 'ferry:' then
        n = n + redis.call('DEL', k)
      end
    end
  until cursor == '0'
end
return n
";
