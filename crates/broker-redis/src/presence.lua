-- Presence of one room, atomically (every key has the room's hash tag).
-- KEYS[1] sb:{room}:p        user -> connections on every node
-- KEYS[2] sb:{room}:p:<node> user -> connections on that node (dropped when the node dies)
-- KEYS[3] sb:{room}:n        user -> display name (users that gave one)
-- KEYS[4] sb:{room}:c        connections in the room
-- KEYS[5] sb:{room}:q:<node> hash: `synced`, the sequence number of the node's last sync;
--                            `applied`, the highest of its joins and leaves applied
-- ARGV[1] 'join' | 'leave' | 'sync' | 'drop' (every entry of the node: it died)
-- join:  ARGV[2] user, ARGV[3] '1' with a name, ARGV[4] the name, ARGV[5] sequence number
--        -> {1 if it is the user's first connection on any node else 0, connections}
-- leave: ARGV[2] user, ARGV[3] sequence number
--        -> {1 if it was the user's last connection on any node else 0, connections}
-- sync:  ARGV[2] sequence number, then user, count, name triples: the node's connections
--        in the room are exactly these (a join or leave numbered up to it is in them, and is
--        ignored if it comes later); a name ('' for none) is recorded for a user who has
--        none (restored after Redis lost the room; a name already there is the latest
--        join's and stays). A sync older than a change already applied (a retry that came
--        late) is refused: -> {}, and the next one corrects.
--        -> {users that appeared, users that vanished, connections}
-- drop:  -> the users who have no connection left
-- No key expires but the sequence numbers (a day after the last sync, a minute once the
-- node has nobody left in the room: later changes of that time are numbered higher): the
-- others are deleted when they empty, and a dead node's entries by 'drop'.
local op = ARGV[1]
local function seq_of(field)
  return tonumber(redis.call('HGET', KEYS[5], field) or '0')
end
-- Whether a join or leave numbered seq is already in the last sync; else it is recorded
-- as applied.
local function counted(seq)
  seq = tonumber(seq)
  if seq <= seq_of('synced') then
    return true
  end
  if seq > seq_of('applied') then
    redis.call('HSET', KEYS[5], 'applied', seq)
    if redis.call('PTTL', KEYS[5]) < 0 then
      redis.call('PEXPIRE', KEYS[5], 86400000)
    end
  end
  return false
end
local function connections()
  return tonumber(redis.call('GET', KEYS[4]) or '0')
end
-- Move user's connections on every node by diff (the name goes with the last one); the
-- totals before and after.
local function move_user(user, diff)
  local total = redis.call('HINCRBY', KEYS[1], user, diff)
  if total <= 0 then
    redis.call('HDEL', KEYS[1], user)
    redis.call('HDEL', KEYS[3], user)
  end
  return total - diff, total
end
-- Move the room's connection count by diff (deleted at 0); the count after.
local function move_connections(diff)
  local conns = redis.call('INCRBY', KEYS[4], diff)
  if conns <= 0 then
    redis.call('DEL', KEYS[4])
    conns = 0
  end
  return conns
end
if op == 'join' then
  if counted(ARGV[5]) then
    return {0, connections()}
  end
  local user = ARGV[2]
  local _, total = move_user(user, 1)
  redis.call('HINCRBY', KEYS[2], user, 1)
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[3], user, ARGV[4])
  end
  return {total == 1 and 1 or 0, move_connections(1)}
end
if op == 'leave' then
  if counted(ARGV[3]) then
    return {0, connections()}
  end
  local user = ARGV[2]
  local here = tonumber(redis.call('HGET', KEYS[2], user) or '0')
  if here <= 0 then
    return {0, connections()}
  end
  if here == 1 then
    redis.call('HDEL', KEYS[2], user)
  else
    redis.call('HINCRBY', KEYS[2], user, -1)
  end
  local _, total = move_user(user, -1)
  return {total <= 0 and 1 or 0, move_connections(-1)}
end
if op == 'sync' then
  local seq = tonumber(ARGV[2])
  if seq < seq_of('applied') then
    return {}
  end
  if seq > seq_of('synced') then
    redis.call('HSET', KEYS[5], 'synced', seq)
  end
  redis.call('PEXPIRE', KEYS[5], #ARGV > 2 and 86400000 or 60000)
  local had = {}
  local entries = redis.call('HGETALL', KEYS[2])
  for i = 1, #entries, 2 do
    had[entries[i]] = tonumber(entries[i + 1])
  end
  local want, names = {}, {}
  for i = 3, #ARGV, 3 do
    want[ARGV[i]] = tonumber(ARGV[i + 1])
    if ARGV[i + 2] ~= '' then
      names[ARGV[i]] = ARGV[i + 2]
    end
  end
  local appeared, vanished = {}, {}
  local delta = 0
  for user, n in pairs(want) do
    local diff = n - (had[user] or 0)
    if diff ~= 0 then
      local before, total = move_user(user, diff)
      if total > 0 and before <= 0 then
        table.insert(appeared, user)
      elseif total <= 0 and before > 0 then
        table.insert(vanished, user)
      end
      redis.call('HSET', KEYS[2], user, n)
      delta = delta + diff
    end
    if n > 0 and names[user] then
      redis.call('HSETNX', KEYS[3], user, names[user])
    end
  end
  for user, n in pairs(had) do
    if want[user] == nil then
      local _, total = move_user(user, -n)
      if total <= 0 then
        table.insert(vanished, user)
      end
      redis.call('HDEL', KEYS[2], user)
      delta = delta - n
    end
  end
  return {appeared, vanished, move_connections(delta)}
end
if op == 'drop' then
  local entries = redis.call('HGETALL', KEYS[2])
  local gone = {}
  for i = 1, #entries, 2 do
    local n = tonumber(entries[i + 1])
    local _, total = move_user(entries[i], -n)
    move_connections(-n)
    if total <= 0 then
      table.insert(gone, entries[i])
    end
  end
  redis.call('DEL', KEYS[2], KEYS[5])
  return gone
end
return redis.error_reply('unknown presence operation')
