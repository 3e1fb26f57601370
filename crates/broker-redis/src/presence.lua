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
-- sync:  ARGV[2] sequence number, then user, count pairs: the node's connections in the
--        room are exactly these (a join or leave numbered up to it is in them, and is
--        ignored if it comes later). A sync older than a change already applied (a retry
--        that came late) is refused: -> {}, and the next one corrects.
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
if op == 'join' then
  if counted(ARGV[5]) then
    return {0, connections()}
  end
  local user = ARGV[2]
  local total = redis.call('HINCRBY', KEYS[1], user, 1)
  redis.call('HINCRBY', KEYS[2], user, 1)
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[3], user, ARGV[4])
  end
  local conns = redis.call('INCR', KEYS[4])
  return {total == 1 and 1 or 0, conns}
end
-- Take n of user's connections off the room's totals; true if none is left.
local function remove_counts(user, n)
  local total = redis.call('HINCRBY', KEYS[1], user, -n)
  if total <= 0 then
    redis.call('HDEL', KEYS[1], user)
    redis.call('HDEL', KEYS[3], user)
  end
  return total <= 0
end
local function remove(user, n)
  local last = remove_counts(user, n)
  local conns = redis.call('DECRBY', KEYS[4], n)
  if conns <= 0 then
    redis.call('DEL', KEYS[4])
    conns = 0
  end
  return last, conns
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
  local last, conns = remove(user, 1)
  return {last and 1 or 0, conns}
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
  local want = {}
  for i = 3, #ARGV, 2 do
    want[ARGV[i]] = tonumber(ARGV[i + 1])
  end
  local appeared, vanished = {}, {}
  local delta = 0
  for user, n in pairs(want) do
    local diff = n - (had[user] or 0)
    if diff ~= 0 then
      local total = redis.call('HINCRBY', KEYS[1], user, diff)
      if total > 0 and total - diff <= 0 then
        table.insert(appeared, user)
      elseif total <= 0 then
        redis.call('HDEL', KEYS[1], user)
        redis.call('HDEL', KEYS[3], user)
        if total - diff > 0 then
          table.insert(vanished, user)
        end
      end
      redis.call('HSET', KEYS[2], user, n)
      delta = delta + diff
    end
  end
  for user, n in pairs(had) do
    if want[user] == nil then
      local last = remove_counts(user, n)
      if last then
        table.insert(vanished, user)
      end
      redis.call('HDEL', KEYS[2], user)
      delta = delta - n
    end
  end
  local conns = redis.call('INCRBY', KEYS[4], delta)
  if conns <= 0 then
    redis.call('DEL', KEYS[4])
    conns = 0
  end
  return {appeared, vanished, conns}
end
if op == 'drop' then
  local entries = redis.call('HGETALL', KEYS[2])
  local gone = {}
  for i = 1, #entries, 2 do
    local last = remove(entries[i], tonumber(entries[i + 1]))
    if last then
      table.insert(gone, entries[i])
    end
  end
  redis.call('DEL', KEYS[2], KEYS[5])
  return gone
end
return redis.error_reply('unknown presence operation')
