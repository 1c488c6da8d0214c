-- worker.lua: the worker registry (spec 01 §6.18, §6.22, §14), mirroring
-- crates/ff-engine/src/worker.rs.
--
-- Namespace convention: KEYS[1] = the namespace's instance-id index
-- `<prefix>ff:workers:{w:NS}:ids` (members scored 0, read in byte order);
-- ARGV[1] = now, ARGV[2] = the record key base `<prefix>ff:workers:{w:NS}:w:`
-- (the instance id is appended). Records are kept until marked dead, so an
-- expired registration still counts for `mark_worker_dead`.

local function worker_key(args, instance)
  return args[2] .. instance
end

-- A live record's fields, or nil.
local function live_worker(key, now)
  local rec = redis.call('HMGET', key, 'worker_id', 'alive_until_ms', 'registered_at_ms', 'liveness_ttl_ms')
  if not rec[1] or now > num(rec[2]) then
    return nil
  end
  return rec
end

-- ff_register_worker. ARGV[3…]: instance, worker id, liveness ttl, lanes JSON, capabilities JSON.
local function register_worker(keys, args)
  local now = now_ms(args[1])
  local key = worker_key(args, args[3])
  local existing = live_worker(key, now)
  if existing and existing[1] ~= args[4] then
    error(reject('invalid_input', 'instance_id reassigned'))
  end
  local registered_at = fmt(now)
  if existing then
    registered_at = existing[3]
  end
  redis.call('DEL', key)
  redis.call('HSET', key, 'worker_id', args[4], 'liveness_ttl_ms', args[5], 'lanes', args[6],
    'capabilities', args[7], 'registered_at_ms', registered_at, 'last_heartbeat_ms', fmt(now),
    'alive_until_ms', fmt(now + need_num(args, 5, 'liveness_ttl_ms')))
  redis.call('ZADD', keys[1], 0, args[3])
  if existing then
    return { 'refreshed' }
  end
  return { 'registered' }
end

-- ff_heartbeat_worker. ARGV[3]: instance.
local function heartbeat_worker(keys, args)
  local now = now_ms(args[1])
  local key = worker_key(args, args[3])
  local rec = live_worker(key, now)
  if rec == nil then
    return { 'not_registered' }
  end
  local alive_until = now + num(rec[4])
  redis.call('HSET', key, 'last_heartbeat_ms', fmt(now), 'alive_until_ms', fmt(alive_until))
  return { 'refreshed', fmt(alive_until) }
end

-- ff_mark_worker_dead. ARGV[3]: instance.
local function mark_worker_dead(keys, args)
  local existed = redis.call('DEL', worker_key(args, args[3]))
  redis.call('ZREM', keys[1], args[3])
  if existed == 1 then
    return { 'marked' }
  end
  return { 'not_registered' }
end

-- ff_list_workers (read-only): live instances after a cursor, up to limit.
-- ARGV[3…]: after ("" none), limit. Reply: {cursor ("" none), rows…}, each row
-- {instance, worker id, lanes JSON, capabilities JSON, last heartbeat, ttl, registered at}.
local function list_workers(keys, args)
  local now = now_ms(args[1])
  local limit = need_num(args, 4, 'limit')
  local after = args[3]
  local rows = {}
  -- Expired registrations are skipped, so read in pages until the page is full.
  while true do
    local min = '-'
    if after ~= '' then
      min = '(' .. after
    end
    local ids = redis.call('ZRANGEBYLEX', keys[1], min, '+', 'LIMIT', 0, limit + 1)
    for _, id in ipairs(ids) do
      after = id
      local key = worker_key(args, id)
      if live_worker(key, now) then
        if #rows == limit then
          local reply = { rows[#rows][1] }
          for _, r in ipairs(rows) do reply[#reply + 1] = r end
          return reply
        end
        local f = redis.call('HMGET', key, 'worker_id', 'lanes', 'capabilities', 'last_heartbeat_ms',
          'liveness_ttl_ms', 'registered_at_ms')
        rows[#rows + 1] = { id, f[1], f[2], f[3], f[4], f[5], f[6] }
      end
    end
    if #ids <= limit then
      local reply = { '' }
      for _, r in ipairs(rows) do reply[#reply + 1] = r end
      return reply
    end
  end
end

redis.register_function{function_name = 'ff_register_worker', flags = {},
  callback = function(k, a) return guard(register_worker, k, a, 7) end}
redis.register_function{function_name = 'ff_heartbeat_worker', flags = {},
  callback = function(k, a) return guard(heartbeat_worker, k, a, 3) end}
redis.register_function{function_name = 'ff_mark_worker_dead', flags = {},
  callback = function(k, a) return guard(mark_worker_dead, k, a, 3) end}
redis.register_function{function_name = 'ff_list_workers', flags = { 'no-writes' },
  callback = function(k, a) return guard(list_workers, k, a, 4) end}
