-- count: the rolling-window count that mailbox.lua and window.lua share;
-- the Go code puts it before each of them (not a script of its own).
--
-- count(key, since, prefix) reads the window at key (a sorted set: members
-- named by the requests, scored by their time in ms), drops the members
-- at or before since when there are any, and returns how many are left,
-- the oldest one's time, the newest one's, and the newest one's whose name
-- starts with prefix (each nil when none; prefix nil: no such search).
-- Commands: ZRANGE, and ZREMRANGEBYSCORE only when something left the
-- window.
local function count(key, since, prefix)
  local seen = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local n, oldest, newest, mine, stale = 0, nil, nil, nil, false
  for i = 2, #seen, 2 do
    local at = tonumber(seen[i])
    if at > since then
      n = n + 1
      oldest = oldest or at
      newest = at
      if prefix and string.sub(seen[i - 1], 1, #prefix) == prefix then mine = at end
    else
      stale = true
    end
  end
  if stale then redis.call('ZREMRANGEBYSCORE', key, '-inf', since) end
  return n, oldest, newest, mine
end
