-- count: the rolling-window count that mailbox.lua and window.lua share;
-- the Go code puts it before each of them (not a script of its own).
--
-- count(key, since) reads the window at key (a sorted set: members named
-- by the requests' nonces, scored by their time in ms), drops the members
-- at or before since when there are any, and returns how many are left,
-- the oldest one's time and the newest one's (nil when none). Commands:
-- ZRANGE, and ZREMRANGEBYSCORE only when something left the window.
local function count(key, since)
  local seen = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local n, oldest, newest, stale = 0, nil, nil, false
  for i = 2, #seen, 2 do
    local at = tonumber(seen[i])
    if at > since then
      n = n + 1
      oldest = oldest or at
      newest = at
    else
      stale = true
    end
  end
  if stale then redis.call('ZREMRANGEBYSCORE', key, '-inf', since) end
  return n, oldest, newest
end
