-- Claim the start of a write to a provider on a record (the "post started" marker), atomically: KEYS[1] the
-- record. ARGV: the marker field, the marker value the caller last saw ('' for none), the new marker value,
-- now (written as updated_at), then the fields whose presence says the write already happened.
-- Returns {'claimed', new} when the marker was as seen and the write had not happened (the marker is set);
-- {'done', marker} when it had; {'taken', marker} when another run moved the marker since; {'gone', ''} when
-- the record does not exist.
local names = {'state', ARGV[1]}
for i = 5, #ARGV do names[#names + 1] = ARGV[i] end
local values = redis.call('hmget', KEYS[1], unpack(names))
if not values[1] then return {'gone', ''} end
local marker = values[2] or ''
for i = 3, #values do
  if values[i] and values[i] ~= '' then return {'done', marker} end
end
local seen = ARGV[2]
if marker ~= seen and not (marker ~= '' and seen ~= '' and tonumber(marker) == tonumber(seen)) then
  return {'taken', marker}
end
redis.call('hset', KEYS[1], ARGV[1], ARGV[3], 'updated_at', ARGV[4])
return {'claimed', ARGV[3]}
