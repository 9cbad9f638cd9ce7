-- Note a token's use unless another process replaced it. KEYS[1] the token, ARGV[1] its fingerprint, ARGV[2] now.
if redis.call('hget', KEYS[1], 'fp') == ARGV[1] then redis.call('hset', KEYS[1], 'used_at', ARGV[2]) return 1 end
return 0
