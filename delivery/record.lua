-- record: write how an attempt of a task ended into an existing status (a
-- status that is gone, with its code verified or expired, stays gone).
-- The task's own record (sent:<task>, the dedup of its re-runs) is always
-- written; the other fields only while the status names the task, or no
-- task, or was written by an older send step (a nonce, see begin.lua): a
-- later send of the code owns the status, and an older task's end must
-- not say it ended. A state a report about the send wrote (bounced,
-- complained: see report.lua) stays: a DSN from a quick relay can be taken
-- before the worker records the acceptance it follows. Happy path: HMGET,
-- HSET, HDEL.
--
-- KEYS[1] status
-- ARGV[1] the task ('' none: the fields are written whatever the status
-- names), ARGV[2] the task's own field ('' none), ARGV[3] its value, then
-- field, value pairs; an empty value deletes the field
-- Reply: 1 recorded, 0 no status
local st = redis.call('HMGET', KEYS[1], 'state', 'task', 'nonce')
if not st[1] then return 0 end
local set, del = {}, {}
if ARGV[2] ~= '' then set[1], set[2] = ARGV[2], ARGV[3] end
local reported = st[1] == 'bounced' or st[1] == 'complained'
if ARGV[1] == '' or not st[2] or st[2] == '' or st[2] == ARGV[1] or st[3] then
  for i = 4, #ARGV, 2 do
    if reported and ARGV[i] == 'state' then
      -- the report's state stays
    elseif ARGV[i + 1] == '' then
      del[#del + 1] = ARGV[i]
    else
      set[#set + 1] = ARGV[i]
      set[#set + 1] = ARGV[i + 1]
    end
  end
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if #del > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end
return 1
