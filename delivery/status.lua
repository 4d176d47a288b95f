-- status: read a code's delivery status and the code's remaining lifetime.
--
-- KEYS[1] code, KEYS[2] status (both in the code's slot)
-- ARGV none
-- Reply: {the status hash as a flat field, value list, the code's PTTL}
return {redis.call('HGETALL', KEYS[2]), redis.call('PTTL', KEYS[1])}
