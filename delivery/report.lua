-- report: record what came back about a sent mail (a bounce or a
-- complaint) in its status, if the status still follows that send: the
-- task it names is the send's (the send ID is the first 16 hex digits of
-- the SHA-1 of the task ID, returnpath.SendID). A status that is gone or
-- that a later send took over stays as it is. Happy path: HGET, HSET,
-- HDEL.
--
-- KEYS[1] status
-- ARGV[1] send id, ARGV[2] state (bounced or complained), ARGV[3] the DSN's
-- status code ('' none), ARGV[4] the diagnostic, masked ('' none)
-- Reply: the task the status names when recorded, '' when not (no status
-- or another send's)
local task = redis.call('HGET', KEYS[1], 'task')
if not task or string.sub(redis.sha1hex(task), 1, 16) ~= ARGV[1] then return '' end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
for i, field in ipairs({'dsn', 'diagnostic'}) do
  if ARGV[i + 2] == '' then
    redis.call('HDEL', KEYS[1], field)
  else
    redis.call('HSET', KEYS[1], field, ARGV[i + 2])
  end
end
return task
