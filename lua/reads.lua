-- reads.lua: read-only functions (spec 01 §16, §8.5, §11.3), flagged `no-writes`,
-- mirroring crates/ff-engine/src/reads.rs. They return raw records; the client
-- builds the typed read models.

-- ff_describe_execution: {core fields, current lease fields, tags}, each a flat
-- field/value list; an empty core list means the execution does not exist.
local function describe_execution(keys, args)
  local c = ctx_of(keys, args)
  local core = redis.call('HGETALL', c.core)
  if #core == 0 then
    return { {}, {}, {} }
  end
  return { core, redis.call('HGETALL', c.exec('lease:current')), redis.call('HGETALL', c.exec('tags')) }
end

-- ff_read_execution_context: {kind, payload, tag pairs…}, or {} when missing.
local function read_execution_context(keys, args)
  local c = ctx_of(keys, args)
  local kind = redis.call('HGET', c.core, 'execution_kind')
  if not kind then
    return {}
  end
  local reply = { kind, redis.call('GET', c.exec('payload')) or '' }
  for _, v in ipairs(redis.call('HGETALL', c.exec('tags'))) do
    reply[#reply + 1] = v
  end
  return reply
end

-- ff_get_execution_result: {result} or {}.
local function get_execution_result(keys, args)
  local c = ctx_of(keys, args)
  local r = redis.call('GET', c.exec('result'))
  if not r then
    return {}
  end
  return { r }
end

-- ff_get_execution_tag: {value} or {}. ARGV[5]: tag key.
local function get_execution_tag(keys, args)
  local c = ctx_of(keys, args)
  local v = redis.call('HGET', c.exec('tags'), args[5])
  if not v then
    return {}
  end
  return { v }
end

-- ff_read_lease_history: the JSON events, oldest first.
local function read_lease_history(keys, args)
  local c = ctx_of(keys, args)
  return redis.call('LRANGE', c.exec('lease:history'), 0, -1)
end

-- ff_list_executions (partition convention): ids after a cursor. ARGV[4…]: after ("" none), limit.
local function list_executions(keys, args)
  local p = partition_ctx(keys, args)
  local min = '-'
  if args[4] ~= '' then
    min = '(' .. args[4]
  end
  return redis.call('ZRANGEBYLEX', p.idx('all_executions'), min, '+', 'LIMIT', 0, need_num(args, 5, 'limit'))
end

-- ff_scan_eligible (partition convention): the head of a lane's eligible index. ARGV[4…]: lane, limit.
local function scan_eligible(keys, args)
  local p = partition_ctx(keys, args)
  return redis.call('ZRANGE', p.idx('lane:' .. args[4] .. ':eligible'), 0, need_num(args, 5, 'limit') - 1)
end

-- ff_list_expired_leases (partition convention): entries with expiry ≤ as_of strictly
-- after the (score, id) cursor, up to limit. ARGV[4…]: as_of, cursor score ("" none),
-- cursor id, limit. Each entry: {expires, id, lease id, epoch, instance, attempt index};
-- lease id "" when the execution no longer holds one.
local function list_expired_leases(keys, args)
  local p = partition_ctx(keys, args)
  local key = p.idx('lease_expiry')
  need_num(args, 4, 'as_of')
  opt_num_arg(args, 5, 'cursor_score')
  local limit = need_num(args, 7, 'limit')
  local rows = {}
  if args[5] ~= '' then
    -- Same score, members after the cursor id, then higher scores.
    local same = redis.call('ZRANGEBYSCORE', key, args[5], args[5], 'WITHSCORES')
    for i = 1, #same, 2 do
      if same[i] > args[6] and tonumber(same[i + 1]) <= tonumber(args[4]) then
        rows[#rows + 1] = { same[i], same[i + 1] }
      end
    end
    local rest = redis.call('ZRANGEBYSCORE', key, '(' .. args[5], args[4], 'WITHSCORES', 'LIMIT', 0, limit)
    for i = 1, #rest, 2 do
      rows[#rows + 1] = { rest[i], rest[i + 1] }
    end
  else
    local all = redis.call('ZRANGEBYSCORE', key, '-inf', args[4], 'WITHSCORES', 'LIMIT', 0, limit)
    for i = 1, #all, 2 do
      rows[#rows + 1] = { all[i], all[i + 1] }
    end
  end
  local out = {}
  for i = 1, math.min(#rows, limit) do
    local eid, score = rows[i][1], rows[i][2]
    local core = p.prefix .. 'ff:exec:' .. p.tag .. ':' .. eid .. ':core'
    local f = redis.call('HMGET', core, 'current_lease_id', 'current_lease_epoch', 'current_worker_instance_id',
      'current_attempt_index')
    out[#out + 1] = { fmt(tonumber(score)), eid, f[1] or '', f[2] or '0', f[3] or '', f[4] or '0' }
  end
  return out
end

-- ff_version: the library version the client must match.
local function version()
  return FF_LIBRARY_VERSION
end

local RO = { 'no-writes' }
redis.register_function{function_name = 'ff_describe_execution', flags = RO,
  callback = function(k, a) return guard(describe_execution, k, a, 4) end}
redis.register_function{function_name = 'ff_read_execution_context', flags = RO,
  callback = function(k, a) return guard(read_execution_context, k, a, 4) end}
redis.register_function{function_name = 'ff_get_execution_result', flags = RO,
  callback = function(k, a) return guard(get_execution_result, k, a, 4) end}
redis.register_function{function_name = 'ff_get_execution_tag', flags = RO,
  callback = function(k, a) return guard(get_execution_tag, k, a, 5) end}
redis.register_function{function_name = 'ff_read_lease_history', flags = RO,
  callback = function(k, a) return guard(read_lease_history, k, a, 4) end}
redis.register_function{function_name = 'ff_list_executions', flags = RO,
  callback = function(k, a) return guard(list_executions, k, a, 5) end}
redis.register_function{function_name = 'ff_scan_eligible', flags = RO,
  callback = function(k, a) return guard(scan_eligible, k, a, 5) end}
redis.register_function{function_name = 'ff_list_expired_leases', flags = RO,
  callback = function(k, a) return guard(list_expired_leases, k, a, 7) end}
redis.register_function{function_name = 'ff_version', flags = RO, callback = version}
