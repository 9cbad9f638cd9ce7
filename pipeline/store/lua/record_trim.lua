-- Shrink a settled record to what it keeps for good (after record.lua). ARGV[5] the cutoff: trim only a record
-- still settled, settled before it. Returns 1 when trimmed.
local values = redis.call('hmget', rec, 'dead_letter_id', unpack(COMPACT))
local cur = {}
for i, name in ipairs(COMPACT) do cur[name] = values[i + 1] end
local since = cur['settled_at']
if not since or not is_final(cur['state'], values[1], cur['discarded']) then
  redis.call('zrem', settled, rid)
  if since then redis.call('hdel', rec, 'settled_at') end
  return 0
end
if tonumber(since) > tonumber(ARGV[5]) then
  redis.call('zadd', settled, since, rid)
  return 0
end
local packed = {}
for i, name in ipairs(COMPACT) do
  local v = cur[name]
  if not v then v = '' elseif name == 'state' then v = CODES[v] or v elseif TIMES[name] then v = to36(tonumber(v)) end
  packed[i] = v
end
redis.call('hset', kept, entry, table.concat(packed, '|'))
redis.call('del', rec, attempts)
redis.call('zrem', inflight, rid)
redis.call('srem', idx, entry)
redis.call('srem', entryset, rid)
redis.call('zrem', settled, rid)
return 1
