-- release(): the node stops (Ctrl-C, -x, the end of its run): the units it holds go back to
-- the queue's head at once, for others to take without waiting for the lease to expire, and
-- it no longer counts as alive. Returns how many units went back.
local held = key('held:' .. node)
local released = 0
for _, id in ipairs(redis.call('SMEMBERS', held)) do
  if redis.call('HGET', key('owner'), id) == node then
    redis.call('HDEL', key('owner'), id)
    redis.call('ZREM', key('running'), id)
    redis.call('LPUSH', key('queue'), id)
    released = released + 1
  end
end
redis.call('DEL', held, key('alive:' .. node))
keep('queue')
return released
