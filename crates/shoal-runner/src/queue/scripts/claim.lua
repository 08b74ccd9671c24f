-- claim(fingerprint, info, units): the first node of a build pushes its work, atomically; every
-- node gets back the build's fingerprint and info to compare with its own collection.
-- units: a JSON array of [id, "index,index,..."], in the order they are to go out.
local fingerprint, info, units = ARGV[6], ARGV[7], ARGV[8]
local existing = redis.call('HMGET', key('meta'), 'fingerprint', 'info')
if existing[1] then
  return {0, existing[1], existing[2]}
end
redis.call('HSET', key('meta'), 'fingerprint', fingerprint, 'info', info, 'leader', node,
  'created', now)
local list = cjson.decode(units)
for _, unit in ipairs(list) do
  redis.call('RPUSH', key('queue'), unit[1])
  redis.call('HSET', key('units'), unit[1], unit[2])
end
redis.call('SET', key('total'), #list)
keep('meta', 'queue', 'units', 'total')
heartbeat()
return {1, fingerprint, info}
