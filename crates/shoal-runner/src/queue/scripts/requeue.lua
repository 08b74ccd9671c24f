-- requeue(index, attempt, record, budget): a failed test runs again, at the queue's head, on
-- another node where one is alive, while the build's retry budget lasts. The failed attempt
-- is kept for the report. Returns 1 when it was requeued, 0 when the budget is spent.
local index, attempt, record, budget = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
heartbeat()
if tonumber(redis.call('GET', key('requeues')) or '0') >= budget then
  return 0
end
redis.call('INCR', key('requeues'))
local id = 'r' .. index .. '.' .. attempt
redis.call('HSET', key('units'), id, index)
redis.call('HSET', key('avoid'), id, node)
redis.call('LPUSH', key('queue'), id)
redis.call('INCR', key('total'))
redis.call('RPUSH', key('attempts'), record)
keep('requeues', 'units', 'avoid', 'queue', 'total', 'attempts')
return 1
