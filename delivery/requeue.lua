-- requeue: make a task the one to mail a send whose task was lost (the
-- same task ID again, or a new one in place of a task asynq holds active
-- and no worker runs), if the status is still as the reconciler read it
-- and the code lives. It counts the send's requeues, and refuses past
-- the bound. A task replaced by a new one is marked so (replaced:<id>):
-- should asynq ever run it, begin finds it superseded. Happy path: HMGET,
-- PTTL, HSET.
--
-- KEYS[1] code, KEYS[2] status (both in the code's slot)
-- ARGV[1] the task the status named when read, ARGV[2] its attempts then
-- ('' none), ARGV[3] the task to queue (ARGV[1] again, or a new one),
-- ARGV[4] its queue, ARGV[5] now ms, ARGV[6] the most requeues of one send
-- Reply: {'ok', ms left (-1: no expiry)}, {'changed'} (a worker or a
-- send wrote the status since), {'gone'} (the code is), {'given_up'}
local st = redis.call('HMGET', KEYS[2], 'task', 'attempts', 'state', 'requeued')
if st[1] ~= ARGV[1] or (st[2] or '') ~= ARGV[2] then return {'changed'} end
if st[3] ~= 'queued' and st[3] ~= 'sending' and st[3] ~= 'retrying' then return {'changed'} end
local left = redis.call('PTTL', KEYS[1])
if left == -2 then return {'gone'} end
local n = tonumber(st[4]) or 0
if n >= tonumber(ARGV[6]) then return {'given_up'} end
local set = {'state', 'queued', 'task', ARGV[3], 'queue', ARGV[4], 'requeued', n + 1, 'requeued_at', ARGV[5]}
if ARGV[3] ~= ARGV[1] then set[#set + 1], set[#set + 2] = 'replaced:' .. ARGV[1], '1' end
redis.call('HSET', KEYS[2], unpack(set))
return {'ok', left}
