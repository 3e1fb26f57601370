-- A connection count shared by the nodes: one hash per address or user, a field per node
-- (so a dead node's share can be dropped). One key, so it runs in a Redis Cluster: the
-- node's index of the hashes it counts in (sb:{nodes}:<node>:limits) is kept by the node
-- itself, outside this script (limits.rs).
-- KEYS[1] sb:limit:<ip|user>:<value>   node -> connections
-- ARGV[1] 'acquire' | 'release', ARGV[2] node, ARGV[3] the limit (acquire)
-- acquire -> 1 counted, 0 refused (the limit is reached over every node)
-- release -> the node's remaining count
if ARGV[1] == 'acquire' then
  local total = 0
  for _, n in ipairs(redis.call('HVALS', KEYS[1])) do
    total = total + tonumber(n)
  end
  if total >= tonumber(ARGV[3]) then
    return 0
  end
  redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
  return 1
end
if ARGV[1] == 'release' then
  local left = redis.call('HINCRBY', KEYS[1], ARGV[2], -1)
  if left <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[2])
    return 0
  end
  return left
end
return redis.error_reply('unknown limits operation')
