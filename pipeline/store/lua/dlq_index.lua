-- A dead letter entering (ARGV[1] = 1) or leaving (-1) the indexes of one status. KEYS: the all-by-time index,
-- facet counts, cause groups, newest of each group. ARGV: sign, id, created_at, group field, the facet index
-- prefix, then facet/value pairs. Counts that reach zero are removed so the facet lists stay short.
local sign, id, created, group = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local all, facets, groups, newest, prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[5]
local function bump(hash, field)
  if redis.call('hincrby', hash, field, sign) <= 0 then redis.call('hdel', hash, field) end
end
if sign > 0 then
  if redis.call('zadd', all, 'NX', created, id) == 0 then return 0 end
else
  if redis.call('zrem', all, id) == 0 then return 0 end
end
for i = 6, #ARGV, 2 do
  local facet, value = ARGV[i], ARGV[i + 1]
  bump(facets, facet .. '=' .. value)
  local key = prefix .. facet .. ':' .. value
  if sign > 0 then redis.call('zadd', key, created, id) else redis.call('zrem', key, id) end
end
bump(groups, group)
local seen = redis.call('hget', newest, group)
if sign > 0 then
  if not seen or tonumber(string.match(seen, '^[^|]*')) <= tonumber(created) then
    redis.call('hset', newest, group, created .. '|' .. id)
  end
elseif seen and string.sub(seen, -#id - 1) == '|' .. id then
  redis.call('hdel', newest, group)
end
return 1
