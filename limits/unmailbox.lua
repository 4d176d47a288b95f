-- unmailbox: take one send out of a mailbox's cooldown and hour of sends.
--
-- KEYS[1] suppression (unused), KEYS[2] cooldown, KEYS[3] hour of sends
-- (the keys of mailbox.lua)
-- ARGV[1] the send's nonce
-- Reply: 1
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
