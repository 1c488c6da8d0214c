-- lease.lua: renew, mark expired, revoke (spec 01 §6.12–6.14), mirroring
-- crates/ff-engine/src/lease.rs. The expired-lease listing is a read (reads.lua).

-- ff_renew_lease (§6.12). ARGV[5…]: attempt index, fence (3), ttl, history grace ms.
local function renew_lease(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local ttl = need_num(args, 9, 'lease_ttl_ms')
  local grace = opt_num_arg(args, 10, 'lease_history_grace_ms') or 0
  local core = must_load(c)
  local fence = fence_arg(args, 6)
  if fence == nil then
    error(reject('fence_required'))
  end
  if core.lifecycle_phase ~= 'active' then
    error(not_active(core))
  end
  if core.ownership_state == 'lease_revoked' or core.lease_revoked_at then
    error(reject('lease_revoked'))
  end
  if num(core.lease_expires_at) <= now then
    mark_expired(c, core, now)
    put_core(c, core)
    error(reject('lease_expired'))
  end
  if core.current_attempt_index ~= args[5] then
    error(reject('stale_lease'))
  end
  check_fence_identity(core, fence)
  local expires = now + ttl
  local deadline = now + two_thirds(ttl)
  local lease = c.exec('lease:current')
  if redis.call('EXISTS', lease) == 1 then
    redis.call('HSET', lease, 'last_renewed_at', fmt(now), 'renewal_deadline', fmt(deadline),
      'expires_at', fmt(expires), 'record_expires_at', fmt(expires + grace))
  end
  core.lease_last_renewed_at = fmt(now)
  core.lease_renewal_deadline = fmt(deadline)
  core.lease_expires_at = fmt(expires)
  core.last_mutation_at = fmt(now)
  redis.call('ZADD', c.idx('lease_expiry'), fmt(expires), c.eid)
  put_core(c, core)
  return { fmt(expires), core.current_lease_epoch }
end

-- The body of ff_mark_lease_expired_if_due, shared with the lease-expiry scanner.
local function mark_if_due(c, now)
  local core = load_core(c)
  if core == nil then
    redis.call('ZREM', c.idx('lease_expiry'), c.eid)
    return 'execution_not_found'
  end
  if core.lifecycle_phase ~= 'active' then
    redis.call('ZREM', c.idx('lease_expiry'), c.eid)
    return 'not_active'
  end
  if core.ownership_state == 'lease_expired_reclaimable' then
    return 'already_expired'
  end
  if core.ownership_state == 'lease_revoked' then
    return 'already_revoked'
  end
  if core.ownership_state == 'unowned' then
    redis.call('ZREM', c.idx('lease_expiry'), c.eid)
    return 'unowned'
  end
  if num(core.lease_expires_at) > now then
    return 'not_yet_expired'
  end
  mark_expired(c, core, now)
  put_core(c, core)
  return 'marked_expired'
end

-- ff_mark_lease_expired_if_due (§6.13).
local function mark_lease_expired_if_due(keys, args)
  local c = ctx_of(keys, args)
  return { mark_if_due(c, c.now) }
end

-- ff_revoke_lease (§6.14). ARGV[5…]: expected lease id ("" any), reason.
local function revoke_lease(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = must_load(c)
  if core.lifecycle_phase ~= 'active' then
    error(not_active(core))
  end
  if core.ownership_state == 'lease_revoked' then
    return { 'already_satisfied', 'already_revoked' }
  end
  if core.ownership_state == 'lease_expired_reclaimable' then
    return { 'already_satisfied', 'already_expired' }
  end
  if core.ownership_state == 'unowned' then
    error(reject('no_active_lease'))
  end
  if args[5] ~= '' and core.current_lease_id ~= args[5] then
    error(reject('stale_lease'))
  end
  if not core.current_lease_id then
    error(reject('no_active_lease'))
  end
  local reason = args[6]
  if reason == '' then
    reason = 'operator'
  end
  local lease_id, epoch = core.current_lease_id, s(core.current_lease_epoch or '0')
  core.ownership_state = 'lease_revoked'
  core.blocking_reason = 'waiting_for_worker'
  core.blocking_detail = 'lease revoked: ' .. reason
  core.attempt_state = 'attempt_interrupted'
  core.lease_revoked_at = fmt(now)
  core.lease_revoke_reason = reason
  core.last_mutation_at = fmt(now)
  redis.call('DEL', c.exec('lease:current'))
  redis.call('ZREM', c.idx('lease_expiry'), c.eid)
  if core.current_worker_instance_id then
    redis.call('ZREM', c.idx('worker:' .. core.current_worker_instance_id .. ':leases'), c.eid)
  end
  lease_event(c, 'revoked', now, {
    'lease_id', s(core.current_lease_id), 'lease_epoch', epoch, 'attempt_index', s(core.current_attempt_index),
    'attempt_id', s(core.current_attempt_id), 'worker_id', s(core.current_worker_id),
    'worker_instance_id', s(core.current_worker_instance_id), 'reason', reason,
  })
  put_core(c, core)
  return { 'revoked', lease_id, epoch }
end

redis.register_function{function_name = 'ff_renew_lease', flags = {},
  callback = function(k, a) return guard(renew_lease, k, a, 10) end}
redis.register_function{function_name = 'ff_mark_lease_expired_if_due', flags = {},
  callback = function(k, a) return guard(mark_lease_expired_if_due, k, a, 4) end}
redis.register_function{function_name = 'ff_revoke_lease', flags = {},
  callback = function(k, a) return guard(revoke_lease, k, a, 6) end}
