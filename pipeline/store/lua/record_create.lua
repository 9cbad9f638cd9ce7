-- A record for an entry's first event (after record.lua). KEYS[9] is the set of groups; ARGV after the
-- common four: field/value pairs. A trimmed record of the same id is replaced (its state leaves the counters).
local old = redis.call('hget', rec, 'state')
if not old then
  local packed = redis.call('hget', kept, entry)
  if packed then
    old = unpacked(packed)['state']
    redis.call('hdel', kept, entry)
  end
end
redis.call('hset', rec, unpack(ARGV, 5, #ARGV))
redis.call('sadd', idx, entry)
redis.call('sadd', KEYS[9], group)
redis.call('sadd', entryset, rid)
return settle(old)
