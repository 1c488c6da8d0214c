-- lifecycle.lua: cancel, delay, wait children, reclaim, expire, tags, replay,
-- resumed claim and operator grant-and-claim (spec 01 §6.4–6.6, §6.8–6.10,
-- §6.21, §6.23–6.24), mirroring crates/ff-engine/src/lifecycle.rs.

-- Ends the current attempt of an execution leaving a non-terminal phase, if it is open.
local function end_open_attempt(c, core, lifecycle, reason, stream_reason, now)
  if not core.current_attempt_index then
    return false
  end
  local phase = core.lifecycle_phase
  local open = phase == 'active' or phase == 'suspended'
    or (phase == 'runnable' and core.attempt_state == 'attempt_interrupted')
  if not open then
    return false
  end
  end_attempt(c, core, lifecycle, reason, '', now)
  close_stream_meta(c, num(core.current_attempt_index), stream_reason, now, true)
  return true
end

-- ff_cancel_execution (§6.4). ARGV[5…]: reason, source text, override flag, lease id, lease epoch.
local function cancel_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = must_load(c)
  local phase = core.lifecycle_phase
  if phase == 'terminal' then
    error(not_active(core))
  end
  if phase == 'active' and args[7] ~= '1' then
    if core.ownership_state == 'lease_revoked' then
      error(reject('lease_revoked'))
    end
    if args[8] ~= '' and args[9] ~= '' then
      if core.current_lease_id ~= args[8] or s(core.current_lease_epoch or '0') ~= args[9] then
        error(reject('stale_lease'))
      end
    end
  end
  local ended = end_open_attempt(c, core, 'ended_cancelled', 'cancelled: ' .. args[5], 'attempt_cancelled', now)
  if phase == 'active' then
    redis.call('DEL', c.exec('lease:current'))
    lease_event(c, 'released', now, {
      'lease_id', s(core.current_lease_id), 'lease_epoch', s(core.current_lease_epoch or '0'),
      'attempt_index', s(core.current_attempt_index), 'reason', 'cancelled',
    })
  end
  if phase == 'suspended' then
    SP.close_for_terminal(c, 'cancelled', 'cancelled', now)
  end
  remove_everywhere(c, core)
  local attempt_state = core.attempt_state
  if core.current_attempt_index or ended then
    attempt_state = 'attempt_terminal'
  end
  to_terminal(core, 'cancelled', attempt_state, now)
  core.cancellation_reason = args[5]
  if args[6] == '' then
    core.cancelled_by = c.eid
  else
    core.cancelled_by = args[6]
  end
  core.completed_at = fmt(now)
  clear_lease_fields(core)
  core.current_suspension_id = nil
  core.current_waitpoint_id = nil
  redis.call('ZADD', lane_key(c, core, 'terminal'), fmt(now), c.eid)
  -- A cascade cancel (of a flow sibling) is not published, but its children resolve.
  cascade_if_flow(c, core, 'cancelled', now, args[6] ~= 'flow_cascade')
  put_core(c, core)
  return { 'cancelled', phase }
end

-- Pauses the running attempt record under a self-pause id.
local function pause_attempt(c, core, pause_id, now)
  if not core.current_attempt_index then
    return
  end
  local key = c.attempt(num(core.current_attempt_index))
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'attempt_state', 'suspended', 'suspended_at', fmt(now), 'suspension_id', pause_id)
  end
end

-- ff_delay_execution (§6.5). ARGV[5…]: fence (3), override flag, delay_until.
local function delay_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = load_fenced(c, args)
  local untl = args[9]
  pause_attempt(c, core, 'worker_delay', now)
  release_lease(c, core, 'worker_delay', now, true)
  to_runnable(core, 'not_eligible_until_time', 'waiting_for_delay', 'delayed until ' .. untl,
    'attempt_interrupted', now)
  core.delay_until = untl
  redis.call('ZADD', lane_key(c, core, 'delayed'), untl, c.eid)
  put_core(c, core)
  return { untl }
end

-- ff_move_to_waiting_children (§6.6). ARGV[5…]: fence (3), override flag.
local function move_to_waiting_children(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = load_fenced(c, args)
  pause_attempt(c, core, 'waiting_children', now)
  release_lease(c, core, 'waiting_children', now, true)
  to_runnable(core, 'blocked_by_dependencies', 'waiting_for_children',
    'waiting for child executions to complete', 'attempt_interrupted', now)
  redis.call('ZADD', lane_key(c, core, 'blocked:dependencies'), core.created_at, c.eid)
  put_core(c, core)
  return { 'ok' }
end

-- T11: the reclaim cap is reached; terminally fail without publication.
local function reclaim_over_cap(c, core, reclaimer, now)
  redis.call('DEL', c.exec('lease:current'))
  redis.call('ZREM', c.idx('lease_expiry'), c.eid)
  redis.call('ZREM', c.idx('worker:' .. reclaimer .. ':leases'), c.eid)
  if core.current_worker_instance_id then
    redis.call('ZREM', c.idx('worker:' .. core.current_worker_instance_id .. ':leases'), c.eid)
  end
  redis.call('ZREM', lane_key(c, core, 'active'), c.eid)
  to_terminal(core, 'failed', 'attempt_terminal', now)
  core.failure_reason = 'max_reclaims_exceeded'
  core.completed_at = fmt(now)
  core.current_lease_id = nil
  core.current_worker_id = nil
  core.current_worker_instance_id = nil
  enter_terminal_index(c, core, now)
  put_core(c, core)
  -- No publication (reference), but the children are still resolved.
  cascade_if_flow(c, core, 'failed', now, false)
end

-- Reclaims onto a new attempt and lease (§6.8 effects).
local function reclaim_onto_new_attempt(c, core, a, now)
  local lost = 'lease_' .. core.ownership_state
  local old_index = core.current_attempt_index
  local old_epoch = s(core.current_lease_epoch or '0')
  if old_index then
    end_attempt(c, core, 'interrupted_reclaimed', lost, '', now)
    close_stream_meta(c, num(old_index), 'reclaimed', now, true)
  end
  if core.current_worker_instance_id and core.current_worker_instance_id ~= a.instance then
    redis.call('ZREM', c.idx('worker:' .. core.current_worker_instance_id .. ':leases'), c.eid)
  end
  redis.call('DEL', c.exec('claim_grant'))
  local index = num(core.total_attempt_count)
  local rec = blank_attempt(c, core, a.attempt_id, a.lease_id, a.worker_id, a.instance, index, now)
  rec.attempt_type = 'reclaim'
  rec.reclaim_reason = lost
  rec.previous_attempt_index = old_index
  local expires = acquire_lease(c, core, a.lease_id, a.attempt_id, a.worker_id, a.instance, a.ttl, now)
  rec.lease_epoch = core.current_lease_epoch
  put_attempt(c, index, rec)
  redis.call('ZADD', c.exec('attempts'), fmt(now), fmt(index))
  to_leased(core, now)
  core.current_attempt_index = fmt(index)
  core.total_attempt_count = fmt(index + 1)
  core.current_lane = a.lane
  core.lease_expired_at = nil
  core.lease_revoked_at = nil
  core.lease_revoke_reason = nil
  core.lease_reclaim_count = fmt(num(core.lease_reclaim_count) + 1)
  lease_event(c, 'reclaimed', now, {
    'old_lease_epoch', old_epoch, 'new_lease_id', a.lease_id, 'new_lease_epoch', core.current_lease_epoch,
    'new_attempt_id', a.attempt_id, 'new_attempt_index', fmt(index), 'worker_id', a.worker_id,
  })
  put_core(c, core)
  return claim_reply(core, 'reclaim', expires)
end

-- ff_reclaim_execution (§6.8, §10).
-- ARGV[5…]: worker id, instance, lane, lease id, ttl, attempt id, caller's cap ("" none).
local function reclaim_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local ttl = need_num(args, 9, 'lease_ttl_ms')
  local caller_cap = opt_num_arg(args, 11, 'max_reclaim_count')
  local core = must_load(c)
  if core.lifecycle_phase ~= 'active' or (core.ownership_state ~= 'lease_expired_reclaimable'
      and core.ownership_state ~= 'lease_revoked') then
    return { 'not_reclaimable', 'execution_not_reclaimable' }
  end
  local cap = opt_num(core.policy_max_reclaim_count) or caller_cap or 1000
  if num(core.lease_reclaim_count) >= cap then
    reclaim_over_cap(c, core, args[6], now)
    return { 'cap_exceeded', fmt(cap) }
  end
  if live_grant(c, now) ~= args[5] then
    return { 'grant_not_found' }
  end
  local a = {
    worker_id = args[5], instance = args[6], lane = args[7], lease_id = args[8], ttl = ttl,
    attempt_id = args[10],
  }
  local reply = reclaim_onto_new_attempt(c, core, a, now)
  table.insert(reply, 1, 'claimed')
  return reply
end

-- ff_expire_execution (§6.9). ARGV[5]: phase text (`attempt_timeout` / `execution_deadline`).
local function expire_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local reason = args[5]
  local core = load_core(c)
  if core == nil or core.lifecycle_phase == 'terminal' then
    redis.call('ZREM', c.idx('attempt_timeout'), c.eid)
    redis.call('ZREM', c.idx('execution_deadline'), c.eid)
    if core == nil then
      return { 'not_found_cleaned' }
    end
    return { 'already_terminal' }
  end
  local from = core.lifecycle_phase
  end_open_attempt(c, core, 'ended_failure', reason, 'expired', now)
  if from == 'active' then
    redis.call('DEL', c.exec('lease:current'))
    lease_event(c, 'released', now, {
      'lease_id', s(core.current_lease_id), 'lease_epoch', s(core.current_lease_epoch or '0'),
      'attempt_index', s(core.current_attempt_index), 'reason', 'expired:' .. reason,
    })
  end
  if from == 'suspended' then
    SP.close_for_expiry(c, reason, now)
  end
  remove_everywhere(c, core)
  local attempt_state = core.attempt_state
  if core.current_attempt_index then
    attempt_state = 'attempt_terminal'
  end
  to_terminal(core, 'expired', attempt_state, now)
  core.failure_reason = reason
  core.completed_at = fmt(now)
  core.current_lease_id = nil
  core.current_worker_id = nil
  core.current_worker_instance_id = nil
  core.lease_expires_at = nil
  core.current_suspension_id = nil
  core.current_waitpoint_id = nil
  redis.call('ZADD', lane_key(c, core, 'terminal'), fmt(now), c.eid)
  publish_if_flow(c, core, 'expired', now)
  put_core(c, core)
  return { 'expired', from }
end

-- ff_set_execution_tags (§6.10). ARGV[5…]: pair count, then pairs (keys checked by the client).
local function set_execution_tags(keys, args)
  local c = ctx_of(keys, args)
  local n = need_list(args, 5, 'tag count', 2)
  local core = must_load(c)
  for i = 0, n - 1 do
    redis.call('HSET', c.exec('tags'), args[6 + 2 * i], args[7 + 2 * i])
  end
  core.last_mutation_at = fmt(c.now)
  put_core(c, core)
  return { fmt(n) }
end

-- ff_replay_execution (§6.24).
local function replay_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = must_load(c)
  if core.lifecycle_phase ~= 'terminal' then
    error(reject('execution_not_terminal'))
  end
  local max = opt_num(core.policy_max_replay_count) or 10
  if num(core.replay_count) >= max then
    error(reject('max_replays_exhausted'))
  end
  local skipped_member = core.terminal_outcome == 'skipped' and core.flow_id and core.flow_id ~= ''
  redis.call('ZREM', lane_key(c, core, 'terminal'), c.eid)
  local replay_type = 'normal'
  if skipped_member then
    local unsatisfied = FL.reopen_skipped_member(c, now)
    to_runnable(core, 'blocked_by_dependencies', 'waiting_for_children',
      fmt(unsatisfied) .. ' dep(s) unsatisfied after replay', 'pending_replay_attempt', now)
    redis.call('ZADD', lane_key(c, core, 'blocked:dependencies'), core.created_at, c.eid)
    replay_type = 'skipped_flow_member'
  else
    to_runnable(core, 'eligible_now', 'waiting_for_worker', '', 'pending_replay_attempt', now)
    add_eligible(c, core)
  end
  core.pending_replay_attempt = 'true'
  core.replay_count = fmt(num(core.replay_count) + 1)
  core.completed_at = nil
  lease_event(c, 'replay_initiated', now, { 'replay_count', core.replay_count, 'replay_type', replay_type })
  put_core(c, core)
  return { 'replayed', core.public_state }
end

-- Gives a new lease on the same (interrupted) attempt (§6.21 body, §6.23 resumed branch).
local function resume_attempt(c, core, r, now)
  local attempt_id = core.current_attempt_id
  if not attempt_id then
    error(reject('invariant_violation', 'interrupted attempt without an attempt id'))
  end
  redis.call('DEL', c.exec('claim_grant'))
  remove_from_runnable_indexes(c, core)
  local expires = acquire_lease(c, core, r.lease_id, attempt_id, r.worker_id, r.instance, r.ttl, now)
  if core.current_attempt_index then
    local key = c.attempt(num(core.current_attempt_index))
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'attempt_state', 'started', 'resumed_at', fmt(now), 'lease_id', r.lease_id,
        'lease_epoch', core.current_lease_epoch, 'worker_id', r.worker_id, 'worker_instance_id', r.instance)
      redis.call('HDEL', key, 'suspended_at', 'suspension_id')
    end
  end
  to_leased(core, now)
  core.current_lane = r.lane
  core.lease_expired_at = nil
  core.lease_revoked_at = nil
  core.lease_revoke_reason = nil
  core.delay_until = nil
  if r.timeout and r.timeout > 0 then
    redis.call('ZADD', c.idx('attempt_timeout'), fmt(now + r.timeout), c.eid)
  end
  lease_event(c, 'acquired', now, {
    'lease_id', r.lease_id, 'lease_epoch', core.current_lease_epoch, 'attempt_id', attempt_id,
    'attempt_index', s(core.current_attempt_index), 'worker_id', r.worker_id, 'reason', r.reason,
  })
  put_core(c, core)
  return expires
end

-- ff_claim_resumed_execution (§6.21).
-- ARGV[5…]: worker id, instance, lane, lease id, ttl, remaining attempt timeout ("" none).
local function claim_resumed_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local ttl = need_num(args, 9, 'lease_ttl_ms')
  local timeout = opt_num_arg(args, 10, 'attempt_timeout_ms')
  local core = must_load(c)
  if core.lifecycle_phase ~= 'runnable' then
    error(reject('execution_not_leaseable'))
  end
  if core.attempt_state ~= 'attempt_interrupted' then
    error(reject('not_a_resumed_execution'))
  end
  check_grant(c, args[5], now)
  local r = {
    worker_id = args[5], instance = args[6], lane = args[7], lease_id = args[8], ttl = ttl,
    timeout = timeout, reason = 'claim_resumed',
  }
  local expires = resume_attempt(c, core, r, now)
  local attempt_type = 'initial'
  if core.current_attempt_index then
    attempt_type = redis.call('HGET', c.attempt(num(core.current_attempt_index)), 'attempt_type') or 'initial'
  end
  return claim_reply(core, attempt_type, expires)
end

-- ff_issue_grant_and_claim (§6.23). ARGV[5…]: lane, lease id, ttl, attempt id.
local function issue_grant_and_claim(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local ttl = need_num(args, 7, 'lease_ttl_ms')
  local core = must_load(c)
  if core.lifecycle_phase ~= 'runnable' then
    error(reject('execution_not_eligible'))
  end
  if core.ownership_state ~= 'unowned' then
    error(reject('lease_conflict'))
  end
  if core.terminal_outcome ~= 'none' then
    error(reject('execution_not_eligible'))
  end
  if core.attempt_state == 'running_attempt' then
    error(reject('active_attempt_exists'))
  end
  if live_grant(c, now) then
    error(reject('grant_already_exists'))
  end
  if core.attempt_state == 'attempt_interrupted' then
    local r = {
      worker_id = 'operator', instance = 'operator', lane = args[5], lease_id = args[6], ttl = ttl,
      reason = 'issue_grant_and_claim_resumed',
    }
    resume_attempt(c, core, r, now)
  else
    if not redis.call('ZSCORE', lane_key(c, core, 'eligible'), c.eid) then
      error(reject('execution_not_in_eligible_set'))
    end
    if core.eligibility_state ~= 'eligible_now' then
      error(reject('execution_not_eligible'))
    end
    local f = {
      worker_id = 'operator', instance = 'operator', lane = args[5], lease_id = args[6], ttl = ttl,
      attempt_id = args[8], reason = 'issue_grant_and_claim',
    }
    start_fresh_attempt(c, core, f, now)
  end
  return { core.current_lease_epoch, s(core.current_attempt_index or '0') }
end

redis.register_function{function_name = 'ff_cancel_execution', flags = {},
  callback = function(k, a) return guard(cancel_execution, k, a, 9) end}
redis.register_function{function_name = 'ff_delay_execution', flags = {},
  callback = function(k, a) return guard(delay_execution, k, a, 9) end}
redis.register_function{function_name = 'ff_move_to_waiting_children', flags = {},
  callback = function(k, a) return guard(move_to_waiting_children, k, a, 8) end}
redis.register_function{function_name = 'ff_reclaim_execution', flags = {},
  callback = function(k, a) return guard(reclaim_execution, k, a, 11) end}
redis.register_function{function_name = 'ff_expire_execution', flags = {},
  callback = function(k, a) return guard(expire_execution, k, a, 5) end}
redis.register_function{function_name = 'ff_set_execution_tags', flags = {},
  callback = function(k, a) return guard(set_execution_tags, k, a, 5) end}
redis.register_function{function_name = 'ff_replay_execution', flags = {},
  callback = function(k, a) return guard(replay_execution, k, a, 4) end}
redis.register_function{function_name = 'ff_claim_resumed_execution', flags = {},
  callback = function(k, a) return guard(claim_resumed_execution, k, a, 10) end}
redis.register_function{function_name = 'ff_issue_grant_and_claim', flags = {},
  callback = function(k, a) return guard(issue_grant_and_claim, k, a, 8) end}
