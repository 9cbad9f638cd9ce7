-- Shrink a settled record to what it keeps for good (after record.lua). KEYS[9] is its attempt list; ARGV[5]
-- the cutoff: trim only a record still settled, settled before it. Returns 1 when trimmed.
local since = redis.call('hget', rec, 'settled_at')
if not since or not is_final(redis.call('hget', rec, 'state')) then
  redis.call('zrem', settled, rid)
  if since then redis.call('hdel', rec, 'settled_at') end
  return 0
end
if tonumber(since) > tonumber(ARGV[5]) then
  redis.call('zadd', settled, since, rid)
  return 0
end
local values = redis.call('hmget', rec, unpack(COMPACT))
for i, name in ipairs(COMPACT) do
  local v = values[i]
  if not v then v = '' elseif name == 'state' then v = CODES[v] or v elseif TIMES[name] then v = to36(tonumber(v)) end
  values[i] = v
end
redis.call('hset', kept, entry, table.concat(values, '|'))
redis.call('del', rec, KEYS[9])
redis.call('zrem', inflight, rid)
redis.call('srem', idx, entry)
redis.call('srem', entryset, rid)
redis.call('zrem', settled, rid)
return 1
