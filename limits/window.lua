-- window: check a rolling window of a client (its sends or its verifies)
-- and, when it has room, record one more. Happy path of a new window:
-- ZRANGE, ZADD, PEXPIRE.
--
-- KEYS[1] window (a sorted set: members the requests' nonces, scored by
-- their time; in the client's slot, tag c:<client>)
-- ARGV[1] now ms, ARGV[2] the request's nonce, ARGV[3] cap, ARGV[4] window
-- ms, ARGV[5] the limit's name
-- Reply: {'ok'}, or a refusal {name, ms until the oldest request leaves the
-- window}
-- Runs after count.lua.
local now, cap, width = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n, oldest = count(KEYS[1], now - width)
if n >= cap then return {ARGV[5], math.max(oldest + width - now, 1)} end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], width)
return {'ok'}
