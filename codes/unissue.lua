-- unissue: take back what issue did for one send, if no later send took
-- the status over: a code it created goes (with its attempts and status),
-- a reused code's status returns to the state and the send it had before
-- (its task or nonce, queue, locale, sealed code and time, and the last
-- failure or bounce that the issue cleared), and a value
-- it replaced comes back if the code still holds this send's.
--
-- KEYS[1] code, KEYS[2] attempts, KEYS[3] status (all in the code's slot)
-- ARGV[1] the field that names the send ('task' or 'nonce'), ARGV[2] its
-- value, ARGV[3] created ('1' or '0'), ARGV[4] the send's value, ARGV[5]
-- the value it replaced ('' if none), ARGV[6] to ARGV[16] the status's
-- state, task, nonce, queue, locale, sealed, queued_at, failure, reply,
-- dsn and diagnostic before ('' each if none): all from issue's reply
-- Reply: 1 taken back, 0 a later send owns the status
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
if ARGV[5] ~= '' and redis.call('GET', KEYS[1]) == ARGV[4] then
  redis.call('SET', KEYS[1], ARGV[5], 'KEEPTTL')
end
local set, unset = {}, {}
for i, name in ipairs({'state', 'task', 'nonce', 'queue', 'locale', 'sealed', 'queued_at', 'failure', 'reply', 'dsn',
  'diagnostic'}) do
  local prev = ARGV[5 + i]
  if prev == '' then
    unset[#unset + 1] = name
  else
    set[#set + 1], set[#set + 2] = name, prev
  end
end
if #set > 0 then redis.call('HSET', KEYS[3], unpack(set)) end
if #unset > 0 then redis.call('HDEL', KEYS[3], unpack(unset)) end
return 1
