-- execution.lua: create, claim, complete, fail (spec 01 §6.1–6.3, §6.7),
-- mirroring crates/ff-engine/src/execution.rs. Argument validation that needs
-- no stored state (ff_core `Validate`, policy parsing) runs in the client.

-- ff_create_execution (§6.1).
-- ARGV[5…]: namespace, lane, kind, priority (clamped), creator, required caps CSV,
-- budget ids, quota policy id, delay_until, deadline, payload, policy json, max
-- replay count, max reclaim count, retry spec, policy rejection ("<code> <detail>"
-- or ""), tag count, then tag pairs, then optionally the inline idempotency guard:
-- its tag `{fp:M}`, the key, the dedup window ms. On a cluster the guard lives on
-- another slot, so the client reserves it first (ff_reserve_idempotency) and sends
-- none; on a single server it is checked and written here, in the same atomic call.
local function create_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local ns, lane = args[5], args[6]
  need_num(args, 8, 'priority')
  opt_num_arg(args, 13, 'delay_until')
  opt_num_arg(args, 14, 'execution_deadline_at')
  local ntags = need_list(args, 21, 'tag count', 2)
  local gi = 22 + 2 * ntags
  local guard, window = nil, nil
  if args[gi] ~= nil and args[gi] ~= '' then
    need_args(args, gi + 2)
    window = need_num(args, gi + 2, 'dedup_window_ms')
    guard = c.prefix .. 'ff:idem:' .. args[gi] .. ':' .. ns .. ':' .. args[gi + 1]
    local stored = redis.call('HMGET', guard, 'execution_id', 'expires_at')
    if stored[1] and now <= num(stored[2]) then
      return { 'duplicate', stored[1] }
    end
  end
  if redis.call('EXISTS', c.core) == 1 then
    return { 'duplicate', c.eid }
  end
  if args[20] ~= '' then
    -- The policy's rejection, found by the client, applies after the duplicate checks.
    local code, detail = string.match(args[20], '^(%S+) ?(.*)$')
    error(reject(code, detail))
  end
  local delay_until = opt_num_arg(args, 13, 'delay_until')
  local delayed = delay_until ~= nil and delay_until > now
  local core = {
    execution_id = c.eid, namespace = ns, lane_id = lane, current_lane = lane, execution_kind = args[7],
    priority = args[8], creator_identity = args[9], total_attempt_count = '0', current_lease_epoch = '0',
    retry_count = '0', replay_count = '0', lease_reclaim_count = '0', created_at = fmt(now),
    pending_replay_attempt = 'false',
  }
  if args[10] ~= '' then core.required_capabilities = args[10] end
  if args[11] ~= '' then core.budget_ids = args[11] end
  if args[12] ~= '' then core.quota_policy_id = args[12] end
  if args[17] ~= '' then core.policy_max_replay_count = args[17] end
  if args[18] ~= '' then core.policy_max_reclaim_count = args[18] end
  if args[19] ~= '' then core.policy_retry = args[19] end
  if delayed then
    to_runnable(core, 'not_eligible_until_time', 'waiting_for_delay', 'delayed until ' .. args[13],
      'pending_first_attempt', now)
    core.delay_until = args[13]
  else
    to_runnable(core, 'eligible_now', 'waiting_for_worker', '', 'pending_first_attempt', now)
  end
  put_core(c, core)
  if args[15] ~= '' then redis.call('SET', c.exec('payload'), args[15]) end
  if args[16] ~= '' then redis.call('SET', c.exec('policy'), args[16]) end
  for i = 0, ntags - 1 do
    redis.call('HSET', c.exec('tags'), args[22 + 2 * i], args[23 + 2 * i])
  end
  if delayed then
    redis.call('ZADD', lane_key(c, core, 'delayed'), fmt(delay_until), c.eid)
  else
    add_eligible(c, core)
  end
  redis.call('ZADD', c.idx('all_executions'), 0, c.eid)
  -- The partition's own lane registry: its scanners visit only lanes it holds.
  redis.call('ZADD', c.idx('lanes'), 0, lane)
  local deadline = opt_num_arg(args, 14, 'execution_deadline_at')
  if deadline and deadline > 0 then
    redis.call('ZADD', c.idx('execution_deadline'), fmt(deadline), c.eid)
  end
  if guard then
    redis.call('DEL', guard)
    redis.call('HSET', guard, 'execution_id', c.eid, 'expires_at', fmt(now + window))
  end
  return { 'created', core.public_state }
end

-- The create-idempotency guard (spec 01 §6.1) deduplicates per namespace across
-- partitions, so it cannot live on the execution's slot: it is a hash
-- `{execution_id, expires_at}` on the `{fp:M}` slot of its (namespace, key), and the
-- client reserves it before ff_create_execution and releases it when the create
-- did not create (see the crate README).
-- KEYS[1] = `<prefix>ff:idem:{fp:M}:<namespace>:<key>`;
-- ARGV[1…6]: now, prefix, tag `{fp:M}`, namespace, key, execution id.
local function idem_guard_key(keys, args)
  local key = args[2] .. 'ff:idem:' .. args[3] .. ':' .. args[4] .. ':' .. args[5]
  if key ~= keys[1] then
    error(reject('invalid_input', 'KEYS[1] is not the idempotency key of ARGV[2..5]'))
  end
  return key
end

-- ff_reserve_idempotency. ARGV[7]: dedup window ms. A live guard naming another
-- execution replies {'duplicate', its id}; one naming this execution replies {'held'}
-- (a retried create, which then answers by id); otherwise the guard is written and
-- the reply is {'reserved', previous id, previous expiry} ("" for none), what
-- ff_release_idempotency restores.
local function reserve_idempotency(keys, args)
  local key = idem_guard_key(keys, args)
  local now = now_ms(args[1])
  local window = need_num(args, 7, 'dedup_window_ms')
  local stored = redis.call('HMGET', key, 'execution_id', 'expires_at')
  if stored[1] and now <= num(stored[2]) then
    if stored[1] == args[6] then
      return { 'held' }
    end
    return { 'duplicate', stored[1] }
  end
  redis.call('DEL', key)
  redis.call('HSET', key, 'execution_id', args[6], 'expires_at', fmt(now + window))
  return { 'reserved', stored[1] or '', stored[2] or '' }
end

-- ff_release_idempotency. ARGV[7…8]: the previous id and expiry `reserved` replied.
-- Restores the guard as it was if it still names this execution; replies
-- {'released'} or {'kept'}.
local function release_idempotency(keys, args)
  local key = idem_guard_key(keys, args)
  if redis.call('HGET', key, 'execution_id') ~= args[6] then
    return { 'kept' }
  end
  redis.call('DEL', key)
  if args[7] ~= '' then
    redis.call('HSET', key, 'execution_id', args[7], 'expires_at', args[8])
  end
  return { 'released' }
end

-- Writes a fresh attempt record (hash) at `index`.
local function put_attempt(c, index, rec)
  local flat = {}
  for k, v in pairs(rec) do
    flat[#flat + 1] = k
    flat[#flat + 1] = tostring(v)
  end
  redis.call('DEL', c.attempt(index))
  redis.call('HSET', c.attempt(index), unpack(flat))
end

-- A started attempt record with no lineage.
local function blank_attempt(c, core, attempt_id, lease_id, worker_id, instance, index, now)
  return {
    attempt_id = attempt_id, execution_id = c.eid, attempt_index = fmt(index), attempt_type = 'initial',
    attempt_state = 'started', created_at = fmt(now), started_at = fmt(now), lease_id = lease_id,
    lease_epoch = fmt(num(core.current_lease_epoch) + 1), worker_id = worker_id,
    worker_instance_id = instance, last_usage_report_seq = '0',
  }
end

-- Creates a new attempt and lease on a runnable execution (§6.2 effects).
-- f = {worker_id, instance, lane, lease_id, attempt_id, ttl, policy, timeout, deadline, reason}.
local function start_fresh_attempt(c, core, f, now)
  local index = num(core.total_attempt_count)
  local attempt_type = 'initial'
  if core.attempt_state == 'pending_retry_attempt' then
    attempt_type = 'retry'
  elseif core.attempt_state == 'pending_replay_attempt' then
    attempt_type = 'replay'
  end
  local rec = blank_attempt(c, core, f.attempt_id, f.lease_id, f.worker_id, f.instance, index, now)
  rec.attempt_type = attempt_type
  if attempt_type == 'retry' then
    rec.retry_reason = core.pending_retry_reason
    rec.previous_attempt_index = core.pending_previous_attempt_index
  elseif attempt_type == 'replay' then
    rec.replay_reason = core.pending_replay_reason
    rec.replay_requested_by = core.pending_replay_requested_by
    rec.replayed_from_attempt_index = core.pending_previous_attempt_index
  end
  if f.policy ~= nil and f.policy ~= '' then
    rec.policy_json = f.policy
  end
  redis.call('DEL', c.exec('claim_grant'))
  remove_from_runnable_indexes(c, core)
  local expires = acquire_lease(c, core, f.lease_id, f.attempt_id, f.worker_id, f.instance, f.ttl, now)
  rec.lease_epoch = core.current_lease_epoch
  put_attempt(c, index, rec)
  redis.call('ZADD', c.exec('attempts'), fmt(now), fmt(index))
  to_leased(core, now)
  core.current_attempt_index = fmt(index)
  core.total_attempt_count = fmt(index + 1)
  core.current_lane = f.lane
  if not core.started_at then
    core.started_at = fmt(now)
  end
  core.pending_retry_reason = nil
  core.pending_replay_reason = nil
  core.pending_replay_requested_by = nil
  core.pending_previous_attempt_index = nil
  core.pending_replay_attempt = 'false'
  if f.timeout and f.timeout > 0 then
    redis.call('ZADD', c.idx('attempt_timeout'), fmt(now + f.timeout), c.eid)
  end
  if f.deadline and f.deadline > 0 then
    redis.call('ZADD', c.idx('execution_deadline'), fmt(f.deadline), c.eid)
  end
  local fields = {
    'lease_id', f.lease_id, 'lease_epoch', core.current_lease_epoch, 'attempt_id', f.attempt_id,
    'attempt_index', fmt(index), 'worker_id', f.worker_id,
  }
  if f.reason then
    fields[#fields + 1] = 'reason'
    fields[#fields + 1] = f.reason
  end
  lease_event(c, 'acquired', now, fields)
  put_core(c, core)
  return expires, attempt_type
end

-- The claim reply: epoch, attempt index, attempt id, attempt type, expiry, holder instance.
local function claim_reply(core, attempt_type, expires)
  return {
    core.current_lease_epoch, core.current_attempt_index, core.current_attempt_id, attempt_type, fmt(expires),
    s(core.current_worker_instance_id),
  }
end

-- ff_claim_execution (§6.2).
-- ARGV[5…]: worker id, instance, lane, lease id, ttl, attempt id, attempt policy json,
-- attempt timeout ms, deadline.
local function claim_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local f = {
    worker_id = args[5], instance = args[6], lane = args[7], lease_id = args[8],
    ttl = need_num(args, 9, 'lease_ttl_ms'), attempt_id = args[10], policy = args[11],
    timeout = opt_num_arg(args, 12, 'attempt_timeout_ms'),
    deadline = opt_num_arg(args, 13, 'execution_deadline_at'),
  }
  local core = must_load(c)
  if core.lifecycle_phase ~= 'runnable' then
    error(reject('execution_not_leaseable'))
  end
  if core.ownership_state ~= 'unowned' then
    error(reject('lease_conflict'))
  end
  if core.eligibility_state ~= 'eligible_now' or core.terminal_outcome ~= 'none' then
    error(reject('execution_not_leaseable'))
  end
  if core.attempt_state == 'running_attempt' then
    error(reject('active_attempt_exists'))
  end
  if core.attempt_state == 'attempt_interrupted' then
    error(reject('use_claim_resumed_execution'))
  end
  check_grant(c, args[5], now)
  local expires, attempt_type = start_fresh_attempt(c, core, f, now)
  return claim_reply(core, attempt_type, expires)
end

-- Loads, resolves the fence and validates the lease of a terminal-style op.
-- ARGV[5..7] = fence, ARGV[8] = "1" for an operator override.
local function load_fenced(c, args)
  need_enum(args, 8, 'override flag', { '0', '1' })
  local core = must_load(c)
  local fence = resolve_fence(core, fence_arg(args, 5), args[8] == '1')
  validate_lease_and_mark(c, core, fence, c.now)
  return core
end

-- ff_complete_execution (§6.3). ARGV[5…]: fence (3), override flag, result ("" none).
local function complete_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = load_fenced(c, args)
  end_attempt(c, core, 'ended_success', nil, nil, now)
  if core.current_attempt_index then
    close_stream_meta(c, num(core.current_attempt_index), 'attempt_success', now, true)
  end
  if args[9] ~= '' then
    redis.call('SET', c.exec('result'), args[9])
  end
  release_lease(c, core, 'completed', now, false)
  to_terminal(core, 'success', 'attempt_terminal', now)
  core.completed_at = fmt(now)
  core.lease_expired_at = nil
  core.lease_revoked_at = nil
  core.lease_revoke_reason = nil
  enter_terminal_index(c, core, now)
  publish_if_flow(c, core, 'success', now)
  put_core(c, core)
  return { 'completed' }
end

-- The backoff of the rc-th retry from a retry spec "<max> <kind> <a> <b> <c>".
local function retry_decision(spec, rc)
  if spec == nil or spec == '' then
    return nil
  end
  local parts = {}
  for w in string.gmatch(spec, '%S+') do
    parts[#parts + 1] = w
  end
  local max_retries = tonumber(parts[1]) or 0
  if rc >= max_retries then
    return nil
  end
  local kind = parts[2]
  if kind == 'exponential' then
    local initial, maxd, mult = tonumber(parts[3]), tonumber(parts[4]), tonumber(parts[5])
    local raw = math.min(initial * (mult ^ rc), maxd)
    if raw > 0 and raw < math.huge then
      return math.floor(raw)
    end
    return 0
  elseif kind == 'fixed' then
    local d = tonumber(parts[3])
    if d > 0 and d < math.huge then
      return math.floor(d)
    end
    return 0
  end
  return 1000
end

-- ff_fail_execution (§6.7, retry §7).
-- ARGV[5…]: fence (3), override flag, reason, category, retry spec override ("-" = stored).
local function fail_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = load_fenced(c, args)
  local reason, category = args[9], args[10]
  local spec = args[11]
  if spec == '-' then
    spec = core.policy_retry
  end
  end_attempt(c, core, 'ended_failure', reason, category, now)
  if core.current_attempt_index then
    close_stream_meta(c, num(core.current_attempt_index), 'attempt_failure', now, true)
  end
  core.failure_reason = reason
  local backoff = retry_decision(spec, num(core.retry_count))
  if backoff ~= nil then
    local untl = now + backoff
    local idx = core.current_attempt_index or '0'
    release_lease(c, core, 'failed_retry_scheduled', now, false)
    local detail = 'retry backoff until ' .. fmt(untl) .. ' (attempt ' .. idx .. ' failed: ' .. reason .. ')'
    to_runnable(core, 'not_eligible_until_time', 'waiting_for_retry_backoff', detail, 'pending_retry_attempt', now)
    core.pending_retry_reason = reason
    core.pending_previous_attempt_index = idx
    core.retry_count = fmt(num(core.retry_count) + 1)
    core.current_attempt_id = nil
    core.delay_until = fmt(untl)
    redis.call('ZADD', lane_key(c, core, 'delayed'), fmt(untl), c.eid)
    put_core(c, core)
    return { 'retry_scheduled', fmt(untl) }
  end
  release_lease(c, core, 'failed_terminal', now, false)
  to_terminal(core, 'failed', 'attempt_terminal', now)
  core.completed_at = fmt(now)
  enter_terminal_index(c, core, now)
  publish_if_flow(c, core, 'failed', now)
  put_core(c, core)
  return { 'terminal_failed' }
end

redis.register_function{function_name = 'ff_create_execution', flags = {},
  callback = function(k, a) return guard(create_execution, k, a, 21) end}
redis.register_function{function_name = 'ff_reserve_idempotency', flags = {},
  callback = function(k, a) return guard(reserve_idempotency, k, a, 7) end}
redis.register_function{function_name = 'ff_release_idempotency', flags = {},
  callback = function(k, a) return guard(release_idempotency, k, a, 8) end}
redis.register_function{function_name = 'ff_claim_execution', flags = {},
  callback = function(k, a) return guard(claim_execution, k, a, 13) end}
redis.register_function{function_name = 'ff_complete_execution', flags = {},
  callback = function(k, a) return guard(complete_execution, k, a, 9) end}
redis.register_function{function_name = 'ff_fail_execution', flags = {},
  callback = function(k, a) return guard(fail_execution, k, a, 11) end}
