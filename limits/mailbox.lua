-- mailbox: the mailbox's part of a send. Check the suppression of the
-- exact address, the resend cooldown of the send's purpose, the gap since
-- the mailbox's last send (any purpose) and its rolling hour of sends and,
-- when all pass, record the send in the hour. The hour of sends holds the
-- cooldown and the gap too: each member is named <purpose>/<nonce> and
-- scored by its time, so the newest member of the purpose starts its
-- cooldown and the newest of all the gap. Happy path of a new mailbox:
-- PTTL, ZRANGE, ZADD, PEXPIRE.
--
-- KEYS[1] suppression of the exact address, KEYS[2] hour of sends (both in
-- the mailbox's slot, tag m:<mailbox id>)
-- ARGV[1] now ms, ARGV[2] the send's member (<purpose>/<nonce>), ARGV[3]
-- cooldown ms (0 off; at most the window), ARGV[4] cap of the hour (0
-- off), ARGV[5] window ms (at least the cooldown and the gap), ARGV[6] gap
-- ms (0 off; at most the window), ARGV[7] the purpose's prefix of members
-- (<purpose>/)
-- Reply: {'ok'}; or the suppression {'suppressed', ms left (-1: no
-- expiry)}; or every limit that refuses, as pairs {name, ms, name, ms...}:
-- 'cooldown' (ms left), 'gap' (ms until the gap since the last send has
-- passed), 'address' (ms until the oldest send leaves the window). A
-- refusal records nothing.
-- Runs after count.lua.
local now, member, cooldown = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local cap, width, gap, prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local s = redis.call('PTTL', KEYS[1])
if s > 0 or s == -1 then return {'suppressed', s} end
if cap == 0 and gap == 0 and cooldown == 0 then return {'ok'} end
local n, oldest, newest, mine = count(KEYS[2], now - width, prefix)
local refused = {}
if cooldown > 0 and mine and mine + cooldown > now then
  refused[#refused + 1], refused[#refused + 2] = 'cooldown', mine + cooldown - now
end
if gap > 0 and newest and newest + gap > now then
  refused[#refused + 1], refused[#refused + 2] = 'gap', newest + gap - now
end
if cap > 0 and n >= cap then
  refused[#refused + 1], refused[#refused + 2] = 'address', math.max(oldest + width - now, 1)
end
if #refused > 0 then return refused end
redis.call('ZADD', KEYS[2], now, member)
redis.call('PEXPIRE', KEYS[2], width)
return {'ok'}
