-- unwindow: take one request out of a rolling window.
--
-- KEYS[1] window (the key of window.lua)
-- ARGV[1] the request's nonce
-- Reply: the number of members removed
return redis.call('ZREM', KEYS[1], ARGV[1])
