-- admission.lua: budgets and quotas (spec 03 §3–§4, reconcilers §7.3.7–§7.3.8),
-- mirroring crates/ff-engine/src/admission.rs.
--
-- Calling convention: KEYS[1] = the budget (quota) definition hash
-- `<prefix>ff:budget:{b:M}:<id>` (`<prefix>ff:quota:{q:K}:<id>`); ARGV = now, prefix,
-- tag, id, arguments. Scanner passes take KEYS[1] = the partition's policy index.
-- Every key of a call shares the `{b:M}` / `{q:K}` slot of KEYS[1].
--
-- Budget records: the definition hash (scope, modes, counters, times, `breached_at`),
-- `…:limits` (hard:<dim>, soft:<dim>), `…:usage`, `…:by_exec:<eid>` ledgers with
-- `…:by_exec:index`, `ff:idx:T:budget_resets`, `ff:idx:T:budget_policies`, and
-- `ff:usagededup:T:<budget>|<key>` markers (their expiry ms).
-- Quota records: the definition hash (limits, `created_at` only once defined,
-- `concurrency`), `…:window:all` (admissions by ms; the dimension is ignored),
-- `…:admitted_set` (admission guards scored by expiry), `ff:idx:T:quota_policies`.
--
-- Usage, limits and deltas are Lua doubles: exact up to 2^53 − 1, where sums saturate
-- (the client refuses larger inputs).

local AD = {}

AD.USAGE_DEDUP_TTL_MS = 86400000
AD.VALUE_MAX = 9007199254740991
AD.USAGE_HIDDEN_FIELD = '_init'

function AD.add(a, b)
  return math.min(a + b, AD.VALUE_MAX)
end

-- Key context of a budget or quota call (`family` is 'budget' or 'quota').
function AD.ctx(keys, args, family)
  local c = { now = now_ms(args[1]), prefix = args[2], tag = args[3], id = args[4] }
  c.def = c.prefix .. 'ff:' .. family .. ':' .. c.tag .. ':' .. c.id
  if c.def ~= keys[1] then
    error(reject('invalid_input', 'KEYS[1] is not the definition key of ARGV[4]'))
  end
  c.key = function(suffix)
    return c.def .. ':' .. suffix
  end
  c.idx = function(suffix)
    return c.prefix .. 'ff:idx:' .. c.tag .. ':' .. suffix
  end
  return c
end

-- The context of another policy on the same partition (scanner passes).
function AD.sibling(p, family, id)
  return AD.ctx({ p.prefix .. 'ff:' .. family .. ':' .. p.tag .. ':' .. id },
    { fmt(p.now), p.prefix, p.tag, id }, family)
end

-- Scanner pass context: KEYS[1] = the partition's `<family>_policies` index.
function AD.pass_ctx(keys, args, family)
  local p = { now = now_ms(args[1]), prefix = args[2], tag = args[3] }
  p.idx = function(suffix)
    return p.prefix .. 'ff:idx:' .. p.tag .. ':' .. suffix
  end
  if p.idx(family .. '_policies') ~= keys[1] then
    error(reject('invalid_input', 'KEYS[1] is not the policy index of ARGV[3]'))
  end
  return p
end

-- ------------------------------------------------------------ budgets

function AD.next_reset(now, interval)
  if interval == 0 then
    return nil
  end
  return now + interval
end

-- ff_create_budget (spec 03 §3.2.1). ARGV[5…]: scope type, scope id, enforcement mode,
-- on hard, on soft, reset interval ms, dimension count, then (dim, hard, soft) per dimension.
function AD.create_budget(keys, args)
  local c = AD.ctx(keys, args, 'budget')
  redis.call('ZADD', c.idx('budget_policies'), 0, c.id)
  if redis.call('EXISTS', c.def) == 1 then
    return { 'already_satisfied' }
  end
  local interval = need_num(args, 10, 'reset_interval_ms')
  local next_reset = AD.next_reset(c.now, interval)
  for i = 0, need_list(args, 11, 'dimension count', 3) - 1 do
    local dim = args[12 + 3 * i]
    redis.call('HSET', c.key('limits'), 'hard:' .. dim, args[13 + 3 * i], 'soft:' .. dim, args[14 + 3 * i])
  end
  redis.call('HSET', c.def, 'scope_type', args[5], 'scope_id', args[6], 'enforcement_mode', args[7],
    'on_hard_limit', args[8], 'on_soft_limit', args[9], 'reset_interval_ms', fmt(interval),
    'breach_count', '0', 'soft_breach_count', '0', 'reset_count', '0', 'created_at', fmt(c.now),
    'last_updated_at', fmt(c.now))
  if next_reset then
    redis.call('HSET', c.def, 'next_reset_at', fmt(next_reset))
    redis.call('ZADD', c.idx('budget_resets'), fmt(next_reset), c.id)
  end
  return { 'created' }
end

function AD.must_budget(c)
  local rec = hash_table(c.def)
  if rec.created_at == nil then
    error(reject('budget_not_found'))
  end
  return rec
end

-- The first delta that would carry its dimension past the hard limit, checked on the
-- running total within the report: dim, pre-increment usage, limit.
function AD.find_hard_breach(c, deltas)
  local running = {}
  for _, d in ipairs(deltas) do
    local current = running[d[1]] or num(redis.call('HGET', c.key('usage'), d[1]))
    local nxt = AD.add(current, d[2])
    running[d[1]] = nxt
    local limit = num(redis.call('HGET', c.key('limits'), 'hard:' .. d[1]))
    if limit > 0 and nxt > limit then
      return { d[1], current, limit }
    end
  end
  return nil
end

-- ff_charge_budget (spec 03 §3.2.2–3.2.3). ARGV[5…]: dedup key ("" none), execution id
-- for the ledger ("" none), delta count, then (dim, delta) per delta.
-- Replies {"ok"} / {"soft_breach", dim, usage, limit} / {"hard_breach", …} / {"already_applied"}.
function AD.charge(keys, args)
  local c = AD.ctx(keys, args, 'budget')
  local deltas = {}
  for i = 0, need_list(args, 7, 'delta count', 2) - 1 do
    deltas[#deltas + 1] = { args[8 + 2 * i], need_num(args, 9 + 2 * i, 'delta') }
  end
  AD.must_budget(c)
  local dedup = nil
  if args[5] ~= '' then
    dedup = c.prefix .. 'ff:usagededup:' .. c.tag .. ':' .. c.id .. '|' .. args[5]
    local expires = redis.call('GET', dedup)
    if expires and c.now < tonumber(expires) then
      return { 'already_applied' }
    end
  end
  local breach = AD.find_hard_breach(c, deltas)
  if breach then
    -- Only the breach bookkeeping is written; no dedup marker, so a retry re-evaluates.
    redis.call('HINCRBY', c.def, 'breach_count', 1)
    redis.call('HSET', c.def, 'last_breach_at', fmt(c.now), 'last_breach_dim', breach[1],
      'last_updated_at', fmt(c.now))
    return { 'hard_breach', breach[1], fmt(breach[2]), fmt(breach[3]) }
  end
  local soft = nil
  for _, d in ipairs(deltas) do
    local used = AD.add(num(redis.call('HGET', c.key('usage'), d[1])), d[2])
    redis.call('HSET', c.key('usage'), d[1], fmt(used))
    local limit = num(redis.call('HGET', c.key('limits'), 'soft:' .. d[1]))
    if soft == nil and limit > 0 and used > limit then
      soft = { d[1], used, limit }
    end
  end
  if args[6] ~= '' and #deltas > 0 then
    local ledger = c.key('by_exec:' .. args[6])
    for _, d in ipairs(deltas) do
      redis.call('HSET', ledger, d[1], fmt(AD.add(num(redis.call('HGET', ledger, d[1])), d[2])))
    end
    redis.call('SADD', c.key('by_exec:index'), args[6])
  end
  redis.call('HSET', c.def, 'last_updated_at', fmt(c.now))
  if soft then
    redis.call('HINCRBY', c.def, 'soft_breach_count', 1)
  end
  if dedup then
    redis.call('SET', dedup, fmt(c.now + AD.USAGE_DEDUP_TTL_MS))
  end
  if soft then
    return { 'soft_breach', soft[1], fmt(soft[2]), fmt(soft[3]) }
  end
  return { 'ok' }
end

-- ff_release_budget (spec 03 §3.2.4). ARGV[5]: execution id. Replies {"1"} if released.
function AD.release_budget(keys, args)
  local c = AD.ctx(keys, args, 'budget')
  local ledger = c.key('by_exec:' .. args[5])
  if redis.call('EXISTS', c.def) == 0 or redis.call('EXISTS', ledger) == 0 then
    return { '0' }
  end
  local spent = redis.call('HGETALL', ledger)
  for i = 1, #spent, 2 do
    local delta = tonumber(spent[i + 1])
    if delta > 0 then
      local used = num(redis.call('HGET', c.key('usage'), spent[i]))
      redis.call('HSET', c.key('usage'), spent[i], fmt(math.max(used - delta, 0)))
    end
  end
  redis.call('DEL', ledger)
  redis.call('SREM', c.key('by_exec:index'), args[5])
  return { '1' }
end

-- The body of ff_reset_budget, shared with the reset scanner; returns next_reset_at or nil.
function AD.reset_in(c)
  local rec = AD.must_budget(c)
  local usage = redis.call('HKEYS', c.key('usage'))
  for _, dim in ipairs(usage) do
    redis.call('HSET', c.key('usage'), dim, '0')
  end
  local next_reset = AD.next_reset(c.now, num(rec.reset_interval_ms))
  redis.call('HINCRBY', c.def, 'reset_count', 1)
  redis.call('HSET', c.def, 'last_reset_at', fmt(c.now), 'last_updated_at', fmt(c.now))
  redis.call('HDEL', c.def, 'last_breach_at', 'last_breach_dim')
  if next_reset then
    redis.call('HSET', c.def, 'next_reset_at', fmt(next_reset))
    redis.call('ZADD', c.idx('budget_resets'), fmt(next_reset), c.id)
  else
    redis.call('HDEL', c.def, 'next_reset_at')
    redis.call('ZREM', c.idx('budget_resets'), c.id)
  end
  return next_reset
end

-- ff_reset_budget (spec 03 §3.2.5). Replies {next_reset_at or ""}.
function AD.reset_budget(keys, args)
  local next_reset = AD.reset_in(AD.ctx(keys, args, 'budget'))
  return { next_reset and fmt(next_reset) or '' }
end

-- ff_budget_status (spec 03 §3.3): {definition pairs, usage pairs, limit pairs} or {}.
function AD.budget_status(keys, args)
  local c = AD.ctx(keys, args, 'budget')
  local def = redis.call('HGETALL', c.def)
  if #def == 0 then
    return {}
  end
  return { def, redis.call('HGETALL', c.key('usage')), redis.call('HGETALL', c.key('limits')) }
end

-- Sorted hard-limited dimensions of a budget with their limits.
function AD.hard_limits(c)
  local flat = redis.call('HGETALL', c.key('limits'))
  local out = {}
  for i = 1, #flat, 2 do
    local dim = flat[i]:match('^hard:(.*)$')
    if dim then
      out[#out + 1] = { dim, tonumber(flat[i + 1]) }
    end
  end
  table.sort(out, function(x, y) return x[1] < y[1] end)
  return out
end

-- ff_budget_hard_breach (spec 03 §6.2 c, §7.3.6): {dim, used, limit} of the first hard
-- dimension at or past its limit, or {}.
function AD.budget_hard_breach(keys, args)
  local c = AD.ctx(keys, args, 'budget')
  for _, h in ipairs(AD.hard_limits(c)) do
    local used = num(redis.call('HGET', c.key('usage'), h[1]))
    if h[2] > 0 and used >= h[2] then
      return { h[1], fmt(used), fmt(h[2]) }
    end
  end
  return {}
end

-- The budget reconciler's step (spec 03 §7.3.7): flips the breach marker; true if flipped.
function AD.reconcile_budget(c)
  local rec = hash_table(c.def)
  if rec.created_at == nil or num(rec.reset_interval_ms) > 0 then
    return false
  end
  local limited, breached = false, false
  for _, h in ipairs(AD.hard_limits(c)) do
    if h[2] > 0 then
      limited = true
      breached = breached or num(redis.call('HGET', c.key('usage'), h[1])) > h[2]
    end
  end
  if not limited or breached == (rec.breached_at ~= nil) then
    return false
  end
  if breached then
    redis.call('HSET', c.def, 'breached_at', fmt(c.now))
  else
    redis.call('HDEL', c.def, 'breached_at')
  end
  return true
end

-- ff_budget_pass: one BudgetReset / BudgetReconciler pass over a budget partition.
-- ARGV[4…]: kind, batch. Replies {examined, acted}.
function AD.budget_pass(keys, args)
  local p = AD.pass_ctx(keys, args, 'budget')
  local kind = need_enum(args, 4, 'budget pass kind', { 'budget_reset', 'budget_reconciler' })
  local batch = need_num(args, 5, 'batch')
  local examined, acted = 0, 0
  if kind == 'budget_reset' then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', p.idx('budget_resets'), '-inf', fmt(p.now), 'LIMIT', 0, batch)) do
      examined = examined + 1
      local c = AD.sibling(p, 'budget', id)
      if redis.call('EXISTS', c.def) == 1 then
        AD.reset_in(c)
        acted = acted + 1
      else
        redis.call('ZREM', p.idx('budget_resets'), id)
      end
    end
  else
    for _, id in ipairs(redis.call('ZRANGE', p.idx('budget_policies'), 0, batch - 1)) do
      examined = examined + 1
      if AD.reconcile_budget(AD.sibling(p, 'budget', id)) then
        acted = acted + 1
      end
    end
  end
  return { fmt(examined), fmt(acted) }
end

-- ------------------------------------------------------------ quotas

-- Removes window entries scored at or before `cutoff`.
function AD.trim_window(c, cutoff)
  redis.call('ZREMRANGEBYSCORE', c.key('window:all'), '-inf', fmt(cutoff))
end

-- ff_create_quota_policy (spec 03 §4.2.1). ARGV[5…]: window seconds, max requests, cap.
function AD.create_quota(keys, args)
  local c = AD.ctx(keys, args, 'quota')
  if redis.call('HEXISTS', c.def, 'created_at') == 1 then
    return { 'already_satisfied' }
  end
  redis.call('HSET', c.def, 'requests_per_window_seconds', args[5], 'max_requests_per_window', args[6],
    'active_concurrency_cap', args[7], 'created_at', fmt(c.now), 'concurrency', '0')
  redis.call('ZADD', c.idx('quota_policies'), 0, c.id)
  return { 'created' }
end

-- ff_check_admission (spec 03 §4.2.2) on the caller's limits. ARGV[5…]: execution id,
-- window seconds, rate limit, concurrency cap. Replies {"admitted"} / {"already_admitted"} /
-- {"rate_exceeded", retry_after_ms} / {"concurrency_exceeded"}.
function AD.check_admission(keys, args)
  local c = AD.ctx(keys, args, 'quota')
  local now, eid = c.now, args[5]
  local window_ms = need_num(args, 6, 'window_seconds') * 1000
  local rate, cap = need_num(args, 7, 'rate_limit'), need_num(args, 8, 'concurrency_cap')
  local guard = redis.call('ZSCORE', c.key('admitted_set'), eid)
  if guard and now < tonumber(guard) then
    return { 'already_admitted' }
  end
  AD.trim_window(c, now - window_ms)
  if rate > 0 and redis.call('ZCARD', c.key('window:all')) >= rate then
    local oldest = redis.call('ZRANGE', c.key('window:all'), 0, 0, 'WITHSCORES')
    local at = now
    if oldest[2] then
      at = tonumber(oldest[2])
    end
    return { 'rate_exceeded', fmt(math.max(at + window_ms - now, 0)) }
  end
  local concurrency = num(redis.call('HGET', c.def, 'concurrency'))
  if cap > 0 and concurrency >= cap then
    return { 'concurrency_exceeded' }
  end
  redis.call('ZADD', c.key('window:all'), fmt(now), eid)
  -- Lapsed guards are dead already; dropping them here only bounds the set.
  redis.call('ZREMRANGEBYSCORE', c.key('admitted_set'), '-inf', fmt(now))
  if window_ms > 0 then
    redis.call('ZADD', c.key('admitted_set'), fmt(now + window_ms), eid)
  end
  if cap > 0 then
    concurrency = concurrency + 1
  end
  redis.call('HSET', c.def, 'concurrency', fmt(concurrency))
  return { 'admitted' }
end

-- ff_release_admission (spec 03 §4.2.3). ARGV[5]: execution id.
function AD.release_admission(keys, args)
  local c = AD.ctx(keys, args, 'quota')
  if redis.call('EXISTS', c.def) == 0 then
    return { 'ok' }
  end
  redis.call('ZREM', c.key('admitted_set'), args[5])
  redis.call('HSET', c.def, 'concurrency', fmt(math.max(num(redis.call('HGET', c.def, 'concurrency')) - 1, 0)))
  return { 'ok' }
end

-- ff_quota_limits (spec 03 §4.3): {window seconds, max requests, cap} or {} when undefined.
function AD.quota_limits(keys, args)
  local c = AD.ctx(keys, args, 'quota')
  local r = redis.call('HMGET', c.def, 'created_at', 'requests_per_window_seconds', 'max_requests_per_window',
    'active_concurrency_cap')
  if not r[1] then
    return {}
  end
  return { r[2], r[3], r[4] }
end

-- ff_quota_still_blocked (spec 03 §7.3.6): {"1"} while the window is full or the cap reached;
-- trims the window.
function AD.quota_still_blocked(keys, args)
  local c = AD.ctx(keys, args, 'quota')
  local rec = hash_table(c.def)
  if rec.created_at == nil then
    return { '0' }
  end
  local max = num(rec.max_requests_per_window)
  if max > 0 then
    local seconds = num(rec.requests_per_window_seconds)
    if seconds == 0 then
      seconds = 60
    end
    AD.trim_window(c, c.now - seconds * 1000)
    if redis.call('ZCARD', c.key('window:all')) >= max then
      return { '1' }
    end
  end
  local cap = num(rec.active_concurrency_cap)
  return { (cap > 0 and num(rec.concurrency) >= cap) and '1' or '0' }
end

-- The quota reconciler's step (spec 03 §7.3.8); true if the counter was corrected.
function AD.reconcile_quota(c)
  local rec = hash_table(c.def)
  if rec.created_at == nil then
    return false
  end
  local seconds = num(rec.requests_per_window_seconds)
  if seconds > 0 then
    AD.trim_window(c, c.now - seconds * 1000)
  end
  if num(rec.active_concurrency_cap) == 0 then
    return false
  end
  redis.call('ZREMRANGEBYSCORE', c.key('admitted_set'), '-inf', fmt(c.now))
  local live = redis.call('ZCARD', c.key('admitted_set'))
  if num(rec.concurrency) == live then
    return false
  end
  redis.call('HSET', c.def, 'concurrency', fmt(live))
  return true
end

-- ff_quota_pass: one QuotaReconciler pass over a quota partition. ARGV[4…]: batch.
function AD.quota_pass(keys, args)
  local p = AD.pass_ctx(keys, args, 'quota')
  local examined, acted = 0, 0
  for _, id in ipairs(redis.call('ZRANGE', p.idx('quota_policies'), 0, need_num(args, 4, 'batch') - 1)) do
    examined = examined + 1
    if AD.reconcile_quota(AD.sibling(p, 'quota', id)) then
      acted = acted + 1
    end
  end
  return { fmt(examined), fmt(acted) }
end

SP.register('ff_create_budget', AD.create_budget, {}, 11)
SP.register('ff_charge_budget', AD.charge, {}, 7)
SP.register('ff_release_budget', AD.release_budget, {}, 5)
SP.register('ff_reset_budget', AD.reset_budget, {}, 4)
SP.register('ff_budget_status', AD.budget_status, { 'no-writes' }, 4)
SP.register('ff_budget_hard_breach', AD.budget_hard_breach, { 'no-writes' }, 4)
SP.register('ff_budget_pass', AD.budget_pass, {}, 5)
SP.register('ff_create_quota_policy', AD.create_quota, {}, 7)
SP.register('ff_check_admission', AD.check_admission, {}, 8)
SP.register('ff_release_admission', AD.release_admission, {}, 5)
SP.register('ff_quota_limits', AD.quota_limits, { 'no-writes' }, 4)
SP.register('ff_quota_still_blocked', AD.quota_still_blocked, {}, 4)
SP.register('ff_quota_pass', AD.quota_pass, {}, 4)

-- ff_list_blocked: the unblock scanner's candidates on one execution partition (partition
-- convention; ARGV[4]: batch per lane index). Rows {execution id, expected reason, blocking
-- reason ("" when gone), budget ids, quota policy id, required capabilities, namespace}.
function AD.list_blocked(keys, args)
  local p = partition_ctx(keys, args)
  local batch = need_num(args, 4, 'batch')
  local out = {}
  local lanes = redis.call('ZRANGE', p.idx('lanes'), 0, SP.LANES_PER_PASS_MAX - 1)
  for _, lane in ipairs(lanes) do
    for _, pair in ipairs({ { 'budget', 'waiting_for_budget' }, { 'quota', 'waiting_for_quota' },
        { 'route', 'waiting_for_capable_worker' } }) do
      local members = redis.call('ZRANGE', p.idx('lane:' .. lane .. ':blocked:' .. pair[1]), 0, batch - 1)
      for _, eid in ipairs(members) do
        local core = p.prefix .. 'ff:exec:' .. p.tag .. ':' .. eid .. ':core'
        local f = redis.call('HMGET', core, 'blocking_reason', 'budget_ids', 'quota_policy_id',
          'required_capabilities', 'namespace')
        out[#out + 1] = { eid, pair[2], f[1] or '', f[2] or '', f[3] or '', f[4] or '', f[5] or '' }
      end
    end
  end
  return out
end

SP.register('ff_list_blocked', AD.list_blocked, { 'no-writes' }, 4)
