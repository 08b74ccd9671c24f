-- exchange(acks, want): the node's one round trip. It renews the node's leases, records the
-- units it finished (only the lease holder's results count: a late one is a duplicate), and
-- leases it up to `want` more units: expired leases of other nodes first, then the queue's
-- head, where a retry waits for another node than the one it failed on while one is alive.
-- ARGV[6] is `want`; the acknowledgements follow, flat (no JSON to decode): for each unit,
-- its id, the number of its results, then a test index and its result JSON per result.
-- Returns {units, duplicates, queued, running, nodes}; units: [[id, tests, taken from], ...].
local want = tonumber(ARGV[6])
heartbeat()
local duplicates, acked = 0, 0
local at = 7
while at <= #ARGV do
  local id, count = ARGV[at], tonumber(ARGV[at + 1])
  at = at + 2
  acked = acked + 1
  local mine = redis.call('HGET', key('owner'), id) == node
  if mine then
    redis.call('HDEL', key('owner'), id)
    redis.call('ZREM', key('running'), id)
    redis.call('SREM', key('held:' .. node), id)
    redis.call('SADD', key('done'), id)
  end
  for _ = 1, count do
    local index, result = ARGV[at], ARGV[at + 1]
    at = at + 2
    -- A test has one outcome: the first lease holder's to report it.
    if mine and redis.call('HSETNX', key('results'), index, result) == 1 then
      redis.call('RPUSH', key('order'), index)
    else
      redis.call('RPUSH', key('duplicates'), result)
      duplicates = duplicates + 1
    end
  end
end

if acked > 0 then redis.call('HSET', key('meta'), 'acknowledged', now) end

local got = {}
local function take(id, from)
  redis.call('ZADD', key('running'), now + lease, id)
  redis.call('HSET', key('owner'), id, node)
  redis.call('SADD', key('held:' .. node), id)
  table.insert(got, {id, redis.call('HGET', key('units'), id), from})
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', key('running'), '-inf', now, 'LIMIT', 0, want)) do
  -- Expired: its holder stalled or died, or (this node) lost the reply that leased it.
  local holder = redis.call('HGET', key('owner'), id) or ''
  redis.call('SREM', key('held:' .. holder), id)
  redis.call('HINCRBY', key('takeovers'), id, 1)
  take(id, holder)
end
local others_alive = nil
local function another_node_alive()
  if others_alive == nil then
    others_alive = false
    for _, other in ipairs(redis.call('HKEYS', key('nodes'))) do
      if other ~= node and redis.call('EXISTS', key('alive:' .. other)) == 1 then
        others_alive = true
        break
      end
    end
  end
  return others_alive
end
local skipped = {}
while #got < want do
  local id = redis.call('LPOP', key('queue'))
  if not id then break end
  if redis.call('HGET', key('avoid'), id) == node and another_node_alive() then
    table.insert(skipped, id)
  else
    take(id, '')
  end
end
for i = #skipped, 1, -1 do redis.call('LPUSH', key('queue'), skipped[i]) end
keep('queue', 'running', 'owner', 'done', 'results', 'order', 'duplicates', 'takeovers',
  'held:' .. node)
local nodes = 0
for _, other in ipairs(redis.call('HKEYS', key('nodes'))) do
  if redis.call('EXISTS', key('alive:' .. other)) == 1 then nodes = nodes + 1 end
end
return {got, duplicates, redis.call('LLEN', key('queue')), redis.call('ZCARD', key('running')), nodes}
