-- lift: lift one suppression entry if it is still the entry a scan read,
-- so that an entry added again since (a new refusal) stays. Happy path:
-- GET, DEL.
--
-- KEYS[1] suppression (delivery.SuppressKey)
-- ARGV[1] its value as the scan read it
-- Reply: 1 lifted, 0 gone or replaced since
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
