-- peek: read a live code and its remaining lifetime; writes nothing.
--
-- KEYS[1] code
-- ARGV none
-- Reply: {value, ms left (-1: no expiry)}, or nil when there is no code
local code = redis.call('GET', KEYS[1])
if not code then return false end
return {code, redis.call('PTTL', KEYS[1])}
