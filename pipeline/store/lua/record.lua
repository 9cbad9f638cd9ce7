-- Shared by the record scripts (record_create, record_update, record_trim).
-- KEYS: the record, kept, idx, settled, counts, entry set, last successes, in flight.
-- ARGV: record id, group, entry id, now, then the script's own.
local rec, kept, idx, settled, counts, entryset = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local successes, inflight = KEYS[7], KEYS[8]
local rid, group, entry, stamp = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local COMPACT = {__COMPACT__}
local TIMES = {__TIMES__}
local CODES = {__CODES__}
local NAMES = {}
for name, code in pairs(CODES) do NAMES[code] = name end
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'

local function to36(n)
  n = math.floor(n)
  if n <= 0 then return '0' end
  local out = ''
  while n > 0 do
    local d = n % 36
    out = string.sub(B36, d + 1, d + 1) .. out
    n = math.floor(n / 36)
  end
  return out
end

local function split(packed)
  local out, start = {}, 1
  for i = 1, #COMPACT - 1 do
    local stop = string.find(packed, '|', start, true)
    if not stop then out[i] = string.sub(packed, start); return out end
    out[i] = string.sub(packed, start, stop - 1)
    start = stop + 1
  end
  out[#COMPACT] = string.sub(packed, start)
  return out
end

-- what a trimmed record kept, decoded: name -> value (see pipeline.store.models.unpack_compact)
local function unpacked(packed)
  local values, out = split(packed), {}
  for i, name in ipairs(COMPACT) do
    local v = values[i]
    if v and v ~= '' then
      if name == 'state' then v = NAMES[v] or v elseif TIMES[name] then v = tostring(tonumber(v, 36)) end
      out[name] = v
    end
  end
  local state = out['state']
  if out['settled_at'] and (state == 'confirmed' or state == 'exported') then
    out['confirmed_at'] = out['settled_at']
  end
  if out['discarded'] then out['dead_letter_id'] = out['discarded'] end
  return out
end

-- a trimmed record written again becomes a full one (with a fresh window) before the write lands
local function rehydrate()
  if redis.call('exists', rec) == 1 then return end
  local packed = redis.call('hget', kept, entry)
  if not packed then return end
  local args = {}
  for name, value in pairs(unpacked(packed)) do args[#args + 1] = name; args[#args + 1] = value end
  redis.call('hset', rec, unpack(args))
  redis.call('hset', rec, 'settled_at', stamp)
  redis.call('zadd', settled, stamp, rid)
  redis.call('hdel', kept, entry)
  redis.call('sadd', idx, entry)
  redis.call('sadd', entryset, rid)
end

local function is_final(state)
  if state == 'confirmed' or state == 'exported' or state == 'skipped' then return true end
  if state == 'dead' then
    local dl = redis.call('hget', rec, 'dead_letter_id')
    return dl and dl == redis.call('hget', rec, 'discarded')
  end
  return false
end

-- a record on its way (not settled, not dead, not waiting for an export) is due to move again by the later of
-- now and its next retry: the index of records in flight, where a chain whose message was lost is found
local function track(new)
  local step = redis.call('hget', rec, 'step')
  if (new == 'received' or new == 'posted' or new == 'waiting_retry') and step ~= 'pending' then
    local due = tonumber(stamp)
    local retry = tonumber(redis.call('hget', rec, 'next_retry_at') or '')
    if retry and retry > due then due = retry end
    redis.call('zadd', inflight, due, rid)
  else
    redis.call('zrem', inflight, rid)
  end
end

-- old state -> new state: move the counters, and enter or leave the indexes of settled and in-flight records
local function settle(old)
  local new = redis.call('hget', rec, 'state')
  if old ~= new then
    if old then redis.call('hincrby', counts, group .. ':' .. old, -1) end
    if new then redis.call('hincrby', counts, group .. ':' .. new, 1) end
  end
  track(new)
  local since = redis.call('hget', rec, 'settled_at')
  if is_final(new) then
    if not since then
      if new ~= 'dead' then redis.call('hset', successes, group, stamp) end
      redis.call('hset', rec, 'settled_at', stamp)
      redis.call('zadd', settled, stamp, rid)
      return 1
    end
  elseif since then
    redis.call('hdel', rec, 'settled_at')
    redis.call('zrem', settled, rid)
  end
  return 0
end
