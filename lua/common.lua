-- common.lua: mechanics shared by every family (spec 01 §5), mirroring
-- crates/ff-engine/src/common.rs.
--
-- Calling convention of every contract function:
--   KEYS[1]  the execution's exec_core hash (`<prefix>ff:exec:{fp:N}:<eid>:core`)
--   ARGV[1]  now in ms, or "" to read the server's TIME
--   ARGV[2]  key prefix (isolates tenants and tests on one server)
--   ARGV[3]  the partition hash tag `{fp:N}`
--   ARGV[4]  the execution id (verbatim text)
--   ARGV[5…] contract arguments
--   ARGV[#ARGV] the client's library version (checked and removed by `guard`)
-- Every other key is derived from the prefix, tag and id, so all of them share
-- the `{fp:N}` hash slot of KEYS[1].
-- Replies are flat arrays of strings; rejections are `error_reply("<code> <detail>")`
-- (see `fail`).

local PRIORITY_SCORE_STEP_MS = 1000000000000

-- The flow family's helpers, filled in by flow.lua (declared here so the terminal
-- transitions can run the completion cascade).
local FL = {}
local LEASE_HISTORY_LEN_MAX = 1000
-- Completion events kept in the feed and in each partition's outbox (as the memory backend's).
local COMPLETIONS_LEN_MAX = 100000

-- Every exec_core field (spec 01 §3.6); absent means "none".
local CORE_FIELDS = {
  'execution_id', 'namespace', 'lane_id', 'current_lane', 'execution_kind', 'priority',
  'creator_identity', 'flow_id', 'required_capabilities', 'lifecycle_phase', 'ownership_state',
  'eligibility_state', 'blocking_reason', 'blocking_detail', 'terminal_outcome', 'attempt_state',
  'public_state', 'total_attempt_count', 'current_attempt_index', 'current_attempt_id',
  'current_lease_id', 'current_lease_epoch', 'current_worker_id', 'current_worker_instance_id',
  'retry_count', 'replay_count', 'lease_reclaim_count', 'created_at', 'started_at', 'completed_at',
  'last_transition_at', 'last_mutation_at', 'lease_acquired_at', 'lease_expires_at',
  'lease_last_renewed_at', 'lease_renewal_deadline', 'lease_expired_at', 'lease_revoked_at',
  'lease_revoke_reason', 'delay_until', 'current_suspension_id', 'current_waitpoint_id',
  'pending_retry_reason', 'pending_replay_reason', 'pending_replay_requested_by',
  'pending_previous_attempt_index', 'progress_pct', 'progress_message', 'progress_updated_at',
  'failure_reason', 'cancellation_reason', 'cancelled_by', 'pending_replay_attempt',
  'last_capability_mismatch_at', 'last_hmac_validation_failed_at', 'budget_ids', 'quota_policy_id',
  -- Policy values derived once at create (the stored policy never changes).
  'policy_max_replay_count', 'policy_max_reclaim_count', 'policy_retry',
}

-- Integer text without exponent notation.
local function fmt(n)
  return string.format('%d', n)
end

-- An error reply `<code> <detail>`. The detail is never empty ("-" stands for
-- none): the server rewrites a one-word error to `ERR <word>`.
local function fail(code, detail)
  if detail == nil or detail == '' then
    detail = '-'
  end
  return redis.error_reply(code .. ' ' .. detail)
end

-- A raised rejection: `error(reject(...))` unwinds to `guard`, which replies with it.
local Rejection = {}
local function reject(code, detail)
  return setmetatable({ code = code, detail = detail }, Rejection)
end

-- Entry checks of a contract's arguments: bad input from a caller is a rejection
-- (`invalid_input`), never a Lua runtime error (which `guard` reports as a bug).

-- Requires at least `n` arguments (after the library version was removed).
local function need_args(args, n)
  if #args < n then
    error(reject('invalid_input', 'expected at least ' .. n .. ' arguments, got ' .. #args))
  end
end

-- A finite number parsed from text, or nil.
local function finite(v)
  local n = tonumber(v)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then
    return nil
  end
  return n
end

-- ARGV[i] as a finite number; anything else is `invalid_input` naming the argument.
local function need_num(args, i, name)
  local n = finite(args[i])
  if n == nil then
    error(reject('invalid_input', name .. ' is not a number: ' .. tostring(args[i])))
  end
  return n
end

-- ARGV[i] as a finite number, or nil when it is "" (none).
local function opt_num_arg(args, i, name)
  if args[i] == '' then
    return nil
  end
  return need_num(args, i, name)
end

-- ARGV[i] when it is one of `allowed` (a list of strings), else `invalid_input`.
local function need_enum(args, i, name, allowed)
  local v = args[i]
  for _, a in ipairs(allowed) do
    if v == a then
      return v
    end
  end
  error(reject('invalid_input', 'unknown ' .. name .. ': ' .. tostring(v)))
end

-- Requires `count` (name, pair_width) pairs after ARGV[at]: returns the count.
local function need_list(args, at, name, width)
  local n = need_num(args, at, name)
  if n < 0 or n ~= math.floor(n) then
    error(reject('invalid_input', name .. ' is not a count: ' .. tostring(args[at])))
  end
  need_args(args, at + n * width)
  return n
end

-- Runs a contract body; a raised rejection becomes an error reply. The client
-- appends its library version as the last argument: a client of another
-- version is refused before anything is read or written. `argc` is the least
-- number of contract arguments (version excluded) the function takes; fewer is
-- `invalid_input` before the body runs.
local function guard(body, keys, args, argc)
  local version = table.remove(args)
  if version ~= FF_LIBRARY_VERSION then
    return fail('library_version_mismatch', 'loaded ' .. FF_LIBRARY_VERSION .. ', client ' .. tostring(version))
  end
  local ok, res = pcall(function()
    need_args(args, argc or 0)
    return body(keys, args)
  end)
  if ok then
    return res
  end
  if type(res) == 'table' and getmetatable(res) == Rejection then
    return fail(res.code, res.detail)
  end
  if type(res) == 'table' and res.err then
    return res
  end
  -- Arguments were checked at entry, so a runtime error here is a genuine bug.
  return fail('invariant_violation', tostring(res))
end

-- The contract's `now`: the caller's simulated clock, else the server's TIME.
local function now_ms(arg)
  if arg ~= nil and arg ~= '' then
    local n = finite(arg)
    if n == nil then
      error(reject('invalid_input', 'now is not a number: ' .. arg))
    end
    return n
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Key context of one execution from its prefix, tag and id.
local function ctx_make(prefix, tag, eid, now)
  local c = { now = now, prefix = prefix, tag = tag, eid = eid }
  c.core = prefix .. 'ff:exec:' .. tag .. ':' .. eid .. ':core'
  c.exec = function(suffix)
    return c.prefix .. 'ff:exec:' .. c.tag .. ':' .. c.eid .. ':' .. suffix
  end
  c.idx = function(suffix)
    return c.prefix .. 'ff:idx:' .. c.tag .. ':' .. suffix
  end
  c.lane = function(lane, suffix)
    return c.prefix .. 'ff:idx:' .. c.tag .. ':lane:' .. lane .. ':' .. suffix
  end
  c.attempt = function(index)
    return c.prefix .. 'ff:attempt:' .. c.tag .. ':' .. c.eid .. ':' .. fmt(index)
  end
  c.stream_meta = function(index)
    return c.prefix .. 'ff:stream:' .. c.tag .. ':' .. c.eid .. ':' .. fmt(index) .. ':meta'
  end
  return c
end

-- Key context of a contract call (see the calling convention above).
local function ctx_of(keys, args)
  need_args(args, 4)
  local c = ctx_make(args[2], args[3], args[4], now_ms(args[1]))
  if c.core ~= keys[1] then
    error(reject('invalid_input', 'KEYS[1] is not the exec_core key of ARGV[4]'))
  end
  return c
end

-- The partition convention: KEYS[1] = the partition's all_executions index,
-- ARGV[1] = now, ARGV[2] = prefix, ARGV[3] = tag, ARGV[4…] = arguments.
local function partition_ctx(keys, args)
  need_args(args, 3)
  local p = { now = now_ms(args[1]), prefix = args[2], tag = args[3] }
  p.idx = function(suffix)
    return p.prefix .. 'ff:idx:' .. p.tag .. ':' .. suffix
  end
  if p.idx('all_executions') ~= keys[1] then
    error(reject('invalid_input', 'KEYS[1] is not the all_executions key of ARGV[3]'))
  end
  return p
end

-- A hash's fields as a table (empty when the key is absent).
local function hash_table(key)
  local flat = redis.call('HGETALL', key)
  local t = {}
  for i = 1, #flat, 2 do
    t[flat[i]] = flat[i + 1]
  end
  return t
end

-- Reads the exec_core hash into a table, or nil when absent.
local function load_core(c)
  local core = hash_table(c.core)
  if next(core) == nil then
    return nil
  end
  return core
end

local function must_load(c)
  local core = load_core(c)
  if core == nil then
    error(reject('execution_not_found'))
  end
  return core
end

-- Writes the whole exec_core hash (absent fields are dropped).
local function put_core(c, core)
  local flat = {}
  for _, f in ipairs(CORE_FIELDS) do
    local v = core[f]
    if v ~= nil and v ~= false then
      flat[#flat + 1] = f
      flat[#flat + 1] = tostring(v)
    end
  end
  redis.call('DEL', c.core)
  redis.call('HSET', c.core, unpack(flat))
end

local function num(v)
  return tonumber(v or '') or 0
end

-- A numeric field, or nil when absent.
local function opt_num(v)
  if v == nil or v == false then
    return nil
  end
  return tonumber(v)
end

-- The public state derived from the three dimensions (ff_core::state::derive_public_state).
local function derive_public_state(phase, eligibility, outcome)
  if phase == 'terminal' then
    if outcome == 'success' then return 'completed' end
    if outcome == 'cancelled' then return 'cancelled' end
    if outcome == 'expired' then return 'expired' end
    if outcome == 'skipped' then return 'skipped' end
    return 'failed'
  end
  if phase == 'suspended' then return 'suspended' end
  if phase == 'active' then return 'active' end
  if phase == 'submitted' then return 'waiting' end
  if eligibility == 'not_eligible_until_time' then return 'delayed' end
  if eligibility == 'blocked_by_dependencies' then return 'waiting_children' end
  if eligibility == 'blocked_by_budget' or eligibility == 'blocked_by_quota' then return 'rate_limited' end
  return 'waiting'
end

local function set_state(core, phase, ownership, eligibility, reason, detail, outcome, attempt_state, now)
  core.lifecycle_phase = phase
  core.ownership_state = ownership
  core.eligibility_state = eligibility
  core.blocking_reason = reason
  core.blocking_detail = detail
  core.terminal_outcome = outcome
  core.attempt_state = attempt_state
  core.public_state = derive_public_state(phase, eligibility, outcome)
  core.last_transition_at = fmt(now)
  core.last_mutation_at = fmt(now)
end

local function to_runnable(core, eligibility, reason, detail, attempt_state, now)
  set_state(core, 'runnable', 'unowned', eligibility, reason, detail, 'none', attempt_state, now)
end

local function to_leased(core, now)
  set_state(core, 'active', 'leased', 'not_applicable', 'none', '', 'none', 'running_attempt', now)
end

local function to_terminal(core, outcome, attempt_state, now)
  set_state(core, 'terminal', 'unowned', 'not_applicable', 'none', '', outcome, attempt_state, now)
end

-- `execution_not_active` with its four reconciliation slots.
local function not_active(core)
  return reject('execution_not_active', (core.terminal_outcome or '') .. ' ' .. (core.current_lease_epoch or '0')
    .. ' ' .. (core.lifecycle_phase or '') .. ' ' .. (core.current_attempt_id or ''))
end

local function priority_score(priority, created_at)
  return created_at - priority * PRIORITY_SCORE_STEP_MS
end

local function lane_key(c, core, suffix)
  return c.lane(core.lane_id, suffix)
end

local RUNNABLE_SUFFIXES = {
  'eligible', 'delayed', 'blocked:dependencies', 'blocked:budget', 'blocked:quota', 'blocked:route',
  'blocked:operator',
}

local function remove_from_runnable_indexes(c, core)
  for _, s in ipairs(RUNNABLE_SUFFIXES) do
    redis.call('ZREM', lane_key(c, core, s), c.eid)
  end
end

local function add_eligible(c, core)
  local score = priority_score(num(core.priority), num(core.created_at))
  redis.call('ZADD', lane_key(c, core, 'eligible'), fmt(score), c.eid)
end

-- Appends a lease-history event; fields is a flat list {k1, v1, k2, v2, …}.
local function lease_event(c, event, now, fields)
  local seq = redis.call('HINCRBY', c.exec('lease:history:seq'), 'seq', 1)
  local f = {}
  for i = 1, #fields, 2 do
    f[fields[i]] = fields[i + 1]
  end
  local entry = cjson.encode({ seq = fmt(seq), event = event, ts = fmt(now), fields = f })
  local key = c.exec('lease:history')
  redis.call('RPUSH', key, entry)
  redis.call('LTRIM', key, -LEASE_HISTORY_LEN_MAX, -1)
end

local function s(v)
  if v == nil or v == false then
    return ''
  end
  return tostring(v)
end

-- Closes an attempt's stream meta if it exists (spec 01 §5.7).
local function close_stream_meta(c, index, reason, now, overwrite)
  local key = c.stream_meta(index)
  if redis.call('EXISTS', key) == 0 then
    return
  end
  if not overwrite and redis.call('HEXISTS', key, 'closed_at') == 1 then
    return
  end
  redis.call('HSET', key, 'closed_at', fmt(now), 'closed_reason', reason)
end

local function clear_lease_fields(core)
  core.current_lease_id = nil
  core.current_worker_id = nil
  core.current_worker_instance_id = nil
  core.lease_expires_at = nil
  core.lease_last_renewed_at = nil
  core.lease_renewal_deadline = nil
end

-- Releases the lease (spec 01 §5.1): record, indexes, core fields, `released` event.
local function release_lease(c, core, reason, now, with_attempt_id)
  redis.call('DEL', c.exec('lease:current'))
  redis.call('ZREM', c.idx('lease_expiry'), c.eid)
  if core.current_worker_instance_id then
    redis.call('ZREM', c.idx('worker:' .. core.current_worker_instance_id .. ':leases'), c.eid)
  end
  redis.call('ZREM', lane_key(c, core, 'active'), c.eid)
  redis.call('ZREM', c.idx('attempt_timeout'), c.eid)
  local fields = {
    'lease_id', s(core.current_lease_id), 'lease_epoch', s(core.current_lease_epoch or '0'),
    'attempt_index', s(core.current_attempt_index),
  }
  if with_attempt_id then
    fields[#fields + 1] = 'attempt_id'
    fields[#fields + 1] = s(core.current_attempt_id)
  end
  fields[#fields + 1] = 'reason'
  fields[#fields + 1] = reason
  lease_event(c, 'released', now, fields)
  clear_lease_fields(core)
end

-- Marks a lease expired (spec 01 §5.4); the caller writes the core.
local function mark_expired(c, core, now)
  if core.ownership_state == 'lease_expired_reclaimable' then
    return
  end
  core.ownership_state = 'lease_expired_reclaimable'
  core.blocking_reason = 'waiting_for_worker'
  core.blocking_detail = 'lease expired, awaiting reclaim'
  core.attempt_state = 'attempt_interrupted'
  core.public_state = 'active'
  core.lease_expired_at = fmt(now)
  core.last_mutation_at = fmt(now)
  lease_event(c, 'expired', now, {
    'lease_id', s(core.current_lease_id), 'lease_epoch', s(core.current_lease_epoch or '0'),
    'attempt_index', s(core.current_attempt_index), 'attempt_id', s(core.current_attempt_id),
    'worker_id', s(core.current_worker_id), 'worker_instance_id', s(core.current_worker_instance_id),
  })
  if core.current_attempt_index then
    close_stream_meta(c, num(core.current_attempt_index), 'lease_expired', now, false)
  end
end

-- Steps 4–6 of lease validation: lease id, epoch, attempt id (fence = {id, epoch, attempt} or nil).
local function check_fence_identity(core, fence)
  if fence == nil then
    error(reject('stale_lease'))
  end
  if core.current_lease_id ~= fence[1] or s(core.current_lease_epoch or '0') ~= fence[2]
      or core.current_attempt_id ~= fence[3] then
    error(reject('stale_lease'))
  end
end

-- Lease validation with expiry marking (spec 01 §5.3): the expiry mark is written
-- before `lease_expired` is raised (an intentional write, §5.6).
local function validate_lease_and_mark(c, core, fence, now)
  if core.lifecycle_phase ~= 'active' then
    error(not_active(core))
  end
  if core.ownership_state == 'lease_revoked' then
    error(reject('lease_revoked'))
  end
  if num(core.lease_expires_at) <= now then
    mark_expired(c, core, now)
    put_core(c, core)
    error(reject('lease_expired'))
  end
  check_fence_identity(core, fence)
end

-- Resolves the fence per spec 01 §5.3. `given` is {lease_id, epoch, attempt_id} or nil.
local function resolve_fence(core, given, is_override)
  if given ~= nil then
    return given
  end
  if is_override then
    if core.current_lease_id and core.current_attempt_id then
      return { core.current_lease_id, s(core.current_lease_epoch or '0'), core.current_attempt_id }
    end
    return nil
  end
  error(reject('fence_required'))
end

-- Parses a fence from three ARGV slots ("" lease id = no fence).
local function fence_arg(args, i)
  if args[i] == nil or args[i] == '' then
    return nil
  end
  return { args[i], args[i + 1], args[i + 2] }
end

-- `floor(ttl × 2 / 3)` without overflowing.
local function two_thirds(ttl)
  return math.floor(ttl / 3) * 2 + math.floor((ttl % 3) * 2 / 3)
end

-- Writes a new lease at epoch + 1 (record, core fields, lease indexes); returns the expiry.
local function acquire_lease(c, core, lease_id, attempt_id, worker_id, worker_instance_id, ttl, now)
  local epoch = num(core.current_lease_epoch) + 1
  local expires = now + ttl
  local deadline = now + two_thirds(ttl)
  redis.call('DEL', c.exec('lease:current'))
  redis.call('HSET', c.exec('lease:current'), 'lease_id', lease_id, 'lease_epoch', fmt(epoch),
    'execution_id', c.eid, 'attempt_id', attempt_id, 'worker_id', worker_id,
    'worker_instance_id', worker_instance_id, 'acquired_at', fmt(now), 'expires_at', fmt(expires),
    'last_renewed_at', fmt(now), 'renewal_deadline', fmt(deadline))
  core.current_lease_id = lease_id
  core.current_lease_epoch = fmt(epoch)
  core.current_attempt_id = attempt_id
  core.current_worker_id = worker_id
  core.current_worker_instance_id = worker_instance_id
  core.lease_acquired_at = fmt(now)
  core.lease_last_renewed_at = fmt(now)
  core.lease_expires_at = fmt(expires)
  core.lease_renewal_deadline = fmt(deadline)
  redis.call('ZADD', c.idx('lease_expiry'), fmt(expires), c.eid)
  redis.call('ZADD', c.idx('worker:' .. worker_instance_id .. ':leases'), 0, c.eid)
  redis.call('ZADD', lane_key(c, core, 'active'), fmt(expires), c.eid)
  return expires
end

-- Moves an execution to its lane's terminal index and drops its timeout entries.
local function enter_terminal_index(c, core, now)
  redis.call('ZREM', c.idx('execution_deadline'), c.eid)
  redis.call('ZREM', c.idx('attempt_timeout'), c.eid)
  redis.call('ZADD', lane_key(c, core, 'terminal'), fmt(now), c.eid)
end

-- Removes an execution from every lane index but terminal, and every timeout index.
local function remove_everywhere(c, core)
  for _, sfx in ipairs(RUNNABLE_SUFFIXES) do
    redis.call('ZREM', lane_key(c, core, sfx), c.eid)
  end
  redis.call('ZREM', lane_key(c, core, 'active'), c.eid)
  redis.call('ZREM', lane_key(c, core, 'suspended'), c.eid)
  for _, sfx in ipairs({ 'lease_expiry', 'suspension_timeout', 'attempt_timeout', 'execution_deadline' }) do
    redis.call('ZREM', c.idx(sfx), c.eid)
  end
  if core.current_worker_instance_id then
    redis.call('ZREM', c.idx('worker:' .. core.current_worker_instance_id .. ':leases'), c.eid)
  end
end

-- Ends the current attempt record with a lifecycle and optional failure.
local function end_attempt(c, core, state, reason, category, now)
  if not core.current_attempt_index then
    return
  end
  local key = c.attempt(num(core.current_attempt_index))
  if redis.call('EXISTS', key) == 0 then
    return
  end
  redis.call('HSET', key, 'attempt_state', state, 'ended_at', fmt(now))
  if reason ~= nil then
    redis.call('HSET', key, 'failure_reason', reason)
    if category ~= nil and category ~= '' then
      redis.call('HSET', key, 'failure_category', category)
    end
  end
end

-- Whether a live grant exists at `now`.
local function live_grant(c, now)
  local g = redis.call('HMGET', c.exec('claim_grant'), 'worker_id', 'grant_expires_at')
  if not g[1] then
    return nil
  end
  if now <= num(g[2]) then
    return g[1]
  end
  return nil
end

-- Checks a grant for a claimant: present, live and for this worker (spec 01 §9.2).
local function check_grant(c, worker_id, now)
  if live_grant(c, now) ~= worker_id then
    error(reject('invalid_claim_grant'))
  end
end

-- Appends a completion event (spec 01 §5.5) to the outbox of the execution's
-- partition, numbered by the partition's own sequence, so the terminal transition
-- stays on its slot; reading the feed relays outboxes into it (ff_relay_completions).
local function publish_completion(c, flow_id, outcome, now)
  local outbox = c.idx('completions')
  local seq = redis.call('INCR', outbox .. ':seq')
  redis.call('RPUSH', outbox, cjson.encode({
    seq = fmt(seq), execution_id = c.eid, flow_id = flow_id, outcome = outcome, ts = fmt(now),
  }))
  redis.call('LTRIM', outbox, -COMPLETIONS_LEN_MAX, -1)
end

-- For a flow member that just became terminal: publishes its completion (unless
-- `publish` is false) and runs the completion cascade in the same call (spec 03 §2.5),
-- after writing the core, since the cascade reads the upstream's stored state.
local function cascade_if_flow(c, core, outcome, now, publish)
  if core.flow_id and core.flow_id ~= '' then
    if publish then
      publish_completion(c, core.flow_id, outcome, now)
    end
    put_core(c, core)
    FL.cascade(c, now)
  end
end

-- Publishes a completion for flow members and cascades (spec 01 §5.5, spec 03 §2.5).
local function publish_if_flow(c, core, outcome, now)
  cascade_if_flow(c, core, outcome, now, true)
end
