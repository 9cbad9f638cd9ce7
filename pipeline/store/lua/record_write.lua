-- Write a record (after record.lua). KEYS[10] is the set of groups. ARGV after the common four: the mode
-- ('create'; 'create_new': only when no record of that id exists, full or trimmed; 'set'; or 'finish': a step
-- ended, its state follows from its progress), the generation the write is for ('' for any: a write for an
-- older generation, whose chain a re-validation or a replay replaced, returns {-2, state} and writes nothing),
-- an attempt to append as JSON ('' for none), the number of field/value pairs, the pairs, then the fields to
-- clear. A 'create_new' that finds the record returns {-1, its state} ('trimmed' for a trimmed one) and writes
-- nothing.
-- One HMGET reads what the bookkeeping needs; then the record is written once (HSET, HDEL of fields present),
-- the counters move on a change of state, the in-flight index follows entering or leaving flight and retry times,
-- and the settled index and the group's last success follow settling. Returns {1 when the record just settled
-- else 0, its state after the write}.
local mode, generation, attempt, n = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local first_pair = 9
local first_clear = first_pair + 2 * n
local BOOK = {'state', 'step', 'next_retry_at', 'settled_at', 'dead_letter_id', 'discarded'}

local names = {}
for _, name in ipairs(BOOK) do names[#names + 1] = name end
for i = first_clear, #ARGV do names[#names + 1] = ARGV[i] end
if mode == 'finish' then
  names[#names + 1] = 'confirmed_at'; names[#names + 1] = 'posted_at'; names[#names + 1] = 'provider_id'
end
if attempt ~= '' then names[#names + 1] = 'attempts_count' end
if generation ~= '' then names[#names + 1] = 'generation' end
local values = redis.call('hmget', rec, unpack(names))
local cur = {}
for i, name in ipairs(names) do cur[name] = values[i] end

if generation ~= '' and cur['state'] and (cur['generation'] or '0') ~= generation then
  return {-2, cur['state']}
end

local sets, dels, moved = {}, {}, false
if mode == 'create_new' then
  if cur['state'] or redis.call('hexists', kept, entry) == 1 then return {-1, cur['state'] or 'trimmed'} end
  mode = 'create'
elseif not cur['state'] then
  local packed = redis.call('hget', kept, entry)
  if packed then
    local back = unpacked(packed)
    redis.call('hdel', kept, entry)
    if mode == 'create' then
      -- a new first event for a trimmed entry: the old state leaves the counters, nothing else comes back
      cur['state'] = back['state']
    else
      -- a trimmed record written again becomes a full one, with a fresh window
      for name, value in pairs(back) do sets[#sets + 1] = name; sets[#sets + 1] = value end
      for _, name in ipairs(names) do cur[name] = back[name] or false end
      cur['settled_at'] = stamp
      sets[#sets + 1] = 'settled_at'; sets[#sets + 1] = stamp
      redis.call('zadd', settled, stamp, rid)
      redis.call('sadd', idx, entry)
      redis.call('sadd', entryset, rid)
      moved = true
    end
  end
end

local after = {}
for name, value in pairs(cur) do after[name] = value end
for i = first_pair, first_clear - 1, 2 do
  sets[#sets + 1] = ARGV[i]; sets[#sets + 1] = ARGV[i + 1]
  after[ARGV[i]] = ARGV[i + 1]
end
for i = first_clear, #ARGV do
  if cur[ARGV[i]] then dels[#dels + 1] = ARGV[i] end
  after[ARGV[i]] = false
end
local settled_state = after['state'] == 'confirmed' or after['state'] == 'exported' or after['state'] == 'skipped'
if mode == 'finish' and not settled_state then
  local state = 'received'
  if present(after['confirmed_at']) then state = 'confirmed'
  elseif present(after['posted_at']) or present(after['provider_id']) then state = 'posted' end
  sets[#sets + 1] = 'state'; sets[#sets + 1] = state
  after['state'] = state
end
if attempt ~= '' then
  local length = redis.call('rpush', attempts, attempt)
  if length > __ATTEMPTS_KEPT__ then redis.call('ltrim', attempts, -__ATTEMPTS_KEPT__, -1) end
  sets[#sets + 1] = 'attempts_count'; sets[#sets + 1] = (tonumber(cur['attempts_count']) or 0) + 1
end
if mode == 'create' then
  redis.call('sadd', idx, entry)
  redis.call('sadd', KEYS[10], group)
  redis.call('sadd', entryset, rid)
end

local old, new = cur['state'], after['state']
if old ~= new then
  if old then redis.call('hincrby', counts, group .. ':' .. old, -1) end
  if new then redis.call('hincrby', counts, group .. ':' .. new, 1) end
end

local was, is = in_flight(old, cur['step']), in_flight(new, after['step'])
if is then
  -- scored when it enters flight and whenever its next retry moves; the resume sweep re-scores a record it finds
  -- has moved since (store.records.rescore), so a step's ordinary progress costs no index write
  if not was or moved or cur['next_retry_at'] ~= after['next_retry_at'] then
    local due = tonumber(stamp)
    local retry = tonumber(after['next_retry_at'] or '')
    if retry and retry > due then due = retry end
    redis.call('zadd', inflight, due, rid)
  end
elseif was then
  redis.call('zrem', inflight, rid)
end

local just_settled = 0
if is_final(new, after['dead_letter_id'], after['discarded']) then
  if not after['settled_at'] then
    if new ~= 'dead' then redis.call('hset', successes, group, stamp) end
    sets[#sets + 1] = 'settled_at'; sets[#sets + 1] = stamp
    redis.call('zadd', settled, stamp, rid)
    just_settled = 1
  end
elseif after['settled_at'] then
  dels[#dels + 1] = 'settled_at'
  redis.call('zrem', settled, rid)
end

if #sets > 0 then redis.call('hset', rec, unpack(sets)) end
if #dels > 0 then redis.call('hdel', rec, unpack(dels)) end
return {just_settled, after['state'] or ''}
