-- Write some fields of a record (after record.lua). ARGV after the common four: the number of field/value
-- pairs, the pairs, then the fields to clear. Returns 1 when the record just settled.
rehydrate()
local old = redis.call('hget', rec, 'state')
local n, i = tonumber(ARGV[5]), 6
if n > 0 then redis.call('hset', rec, unpack(ARGV, i, i + 2 * n - 1)) end
i = i + 2 * n
if #ARGV >= i then redis.call('hdel', rec, unpack(ARGV, i, #ARGV)) end
return settle(old)
