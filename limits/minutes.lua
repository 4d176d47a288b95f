-- minutes: check the per-domain and global caps of the current minute of
-- the clock and, when both have room, count one more send in each that is
-- on. Happy path: INCR (and PEXPIRE on the minute's first send) per cap.
--
-- KEYS[1] the domain's minute, KEYS[2] the global minute (both in the rate
-- slot, tag rate)
-- ARGV[1] domain cap, ARGV[2] global cap (0 off), ARGV[3] ms left in the
-- minute
-- Reply: {'ok'}, or a refusal {'domain' or 'global', ms left in the minute}
local caps, left = {tonumber(ARGV[1]), tonumber(ARGV[2])}, tonumber(ARGV[3])
local names = {'domain', 'global'}
for i = 1, 2 do
  if caps[i] > 0 then
    local n = redis.call('INCR', KEYS[i])
    if n == 1 then redis.call('PEXPIRE', KEYS[i], left + 1000) end
    if n > caps[i] then
      for j = 1, i do
        if caps[j] > 0 then redis.call('DECR', KEYS[j]) end
      end
      return {names[i], left}
    end
  end
end
return {'ok'}
