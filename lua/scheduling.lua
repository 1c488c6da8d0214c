-- scheduling.lua: grants, priority, progress, promotion, admission blocks and
-- the scanner passes (spec 01 §6.15–6.17, §6.19–6.20, §6.25–6.26, §9, §11),
-- mirroring crates/ff-engine/src/{scheduling,scanners}.rs.

local CAPS_TOKENS_MAX = 256
local CAPS_CSV_BYTES_MAX = 4096
local LANES_PER_PASS_MAX = 1024

-- Splits a capability CSV within bounds; raises invalid_capabilities naming the bound.
local function parse_csv(side, csv)
  if #csv > CAPS_CSV_BYTES_MAX then
    error(reject('invalid_capabilities', side .. ':too_many_bytes'))
  end
  local tokens = {}
  for t in string.gmatch(csv, '[^,]+') do
    tokens[#tokens + 1] = t
  end
  if #tokens > CAPS_TOKENS_MAX then
    error(reject('invalid_capabilities', side .. ':too_many_tokens'))
  end
  return tokens
end

-- The sorted, deduplicated CSV of required tokens the worker lacks, or nil.
local function missing_capabilities(core, worker_csv)
  local required = parse_csv('required', core.required_capabilities or '')
  local have = {}
  for _, t in ipairs(parse_csv('worker', worker_csv)) do
    have[t] = true
  end
  local missing, seen = {}, {}
  for _, t in ipairs(required) do
    if not have[t] and not seen[t] then
      seen[t] = true
      missing[#missing + 1] = t
    end
  end
  if #missing == 0 then
    return nil
  end
  table.sort(missing)
  return table.concat(missing, ',')
end

local function stamp_mismatch(c, core, now)
  core.last_capability_mismatch_at = fmt(now)
  core.last_mutation_at = fmt(now)
  put_core(c, core)
end

-- ARGV[5…] of both grants: worker id, instance, lane, capability hash, ttl,
-- route snapshot, admission summary, worker capability CSV.
local function write_grant(c, args, now)
  local expires = now + need_num(args, 9, 'grant_ttl_ms')
  local key = c.exec('claim_grant')
  redis.call('DEL', key)
  redis.call('HSET', key, 'worker_id', args[5], 'worker_instance_id', args[6], 'lane_id', args[7],
    'capability_hash', args[8], 'route_snapshot_json', args[10], 'admission_summary', args[11],
    'created_at', fmt(now), 'grant_expires_at', fmt(expires))
  return expires
end

-- ff_issue_claim_grant (§6.15).
local function issue_claim_grant(keys, args)
  local c = ctx_of(keys, args)
  need_num(args, 9, 'grant_ttl_ms')
  local now = c.now
  local core = must_load(c)
  if core.lifecycle_phase ~= 'runnable' or core.eligibility_state ~= 'eligible_now' then
    error(reject('execution_not_eligible'))
  end
  if live_grant(c, now) then
    error(reject('grant_already_exists'))
  end
  if not redis.call('ZSCORE', lane_key(c, core, 'eligible'), c.eid) then
    error(reject('execution_not_in_eligible_set'))
  end
  local missing = missing_capabilities(core, args[12])
  if missing then
    stamp_mismatch(c, core, now)
    error(reject('capability_mismatch', missing))
  end
  return { fmt(write_grant(c, args, now)) }
end

-- ff_issue_reclaim_grant (§6.20).
local function issue_reclaim_grant(keys, args)
  local c = ctx_of(keys, args)
  need_num(args, 9, 'grant_ttl_ms')
  local now = c.now
  local core = must_load(c)
  if core.lifecycle_phase ~= 'active' or (core.ownership_state ~= 'lease_expired_reclaimable'
      and core.ownership_state ~= 'lease_revoked') then
    return { 'not_reclaimable', 'execution_not_reclaimable' }
  end
  if live_grant(c, now) then
    error(reject('grant_already_exists'))
  end
  local missing = missing_capabilities(core, args[12])
  if missing then
    stamp_mismatch(c, core, now)
    return { 'not_reclaimable', 'capability_mismatch: ' .. missing }
  end
  return { 'granted', fmt(write_grant(c, args, now)), core.lane_id }
end

-- ff_change_priority (§6.16). ARGV[5]: the clamped priority.
local function change_priority(keys, args)
  local c = ctx_of(keys, args)
  need_num(args, 5, 'priority')
  local core = must_load(c)
  if core.lifecycle_phase ~= 'runnable' or core.eligibility_state ~= 'eligible_now' then
    error(reject('execution_not_eligible'))
  end
  local old = core.priority
  core.priority = args[5]
  core.last_mutation_at = fmt(c.now)
  add_eligible(c, core)
  put_core(c, core)
  return { old, core.priority }
end

-- ff_update_progress (§6.17). ARGV[5…]: lease id, epoch, pct ("" keep), message flag, message.
local function update_progress(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = must_load(c)
  if core.lifecycle_phase ~= 'active' then
    error(not_active(core))
  end
  if core.ownership_state == 'lease_revoked' then
    error(reject('lease_revoked'))
  end
  if num(core.lease_expires_at) <= now then
    error(reject('lease_expired'))
  end
  if core.current_lease_id ~= args[5] or s(core.current_lease_epoch or '0') ~= args[6] then
    error(reject('stale_lease'))
  end
  if args[7] ~= '' then
    core.progress_pct = args[7]
  end
  if args[8] == '1' then
    core.progress_message = args[9]
  end
  core.progress_updated_at = fmt(now)
  core.last_mutation_at = fmt(now)
  put_core(c, core)
  return { 'ok' }
end

-- The body of ff_promote_delayed, shared with the delayed-promoter scanner.
local function promote(c, lane, now)
  local delayed = c.lane(lane, 'delayed')
  local core = load_core(c)
  if core == nil then
    redis.call('ZREM', delayed, c.eid)
    return 'not_found_cleaned'
  end
  if core.lifecycle_phase ~= 'runnable' then
    redis.call('ZREM', delayed, c.eid)
    return 'not_runnable_cleaned'
  end
  if core.eligibility_state ~= 'not_eligible_until_time' then
    redis.call('ZREM', delayed, c.eid)
    return 'not_delayed_cleaned'
  end
  if num(core.delay_until) > now then
    return 'not_yet_due'
  end
  to_runnable(core, 'eligible_now', 'waiting_for_worker', '', core.attempt_state, now)
  core.delay_until = nil
  redis.call('ZREM', lane_key(c, core, 'delayed'), c.eid)
  add_eligible(c, core)
  put_core(c, core)
  return 'promoted'
end

-- ff_promote_delayed (§6.19). ARGV[5]: lane.
local function promote_delayed(keys, args)
  local c = ctx_of(keys, args)
  return { promote(c, args[5], c.now) }
end

local BLOCK_TARGETS = {
  waiting_for_budget = { 'blocked_by_budget', 'blocked:budget' },
  waiting_for_quota = { 'blocked_by_quota', 'blocked:quota' },
  waiting_for_capable_worker = { 'blocked_by_route', 'blocked:route' },
  paused_by_operator = { 'blocked_by_operator', 'blocked:operator' },
  paused_by_policy = { 'blocked_by_lane_state', nil },
}

-- ff_block_execution_for_admission (§6.26). ARGV[5…]: reason, detail.
local function block_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = must_load(c)
  if core.lifecycle_phase == 'terminal' then
    error(not_active(core))
  end
  if core.lifecycle_phase ~= 'runnable' then
    error(reject('execution_not_eligible'))
  end
  local target = BLOCK_TARGETS[args[5]]
  if target == nil then
    error(reject('invalid_blocking_reason', args[5]))
  end
  -- A live grant's holder already passed admission; blocking now would fail its claim.
  if live_grant(c, now) then
    error(reject('grant_already_exists'))
  end
  local attempt_state = core.attempt_state
  if attempt_state == 'none' then
    attempt_state = 'pending_first_attempt'
  end
  remove_from_runnable_indexes(c, core)
  to_runnable(core, target[1], args[5], args[6], attempt_state, now)
  -- The stored public state is `rate_limited` for every admission block (spec 01 §4.2).
  core.public_state = 'rate_limited'
  if target[2] then
    redis.call('ZADD', lane_key(c, core, target[2]), fmt(now), c.eid)
  end
  put_core(c, core)
  return { 'ok' }
end

local UNBLOCK_SOURCES = {
  blocked_by_budget = 'blocked:budget',
  blocked_by_quota = 'blocked:quota',
  blocked_by_route = 'blocked:route',
  blocked_by_operator = 'blocked:operator',
}

-- ff_unblock_execution (§6.25). ARGV[5]: expected reason ("" any).
local function unblock_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = must_load(c)
  if core.lifecycle_phase ~= 'runnable' then
    error(reject('execution_not_eligible'))
  end
  local source = UNBLOCK_SOURCES[core.eligibility_state]
  if source == nil then
    error(reject('execution_not_eligible'))
  end
  if args[5] ~= '' and args[5] ~= core.blocking_reason then
    error(reject('execution_not_eligible'))
  end
  local attempt_state = core.attempt_state
  if attempt_state == 'none' then
    attempt_state = 'pending_first_attempt'
  end
  to_runnable(core, 'eligible_now', 'waiting_for_worker', '', attempt_state, now)
  redis.call('ZREM', lane_key(c, core, source), c.eid)
  add_eligible(c, core)
  put_core(c, core)
  return { 'ok' }
end

local function due_members(key, now, batch)
  return redis.call('ZRANGEBYSCORE', key, '-inf', fmt(now), 'LIMIT', 0, batch)
end

-- How long a terminal execution is kept by default, in ms (spec 03 §7.3.10).
local RETENTION_DEFAULT_MS = 86400000

-- The execution's retention: the default, or a longer `stream_policy.retention_ttl_ms`.
local function retention_of(c)
  local raw = redis.call('GET', c.exec('policy'))
  local ok, policy = pcall(cjson.decode, raw or '')
  local ttl = 0
  if ok and type(policy) == 'table' and type(policy.stream_policy) == 'table' then
    ttl = tonumber(policy.stream_policy.retention_ttl_ms) or 0
  end
  return math.max(ttl, RETENTION_DEFAULT_MS)
end

-- Deletes a signal record and its payload.
local function purge_signal(c, sid)
  local key = c.prefix .. 'ff:signal:' .. c.tag .. ':' .. sid
  redis.call('DEL', key, key .. ':payload')
end

-- Deletes everything an execution owns (ff_engine::scanners::purge): waitpoints and their
-- signals, its signals, attempts and their streams, suspension and dependency records, its
-- own index entries, then its keys.
local function purge_execution(c, core)
  for _, wp in ipairs(redis.call('ZRANGE', c.exec('waitpoints'), 0, -1)) do
    local key = c.prefix .. 'ff:wp:' .. c.tag .. ':' .. wp
    for _, sid in ipairs(redis.call('ZRANGE', key .. ':signals', 0, -1)) do
      purge_signal(c, sid)
    end
    redis.call('ZREM', c.idx('pending_waitpoint_expiry'), wp)
    redis.call('DEL', key, key .. ':signals')
  end
  for _, sid in ipairs(redis.call('ZRANGE', c.exec('signals'), 0, -1)) do
    purge_signal(c, sid)
  end
  for _, index in ipairs(redis.call('ZRANGE', c.exec('attempts'), 0, -1)) do
    local stream = c.prefix .. 'ff:stream:' .. c.tag .. ':' .. c.eid .. ':' .. index
    redis.call('DEL', c.attempt(tonumber(index)), c.attempt(tonumber(index)) .. ':summary', stream, stream .. ':meta')
  end
  for _, sfx in ipairs({ 'all_executions', 'lease_expiry', 'attempt_timeout', 'execution_deadline',
      'suspension_timeout' }) do
    redis.call('ZREM', c.idx(sfx), c.eid)
  end
  redis.call('ZREM', lane_key(c, core, 'terminal'), c.eid)
  for _, sfx in ipairs({ 'waitpoints', 'signals', 'attempts', 'suspension:current', 'deps:meta', 'payload',
      'result', 'policy', 'tags', 'lease:current', 'lease:history', 'lease:history:seq', 'claim_grant', 'core' }) do
    redis.call('DEL', c.exec(sfx))
  end
end

-- The retention trimmer (spec 03 §7.3.10): purges terminal executions past their retention.
local function retention_pass(p, now, batch)
  local examined, acted = 0, 0
  local cutoff = now - RETENTION_DEFAULT_MS
  for _, lane in ipairs(redis.call('ZRANGE', p.idx('lanes'), 0, LANES_PER_PASS_MAX - 1)) do
    local terminal = p.idx('lane:' .. lane .. ':terminal')
    for _, eid in ipairs(due_members(terminal, cutoff, batch)) do
      examined = examined + 1
      local c = ctx_make(p.prefix, p.tag, eid, now)
      local core = load_core(c)
      if not core or not core.completed_at then
        redis.call('ZREM', terminal, eid)
      elseif now - num(core.completed_at) >= retention_of(c) then
        purge_execution(c, core)
        redis.call('ZREM', terminal, eid)
        acted = acted + 1
      end
    end
  end
  return examined, acted
end

-- One bounded scanner pass over a partition (spec 01 §6.13, §6.19, §6.9).
-- ARGV[4…]: scanner kind, batch. Replies {examined, acted}.
local function run_scanner(keys, args)
  local p = partition_ctx(keys, args)
  local now, kind, batch = p.now, args[4], need_num(args, 5, 'batch')
  local examined, acted = 0, 0
  local function for_due(key, act)
    for _, eid in ipairs(due_members(key, now, batch)) do
      examined = examined + 1
      if act(ctx_make(p.prefix, p.tag, eid, now)) then
        acted = acted + 1
      end
    end
  end
  if kind == 'lease_expiry' then
    for_due(p.idx('lease_expiry'), function(c) return mark_if_due(c, now) == 'marked_expired' end)
  elseif kind == 'delayed_promoter' then
    local lanes = redis.call('ZRANGE', p.idx('lanes'), 0, LANES_PER_PASS_MAX - 1)
    for _, lane in ipairs(lanes) do
      for_due(p.idx('lane:' .. lane .. ':delayed'), function(c) return promote(c, lane, now) == 'promoted' end)
    end
  elseif kind == 'attempt_timeout' or kind == 'execution_deadline' then
    for_due(p.idx(kind), function(c)
      local key = c.core
      local reply = expire_execution({ key }, { fmt(now), p.prefix, p.tag, c.eid, kind })
      return reply[1] == 'expired'
    end)
  elseif kind == 'suspension_timeout' then
    for_due(p.idx(kind), function(c) return SP.expire_suspension_in(c, now)[1] == 'expired' end)
  elseif kind == 'pending_waitpoint_expiry' then
    -- Members are waitpoint ids; closing one needs only the partition.
    for _, wp_id in ipairs(due_members(p.idx(kind), now, batch)) do
      examined = examined + 1
      if SP.close_waitpoint_in(p.prefix, p.tag, wp_id, 'never_committed', now) then
        acted = acted + 1
      end
    end
  elseif kind == 'retention_trimmer' then
    examined, acted = retention_pass(p, now, batch)
  elseif kind == 'dependency_reconciler' or kind == 'cancel_reconciler' or kind == 'edge_cancel_dispatcher' then
    examined, acted = FL.scanner_pass(p, kind, batch)
  else
    error(reject('unavailable', 'run_scanner ' .. kind))
  end
  return { fmt(examined), fmt(acted) }
end

redis.register_function{function_name = 'ff_issue_claim_grant', flags = {},
  callback = function(k, a) return guard(issue_claim_grant, k, a, 12) end}
redis.register_function{function_name = 'ff_issue_reclaim_grant', flags = {},
  callback = function(k, a) return guard(issue_reclaim_grant, k, a, 12) end}
redis.register_function{function_name = 'ff_change_priority', flags = {},
  callback = function(k, a) return guard(change_priority, k, a, 5) end}
redis.register_function{function_name = 'ff_update_progress', flags = {},
  callback = function(k, a) return guard(update_progress, k, a, 9) end}
redis.register_function{function_name = 'ff_promote_delayed', flags = {},
  callback = function(k, a) return guard(promote_delayed, k, a, 5) end}
redis.register_function{function_name = 'ff_block_execution_for_admission', flags = {},
  callback = function(k, a) return guard(block_execution, k, a, 6) end}
redis.register_function{function_name = 'ff_unblock_execution', flags = {},
  callback = function(k, a) return guard(unblock_execution, k, a, 5) end}
redis.register_function{function_name = 'ff_run_scanner', flags = {},
  callback = function(k, a) return guard(run_scanner, k, a, 5) end}
