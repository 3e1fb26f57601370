-- A room whose Redis lost its last writes but kept the room (an AOF fsync'd every second
-- and a crash, a failover to a lagging replica): its offset went back below `floor`, an
-- offset a node saw in the same epoch. Offsets would be handed out again for other
-- messages, and everyone who saw the lost ones would skip the new ones as repeats. So the
-- room moves to a new epoch (its history starts over; positions in the old one resync),
-- unless another node did it first or the room moved on by itself.
-- KEYS[1] meta hash sb:{room}:m, KEYS[2] stream sb:{room}:s
-- ARGV[1] the epoch the caller saw, ARGV[2] floor (the caller's position in it),
-- ARGV[3] the new epoch, ARGV[4] idle expiry of the room's keys in ms
-- Returns the room's epoch after the call (false for a room Redis no longer has).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
if epoch == ARGV[1] and offset < tonumber(ARGV[2]) then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return epoch
