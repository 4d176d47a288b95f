-- verify: compare each candidate (the code, or its MAC under each secret
-- when sealed) with the live value in constant time (every byte is looked
-- at whatever the first difference) and delete the code, its attempts and
-- its status on a match, so a code is used once. A wrong code counts an
-- attempt; the ARGV[1]th (when above 0) deletes the code.
--
-- KEYS[1] code, KEYS[2] attempts, KEYS[3] status (all in the code's slot)
-- ARGV[1] max attempts (0: no cap), ARGV[2..] the candidates
-- Reply: 0 no code, 1 match (consumed), 2 mismatch, 3 mismatch that used up
-- the attempts (the code is deleted)
local code = redis.call('GET', KEYS[1])
if not code then return 0 end
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
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
local n = redis.call('INCR', KEYS[2])
local max = tonumber(ARGV[1])
if max > 0 and n >= max then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 3
end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
return 2
