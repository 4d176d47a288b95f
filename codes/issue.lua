-- issue: get the live code or create one, and mark the delivery status
-- queued by this send.
--
-- A live code is never extended; a key without expiry (left by an older
-- writer that crashed between SET and EXPIRE) or with one longer than the
-- configured lifetime is given the configured lifetime. With replace
-- (sealed codes, whose plain code nobody can read back to mail again) a
-- live code's value becomes the new one, keeping its remaining lifetime
-- and attempts. A new code starts with no wrong attempts and a fresh
-- status; a resent one keeps both, less what the last send's failure or
-- bounce said. Happy path of a new code: SET, DEL,
-- HSET, PEXPIRE.
--
-- KEYS[1] code, KEYS[2] attempts, KEYS[3] status (all in the code's slot)
-- ARGV[1] new value, ARGV[2] lifetime ms, ARGV[3] this send's nonce,
-- ARGV[4] now ms, ARGV[5] status linger ms, ARGV[6] replace ('1' or '0')
-- Reply: {value, ms left, created (1 or 0), value replaced ('' if none),
-- status state before ('' if none), status nonce before ('' if none)}: the
-- last three are what unissue needs to take this send back.
local ttl = tonumber(ARGV[2])
local code = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl, 'GET')
local left, created, replaced, prev = ttl, 1, '', {}
if code then
  created = 0
  left = redis.call('PTTL', KEYS[1])
  if left < 0 or left > ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
    left = ttl
  end
  if ARGV[6] == '1' then
    replaced = code
    code = ARGV[1]
    redis.call('SET', KEYS[1], code, 'KEEPTTL')
  end
  prev = redis.call('HMGET', KEYS[3], 'state', 'nonce')
  redis.call('HDEL', KEYS[3], 'failure', 'reply', 'dsn', 'diagnostic')
else
  code = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
end
redis.call('HSET', KEYS[3], 'state', 'queued', 'nonce', ARGV[3], 'queued_at', ARGV[4])
redis.call('PEXPIRE', KEYS[3], left + tonumber(ARGV[5]))
return {code, left, created, replaced, prev[1] or '', prev[2] or ''}
