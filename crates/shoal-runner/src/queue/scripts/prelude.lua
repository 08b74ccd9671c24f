-- Shared by every script (shoal's queue, docs/queue.md). ARGV[1] is the build's key prefix,
-- ARGV[2] the keys' time to live in milliseconds, ARGV[3] the calling node (or ''), ARGV[4]
-- the lease in milliseconds, ARGV[5] a JSON array of the units the node knows it holds; the
-- script's own arguments follow. Keys are built from the
-- prefix, so the queue needs a standalone Redis (or one hash slot: the prefix holds {build}).
local p = ARGV[1]
local ttl = tonumber(ARGV[2])
local node = ARGV[3]
local lease = tonumber(ARGV[4])
local known = cjson.decode(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function key(name) return p .. name end

-- Every key of a build lives as long as the build is in use, then expires.
local function keep(...)
  for _, name in ipairs({...}) do redis.call('PEXPIRE', key(name), ttl) end
end

-- The caller is alive: the leases it knows it holds are renewed, and it counts as a node
-- that can take a retry. A lease it does not know of (its reply was lost with the connection)
-- is not renewed: it expires and is taken over, by this node or another.
local function heartbeat()
  if node == '' then return end
  redis.call('SET', key('alive:' .. node), '1', 'PX', lease)
  redis.call('HSET', key('nodes'), node, now)
  for _, id in ipairs(known) do
    if redis.call('HGET', key('owner'), id) == node then
      redis.call('ZADD', key('running'), 'XX', now + lease, id)
    else
      redis.call('SREM', key('held:' .. node), id)
    end
  end
  keep('nodes', 'held:' .. node)
end
