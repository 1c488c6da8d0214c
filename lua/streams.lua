-- streams.lua: attempt streams (spec 02 §12), mirroring crates/ff-engine/src/streams.rs.
--
-- Frames are a Valkey stream `ff:stream:T:E:I` with explicit ids `<ms>-<seq>`
-- (EntryId::next_after on the contract's `now`, so simulated clocks give the
-- reference's ids); its meta is the hash `ff:stream:T:E:I:meta` (the one the
-- terminal transitions close); the durable summary is the hash
-- `ff:attempt:T:E:I:summary` (document, version, last_updated_ms, first_applied_ms).
--
-- The summary document is merged by the client with serde_json (RFC 7396, the
-- reference's exact semantics: big integers keep their digits, key order and
-- number text match), and the append applies it only if the stored version is
-- still the one the client merged onto (`retry` otherwise). Helpers live in `ST`.

local ST = {}

ST.DURABLE_RETENTION_DEFAULT = 10000
ST.SUMMARY_STREAM_RETENTION = 64

function ST.stream_key(c, index)
  return c.prefix .. 'ff:stream:' .. c.tag .. ':' .. c.eid .. ':' .. index
end

function ST.summary_key(c, index)
  return c.prefix .. 'ff:attempt:' .. c.tag .. ':' .. c.eid .. ':' .. index .. ':summary'
end

-- A float as text that reads back to the same double.
function ST.float(x)
  return string.format('%.17g', x)
end

-- The holder check of append (spec 01 §6.11 last row): no expiry marking.
function ST.check_holder(c, core, a, now)
  if not core or core.lifecycle_phase ~= 'active' then
    error(reject('stream_closed'))
  end
  local own = core.ownership_state
  if own == 'lease_expired_reclaimable' or own == 'lease_revoked' or num(core.lease_expires_at) <= now
      or core.current_attempt_index ~= a.index or core.current_lease_id ~= a.lease_id
      or s(core.current_lease_epoch or '0') ~= a.epoch then
    error(reject('stale_owner_cannot_append'))
  end
end

-- The next entry id after the meta's last one at `now` (EntryId::next_after).
function ST.next_id(meta, now)
  local last = meta.last_sequence
  if not last then
    return fmt(now) .. '-0'
  end
  local ms, seq = last:match('^(%d+)-(%d+)$')
  if now > tonumber(ms) then
    return fmt(now) .. '-0'
  end
  return ms .. '-' .. fmt(tonumber(seq) + 1)
end

-- The adaptive best-effort trim length K; updates the rate estimate in the meta.
function ST.best_effort_len(a, meta, now)
  local floor = a.floor == 0 and 64 or a.floor
  local ceiling = math.max(a.ceiling == 0 and 16384 or a.ceiling, floor)
  local alpha = a.alpha
  if alpha <= 0 or alpha > 1 then
    alpha = 0.2
  end
  local ttl_s = math.max(a.ttl, 1) / 1000
  local rate
  if meta.ema_rate_hz and meta.last_append_ts_ms then
    local dt = math.max(now - tonumber(meta.last_append_ts_ms), 1)
    rate = alpha * (1000 / dt) + (1 - alpha) * tonumber(meta.ema_rate_hz)
  else
    rate = floor / (2 * ttl_s)
  end
  local k = math.min(math.max(math.ceil(rate * ttl_s * 2), floor), ceiling)
  meta.ema_rate_hz = ST.float(rate)
  meta.last_append_ts_ms = fmt(now)
  meta.maxlen_applied_last = fmt(k)
  return k
end

-- Trims after an append and sets the best-effort TTL (spec 02 §12.5).
function ST.trim(key, a, meta, now)
  local keep
  if a.mode == 'durable' then
    keep = num(meta.retention_maxlen)
    if keep == 0 then
      keep = ST.DURABLE_RETENTION_DEFAULT
    end
  elseif a.mode == 'summary' then
    keep = ST.SUMMARY_STREAM_RETENTION
  else
    keep = ST.best_effort_len(a, meta, now)
    if a.ttl > 0 and meta.has_durable_frame ~= '1' then
      meta.data_expires_at = fmt(now + 2 * a.ttl)
    end
  end
  redis.call('XTRIM', key, 'MAXLEN', keep)
end

-- Parses the append arguments. ARGV[5…]: attempt index, lease id, lease epoch, attempt id
-- ("" none), retention maxlen, mode (durable/summary/best_effort), ttl ms, maxlen floor,
-- maxlen ceiling, ema alpha, stored frame type, payload text, correlation id ("" none),
-- payload byte length, summary base version, summary document, summary rejection code
-- and detail ("" none).
function ST.append_args(args)
  return {
    index = args[5], lease_id = args[6], epoch = args[7], attempt_id = args[8], retention = args[9],
    mode = need_enum(args, 10, 'stream mode', { 'durable', 'summary', 'best_effort' }),
    ttl = need_num(args, 11, 'ttl_ms'), floor = need_num(args, 12, 'maxlen_floor'),
    ceiling = need_num(args, 13, 'maxlen_ceiling'), alpha = need_num(args, 14, 'ema_alpha'),
    frame_type = args[15], payload = args[16], correlation = args[17],
    bytes = need_num(args, 18, 'payload_bytes'),
    base_version = need_num(args, 19, 'base_version'), document = args[20],
    reject_code = args[21], reject_detail = args[22],
  }
end

-- The summary after this append (the client merged it), or `retry` when another append
-- changed the version since.
function ST.next_summary(c, a, now)
  if a.reject_code ~= '' then
    error(reject(a.reject_code, a.reject_detail))
  end
  local cur = redis.call('HMGET', ST.summary_key(c, a.index), 'version', 'first_applied_ms')
  local version = num(cur[1])
  if version ~= a.base_version then
    return nil
  end
  local first = fmt(now)
  if cur[1] and version ~= 0 then
    first = cur[2]
  end
  return { version = version + 1, first = first }
end

-- ff_append_frame (spec 02 §12.2). Replies {"appended", entry id, frame count, summary
-- version or ""} or {"retry"} (see ST.next_summary).
function ST.append_frame(keys, args)
  local c = ctx_of(keys, args)
  local now = c.now
  local a = ST.append_args(args)
  ST.check_holder(c, load_core(c), a, now)
  local meta_key, key = c.stream_meta(tonumber(a.index)), ST.stream_key(c, a.index)
  local meta = hash_table(meta_key)
  if not meta.created_at then
    meta = { created_at = fmt(now), retention_maxlen = a.retention, frame_count = '0', total_bytes = '0' }
    if a.attempt_id ~= '' then
      meta.attempt_id = a.attempt_id
    end
  end
  if meta.closed_at then
    error(reject('stream_closed'))
  end
  local summary = nil
  if a.mode == 'summary' then
    summary = ST.next_summary(c, a, now)
    if not summary then
      return { 'retry' }
    end
  end
  -- Best-effort data that outlived its TTL is gone before the new entry lands.
  if meta.data_expires_at and now > tonumber(meta.data_expires_at) then
    redis.call('XTRIM', key, 'MAXLEN', 0)
    meta.data_expires_at = nil
  end
  local id = ST.next_id(meta, now)
  local fields = { 'frame_type', a.frame_type, 'ts', fmt(now), 'payload', a.payload, 'encoding', 'utf8',
    'source', 'worker', 'mode', a.mode }
  if a.correlation ~= '' then
    fields[#fields + 1] = 'correlation_id'
    fields[#fields + 1] = a.correlation
  end
  if summary then
    fields[#fields + 1] = 'summary_version'
    fields[#fields + 1] = fmt(summary.version)
  end
  if a.mode == 'best_effort' and a.ttl > 0 then
    fields[#fields + 1] = 'ttl_ms'
    fields[#fields + 1] = fmt(a.ttl)
  end
  redis.call('XADD', key, id, unpack(fields))
  meta.frame_count = fmt(num(meta.frame_count) + 1)
  meta.total_bytes = fmt(num(meta.total_bytes) + a.bytes)
  meta.last_sequence = id
  meta.last_frame_at = fmt(now)
  if a.mode ~= 'best_effort' then
    meta.has_durable_frame = '1'
    meta.data_expires_at = nil
  end
  ST.trim(key, a, meta, now)
  if summary then
    redis.call('HSET', ST.summary_key(c, a.index), 'document', a.document, 'version', fmt(summary.version),
      'last_updated_ms', fmt(now), 'first_applied_ms', summary.first)
  end
  local flat = {}
  for k, v in pairs(meta) do
    flat[#flat + 1] = k
    flat[#flat + 1] = v
  end
  redis.call('DEL', meta_key)
  redis.call('HSET', meta_key, unpack(flat))
  return { 'appended', id, meta.frame_count, summary and fmt(summary.version) or '' }
end

-- ARGV[i] as an XRANGE bound: `-`, `+`, `<ms>` or `<ms>-<seq>`, else `invalid_input`.
function ST.need_stream_id(args, i, name)
  local v = args[i]
  if v == '-' or v == '+' or string.match(v, '^%d+$') or string.match(v, '^%d+%-%d+$') then
    return v
  end
  error(reject('invalid_input', name .. ' is not a stream id: ' .. tostring(v)))
end

-- ff_read_stream (spec 02 §12.7–12.8): {closed_at, closed_reason, entries…} for the inclusive
-- range; each entry is {id, {field, value, …}}. ARGV[5…]: attempt index, lower id, upper id, count.
function ST.read_stream(keys, args)
  local c = ctx_of(keys, args)
  local index = need_num(args, 5, 'attempt_index')
  ST.need_stream_id(args, 6, 'lower id')
  ST.need_stream_id(args, 7, 'upper id')
  need_num(args, 8, 'count')
  local meta = redis.call('HMGET', c.stream_meta(index), 'closed_at', 'closed_reason', 'data_expires_at')
  local out = { meta[1] or '', meta[2] or '' }
  if meta[3] and c.now > tonumber(meta[3]) then
    return out
  end
  local entries = redis.call('XRANGE', ST.stream_key(c, args[5]), args[6], args[7], 'COUNT', args[8])
  for _, e in ipairs(entries) do
    out[#out + 1] = e
  end
  return out
end

-- ff_read_summary (spec 02 §12.10): {document, version, last_updated_ms, first_applied_ms} or {}.
-- ARGV[5]: attempt index.
function ST.read_summary(keys, args)
  local c = ctx_of(keys, args)
  local r = redis.call('HMGET', ST.summary_key(c, args[5]), 'document', 'version', 'last_updated_ms',
    'first_applied_ms')
  if not r[2] then
    return {}
  end
  return { r[1] or '', r[2], r[3] or '0', r[4] or '0' }
end

SP.register('ff_append_frame', ST.append_frame, {}, 22)
SP.register('ff_read_stream', ST.read_stream, { 'no-writes' }, 8)
SP.register('ff_read_summary', ST.read_summary, { 'no-writes' }, 5)
