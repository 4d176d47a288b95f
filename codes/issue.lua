-- issue: get the live code or create one, and mark the delivery status
-- queued by this send, naming the task that will mail it.
--
-- A live code is never extended; a key without expiry (left by an older
-- writer that crashed between SET and EXPIRE) or with one longer than the
-- configured lifetime is given the configured lifetime. With replace
-- (sealed codes, whose plain code nobody can read back to mail again) a
-- live code's value becomes the new one, keeping its remaining lifetime
-- and attempts. A new code starts with no wrong attempts and a fresh
-- status; a resent one keeps both, less what the last send's failure or
-- bounce said. The status names the send: by its task ('task'), with the
-- task's queue, the mail's locale and the sealed code (what a task can be
-- made again from, package reconcile); a send without a task by a random
-- nonce ('nonce'), as older versions named every send. A field this send
-- has no value for is removed. Happy path of a new code: SET, DEL, HSET,
-- PEXPIRE.
--
-- With hold, a live code is only looked at: nothing is written, and the
-- reply says how long it lives. A send whose limits are decided in the
-- same pipeline holds, so that a send they refuse never touches a code
-- and a status that another send may be mailing or verifying; once
-- admitted it issues again without hold. A new code is made either way
-- (a refusal takes it back: unissue).
--
-- KEYS[1] code, KEYS[2] attempts, KEYS[3] status (all in the code's slot)
-- ARGV[1] new value, ARGV[2] lifetime ms, ARGV[3] the field that names
-- the send ('task' or 'nonce'), ARGV[4] its value, ARGV[5] now ms,
-- ARGV[6] status linger ms, ARGV[7] replace ('1' or '0'), ARGV[8] the
-- task's queue, ARGV[9] locale ('' default), ARGV[10] the sealed code (''
-- for plain codes), ARGV[11] hold ('1' or '0')
-- Reply: {value, ms left, created (1 made, 0 reused, -1 held: a live code
-- looked at, nothing written, every other value ''), value replaced ('' if none),
-- then the status's state, task, nonce, queue, locale, sealed, queued_at,
-- failure, reply, dsn and diagnostic before ('' each if none)}: all but
-- the first three are what unissue needs to take this send back.
local ttl = tonumber(ARGV[2])
local code = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl, 'GET')
local left, created, replaced, prev = ttl, 1, '', {}
local set = {'state', 'queued', ARGV[3], ARGV[4], 'queued_at', ARGV[5]}
local unset = {'failure', 'reply', 'dsn', 'diagnostic'}
unset[5] = ARGV[3] == 'task' and 'nonce' or 'task'
for i, name in ipairs({'queue', 'locale', 'sealed'}) do
  local v = ARGV[7 + i]
  if v == '' then
    unset[#unset + 1] = name
  else
    set[#set + 1], set[#set + 2] = name, v
  end
end
if code then
  created = 0
  left = redis.call('PTTL', KEYS[1])
  if ARGV[11] == '1' then
    if left < 0 or left > ttl then left = ttl end
    local reply = {'', left, -1}
    for i = 4, 15 do reply[i] = '' end
    return reply
  end
  if left < 0 or left > ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
    left = ttl
  end
  if ARGV[7] == '1' then
    replaced = code
    code = ARGV[1]
    redis.call('SET', KEYS[1], code, 'KEEPTTL')
  end
  prev = redis.call('HMGET', KEYS[3], 'state', 'task', 'nonce', 'queue', 'locale', 'sealed', 'queued_at', 'failure',
    'reply', 'dsn', 'diagnostic')
  redis.call('HDEL', KEYS[3], unpack(unset))
else
  code = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
end
redis.call('HSET', KEYS[3], unpack(set))
redis.call('PEXPIRE', KEYS[3], left + tonumber(ARGV[6]))
local reply = {code, left, created, replaced}
for i = 1, 11 do reply[4 + i] = prev[i] or '' end
return reply
