-- One publish, atomically: dedup check, epoch, offset, history append, fan-out.
-- KEYS[1] meta hash   sb:{room}:m  (epoch, offset)
-- KEYS[2] stream      sb:{room}:s  (entry id 0-<offset>; d = the message, k = its type, t = its timestamp, o = its origin)
-- KEYS[3] dedup key   sb:{room}:d:<sender>:<id>  (unused when ARGV[7] is '0')
-- ARGV[1] epoch candidate (used when the room has none: new or lost)
-- ARGV[2] prefix, ARGV[3] between, ARGV[4] suffix, ARGV[5] '1' when the offset's hole is first
-- ARGV[6] history length (MAXLEN ~), ARGV[7] dedup window in ms ('0': no dedup)
-- ARGV[8] channel, ARGV[9] envelope head (origin and kind, see envelope.rs)
-- ARGV[10] idle expiry of the room's keys in ms, ARGV[11] the message's type
-- ARGV[12] the origin connection (`<node>.<conn>` or empty; kept so a replay honours it)
-- ARGV[13] the publishing node's epoch in the room ('' for none), ARGV[14] the last offset
--          it saw there: the floor (rollover.lua says why)
-- ARGV[15] 'SPUBLISH' in a Redis Cluster (sharded pub/sub: the channel is in the room's
--          slot), 'PUBLISH' on one server
-- Returns {1, offset, epoch, timestamp} or, for a repeated id, {0, first offset, epoch}.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
-- A new epoch, from offset 1, for:
-- * a new room, or one whose meta hash is gone (expired or evicted): entries its stream may
--   still hold belong to the lost epoch, and their ids would refuse the new offsets;
-- * a room that lost writes the publishing node saw (its offset in the node's epoch is
--   below the floor): reusing their offsets would have the message skipped as a repeat
--   (its members are reset by the epoch change).
if not epoch or (epoch == ARGV[13] and tonumber(redis.call('HGET', KEYS[1], 'offset') or '0') < tonumber(ARGV[14])) then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
if ARGV[7] ~= '0' then
  local first = redis.call('GET', KEYS[3])
  if first then
    return {0, tonumber(first), epoch}
  end
end
-- The offset is stored only after the append: a script's writes are not rolled back when a
-- later command fails, and an offset counted for an entry that was never written would be
-- a gap no reader can fill.
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0') + 1
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ts_text = string.format('%d', ts)
local offset_text = string.format('%d', offset)
local message
if ARGV[5] == '1' then
  message = ARGV[2] .. offset_text .. ARGV[3] .. ts_text .. ARGV[4]
else
  message = ARGV[2] .. ts_text .. ARGV[3] .. offset_text .. ARGV[4]
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '0-' .. offset_text, 'd', message, 'k', ARGV[11], 't', ts_text, 'o', ARGV[12])
redis.call('HSET', KEYS[1], 'offset', offset)
if ARGV[7] ~= '0' then
  redis.call('SET', KEYS[3], offset_text, 'PX', ARGV[7])
end
redis.call('PEXPIRE', KEYS[1], ARGV[10])
redis.call('PEXPIRE', KEYS[2], ARGV[10])
redis.call(ARGV[15], ARGV[8], epoch .. '\n' .. offset_text .. '\n' .. ts_text .. '\n' .. ARGV[9] .. message)
return {1, offset, epoch, ts}
