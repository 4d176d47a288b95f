-- mailbox: the mailbox's part of a send. Check the suppression of the
-- exact address, the resend cooldown and the rolling hour of sends of a
-- mailbox and, when all pass, record the send in the cooldown and the hour. Happy path of a new
-- mailbox: PTTL, SET, ZRANGE, ZADD, PEXPIRE.
--
-- KEYS[1] suppression of the exact address, KEYS[2] cooldown (of the
-- send's purpose), KEYS[3] hour of sends (all in the mailbox's slot, tag
-- m:<mailbox id>)
-- ARGV[1] now ms, ARGV[2] the send's nonce, ARGV[3] cooldown ms (0 off),
-- ARGV[4] cap of the hour (0 off), ARGV[5] window ms
-- Reply: {'ok'}, or a refusal {'suppressed', ms left (-1: no expiry)},
-- {'cooldown', ms left}, {'address', ms until the oldest send leaves the
-- window}
-- Runs after count.lua.
local now, nonce, cooldown = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local cap, width = tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('PTTL', KEYS[1])
if s > 0 or s == -1 then return {'suppressed', s} end
if cooldown > 0 and not redis.call('SET', KEYS[2], nonce, 'NX', 'PX', cooldown) then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then return {'cooldown', left} end
  redis.call('SET', KEYS[2], nonce, 'PX', cooldown) -- a cooldown without expiry is no cooldown
end
if cap > 0 then
  local n, oldest = count(KEYS[3], now - width)
  if n >= cap then
    if cooldown > 0 then redis.call('DEL', KEYS[2]) end
    return {'address', math.max(oldest + width - now, 1)}
  end
  redis.call('ZADD', KEYS[3], now, nonce)
  redis.call('PEXPIRE', KEYS[3], width)
end
return {'ok'}
