-- record: write how an attempt ended into an existing status (a status
-- that is gone, with its code verified or expired, stays gone). Happy
-- path: EXISTS, HSET, HDEL.
--
-- KEYS[1] status
-- ARGV field, value pairs; an empty value deletes the field
-- Reply: 1 recorded, 0 no status
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local set, del = {}, {}
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    del[#del + 1] = ARGV[i]
  else
    set[#set + 1] = ARGV[i]
    set[#set + 1] = ARGV[i + 1]
  end
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if #del > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end
return 1
