-- Forget a token unless another process replaced it. KEYS[1] the token, ARGV[1] its fingerprint.
if redis.call('hget', KEYS[1], 'fp') == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
