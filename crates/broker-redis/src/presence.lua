-- Presence of one room, atomically (every key has the room's hash tag).
-- KEYS[1] sb:{room}:p        user -> connections on every node
-- KEYS[2] sb:{room}:p:<node> user -> connections on that node (dropped when the node dies)
-- KEYS[3] sb:{room}:n        user -> display name (users that gave one)
-- KEYS[4] sb:{room}:c        connections in the room
-- ARGV[1] 'join' | 'leave' | 'drop' (every entry of the node: it died)
-- join:  ARGV[2] user, ARGV[3] '1' with a name, ARGV[4] the name
--        -> {1 if it is the user's first connection on any node else 0, connections}
-- leave: ARGV[2] user
--        -> {1 if it was the user's last connection on any node else 0, connections}
-- drop:  -> the users who have no connection left
-- No key expires: each is deleted when it empties, and a dead node's entries by 'drop'.
local op = ARGV[1]
if op == 'join' then
  local user = ARGV[2]
  local total = redis.call('HINCRBY', KEYS[1], user, 1)
  redis.call('HINCRBY', KEYS[2], user, 1)
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[3], user, ARGV[4])
  end
  local conns = redis.call('INCR', KEYS[4])
  return {total == 1 and 1 or 0, conns}
end
local function remove(user, n)
  local total = redis.call('HINCRBY', KEYS[1], user, -n)
  if total <= 0 then
    redis.call('HDEL', KEYS[1], user)
    redis.call('HDEL', KEYS[3], user)
  end
  local conns = redis.call('DECRBY', KEYS[4], n)
  if conns <= 0 then
    redis.call('DEL', KEYS[4])
    conns = 0
  end
  return total <= 0, conns
end
if op == 'leave' then
  local user = ARGV[2]
  local here = tonumber(redis.call('HGET', KEYS[2], user) or '0')
  if here <= 0 then
    return {0, tonumber(redis.call('GET', KEYS[4]) or '0')}
  end
  if here == 1 then
    redis.call('HDEL', KEYS[2], user)
  else
    redis.call('HINCRBY', KEYS[2], user, -1)
  end
  local last, conns = remove(user, 1)
  return {last and 1 or 0, conns}
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
  redis.call('DEL', KEYS[2])
  return gone
end
return redis.error_reply('unknown presence operation')
