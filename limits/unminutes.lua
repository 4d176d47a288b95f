-- unminutes: take one send out of the minute counters it was counted in,
-- when the minute is not over.
--
-- KEYS[1] the domain's minute, KEYS[2] the global minute (the keys of
-- minutes.lua)
-- ARGV[1] domain counted, ARGV[2] global counted ('1' or '0')
-- Reply: 1
for i = 1, 2 do
  if ARGV[i] == '1' and redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECR', KEYS[i]) end
end
return 1
