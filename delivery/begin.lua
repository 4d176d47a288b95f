-- begin: start a send attempt of a task. Nothing to do when the task
-- already sent its mail (a re-run after Redis lost the acknowledgement),
-- when the reconciler queued another task in its place (it found this one
-- held active by asynq with no worker on it: that one mails), or when the
-- code is gone (then an existing status says expired); else the attempt
-- is counted and the code comes back with its remaining lifetime. While
-- the status names this task (or no task, or was written by an older send
-- step, with a nonce) it also says sending, names the task and its queue
-- (where asynq keeps the next attempt's time) and when the attempt began;
-- an older send's task, still queued when a resend came, mails the same
-- code without taking the newer send's status over. Happy path: HMGET,
-- GET, PTTL, HSET.
--
-- KEYS[1] code, KEYS[2] status (both in the code's slot)
-- ARGV[1] task id ('' none), ARGV[2] task queue, ARGV[3] status lifetime ms
-- for a status key that has none yet (the code's ttl plus the linger),
-- ARGV[4] now ms
-- Reply: {'sent'}, {'superseded'}, {'gone'}, or {'live', value, ms left
-- (-1: no expiry)}
local st = redis.call('HMGET', KEYS[2], 'sent:' .. ARGV[1], 'state', 'queued_at', 'attempts', 'replaced:' .. ARGV[1],
  'task', 'nonce')
if ARGV[1] ~= '' then
  if st[1] then return {'sent'} end
  if st[5] then return {'superseded'} end
end
local exists = st[2] or st[3]
local code = redis.call('GET', KEYS[1])
if not code then
  if exists then redis.call('HSET', KEYS[2], 'state', 'expired') end
  return {'gone'}
end
local left = redis.call('PTTL', KEYS[1])
local attempts = (tonumber(st[4]) or 0) + 1
if not st[6] or st[6] == '' or st[6] == ARGV[1] or st[7] then
  redis.call('HSET', KEYS[2], 'state', 'sending', 'attempts', attempts, 'task', ARGV[1], 'queue', ARGV[2], 'began_at', ARGV[4])
else
  redis.call('HSET', KEYS[2], 'attempts', attempts)
end
if not exists then redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3])) end
return {'live', code, left}
