-- Shared by the record scripts (record_write, record_trim).
-- KEYS: the record, kept, idx, settled, counts, entry set, last successes, in flight, attempts.
-- ARGV: record id, group, entry id, now, then the script's own.
-- Every command counts (Redis's statistics count the ones a script runs): each script reads what it needs in
-- one HMGET and writes each key at most once.
local rec, kept, idx, settled, counts, entryset = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local successes, inflight, attempts = KEYS[7], KEYS[8], KEYS[9]
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

local function present(value)
  return value and value ~= ''
end

-- settled for good: a final state, or dead with the dead letter it was discarded with
local function is_final(state, dead_letter, discarded)
  if state == 'confirmed' or state == 'exported' or state == 'skipped' then return true end
  return state == 'dead' and present(dead_letter) and dead_letter == discarded
end

-- on its way (not settled, not dead, not waiting for an export): in the index where a lost chain is found
local function in_flight(state, step)
  return (state == 'received' or state == 'posted' or state == 'waiting_retry') and step ~= 'pending'
end
