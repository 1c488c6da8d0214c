-- suspension.lua: waitpoints, suspend, signals, operator resume, the suspension
-- timeout and the waitpoint HMAC keystore (spec 02 §2–§9), mirroring
-- crates/ff-engine/src/{suspension,conditions}.rs and ff_core::hmac_token.
--
-- Tokens are HMAC-SHA1 (ff_core::hmac_token), computed here from
-- `redis.sha1hex` and `bit.bxor`, so minting (create, suspend) and verification
-- (deliver) happen inside the one atomic call that reads the keystore.
-- Every helper lives in the `SP` table (the library is one Lua chunk, whose
-- top level may hold at most 200 locals).
--
-- Records, all in the execution's `{fp:N}` slot (names of ff_core::keys):
--   ff:sec:T:waitpoint_hmac      keystore hash (current_kid, secret:<kid>, expires_at:<kid>,
--                                previous_kid, previous_expires_at), one per partition
--   ff:wp:T:<wp>                 waitpoint hash; ff:wp:T:<wp>:signals its signal log (zset by arrival)
--   ff:signal:T:<sid>            signal hash; `…:payload` its payload when non-empty
--   ff:sigdedup:T:<wp>:<key>     signal idempotency record (signal_id, expires_at)
--   ff:exec:T:E:suspension:current   the last suspension (JSON, numbers as strings)
--   ff:exec:T:E:waitpoints       every waitpoint id of the execution (zset, score 0)
--   ff:exec:T:E:signals          signal ids by acceptance ms
--   ff:dedup:suspend:T:E:<key>   stored suspend outcome (JSON)
--   ff:idx:T:suspension_timeout, ff:idx:T:pending_waitpoint_expiry, ff:idx:T:lane:L:suspended

local SP = {}

SP.SIGNAL_DEDUP_TTL_MS_DEFAULT = 86400000
SP.SIGNALS_PER_EXECUTION_MAX_DEFAULT = 10000
SP.SIGNAL_LOG_LEN_DEFAULT = 1000
SP.SUSPEND_DEDUP_GRACE_MS = 60000
SP.SUSPEND_DEDUP_TTL_MS_MAX = 604800000
SP.SUSPENDED_NO_TIMEOUT_SCORE = 9999999999999
SP.TIMEOUT_SKEW_MS_MAX = 600000
SP.LANES_PER_PASS_MAX = 1024
SP.LIST_LIMIT_MAX = 10000
SP.BUFFERED = 'buffered_for_pending_waitpoint'

-- ------------------------------------------------------------ keys

function SP.keystore_key(prefix, tag)
  return prefix .. 'ff:sec:' .. tag .. ':waitpoint_hmac'
end

function SP.wp_key(prefix, tag, id)
  return prefix .. 'ff:wp:' .. tag .. ':' .. id
end

function SP.signal_key(c, id)
  return c.prefix .. 'ff:signal:' .. c.tag .. ':' .. id
end

function SP.sigdedup_key(c, wp, k)
  return c.prefix .. 'ff:sigdedup:' .. c.tag .. ':' .. wp .. ':' .. k
end

function SP.suspend_dedup_key(c, k)
  return c.prefix .. 'ff:dedup:suspend:' .. c.tag .. ':' .. c.eid .. ':' .. k
end

-- ------------------------------------------------------------ HMAC-SHA1

-- Decodes mixed-case hex; nil on odd length or a non-hex character.
function SP.hex_decode(h)
  if #h % 2 ~= 0 or h:find('[^0-9a-fA-F]') then
    return nil
  end
  return (h:gsub('..', function(x) return string.char(tonumber(x, 16)) end))
end

-- Lowercase hex HMAC-SHA1 (RFC 2104, 64-byte blocks) of `msg` under the raw `key`.
function SP.hmac_sha1_hex(key, msg)
  if #key > 64 then
    key = SP.hex_decode(redis.sha1hex(key))
  end
  key = key .. string.rep('\0', 64 - #key)
  local ipad, opad = {}, {}
  for i = 1, 64 do
    local b = key:byte(i)
    ipad[i] = string.char(bit.bxor(b, 0x36))
    opad[i] = string.char(bit.bxor(b, 0x5c))
  end
  local inner = SP.hex_decode(redis.sha1hex(table.concat(ipad) .. msg))
  return redis.sha1hex(table.concat(opad) .. inner)
end

-- Byte comparison whose time does not depend on where the strings differ.
function SP.equal_ct(a, b)
  if #a ~= #b then
    return false
  end
  local acc = 0
  for i = 1, #a do
    acc = bit.bor(acc, bit.bxor(a:byte(i), b:byte(i)))
  end
  return acc == 0
end

-- The digest of `waitpoint_uuid|waitpoint_key|created_at` under a hex secret (spec 02 §2.2).
function SP.digest(secret_hex, wp_id, wp_key, created_at)
  local key = SP.hex_decode(secret_hex)
  if key == nil then
    error(reject('invalid_secret'))
  end
  return SP.hmac_sha1_hex(key, wp_id .. '|' .. wp_key .. '|' .. fmt(created_at))
end

-- Whether a demoted kid with expiry `at` still verifies at `now` (boundary inclusive).
function SP.still_verifies(at, now)
  return at > 0 and at >= now
end

-- Mints `kid:digest` with the current kid (spec 02 §2.4).
function SP.mint(prefix, tag, wp_id, wp_key, now)
  local ks = SP.keystore_key(prefix, tag)
  local kid = redis.call('HGET', ks, 'current_kid')
  if not kid then
    error(reject('hmac_secret_not_initialized'))
  end
  local secret = redis.call('HGET', ks, 'secret:' .. kid)
  if not secret then
    error(reject('hmac_secret_not_initialized'))
  end
  return kid .. ':' .. SP.digest(secret, wp_id, wp_key, now)
end

-- Verifies a presented token (spec 02 §2.5); raises the rejection.
function SP.verify(prefix, tag, token, wp_id, wp_key, created_at, now)
  if token == '' then
    error(reject('missing_token'))
  end
  local colon = token:find(':', 1, true)
  if not colon then
    error(reject('invalid_token'))
  end
  local kid, presented = token:sub(1, colon - 1), token:sub(colon + 1)
  if kid == '' or #presented ~= 40 then
    error(reject('invalid_token'))
  end
  local ks = SP.keystore_key(prefix, tag)
  local current = redis.call('HGET', ks, 'current_kid')
  if not current then
    error(reject('hmac_secret_not_initialized'))
  end
  local secret = redis.call('HGET', ks, 'secret:' .. kid)
  if not secret then
    error(reject('invalid_token'))
  end
  if kid ~= current and not SP.still_verifies(num(redis.call('HGET', ks, 'expires_at:' .. kid)), now) then
    error(reject('token_expired'))
  end
  if not SP.equal_ct(SP.digest(secret, wp_id, wp_key, created_at), presented) then
    error(reject('invalid_token'))
  end
end

-- ------------------------------------------------------------ keystore contracts

-- ff_seed_hmac_secret (spec 02 §2.9) on one partition's keystore. ARGV[4…]: kid, secret hex
-- (validated by the client). Replies the per-keystore outcome.
function SP.seed(keys, args)
  local p = partition_ctx(keys, args)
  local ks = SP.keystore_key(p.prefix, p.tag)
  local kid, secret = args[4], args[5]
  local current = redis.call('HGET', ks, 'current_kid')
  if current and current ~= kid then
    return { 'different_kid' }
  end
  if current then
    local stored = redis.call('HGET', ks, 'secret:' .. kid)
    if stored == secret then
      return { 'matched' }
    end
    if stored then
      return { 'same_kid_different_secret' }
    end
  end
  redis.call('HDEL', ks, 'expires_at:' .. kid)
  redis.call('HSET', ks, 'secret:' .. kid, secret, 'current_kid', kid)
  return { 'installed' }
end

-- Deletes every demoted kid that no longer verifies; returns how many.
function SP.collect_expired(ks, current, now)
  local flat = redis.call('HGETALL', ks)
  local n = 0
  for i = 1, #flat, 2 do
    local kid = flat[i]:match('^expires_at:(.*)$')
    if kid and kid ~= current and not SP.still_verifies(num(flat[i + 1]), now) then
      redis.call('HDEL', ks, flat[i], 'secret:' .. kid)
      n = n + 1
    end
  end
  return n
end

-- ff_rotate_hmac_secret (spec 02 §2.6) on one partition's keystore.
-- ARGV[4…]: new kid, new secret hex, grace ms (validated by the client).
function SP.rotate(keys, args)
  local p = partition_ctx(keys, args)
  local ks = SP.keystore_key(p.prefix, p.tag)
  local kid, secret, grace = args[4], args[5], need_num(args, 6, 'grace_ms')
  local current = redis.call('HGET', ks, 'current_kid')
  if current == kid then
    local stored = redis.call('HGET', ks, 'secret:' .. kid)
    if stored and stored ~= secret then
      error(reject('rotation_conflict', kid))
    end
    if not stored then
      redis.call('HSET', ks, 'secret:' .. kid, secret)
    end
    return { 'noop', kid }
  end
  if redis.call('HEXISTS', ks, 'secret:' .. kid) == 1 then
    error(reject('rotation_conflict', kid))
  end
  local gc = SP.collect_expired(ks, current, p.now)
  if current then
    local until_ms = fmt(p.now + grace)
    redis.call('HSET', ks, 'previous_kid', current, 'previous_expires_at', until_ms,
      'expires_at:' .. current, until_ms)
  end
  redis.call('HDEL', ks, 'expires_at:' .. kid)
  redis.call('HSET', ks, 'secret:' .. kid, secret, 'current_kid', kid)
  return { 'rotated', current or '', kid, fmt(gc) }
end

-- ff_list_hmac_kids (spec 02 §2.8): {current kid or "", kid, expires_at, …} of kids still verifying.
function SP.list_kids(keys, args)
  local p = partition_ctx(keys, args)
  local flat = redis.call('HGETALL', SP.keystore_key(p.prefix, p.tag))
  local out = { '' }
  for i = 1, #flat, 2 do
    if flat[i] == 'current_kid' then
      out[1] = flat[i + 1]
    end
    local kid = flat[i]:match('^expires_at:(.*)$')
    if kid and SP.still_verifies(num(flat[i + 1]), p.now) then
      out[#out + 1] = kid
      out[#out + 1] = flat[i + 1]
    end
  end
  return out
end

-- ------------------------------------------------------------ records

function SP.load_wp(prefix, tag, id)
  local w = hash_table(SP.wp_key(prefix, tag, id))
  if next(w) == nil then
    return nil
  end
  return w
end

SP.WP_FIELDS = {
  'waitpoint_id', 'execution_id', 'attempt_index', 'suspension_id', 'waitpoint_key', 'token', 'state',
  'created_at', 'activated_at', 'expires_at', 'satisfied_at', 'closed_at', 'close_reason', 'signal_count',
  'matched_signal_count', 'last_signal_at', 'log_seq', 'condition_closed', 'condition_closed_reason',
}

function SP.put_wp(prefix, tag, w)
  local key = SP.wp_key(prefix, tag, w.waitpoint_id)
  local flat = {}
  for _, f in ipairs(SP.WP_FIELDS) do
    if w[f] ~= nil and w[f] ~= false then
      flat[#flat + 1] = f
      flat[#flat + 1] = tostring(w[f])
    end
  end
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(flat))
end

function SP.new_wp(c, core, id, key, token, now, state)
  return {
    waitpoint_id = id, execution_id = c.eid, attempt_index = core.current_attempt_index or '0',
    waitpoint_key = key, token = token, state = state, created_at = fmt(now), signal_count = '0',
    matched_signal_count = '0', log_seq = '0', condition_closed = '0',
  }
end

-- Closes a waitpoint record and its condition.
function SP.close_record(w, reason, condition_reason, now, satisfied)
  w.state = 'closed'
  w.closed_at = fmt(now)
  w.close_reason = reason
  if satisfied then
    w.satisfied_at = fmt(now)
  end
  w.condition_closed = '1'
  w.condition_closed_reason = condition_reason
end

-- The execution's last suspension, or nil.
function SP.load_susp(c)
  local raw = redis.call('GET', c.exec('suspension:current'))
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

function SP.open_susp(c)
  local susp = SP.load_susp(c)
  if susp and not susp.closed_at then
    return susp
  end
  return nil
end

function SP.put_susp(c, susp)
  redis.call('SET', c.exec('suspension:current'), cjson.encode(susp))
end

-- ------------------------------------------------------------ conditions (ff_engine::conditions)

function SP.accepts(matcher, name)
  if matcher == nil or matcher == cjson.null then
    return true
  end
  if matcher.kind == 'ByName' then
    return matcher.name == name
  end
  return true
end

function SP.child_path(parent, i)
  if parent == '' then
    return 'members[' .. i .. ']'
  end
  return parent .. '.members[' .. i .. ']'
end

function SP.is_all_of(node)
  return node.type == 'Composite' and node.kind == 'AllOf'
end

-- Visits Single and Count nodes reachable through AllOf nodes.
function SP.visit(node, path, f)
  if SP.is_all_of(node) then
    for i, m in ipairs(node.members) do
      SP.visit(m, SP.child_path(path, i - 1), f)
    end
  else
    f(node, path)
  end
end

-- Whether a node is satisfied by the token set (bottom-up, per node).
function SP.satisfied(node, path, tokens)
  if node.type == 'Single' then
    return tokens['leaf:' .. path] ~= nil
  end
  if SP.is_all_of(node) then
    for i, m in ipairs(node.members) do
      if not SP.satisfied(m, SP.child_path(path, i - 1), tokens) then
        return false
      end
    end
    return true
  end
  if node.type == 'Composite' and node.kind == 'Count' then
    local prefix, n = path .. '/', 0
    for t in pairs(tokens) do
      if t:sub(1, #prefix) == prefix then
        n = n + 1
      end
    end
    return n >= tonumber(node.n)
  end
  return false
end

-- The token a listening node records for an arrival, or nil when its matcher rejects it;
-- `listens` is false when the node does not listen on the arrival's waitpoint.
function SP.node_token(node, path, a)
  if node.type == 'Single' and node.waitpoint_key == a.key then
    if not SP.accepts(node.matcher, a.name) then
      return true, nil
    end
    return true, 'leaf:' .. path
  end
  if node.type == 'Composite' and node.kind == 'Count' then
    local listens = false
    for _, k in ipairs(node.waitpoints) do
      listens = listens or k == a.key
    end
    if not listens then
      return false, nil
    end
    if not SP.accepts(node.matcher, a.name) then
      return true, nil
    end
    if node.count_kind == 'DistinctWaitpoints' then
      return true, path .. '/wp:' .. a.wp
    elseif node.count_kind == 'DistinctSignals' then
      return true, path .. '/sig:' .. a.sid
    end
    return true, path .. '/src:' .. a.source_type .. ':' .. a.source_identity
  end
  return false, nil
end

-- Evaluates an arrival, adding its tokens; returns effect, matched, satisfied.
function SP.evaluate(cond, tokens, a)
  if cond.type ~= 'Composite' then
    if cond.type == 'Single' and SP.accepts(cond.matcher, a.name) then
      return 'resume_condition_satisfied', true, true
    end
    return 'no_op', false, false
  end
  local candidates, accepted, added = 0, 0, false
  SP.visit(cond, '', function(node, path)
    local listens, token = SP.node_token(node, path, a)
    if listens then
      candidates = candidates + 1
    end
    if token then
      accepted = accepted + 1
      if tokens[token] == nil then
        tokens[token] = true
        added = true
      end
    end
  end)
  if candidates == 0 then
    return 'signal_ignored_not_in_condition', false, false
  elseif accepted == 0 then
    return 'signal_ignored_matcher_failed', false, false
  elseif not added then
    return 'appended_to_waitpoint_duplicate', true, false
  elseif SP.satisfied(cond, '', tokens) then
    return 'resume_condition_satisfied', true, true
  end
  return 'appended_to_waitpoint', true, false
end

-- ------------------------------------------------------------ shared transitions

-- Moves a suspended execution to runnable (eligible, or delayed by `delay` ms) and writes it.
function SP.resume_core(c, core, delay, detail, now)
  if core.lifecycle_phase ~= 'suspended' then
    return
  end
  redis.call('ZREM', lane_key(c, core, 'suspended'), c.eid)
  redis.call('ZREM', c.idx('suspension_timeout'), c.eid)
  if delay == 0 then
    to_runnable(core, 'eligible_now', 'waiting_for_worker', '', 'attempt_interrupted', now)
    add_eligible(c, core)
  else
    local until_ms = now + delay
    to_runnable(core, 'not_eligible_until_time', 'waiting_for_resume_delay', detail, 'attempt_interrupted', now)
    core.delay_until = fmt(until_ms)
    redis.call('ZADD', lane_key(c, core, 'delayed'), fmt(until_ms), c.eid)
  end
  put_core(c, core)
end

-- Closes a suspension and every waitpoint it bound; `arrived` is closed but saved by the caller.
function SP.close_susp(c, susp, arrived, reason, condition_reason, satisfied, now)
  if satisfied then
    susp.satisfied_at = fmt(now)
  end
  susp.closed_at = fmt(now)
  susp.close_reason = reason
  local arrived_id = nil
  if arrived then
    SP.close_record(arrived, reason, condition_reason, now, satisfied)
    arrived_id = arrived.waitpoint_id
  end
  local ids = { susp.waitpoint_id }
  for _, extra in ipairs(susp.additional or {}) do
    ids[#ids + 1] = extra[1]
  end
  for _, id in ipairs(ids) do
    if id ~= arrived_id then
      local w = SP.load_wp(c.prefix, c.tag, id)
      if w and w.state ~= 'closed' then
        SP.close_record(w, reason, condition_reason, now, satisfied)
        SP.put_wp(c.prefix, c.tag, w)
      end
    end
  end
end

-- Closes an open suspension when its execution is cancelled (spec 01 §6.4).
function SP.close_for_terminal(c, reason, condition_reason, now)
  local susp = SP.open_susp(c)
  if susp then
    SP.close_susp(c, susp, nil, reason, condition_reason, false, now)
    SP.put_susp(c, susp)
  end
end

-- Closes an open suspension when its execution expires: `expired:<reason>` (spec 01 §6.9).
function SP.close_for_expiry(c, reason, now)
  local susp = SP.open_susp(c)
  if susp then
    SP.close_susp(c, susp, nil, 'expired', 'expired', false, now)
    susp.close_reason = 'expired:' .. reason
    SP.put_susp(c, susp)
  end
end

-- ------------------------------------------------------------ waitpoint contracts

-- ff_create_pending_waitpoint (spec 02 §3.2).
-- ARGV[5…]: attempt index, fence (3), waitpoint id, waitpoint key, expires_in ms, and "1" when
-- the client found the id open on another partition (waitpoint ids are global).
function SP.create_pending_waitpoint(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local core = must_load(c)
  validate_lease_and_mark(c, core, fence_arg(args, 6), now)
  if core.current_attempt_index ~= args[5] then
    error(reject('stale_lease'))
  end
  local wp_id, wp_key = args[9], args[10]
  local existing = SP.load_wp(c.prefix, c.tag, wp_id)
  if (existing and existing.state ~= 'closed') or args[12] == '1' then
    error(reject('waitpoint_already_exists'))
  end
  local token = SP.mint(c.prefix, c.tag, wp_id, wp_key, now)
  local w = SP.new_wp(c, core, wp_id, wp_key, token, now, 'pending')
  local expires = now + need_num(args, 11, 'expires_in_ms')
  w.expires_at = fmt(expires)
  SP.put_wp(c.prefix, c.tag, w)
  redis.call('ZADD', c.idx('pending_waitpoint_expiry'), fmt(expires), wp_id)
  redis.call('ZADD', c.exec('waitpoints'), 0, wp_id)
  return { token }
end

-- The body of ff_close_waitpoint, shared with the pending-waitpoint scanner; nil = not found.
function SP.close_waitpoint_in(prefix, tag, wp_id, reason, now)
  local expiry = prefix .. 'ff:idx:' .. tag .. ':pending_waitpoint_expiry'
  local w = SP.load_wp(prefix, tag, wp_id)
  if not w then
    redis.call('ZREM', expiry, wp_id)
    return nil
  end
  if w.state == 'closed' then
    return false
  end
  if reason == '' then
    reason = 'proactive_close'
  end
  SP.close_record(w, reason, reason, now, false)
  SP.put_wp(prefix, tag, w)
  redis.call('ZREM', expiry, wp_id)
  return true
end

-- ff_close_waitpoint (spec 02 §3.4). ARGV[5…]: waitpoint id, reason. Replies {"1"} or {"0"}.
function SP.close_waitpoint(keys, args)
  local c = ctx_of(keys, args)
  local closed = SP.close_waitpoint_in(c.prefix, c.tag, args[5], args[6], c.now)
  if closed == nil then
    error(reject('waitpoint_not_found'))
  end
  return { closed and '1' or '0' }
end

-- ------------------------------------------------------------ suspend

-- Feeds the buffered signals of a waitpoint, oldest first, to the evaluator.
function SP.replay_buffered(c, w, cond, tokens)
  local log = redis.call('ZRANGE', SP.wp_key(c.prefix, c.tag, w.waitpoint_id) .. ':signals', 0, 9999)
  for _, sid in ipairs(log) do
    local sig = redis.call('HMGET', SP.signal_key(c, sid), 'signal_name', 'source_type', 'source_identity')
    if sig[1] then
      local a = {
        wp = w.waitpoint_id, key = w.waitpoint_key, sid = sid, name = sig[1], source_type = sig[2] or '',
        source_identity = sig[3] or '',
      }
      local _, _, satisfied = SP.evaluate(cond, tokens, a)
      if satisfied then
        return true
      end
    end
  end
  return false
end

-- Checks and activates a pending waitpoint (spec 02 §6.2 step 8a); returns it and whether
-- its buffered signals already satisfy the condition.
function SP.activate_pending(c, core, r, tokens, now)
  local w = SP.load_wp(c.prefix, c.tag, r.primary_id)
  if not w and r.primary_key == 'elsewhere_not_pending' then
    -- The client found it on another partition (another execution's), past pending.
    error(reject('waitpoint_not_pending'))
  end
  if not w and r.primary_key == 'elsewhere_pending' then
    error(reject('invalid_waitpoint_for_execution'))
  end
  if not w then
    error(reject('waitpoint_not_found'))
  end
  if w.state ~= 'pending' then
    error(reject('waitpoint_not_pending'))
  end
  if w.execution_id ~= c.eid or w.attempt_index ~= core.current_attempt_index then
    error(reject('invalid_waitpoint_for_execution'))
  end
  if w.expires_at and num(w.expires_at) <= now then
    error(reject('pending_waitpoint_expired'))
  end
  if (w.token or '') == '' then
    error(reject('waitpoint_not_token_bound'))
  end
  w.suspension_id = r.suspension_id
  w.state = 'active'
  w.activated_at = fmt(now)
  w.expires_at = r.timeout_at
  return w, SP.replay_buffered(c, w, r.cond, tokens)
end

function SP.fresh_active(c, core, r, id, key, now)
  local w = SP.new_wp(c, core, id, key, SP.mint(c.prefix, c.tag, id, key, now), now, 'active')
  w.suspension_id = r.suspension_id
  w.activated_at = fmt(now)
  w.expires_at = r.timeout_at
  return w
end

-- The suspend reply: {kind, suspension id, lane, primary (id, key, token), extras…}.
function SP.suspend_reply(kind, r, lane, primary, extras)
  local out = { kind, r.suspension_id, lane, primary.waitpoint_id, primary.waitpoint_key, primary.token }
  for _, w in ipairs(extras) do
    out[#out + 1] = w.waitpoint_id
    out[#out + 1] = w.waitpoint_key
    out[#out + 1] = w.token
  end
  return out
end

function SP.write_suspend_dedup(c, r, reply, now)
  if r.idem == '' then
    return
  end
  local ttl = SP.SUSPEND_DEDUP_TTL_MS_MAX
  if r.timeout_at then
    ttl = math.min(math.max(tonumber(r.timeout_at) - now, 0) + SP.SUSPEND_DEDUP_GRACE_MS, ttl)
  end
  local stored = {}
  for i, v in ipairs(reply) do
    stored[i] = v
  end
  stored[3] = ''
  redis.call('SET', SP.suspend_dedup_key(c, r.idem), cjson.encode({ reply = stored, expires_at = fmt(now + ttl) }))
end

-- Parses the suspend arguments. ARGV[5…]: attempt index, fence (3), suspension id, reason code,
-- blocking reason, requested by, timeout_at ("" none), timeout behaviour, continuation pointer,
-- idempotency key, condition JSON, policy JSON, primary kind (fresh/pending), primary id,
-- primary key (for pending: "elsewhere_pending" / "elsewhere_not_pending" when the client
-- found the waitpoint on another partition, else ""), extra count, then (id, key) per extra.
function SP.suspend_args(args)
  opt_num_arg(args, 13, 'timeout_at')
  need_enum(args, 19, 'primary waitpoint kind', { 'fresh', 'pending' })
  local r = {
    attempt_index = args[5], fence = fence_arg(args, 6), suspension_id = args[9], reason_code = args[10],
    blocking_reason = args[11], requested_by = args[12], timeout_at = args[13] ~= '' and args[13] or nil,
    timeout_behavior = args[14], cmp = args[15], idem = args[16], cond_json = args[17], policy = args[18],
    primary_kind = args[19], primary_id = args[20], primary_key = args[21], extras = {},
  }
  local decoded, cond = pcall(cjson.decode, r.cond_json)
  if not decoded or type(cond) ~= 'table' then
    error(reject('invalid_input', 'resume condition is not a JSON object'))
  end
  r.cond = cond
  for i = 0, need_list(args, 22, 'extra waitpoint count', 2) - 1 do
    r.extras[#r.extras + 1] = { args[23 + 2 * i], args[24 + 2 * i] }
  end
  return r
end

-- Writes the suspension (spec 02 §6.2 steps 9–16) once every check passed.
function SP.apply_suspend(c, core, r, primary, extras, tokens, now)
  local old = SP.load_susp(c)
  if old then
    redis.call('ZADD', c.exec('waitpoints'), 0, old.waitpoint_id)
  end
  local additional = {}
  for _, w in ipairs({ primary, unpack(extras) }) do
    SP.put_wp(c.prefix, c.tag, w)
    redis.call('ZADD', c.exec('waitpoints'), 0, w.waitpoint_id)
  end
  for _, w in ipairs(extras) do
    additional[#additional + 1] = { w.waitpoint_id, w.waitpoint_key }
  end
  redis.call('ZREM', c.idx('pending_waitpoint_expiry'), primary.waitpoint_id)
  if core.current_attempt_index then
    local key = c.attempt(num(core.current_attempt_index))
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'attempt_state', 'suspended', 'suspended_at', fmt(now), 'suspension_id',
        r.suspension_id)
    end
  end
  release_lease(c, core, 'suspend', now, true)
  set_state(core, 'suspended', 'unowned', 'not_applicable', r.blocking_reason,
    'suspended: waitpoint ' .. primary.waitpoint_id .. ' awaiting ' .. r.reason_code, 'none',
    'attempt_interrupted', now)
  core.current_suspension_id = r.suspension_id
  core.current_waitpoint_id = primary.waitpoint_id
  SP.put_susp(c, {
    suspension_id = r.suspension_id, attempt_index = core.current_attempt_index or '0',
    waitpoint_id = primary.waitpoint_id, waitpoint_key = primary.waitpoint_key, additional = additional,
    reason_code = r.reason_code, requested_by = r.requested_by, created_at = fmt(now),
    timeout_at = r.timeout_at, timeout_behavior = r.timeout_behavior, condition = r.cond_json,
    policy = r.policy, continuation_metadata_pointer = r.cmp, satisfier_signals = {}, tokens = tokens,
  })
  redis.call('ZADD', lane_key(c, core, 'suspended'), r.timeout_at or fmt(SP.SUSPENDED_NO_TIMEOUT_SCORE), c.eid)
  if r.timeout_at then
    redis.call('ZADD', c.idx('suspension_timeout'), r.timeout_at, c.eid)
  end
  put_core(c, core)
end

-- ff_suspend_execution (spec 02 §6), fenced by an explicit triple (see SP.suspend_args).
function SP.suspend(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local r = SP.suspend_args(args)
  if r.timeout_at and tonumber(r.timeout_at) + SP.TIMEOUT_SKEW_MS_MAX < now then
    error(reject('invalid_input', 'timeout_at_in_past'))
  end
  if r.idem ~= '' then
    local raw = redis.call('GET', SP.suspend_dedup_key(c, r.idem))
    if raw then
      local d = cjson.decode(raw)
      if now <= tonumber(d.expires_at) then
        return d.reply
      end
    end
  end
  if r.fence == nil then
    error(reject('invalid_input', 'fence_required'))
  end
  local core = must_load(c)
  validate_lease_and_mark(c, core, r.fence, now)
  if core.current_attempt_index ~= r.attempt_index then
    error(reject('invalid_lease_for_suspend', 'attempt_index'))
  end
  if SP.open_susp(c) then
    error(reject('already_suspended'))
  end
  local tokens, primary, satisfied = {}, nil, false
  if r.primary_kind == 'fresh' then
    primary = SP.fresh_active(c, core, r, r.primary_id, r.primary_key, now)
  else
    primary, satisfied = SP.activate_pending(c, core, r, tokens, now)
  end
  local extras = {}
  for _, e in ipairs(r.extras) do
    extras[#extras + 1] = SP.fresh_active(c, core, r, e[1], e[2], now)
  end
  if satisfied then
    SP.close_record(primary, 'resumed', 'satisfied', now, true)
    SP.put_wp(c.prefix, c.tag, primary)
    redis.call('ZREM', c.idx('pending_waitpoint_expiry'), primary.waitpoint_id)
    local reply = SP.suspend_reply('already_satisfied', r, core.lane_id, primary, extras)
    SP.write_suspend_dedup(c, r, reply, now)
    return reply
  end
  SP.apply_suspend(c, core, r, primary, extras, tokens, now)
  local reply = SP.suspend_reply('suspended', r, core.lane_id, primary, extras)
  SP.write_suspend_dedup(c, r, reply, now)
  return reply
end

-- ------------------------------------------------------------ signals

-- Step 2 of §7.3: the token must verify against the waitpoint; a failure stamps the core.
function SP.authenticate(c, core, a, now)
  local w = SP.load_wp(c.prefix, c.tag, a.wp)
  local ok, err = pcall(function()
    if not w then
      error(reject('invalid_token'))
    end
    SP.verify(c.prefix, c.tag, a.token, a.wp, w.waitpoint_key, num(w.created_at), now)
    if w.execution_id ~= c.eid then
      error(reject('invalid_token'))
    end
  end)
  if ok then
    return w
  end
  core.last_hmac_validation_failed_at = fmt(now)
  core.last_mutation_at = fmt(now)
  put_core(c, core)
  error(err)
end

-- Step 3 of §7.3 (with the suspension binding check).
function SP.check_signalable(core, w)
  local phase = core.lifecycle_phase
  if phase == 'terminal' then
    error(reject('target_not_signalable'))
  end
  if phase == 'suspended' then
    if w.state == 'pending' then
      return
    end
    if w.suspension_id ~= core.current_suspension_id or w.state ~= 'active' then
      error(reject('waitpoint_closed'))
    end
    return
  end
  if w.state == 'closed' then
    error(reject('target_not_signalable'))
  end
end

-- Evaluates a delivered signal and resumes the execution when satisfied.
function SP.evaluate_and_resume(c, core, w, a, now)
  local susp = SP.open_susp(c)
  if not susp then
    return 'no_op'
  end
  local arrival = {
    wp = w.waitpoint_id, key = w.waitpoint_key, sid = a.sid, name = a.name, source_type = a.source_type,
    source_identity = a.source_identity,
  }
  local effect, matched, satisfied = SP.evaluate(cjson.decode(susp.condition), susp.tokens, arrival)
  if matched and effect ~= 'appended_to_waitpoint_duplicate' then
    susp.satisfier_signals[a.sid] = true
  end
  if matched then
    w.matched_signal_count = fmt(num(w.matched_signal_count) + 1)
  end
  susp.last_signal_at = fmt(now)
  if satisfied then
    susp.closer_signal_id = a.sid
    local delay = a.resume_delay
    SP.resume_core(c, core, delay, 'resume delay ' .. fmt(delay) .. 'ms after signal ' .. a.name, now)
    SP.close_susp(c, susp, w, 'resumed', 'satisfied', true, now)
  end
  SP.put_susp(c, susp)
  return effect
end

-- Records the signal (record, payload, logs, counters) and saves the waitpoint.
function SP.record_signal(c, w, a, effect, now)
  local key = SP.signal_key(c, a.sid)
  redis.call('DEL', key, key .. ':payload')
  redis.call('HSET', key, 'signal_id', a.sid, 'execution_id', c.eid, 'waitpoint_id', a.wp,
    'signal_name', a.name, 'signal_category', a.category, 'source_type', a.source_type,
    'source_identity', a.source_identity, 'correlation_id', a.correlation, 'idempotency_key', a.idem,
    'created_at', fmt(a.created_at or now), 'accepted_at', fmt(now), 'payload_encoding', a.encoding,
    'observed_effect', effect)
  if a.payload ~= '' then
    redis.call('SET', key .. ':payload', a.payload)
  end
  w.log_seq = fmt(num(w.log_seq) + 1)
  local log = SP.wp_key(c.prefix, c.tag, w.waitpoint_id) .. ':signals'
  redis.call('ZADD', log, w.log_seq, a.sid)
  local n = redis.call('ZCARD', log)
  if a.maxlen ~= 0 and n > a.maxlen then
    redis.call('ZREMRANGEBYRANK', log, 0, n - a.maxlen - 1)
  end
  redis.call('ZADD', c.exec('signals'), fmt(now), a.sid)
  if effect ~= SP.BUFFERED then
    w.signal_count = fmt(num(w.signal_count) + 1)
    w.last_signal_at = fmt(now)
  end
  SP.put_wp(c.prefix, c.tag, w)
end

-- Parses the delivery arguments. ARGV[5…]: waitpoint id, signal id, name, category, source type,
-- source identity, payload flag, payload, encoding, correlation id, idempotency key, created_at,
-- dedup ttl, resume delay, max signals, log length, token ("" = default / none for the options).
function SP.signal_args(args)
  local function opt(i, default, name)
    if args[i] == '' then
      return default
    end
    return need_num(args, i, name)
  end
  return {
    wp = args[5], sid = args[6], name = args[7], category = args[8], source_type = args[9],
    source_identity = args[10], payload = args[11] == '1' and args[12] or '',
    encoding = args[13] ~= '' and args[13] or 'json', correlation = args[14], idem = args[15],
    created_at = opt(16, nil, 'created_at'),
    dedup_ttl = opt(17, SP.SIGNAL_DEDUP_TTL_MS_DEFAULT, 'dedup_ttl_ms'),
    resume_delay = opt(18, 0, 'resume_delay_ms'),
    max_signals = opt(19, SP.SIGNALS_PER_EXECUTION_MAX_DEFAULT, 'max_signals_per_execution'),
    maxlen = opt(20, SP.SIGNAL_LOG_LEN_DEFAULT, 'signal_maxlen'),
    token = args[21],
  }
end

-- ff_deliver_signal (spec 02 §7), buffering on a pending waitpoint (§8).
-- Replies {"accepted", effect} or {"duplicate", existing signal id}.
function SP.deliver_signal(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local a = SP.signal_args(args)
  local core = must_load(c)
  local w = SP.authenticate(c, core, a, now)
  local pending = w.state == 'pending'
  local guard_key = nil
  if a.idem ~= '' and a.dedup_ttl > 0 then
    guard_key = SP.sigdedup_key(c, a.wp, a.idem)
    local d = redis.call('HMGET', guard_key, 'signal_id', 'expires_at')
    if d[1] and now <= num(d[2]) then
      return { 'duplicate', d[1] }
    end
  end
  SP.check_signalable(core, w)
  if not pending and w.condition_closed == '1' then
    error(reject('waitpoint_closed'))
  end
  if a.max_signals > 0 and redis.call('ZCARD', c.exec('signals')) >= a.max_signals then
    error(reject('signal_limit_exceeded'))
  end
  if guard_key then
    redis.call('DEL', guard_key)
    redis.call('HSET', guard_key, 'signal_id', a.sid, 'expires_at', fmt(now + a.dedup_ttl))
  end
  local effect = SP.BUFFERED
  if not pending then
    effect = SP.evaluate_and_resume(c, core, w, a, now)
  end
  SP.record_signal(c, w, a, effect, now)
  return { 'accepted', effect }
end

-- ------------------------------------------------------------ resume and timeout

-- ff_resume_execution (spec 02 §9.1). ARGV[5]: resume delay ms. Replies {public state}.
function SP.resume_execution(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local delay = need_num(args, 5, 'resume_delay_ms')
  local core = must_load(c)
  if core.lifecycle_phase ~= 'suspended' then
    error(reject('execution_not_suspended'))
  end
  local susp = SP.open_susp(c)
  if not susp then
    error(reject('execution_not_suspended'))
  end
  SP.resume_core(c, core, delay, 'resume delay ' .. fmt(delay) .. 'ms', now)
  SP.close_susp(c, susp, nil, 'resumed', 'resumed', true, now)
  SP.put_susp(c, susp)
  return { core.public_state }
end

SP.TIMEOUT_TERMINAL = {
  cancel = { 'cancelled', 'ended_cancelled', 'timed_out_cancel', 'cancelled' },
  expire = { 'expired', 'ended_failure', 'timed_out_expire', 'expired' },
  fail = { 'failed', 'ended_failure', 'timed_out_fail', 'failed' },
}

-- A terminal timeout behaviour (fail, cancel, expire).
function SP.timeout_terminal(c, core, susp, behavior, now)
  local t = SP.TIMEOUT_TERMINAL[behavior]
  local failure = 'suspension_timeout:' .. behavior
  if core.current_attempt_index then
    local index = num(core.current_attempt_index)
    local key = c.attempt(index)
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'attempt_state', t[2], 'ended_at', fmt(now), 'failure_reason', failure)
      redis.call('HDEL', key, 'suspended_at', 'suspension_id')
      close_stream_meta(c, index, 'suspension_timeout', now, true)
    end
  end
  SP.close_susp(c, susp, nil, t[3], t[3], false, now)
  redis.call('ZREM', c.idx('suspension_timeout'), c.eid)
  redis.call('ZREM', lane_key(c, core, 'suspended'), c.eid)
  to_terminal(core, t[1], 'attempt_terminal', now)
  core.failure_reason = failure
  core.completed_at = fmt(now)
  core.current_suspension_id = nil
  core.current_waitpoint_id = nil
  enter_terminal_index(c, core, now)
  publish_if_flow(c, core, t[4], now)
  put_core(c, core)
  return core.public_state
end

-- The body of ff_expire_suspension (spec 02 §9.2), shared with the timeout scanner.
function SP.expire_suspension_in(c, now)
  local timeout_index = c.idx('suspension_timeout')
  local core = load_core(c)
  if not core then
    redis.call('ZREM', timeout_index, c.eid)
    return { 'already_satisfied', 'not_found_cleaned' }
  end
  if core.lifecycle_phase ~= 'suspended' then
    redis.call('ZREM', timeout_index, c.eid)
    return { 'already_satisfied', 'not_suspended_cleaned' }
  end
  local susp = SP.open_susp(c)
  if not susp then
    redis.call('ZREM', timeout_index, c.eid)
    return { 'already_satisfied', 'no_active_suspension_cleaned' }
  end
  local at, behavior = tonumber(susp.timeout_at or ''), susp.timeout_behavior
  if at == nil or behavior == nil or at > now then
    return { 'already_satisfied', 'not_yet_due' }
  end
  local public_state
  if behavior == 'auto_resume_with_timeout_signal' then
    SP.resume_core(c, core, 0, '', now)
    SP.close_susp(c, susp, nil, 'timed_out_auto_resume', 'timed_out_auto_resume', false, now)
    public_state = 'waiting'
  elseif behavior == 'escalate' then
    core.blocking_reason = 'paused_by_operator'
    core.blocking_detail = 'suspension escalated: timeout at ' .. fmt(at)
    core.last_mutation_at = fmt(now)
    susp.reason_code = 'waiting_for_operator_review'
    susp.timeout_at = nil
    susp.timeout_behavior = nil
    redis.call('ZREM', timeout_index, c.eid)
    put_core(c, core)
    public_state = 'suspended'
  else
    public_state = SP.timeout_terminal(c, core, susp, behavior, now)
  end
  SP.put_susp(c, susp)
  return { 'expired', behavior, public_state }
end

-- ff_expire_suspension. Replies {"expired", behaviour, public state} or {"already_satisfied", reason}.
function SP.expire_suspension(keys, args)
  local c = ctx_of(keys, args)
  return SP.expire_suspension_in(c, c.now)
end

-- ------------------------------------------------------------ reads

-- ff_read_waitpoint_token: {token, state} or {} when the waitpoint is not on this
-- partition (partition function; ARGV[4] = waitpoint id).
function SP.read_waitpoint_token(keys, args)
  local p = partition_ctx(keys, args)
  local w = redis.call('HMGET', SP.wp_key(p.prefix, p.tag, args[4]), 'token', 'state')
  if not w[2] then
    return {}
  end
  return { w[1] or '', w[2] }
end

-- ff_observe_signals (spec 02 §11.1): one row per satisfier of the last suspension:
-- {id, name, category, source type, source identity, correlation, accepted_at, has payload, payload}.
function SP.observe_signals(keys, args)
  local c = ctx_of(keys, args)
  local susp = SP.load_susp(c)
  local out = {}
  if not susp then
    return out
  end
  for sid in pairs(susp.satisfier_signals) do
    local key = SP.signal_key(c, sid)
    local f = redis.call('HMGET', key, 'signal_name', 'signal_category', 'source_type', 'source_identity',
      'correlation_id', 'accepted_at')
    if f[1] then
      local payload = redis.call('GET', key .. ':payload')
      out[#out + 1] = { sid, f[1], f[2] or '', f[3] or '', f[4] or '', f[5] or '', f[6] or '0',
        payload and '1' or '0', payload or '' }
    end
  end
  return out
end

-- The signal names an active waitpoint requires (only a by-name Single has one).
function SP.required_name(c, w)
  if w.state ~= 'active' then
    return ''
  end
  local susp = SP.load_susp(c)
  if not susp then
    return ''
  end
  local cond = cjson.decode(susp.condition)
  if cond.type == 'Single' and cond.matcher.kind == 'ByName' then
    return cond.matcher.name
  end
  return ''
end

-- ff_list_pending_waitpoints (spec 02 §3.6). ARGV[5…]: after ("" none), limit.
-- Replies {has more, rows…}: {id, key, state, required name, created, activated, expires, kid, fingerprint}.
function SP.list_pending_waitpoints(keys, args)
  local c = ctx_of(keys, args)
  must_load(c)
  local limit = need_num(args, 6, 'limit')
  local from = '-'
  if args[5] ~= '' then
    from = '(' .. args[5]
  end
  local ids = redis.call('ZRANGEBYLEX', c.exec('waitpoints'), from, '+', 'LIMIT', 0, limit + 1)
  local out = { #ids > limit and '1' or '0' }
  for i = 1, math.min(#ids, limit) do
    local w = SP.load_wp(c.prefix, c.tag, ids[i])
    if w and w.state ~= 'closed' and (w.token or '') ~= '' then
      local kid, digest = w.token:match('^([^:]*):(.*)$')
      out[#out + 1] = { w.waitpoint_id, w.waitpoint_key, w.state, SP.required_name(c, w), w.created_at,
        w.activated_at or '', w.expires_at or '', kid or '', (digest or ''):sub(1, 16) }
    end
  end
  return out
end

-- ff_list_suspended (spec 02 §11.5). ARGV[4…]: after ("" none), limit.
-- Replies rows {id, suspended-index score, reason}, at most limit + 1.
function SP.list_suspended(keys, args)
  local p = partition_ctx(keys, args)
  local after, limit = args[4], need_num(args, 5, 'limit')
  local all = {}
  local lanes = redis.call('ZRANGE', p.idx('lanes'), 0, SP.LANES_PER_PASS_MAX - 1)
  for _, lane in ipairs(lanes) do
    local flat = redis.call('ZRANGE', p.idx('lane:' .. lane .. ':suspended'), 0, SP.LIST_LIMIT_MAX - 1, 'WITHSCORES')
    for i = 1, #flat, 2 do
      all[#all + 1] = { tonumber(flat[i + 1]), flat[i] }
    end
  end
  table.sort(all, function(x, y)
    if x[1] ~= y[1] then
      return x[1] < y[1]
    end
    return x[2] < y[2]
  end)
  local skip = 0
  if after ~= '' then
    skip = #all
    local found = false
    for i, e in ipairs(all) do
      if e[2] == after then
        skip, found = i, true
        break
      end
    end
    if not found then
      for i, e in ipairs(all) do
        if e[2] > after then
          skip = i - 1
          break
        end
      end
    end
  end
  local out = {}
  for i = skip + 1, math.min(#all, skip + limit + 1) do
    local c = ctx_make(p.prefix, p.tag, all[i][2], p.now)
    local susp = SP.load_susp(c)
    out[#out + 1] = { all[i][2], fmt(all[i][1]), susp and susp.reason_code or '' }
  end
  return out
end

-- Registers a contract taking at least `argc` arguments (load-time code may not use
-- library globals such as `pairs`).
function SP.register(name, body, flags, argc)
  redis.register_function{function_name = name, flags = flags,
    callback = function(k, a) return guard(body, k, a, argc) end}
end

SP.register('ff_seed_hmac_secret', SP.seed, {}, 5)
SP.register('ff_rotate_hmac_secret', SP.rotate, {}, 6)
SP.register('ff_create_pending_waitpoint', SP.create_pending_waitpoint, {}, 12)
SP.register('ff_close_waitpoint', SP.close_waitpoint, {}, 6)
SP.register('ff_suspend_execution', SP.suspend, {}, 22)
SP.register('ff_deliver_signal', SP.deliver_signal, {}, 21)
SP.register('ff_resume_execution', SP.resume_execution, {}, 5)
SP.register('ff_expire_suspension', SP.expire_suspension, {}, 4)
SP.register('ff_list_hmac_kids', SP.list_kids, { 'no-writes' }, 3)
SP.register('ff_read_waitpoint_token', SP.read_waitpoint_token, { 'no-writes' }, 4)
SP.register('ff_observe_signals', SP.observe_signals, { 'no-writes' }, 4)
SP.register('ff_list_pending_waitpoints', SP.list_pending_waitpoints, { 'no-writes' }, 6)
SP.register('ff_list_suspended', SP.list_suspended, { 'no-writes' }, 5)
