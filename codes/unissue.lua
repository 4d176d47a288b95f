-- unissue: take back what issue did for one send, if no later send took
-- the status over: a code it created goes (with its attempts and status),
-- a reused code's status returns to the state and the send it had before,
-- and a value it replaced comes back if the code still holds this send's.
--
-- KEYS[1] code, KEYS[2] attempts, KEYS[3] status (all in the code's slot)
-- ARGV[1] the send's nonce, ARGV[2] created ('1' or '0'), ARGV[3] the
-- send's value, ARGV[4] the value it replaced ('' if none), ARGV[5] the
-- state before ('' if none), ARGV[6] the nonce before ('' if none): all
-- from issue's reply
-- Reply: 1 taken back, 0 a later send owns the status
if redis.call('HGET', KEYS[3], 'nonce') ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[1]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[4], 'KEEPTTL')
end
local fields = {'state', 'nonce'}
for i = 1, 2 do
  local prev = ARGV[4 + i]
  if prev == '' then redis.call('HDEL', KEYS[3], fields[i]) else redis.call('HSET', KEYS[3], fields[i], prev) end
end
return 1
