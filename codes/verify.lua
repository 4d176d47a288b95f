-- verify: compare each candidate (the code, or its MAC under each secret
-- when sealed) with the live value in constant time (every byte is looked
-- at whatever the first difference) and delete the code, its attempts and
-- its status on a match, so a code is used once. A wrong code counts an
-- attempt; the ARGV[1]th (when above 0) deletes the code and marks its
-- status exhausted (events' expiry check then knows it was not left to
-- expire). Called with a KEYS[4] (events on) the reply names the send too:
-- the task the status names, read before it is deleted; without it (events
-- off) the call is the same as before events existed.
--
-- KEYS[1] code, KEYS[2] attempts, KEYS[3] status (all in the code's slot),
-- KEYS[4] the status again, only to have the reply name the send
-- ARGV[1] max attempts (0: no cap), ARGV[2..] the candidates
-- Reply: 0 no code, 1 match (consumed), 2 mismatch, 3 mismatch that used up
-- the attempts (the code is deleted); with KEYS[4], {that number, the
-- status's task for 1 and 3 ('' none, and for 0 and 2)}
local function reply(n, named)
  if not KEYS[4] then return n end
  return {n, named and redis.call('HGET', KEYS[3], 'task') or ''}
end
local code = redis.call('GET', KEYS[1])
if not code then return reply(0) end
local match = false
for j = 2, #ARGV do
  local given = ARGV[j]
  local diff = 0
  if #code ~= #given then diff = 1 end
  for i = 1, #code do
    diff = bit.bor(diff, bit.bxor(string.byte(code, i), string.byte(given, i) or 0))
  end
  if diff == 0 then match = true end
end
if match then
  local r = reply(1, true)
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return r
end
local n = redis.call('INCR', KEYS[2])
local max = tonumber(ARGV[1])
if max > 0 and n >= max then
  redis.call('DEL', KEYS[1], KEYS[2])
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'exhausted', '1') end
  return reply(3, true)
end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
return reply(2)
