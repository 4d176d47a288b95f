-- mailbox: the mailbox's part of a send. Check the suppression of the
-- exact address, the resend cooldown of the send's purpose, the gap since
-- the mailbox's last send (any purpose) and its rolling hour of sends and,
-- when all pass, record the send in the cooldown and the hour. The hour
-- of sends also holds the gap: its newest member is the last send. Happy
-- path of a new mailbox: PTTL, SET, ZRANGE, ZADD, PEXPIRE.
--
-- KEYS[1] suppression of the exact address, KEYS[2] cooldown (of the
-- send's purpose), KEYS[3] hour of sends (all in the mailbox's slot, tag
-- m:<mailbox id>)
-- ARGV[1] now ms, ARGV[2] the send's nonce, ARGV[3] cooldown ms (0 off),
-- ARGV[4] cap of the hour (0 off), ARGV[5] window ms, ARGV[6] gap ms (0
-- off; at most the window)
-- Reply: {'ok'}; or the suppression {'suppressed', ms left (-1: no
-- expiry)}; or every limit that refuses, as pairs {name, ms, name, ms...}:
-- 'cooldown' (ms left), 'gap' (ms until the gap since the last send has
-- passed), 'address' (ms until the oldest send leaves the window). A
-- refusal records nothing.
-- Runs after count.lua.
local now, nonce, cooldown = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local cap, width, gap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local s = redis.call('PTTL', KEYS[1])
if s > 0 or s == -1 then return {'suppressed', s} end
local refused, set = {}, false
if cooldown > 0 then
  if redis.call('SET', KEYS[2], nonce, 'NX', 'PX', cooldown) then
    set = true
  else
    local left = redis.call('PTTL', KEYS[2])
    if left > 0 then
      refused[#refused + 1], refused[#refused + 2] = 'cooldown', left
    else
      redis.call('SET', KEYS[2], nonce, 'PX', cooldown) -- a cooldown without expiry is no cooldown
      set = true
    end
  end
end
if cap > 0 or gap > 0 then
  local n, oldest, newest = count(KEYS[3], now - width)
  if gap > 0 and newest and newest + gap > now then
    refused[#refused + 1], refused[#refused + 2] = 'gap', newest + gap - now
  end
  if cap > 0 and n >= cap then
    refused[#refused + 1], refused[#refused + 2] = 'address', math.max(oldest + width - now, 1)
  end
end
if #refused > 0 then
  if set then redis.call('DEL', KEYS[2]) end
  return refused
end
if cap > 0 or gap > 0 then
  redis.call('ZADD', KEYS[3], now, nonce)
  redis.call('PEXPIRE', KEYS[3], width)
end
return {'ok'}
