-- A recovery record's expiry or delete, by the node that owns it (records.rs).
-- KEYS[1] the record (sb:sio:<pid>), whose value starts with its owner: '<node>\n'
-- ARGV[1] the owner prefix ('<node>\n'), ARGV[2] the expiry in ms, or '' to delete
-- Returns 1 when applied, 0 when the record is gone or another node owns it now (it
-- recovered the socket first, and the late expiry of its old node must not shorten the
-- live socket's record).
local record = redis.call('GET', KEYS[1])
if not record or string.sub(record, 1, #ARGV[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
