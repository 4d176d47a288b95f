-- unmailbox: take one send out of a mailbox's hour of sends, which holds
-- its cooldown and gap too.
--
-- KEYS[1] suppression (unused), KEYS[2] hour of sends (the keys of
-- mailbox.lua)
-- ARGV[1] the send's member (<purpose>/<nonce>)
-- Reply: 1
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
