-- flow.lua: flows and dependency edges (spec 03 §2), mirroring crates/ff-engine/src/flow.rs.
--
-- A flow and its members share the `{fp:N}` slot (add_execution_to_flow requires the
-- member's partition to be the flow's), so the completion cascade runs inside the
-- terminal transition of a member: `cascade_if_flow` (common.lua) calls FL.cascade.
--
-- Records: the flow is one JSON document at `ff:flow:T:<flow_id>:core` (members,
-- edges, outgoing/incoming edge sets, edge groups, pending cancels; numbers as
-- numbers, all below 2^53); a child's dependency state is one JSON document at
-- `ff:exec:T:E:deps:meta`. Indexes: `ff:idx:T:flows`, `ff:idx:T:cancel_backlog`
-- (flow ids by drain time), `ff:idx:T:pending_cancel_groups` (`<flow>|<child>`).
-- Sets are Lua tables keyed by id, always visited in sorted order (the reference's
-- BTree order).

-- Calling convention: KEYS[1] = the flow key; ARGV = now, prefix, tag, flow id, arguments.
function FL.ctx(keys, args)
  local p = { now = now_ms(args[1]), prefix = args[2], tag = args[3], fid = args[4] }
  p.key = FL.key(p.prefix, p.tag, p.fid)
  if p.key ~= keys[1] then
    error(reject('invalid_input', 'KEYS[1] is not the flow key of ARGV[4]'))
  end
  return FL.with_helpers(p)
end

function FL.with_helpers(p)
  p.exec = function(eid)
    return ctx_make(p.prefix, p.tag, eid, p.now)
  end
  p.idx = function(suffix)
    return p.prefix .. 'ff:idx:' .. p.tag .. ':' .. suffix
  end
  return p
end

function FL.key(prefix, tag, fid)
  return prefix .. 'ff:flow:' .. tag .. ':' .. fid .. ':core'
end

function FL.load(p, fid)
  local raw = redis.call('GET', FL.key(p.prefix, p.tag, fid))
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

function FL.must_load(p)
  local f = FL.load(p, p.fid)
  if not f then
    error(reject('flow_not_found'))
  end
  return f
end

function FL.put(p, f)
  redis.call('SET', FL.key(p.prefix, p.tag, f.flow_id), cjson.encode(f))
end

function FL.load_deps(cc)
  local raw = redis.call('GET', cc.exec('deps:meta'))
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

function FL.put_deps(cc, d)
  redis.call('SET', cc.exec('deps:meta'), cjson.encode(d))
end

function FL.sorted_keys(t)
  local ks = {}
  for k in pairs(t or {}) do
    ks[#ks + 1] = k
  end
  table.sort(ks)
  return ks
end

function FL.is_terminal(f)
  local s = f.public_flow_state
  return s == 'cancelled' or s == 'completed' or s == 'failed'
end

-- A group's policy: kind (all_of / any_of / quorum), k, on_satisfied ("" for all_of).
function FL.new_group(kind, k, on)
  return { kind = kind, k = k, on = on, n = 0, succeeded = 0, failed = 0, skipped = 0, state = 'pending',
    cancel_siblings = {} }
end

function FL.group_k(g)
  if g.kind == 'all_of' then
    return 0
  elseif g.kind == 'any_of' then
    return 1
  end
  return math.max(g.k, 1)
end

function FL.group_of(f, child)
  f.groups = f.groups or {}
  local g = f.groups[child]
  if not g then
    g = FL.new_group('all_of', 0, '')
    f.groups[child] = g
  end
  return g
end

-- ------------------------------------------------------------ contracts

-- ff_create_flow (spec 03 §2.3.1). ARGV[5…]: kind, namespace.
function FL.create_flow(keys, args)
  local p = FL.ctx(keys, args)
  if FL.load(p, p.fid) then
    return { 'already_satisfied' }
  end
  FL.put(p, {
    flow_id = p.fid, flow_kind = args[5], namespace = args[6], graph_revision = 0, node_count = 0,
    edge_count = 0, public_flow_state = 'open', created_at = p.now, last_mutation_at = p.now, tags = {},
    members = {}, edges = {}, outgoing = {}, incoming = {}, groups = {}, pending_cancels = {},
  })
  redis.call('ZADD', p.idx('flows'), 0, p.fid)
  return { 'created' }
end

-- ff_add_execution_to_flow (spec 03 §2.3.2; the client checks the partition). ARGV[5]: member.
function FL.add_member(keys, args)
  local p = FL.ctx(keys, args)
  local f = FL.must_load(p)
  if FL.is_terminal(f) then
    error(reject('flow_already_terminal'))
  end
  local cc = p.exec(args[5])
  local core = must_load(cc)
  if core.flow_id and core.flow_id ~= '' and core.flow_id ~= p.fid then
    error(reject('execution_already_in_flow'))
  end
  if f.members[args[5]] then
    return { 'already_member', fmt(f.node_count) }
  end
  f.members[args[5]] = true
  f.node_count = f.node_count + 1
  f.graph_revision = f.graph_revision + 1
  f.last_mutation_at = p.now
  core.flow_id = p.fid
  core.last_mutation_at = fmt(p.now)
  put_core(cc, core)
  FL.put(p, f)
  return { 'added', fmt(f.node_count) }
end

-- Breadth-first walk along outgoing edges: does `from` reach `to`?
function FL.reaches(f, from, to)
  local seen, queue, head, count = {}, { from }, 1, 0
  while queue[head] do
    local node = queue[head]
    head = head + 1
    if node == to then
      return true
    end
    if not seen[node] then
      seen[node] = true
      count = count + 1
      if count > 1000 then
        return true
      end
      for _, e in ipairs(FL.sorted_keys(f.outgoing[node])) do
        local edge = f.edges[e]
        if edge then
          queue[#queue + 1] = edge.downstream
        end
      end
    end
  end
  return false
end

-- ff_stage_dependency_edge (spec 03 §2.3.5). ARGV[5…]: edge id, upstream, downstream,
-- dependency kind ("" default), data passing ref ("" none), expected revision.
function FL.stage_edge(keys, args)
  local p = FL.ctx(keys, args)
  local edge_id, up, down = args[5], args[6], args[7]
  if up == down then
    error(reject('self_referencing_edge'))
  end
  local f = FL.must_load(p)
  if FL.is_terminal(f) then
    error(reject('flow_already_terminal'))
  end
  if f.graph_revision ~= need_num(args, 10, 'expected_graph_revision') then
    error(reject('stale_graph_revision'))
  end
  if not f.members[up] or not f.members[down] then
    error(reject('execution_not_in_flow'))
  end
  if FL.reaches(f, down, up) then
    error(reject('cycle_detected'))
  end
  if f.edges[edge_id] then
    error(reject('dependency_already_exists', edge_id))
  end
  f.edges[edge_id] = {
    upstream = up, downstream = down, dependency_kind = args[8] ~= '' and args[8] or 'success_only',
    data_passing_ref = args[9], created_at = p.now,
  }
  f.outgoing[up] = f.outgoing[up] or {}
  f.outgoing[up][edge_id] = true
  f.incoming[down] = f.incoming[down] or {}
  f.incoming[down][edge_id] = true
  f.graph_revision = f.graph_revision + 1
  f.edge_count = f.edge_count + 1
  f.last_mutation_at = p.now
  FL.put(p, f)
  return { edge_id, fmt(f.graph_revision) }
end

-- ff_set_edge_group_policy (spec 03 §2.3.6). ARGV[5…]: downstream, kind, k, on_satisfied.
-- Replies {"1"} when newly set.
function FL.set_group_policy(keys, args)
  need_enum(args, 6, 'edge dependency policy', { 'all_of', 'any_of', 'quorum' })
  need_num(args, 7, 'group_count')
  local p = FL.ctx(keys, args)
  local f = FL.must_load(p)
  local g = f.groups[args[5]]
  if g then
    if g.n > 0 then
      error(reject('invalid_input', 'edge_group_policy_already_fixed: dependencies already staged'))
    end
    if g.kind == args[6] then
      return { '0' }
    end
  end
  f.groups[args[5]] = FL.new_group(args[6], need_num(args, 7, 'group_count'), args[8])
  FL.put(p, f)
  return { '1' }
end

-- ff_apply_dependency_to_child (spec 03 §2.3.7). ARGV[5]: edge id.
-- Replies {unresolved count} or {} when already applied.
function FL.apply_dependency(keys, args)
  local p = FL.ctx(keys, args)
  local f = FL.must_load(p)
  local edge_id = args[5]
  local edge = f.edges[edge_id]
  if not edge then
    error(reject('invalid_dependency', 'edge_not_found'))
  end
  local child = edge.downstream
  local cc = p.exec(child)
  local core = must_load(cc)
  if core.flow_id and core.flow_id ~= '' and core.flow_id ~= p.fid then
    error(reject('execution_already_in_flow'))
  end
  local d = FL.load_deps(cc) or { unsatisfied = 0, impossible = 0, deps = {} }
  if d.deps[edge_id] then
    return {}
  end
  d.deps[edge_id] = { upstream = edge.upstream, state = 'unsatisfied', data_passing_ref = edge.data_passing_ref }
  d.unsatisfied = d.unsatisfied + 1
  d.flow_id = p.fid
  d.last_flow_graph_revision = f.graph_revision
  d.last_dependency_update_at = p.now
  local g = FL.group_of(f, child)
  g.n = g.n + 1
  if core.lifecycle_phase == 'runnable' and core.terminal_outcome == 'none' then
    remove_from_runnable_indexes(cc, core)
    local attempt = core.attempt_state
    if attempt == 'none' then
      attempt = 'pending_first_attempt'
    end
    to_runnable(core, 'blocked_by_dependencies', 'waiting_for_children',
      fmt(d.unsatisfied) .. ' dep(s) unresolved incl ' .. edge_id, attempt, p.now)
    redis.call('ZADD', lane_key(cc, core, 'blocked:dependencies'), core.created_at, child)
    put_core(cc, core)
  end
  FL.put_deps(cc, d)
  FL.put(p, f)
  return { fmt(d.unsatisfied) }
end

-- Makes a dependency-blocked child eligible.
function FL.flip_eligible(cc, core, now)
  if core.lifecycle_phase ~= 'runnable' or core.ownership_state ~= 'unowned' or core.terminal_outcome ~= 'none'
      or core.eligibility_state ~= 'blocked_by_dependencies' then
    return
  end
  local attempt = core.attempt_state
  if attempt == 'none' then
    attempt = 'pending_first_attempt'
  end
  redis.call('ZREM', lane_key(cc, core, 'blocked:dependencies'), cc.eid)
  to_runnable(core, 'eligible_now', 'waiting_for_worker', '', attempt, now)
  add_eligible(cc, core)
  put_core(cc, core)
end

-- Routine S of §2.3.8: the child can never run.
function FL.skip_child(cc, core, now)
  local attempt_state = 'none'
  if core.attempt_state == 'running_attempt' or core.attempt_state == 'attempt_interrupted' then
    if core.current_attempt_index then
      local index = num(core.current_attempt_index)
      local key = cc.attempt(index)
      if redis.call('EXISTS', key) == 1 then
        redis.call('HSET', key, 'attempt_state', 'ended_cancelled', 'ended_at', fmt(now),
          'failure_reason', 'dependency_impossible')
        close_stream_meta(cc, index, 'dependency_impossible', now, true)
      end
    end
    attempt_state = 'attempt_terminal'
  end
  if core.lifecycle_phase == 'active' then
    release_lease(cc, core, 'dependency_impossible', now, true)
  end
  if core.lifecycle_phase == 'suspended' then
    SP.close_for_terminal(cc, 'cancelled', 'cancelled', now)
    redis.call('ZREM', lane_key(cc, core, 'suspended'), cc.eid)
    redis.call('ZREM', cc.idx('suspension_timeout'), cc.eid)
  end
  remove_from_runnable_indexes(cc, core)
  to_terminal(core, 'skipped', attempt_state, now)
  core.completed_at = fmt(now)
  enter_terminal_index(cc, core, now)
  publish_completion(cc, core.flow_id or '', 'skipped', now)
  put_core(cc, core)
end

function FL.mark_dep(d, edge_id, state, now)
  local dep = d.deps[edge_id]
  if dep then
    dep.state = state
    dep.last_resolved_at = now
  end
  d.last_dependency_update_at = now
end

-- Copies the upstream result over the child's payload when the edge passes data.
function FL.pass_data(p, edge, cc, core)
  if (edge.data_passing_ref or '') == '' or core.terminal_outcome ~= 'none' then
    return false
  end
  local result = redis.call('GET', p.exec(edge.upstream).exec('result'))
  if not result then
    return false
  end
  redis.call('SET', cc.exec('payload'), result)
  return true
end

function FL.resolve_all_of(p, f, d, edge_id, edge, positive)
  local child = edge.downstream
  local cc = p.exec(child)
  d.unsatisfied = math.max(d.unsatisfied - 1, 0)
  local g = FL.group_of(f, child)
  local core = load_core(cc)
  if positive then
    FL.mark_dep(d, edge_id, 'satisfied', p.now)
    g.succeeded = g.succeeded + 1
    local done = d.unsatisfied == 0 and d.impossible == 0
    if done then
      g.state = 'satisfied'
    end
    if not core then
      return { 'satisfied', '0' }
    end
    local injected = FL.pass_data(p, edge, cc, core)
    if done then
      FL.flip_eligible(cc, core, p.now)
    end
    return { 'satisfied', injected and '1' or '0' }
  end
  FL.mark_dep(d, edge_id, 'impossible', p.now)
  d.impossible = d.impossible + 1
  g.failed = g.failed + 1
  g.state = 'impossible'
  if not core or core.terminal_outcome ~= 'none' then
    return { 'impossible', '0' }
  end
  FL.skip_child(cc, core, p.now)
  return { 'impossible', '1' }
end

function FL.resolve_quorum(p, f, d, edge_id, edge, outcome)
  local child = edge.downstream
  local success = outcome == 'success'
  FL.mark_dep(d, edge_id, success and 'satisfied' or 'impossible', p.now)
  local g = f.groups[child]
  if not g then
    return { 'pending' }
  end
  if success then
    g.succeeded = g.succeeded + 1
  elseif outcome == 'skipped' then
    g.skipped = g.skipped + 1
  else
    g.failed = g.failed + 1
  end
  if g.succeeded + g.failed + g.skipped > g.n then
    error(reject('invariant_violation', 'edgegroup counters exceed n'))
  end
  if g.state ~= 'pending' then
    return { 'already_fired' }
  end
  local k = FL.group_k(g)
  local state
  if g.succeeded >= k then
    state = 'satisfied'
  elseif g.failed + g.skipped + k > g.n then
    state = 'impossible'
  else
    return { 'pending' }
  end
  g.state = state
  if state == 'satisfied' then
    g.satisfied_at = p.now
  end
  if g.on == 'cancel_remaining' then
    local running = {}
    for _, e in ipairs(FL.sorted_keys(f.incoming[child])) do
      local sib = f.edges[e] and f.edges[e].upstream
      local sc = sib and load_core(p.exec(sib))
      if sc and sc.lifecycle_phase ~= 'terminal' then
        running[#running + 1] = sib
      end
    end
    if #running > 0 then
      redis.call('ZADD', p.idx('pending_cancel_groups'), fmt(p.now), f.flow_id .. '|' .. child)
    end
    g.cancel_siblings = running
    g.cancel_siblings_reason = state == 'satisfied' and 'sibling_quorum_satisfied' or 'sibling_quorum_impossible'
  end
  local cc = p.exec(child)
  local core = load_core(cc)
  if not core then
    return state == 'satisfied' and { 'satisfied', '0' } or { 'impossible', '0' }
  end
  if state == 'satisfied' then
    local injected = success and FL.pass_data(p, edge, cc, core)
    FL.flip_eligible(cc, core, p.now)
    return { 'satisfied', injected and '1' or '0' }
  end
  if core.terminal_outcome ~= 'none' then
    return { 'impossible', '0' }
  end
  FL.skip_child(cc, core, p.now)
  return { 'impossible', '1' }
end

-- The body of ff_resolve_dependency (spec 03 §2.3.8) on a loaded flow (saved by the caller).
function FL.resolve_in(p, f, edge_id, outcome)
  local edge = f.edges[edge_id]
  if not edge then
    error(reject('invalid_dependency', 'edge'))
  end
  local cc = p.exec(edge.downstream)
  local d = FL.load_deps(cc)
  if not d or not d.deps[edge_id] then
    error(reject('invalid_dependency', 'not applied'))
  end
  if d.deps[edge_id].state ~= 'unsatisfied' then
    return { 'already_resolved' }
  end
  local g = f.groups[edge.downstream]
  local out
  if g and g.kind ~= 'all_of' then
    out = FL.resolve_quorum(p, f, d, edge_id, edge, outcome)
  else
    out = FL.resolve_all_of(p, f, d, edge_id, edge, outcome == 'success')
  end
  FL.put_deps(cc, d)
  return out
end

-- ff_resolve_dependency. ARGV[5…]: edge id, upstream terminal outcome.
function FL.resolve_dependency(keys, args)
  local p = FL.ctx(keys, args)
  local f = FL.must_load(p)
  local out = FL.resolve_in(p, f, args[5], args[6])
  if out[1] ~= 'already_resolved' then
    FL.put(p, f)
  end
  return out
end

-- The completion cascade (spec 03 §2.5) from a member that just became terminal:
-- resolves every applied outgoing edge, breadth first, recursively for skipped children.
function FL.cascade(c, now)
  local p = FL.with_helpers({ now = now, prefix = c.prefix, tag = c.tag })
  local queue, head = { { c.eid, 0 } }, 1
  while queue[head] do
    local eid, depth = queue[head][1], queue[head][2]
    head = head + 1
    local core = depth <= 50 and load_core(p.exec(eid))
    local f = core and core.flow_id and core.flow_id ~= '' and FL.load(p, core.flow_id)
    if f then
      local changed = false
      for _, edge_id in ipairs(FL.sorted_keys(f.outgoing[eid])) do
        local edge = f.edges[edge_id]
        local d = edge and FL.load_deps(p.exec(edge.downstream))
        if d and d.deps[edge_id] then
          local out = FL.resolve_in(p, f, edge_id, core.terminal_outcome)
          changed = changed or out[1] ~= 'already_resolved'
          if out[1] == 'impossible' and out[2] == '1' then
            queue[#queue + 1] = { edge.downstream, depth + 1 }
          end
        end
      end
      if changed then
        FL.put(p, f)
      end
    end
  end
end

-- ff_cancel_flow_header (spec 03 §2.3.3). ARGV[5…]: reason, policy, grace ms.
-- Replies {"cancelled" | "already_terminal", policy, reason, members…}.
function FL.cancel_flow_header(keys, args)
  local p = FL.ctx(keys, args)
  local f = FL.must_load(p)
  local members = FL.sorted_keys(f.members)
  local out
  if FL.is_terminal(f) then
    out = { 'already_terminal', f.cancellation_policy or '', f.cancel_reason or '' }
  else
    f.public_flow_state = 'cancelled'
    f.cancelled_at = p.now
    f.cancel_reason = args[5]
    f.cancellation_policy = args[6]
    f.last_mutation_at = p.now
    if args[6] == 'cancel_all' and #members > 0 then
      f.pending_cancels = {}
      for _, m in ipairs(members) do
        f.pending_cancels[m] = true
      end
      f.cancel_backlog_at = p.now + need_num(args, 7, 'cancel_backlog_delay_ms')
      redis.call('ZADD', p.idx('cancel_backlog'), fmt(f.cancel_backlog_at), p.fid)
    end
    FL.put(p, f)
    out = { 'cancelled', args[6], args[5] }
  end
  for _, m in ipairs(members) do
    out[#out + 1] = m
  end
  return out
end

-- The body of ff_ack_cancel_member on a loaded flow; true if the flow changed.
function FL.ack_in(p, f, eid)
  if not (f.pending_cancels or {})[eid] then
    return false
  end
  f.pending_cancels[eid] = nil
  if next(f.pending_cancels) == nil then
    f.cancel_backlog_at = nil
    redis.call('ZREM', p.idx('cancel_backlog'), f.flow_id)
  end
  return true
end

-- ff_ack_cancel_member (spec 03 §2.3.4). ARGV[5]: member.
function FL.ack_cancel_member(keys, args)
  local p = FL.ctx(keys, args)
  local f = FL.load(p, p.fid)
  if f and FL.ack_in(p, f, args[5]) then
    FL.put(p, f)
  end
  return { 'ok' }
end

-- ff_promote_blocked_to_eligible (spec 03 §2.3.12), an execution function.
function FL.promote_blocked(keys, args)
  local c = ctx_of(keys, args)
  local core = must_load(c)
  if core.lifecycle_phase ~= 'runnable' then
    error(reject('not_runnable'))
  end
  if core.eligibility_state ~= 'blocked_by_dependencies' then
    error(reject('not_blocked_by_deps'))
  end
  if core.terminal_outcome ~= 'none' then
    error(reject('terminal'))
  end
  local d = FL.load_deps(c)
  for _, dep in pairs(d and d.deps or {}) do
    if dep.state == 'unsatisfied' then
      error(reject('deps_not_satisfied'))
    end
  end
  FL.flip_eligible(c, core, c.now)
  return { 'ok' }
end

-- ff_set_flow_tags (spec 03 §2.7; keys checked by the client). ARGV[5…]: count, pairs.
function FL.set_flow_tags(keys, args)
  local p = FL.ctx(keys, args)
  local f = FL.must_load(p)
  local n = need_list(args, 5, 'tag count', 2)
  f.tags = f.tags or {}
  for i = 0, n - 1 do
    f.tags[args[6 + 2 * i]] = args[7 + 2 * i]
  end
  f.last_mutation_at = p.now
  FL.put(p, f)
  return { fmt(n) }
end

-- ff_describe_flow (spec 03 §2.8): {header JSON, member public states JSON} or {}.
function FL.describe_flow(keys, args)
  local p = FL.ctx(keys, args)
  local f = FL.load(p, p.fid)
  if not f then
    return {}
  end
  local states = {}
  for _, m in ipairs(FL.sorted_keys(f.members)) do
    local s = redis.call('HGET', p.exec(m).core, 'public_state')
    states[#states + 1] = s or 'unknown'
  end
  local groups = {}
  for _, down in ipairs(FL.sorted_keys(f.incoming)) do
    local g = f.groups[down] or FL.new_group('all_of', 0, '')
    groups[#groups + 1] = { down, g.kind, fmt(g.k), g.on, fmt(g.n), fmt(g.succeeded), fmt(g.failed),
      fmt(g.skipped), g.state }
  end
  local header = {
    f.flow_kind, f.namespace, f.public_flow_state, fmt(f.graph_revision), fmt(f.node_count),
    fmt(f.edge_count), fmt(f.created_at), fmt(f.last_mutation_at), f.cancelled_at and fmt(f.cancelled_at) or '',
    f.cancel_reason or '', f.cancellation_policy or '',
  }
  local tags = {}
  for _, k in ipairs(FL.sorted_keys(f.tags)) do
    tags[#tags + 1] = k
    tags[#tags + 1] = f.tags[k]
  end
  return { header, tags, groups, states }
end

-- The flow side of replaying a skipped member (spec 01 §6.24); returns its unsatisfied count.
function FL.reopen_skipped_member(c, now)
  local d = FL.load_deps(c)
  if not d then
    return 0
  end
  local unsatisfied, satisfied = 0, 0
  for _, dep in pairs(d.deps) do
    if dep.state == 'impossible' then
      dep.state = 'unsatisfied'
      dep.last_resolved_at = nil
    end
    if dep.state == 'unsatisfied' then
      unsatisfied = unsatisfied + 1
    elseif dep.state == 'satisfied' then
      satisfied = satisfied + 1
    end
  end
  d.unsatisfied = unsatisfied
  d.impossible = 0
  d.last_dependency_update_at = now
  FL.put_deps(c, d)
  local p = FL.with_helpers({ now = now, prefix = c.prefix, tag = c.tag })
  local f = d.flow_id and FL.load(p, d.flow_id)
  local g = f and f.groups[c.eid]
  if g then
    g.succeeded = satisfied
    g.failed = 0
    g.skipped = 0
    g.state = 'pending'
    g.satisfied_at = nil
    FL.put(p, f)
  end
  return unsatisfied
end

-- ff_evaluate_flow_eligibility (spec 03 §2.3.11), an execution read.
function FL.eligibility(keys, args)
  local c = ctx_of(keys, args)
  local core = load_core(c)
  if not core then
    return { 'not_found' }
  elseif core.lifecycle_phase ~= 'runnable' then
    return { 'not_runnable' }
  elseif core.ownership_state ~= 'unowned' then
    return { 'owned' }
  elseif core.terminal_outcome ~= 'none' then
    return { 'terminal' }
  end
  local d = FL.load_deps(c)
  if not d then
    return { 'eligible' }
  end
  local p = FL.with_helpers({ now = c.now, prefix = c.prefix, tag = c.tag })
  local f = d.flow_id and FL.load(p, d.flow_id)
  local g = f and f.groups[c.eid]
  if g and g.kind ~= 'all_of' then
    if g.state == 'satisfied' then
      return { 'eligible' }
    elseif g.state == 'impossible' then
      return { 'impossible' }
    end
    return { 'blocked_by_dependencies' }
  end
  if d.impossible > 0 then
    return { 'impossible' }
  elseif d.unsatisfied > 0 then
    return { 'blocked_by_dependencies' }
  end
  return { 'eligible' }
end

-- ------------------------------------------------------------ reconcilers (spec 03 §7.3.1–§7.3.3)

-- Cancels a member as an operator override; false only if the cancel could not run.
function FL.operator_cancel(p, eid, reason)
  local cc = p.exec(eid)
  local ok, err = pcall(cancel_execution, { cc.core },
    { fmt(p.now), p.prefix, p.tag, eid, reason, 'operator_override', '1', '', '' })
  if ok then
    return true, true
  end
  if type(err) == 'table' and getmetatable(err) == Rejection then
    -- Every typed refusal is final: the member needs no further cancel.
    return true, false
  end
  error(err)
end

-- The dependency reconciler's visit of one blocked child; returns edges resolved.
function FL.reconcile_blocked_child(p, eid)
  local cc = p.exec(eid)
  local function blocked(core)
    return core and core.lifecycle_phase == 'runnable' and core.eligibility_state == 'blocked_by_dependencies'
  end
  local core = load_core(cc)
  if not blocked(core) then
    return 0
  end
  local resolved = 0
  local d = FL.load_deps(cc)
  local f = core.flow_id and core.flow_id ~= '' and d and FL.load(p, core.flow_id)
  if f then
    local open = {}
    for _, e in ipairs(FL.sorted_keys(d.deps)) do
      if d.deps[e].state == 'unsatisfied' and #open < 20 then
        open[#open + 1] = e
      end
    end
    for _, edge_id in ipairs(open) do
      local up = load_core(p.exec(d.deps[edge_id].upstream))
      if up and up.lifecycle_phase == 'terminal' and up.terminal_outcome ~= 'none' then
        resolved = resolved + 1
        local out = FL.resolve_in(p, f, edge_id, up.terminal_outcome)
        FL.put(p, f)
        if out[1] == 'impossible' and out[2] == '1' then
          FL.cascade(cc, p.now)
          return resolved
        end
      end
    end
  end
  core = load_core(cc)
  d = FL.load_deps(cc)
  local unsatisfied = 0
  for _, dep in pairs(d and d.deps or {}) do
    if dep.state == 'unsatisfied' then
      unsatisfied = unsatisfied + 1
    end
  end
  if blocked(core) and unsatisfied == 0 then
    FL.flip_eligible(cc, core, p.now)
  end
  return resolved
end

-- The cancel reconciler's visit of one backlogged flow; returns members acknowledged.
function FL.drain_cancel_backlog(p, fid)
  local f = FL.load(p, fid)
  if not f or next(f.pending_cancels or {}) == nil then
    redis.call('ZREM', p.idx('cancel_backlog'), fid)
    return 0
  end
  local reason = f.cancel_reason or 'flow_cancelled'
  local owed = FL.sorted_keys(f.pending_cancels)
  local acked = 0
  for i = 1, math.min(#owed, 500) do
    if FL.operator_cancel(p, owed[i], reason) then
      -- The cancel ran the cascade, which may have rewritten the flow: reload.
      local fresh = FL.load(p, fid)
      if fresh and FL.ack_in(p, fresh, owed[i]) then
        FL.put(p, fresh)
      end
      acked = acked + 1
    end
  end
  return acked
end

-- The sibling-cancel dispatcher's visit of one edge group; returns siblings cancelled.
function FL.dispatch_sibling_cancels(p, member)
  local fid, child = member:match('^([^|]*)|(.*)$')
  local f = fid and FL.load(p, fid)
  local g = f and f.groups[child]
  if not g then
    redis.call('ZREM', p.idx('pending_cancel_groups'), member)
    return 0
  end
  local reason = g.cancel_siblings_reason or 'sibling_quorum_satisfied'
  local cancelled = 0
  for i, sibling in ipairs(g.cancel_siblings or {}) do
    if i > 1024 then
      break
    end
    local final, ok = FL.operator_cancel(p, sibling, reason)
    if not final then
      return cancelled
    end
    if ok then
      cancelled = cancelled + 1
    end
  end
  local fresh = FL.load(p, fid)
  if fresh and fresh.groups[child] then
    fresh.groups[child].cancel_siblings = {}
  end
  if fresh then
    FL.put(p, fresh)
  end
  redis.call('ZREM', p.idx('pending_cancel_groups'), member)
  return cancelled
end

-- One flow scanner pass over a partition (`p` from partition_ctx); returns examined, acted.
function FL.scanner_pass(p, kind, batch)
  p = FL.with_helpers(p)
  local examined, acted = 0, 0
  if kind == 'dependency_reconciler' then
    local lanes = redis.call('ZRANGE', p.idx('lanes'), 0, SP.LANES_PER_PASS_MAX - 1)
    for _, lane in ipairs(lanes) do
      for _, eid in ipairs(redis.call('ZRANGE', p.idx('lane:' .. lane .. ':blocked:dependencies'), 0, batch - 1)) do
        examined = examined + 1
        local key = p.exec(eid).core
        local before = redis.call('HGET', key, 'eligibility_state')
        local resolved = FL.reconcile_blocked_child(p, eid)
        if resolved > 0 or before ~= redis.call('HGET', key, 'eligibility_state') then
          acted = acted + 1
        end
      end
    end
  elseif kind == 'cancel_reconciler' then
    local due = redis.call('ZRANGEBYSCORE', p.idx('cancel_backlog'), '-inf', fmt(p.now), 'LIMIT', 0, batch)
    for _, fid in ipairs(due) do
      examined = examined + 1
      acted = acted + FL.drain_cancel_backlog(p, fid)
    end
  else
    for _, member in ipairs(redis.call('ZRANGE', p.idx('pending_cancel_groups'), 0, batch - 1)) do
      examined = examined + 1
      acted = acted + FL.dispatch_sibling_cancels(p, member)
    end
  end
  return examined, acted
end

SP.register('ff_create_flow', FL.create_flow, {}, 6)
SP.register('ff_add_execution_to_flow', FL.add_member, {}, 5)
SP.register('ff_stage_dependency_edge', FL.stage_edge, {}, 10)
SP.register('ff_set_edge_group_policy', FL.set_group_policy, {}, 8)
SP.register('ff_apply_dependency_to_child', FL.apply_dependency, {}, 5)
SP.register('ff_resolve_dependency', FL.resolve_dependency, {}, 6)
SP.register('ff_cancel_flow_header', FL.cancel_flow_header, {}, 7)
SP.register('ff_ack_cancel_member', FL.ack_cancel_member, {}, 5)
SP.register('ff_promote_blocked_to_eligible', FL.promote_blocked, {}, 4)
SP.register('ff_set_flow_tags', FL.set_flow_tags, {}, 5)
SP.register('ff_describe_flow', FL.describe_flow, { 'no-writes' }, 4)
SP.register('ff_evaluate_flow_eligibility', FL.eligibility, { 'no-writes' }, 4)

-- The completion feed. Terminal transitions append to their partition's outbox
-- (`ff:idx:{fp:N}:completions`, events numbered by the partition's sequence `seq`);
-- the feed the cursor reads (`ff:completions:{feed}`, contiguous event ids) lives on a
-- slot of its own, with `…:relayed`, a hash of the last outbox seq it holds per
-- partition. A reader (the client's read_completions) reads those marks, drains
-- every outbox past its mark (ff_drain_completions, one call per partition) and
-- hands the events to ff_relay_completions, which appends the ones past the mark
-- in order and replies the page; a relay racing another appends each event once.

-- ff_completion_marks: the feed's relayed-through marks as flat {partition, seq, …}.
-- KEYS[1] = the feed.
function FL.completion_marks(keys, args)
  return redis.call('HGETALL', keys[1] .. ':relayed')
end

-- ff_drain_completions (partition convention). ARGV[4…]: relayed-through seq, max.
-- Drops the outbox events the feed holds (seq <= relayed-through), then replies up
-- to max of the rest, oldest first, as their JSON. Outbox seqs are contiguous (INCR
-- per event, trimmed from the front), so the head's seq locates the mark.
function FL.drain_completions(keys, args)
  local p = partition_ctx(keys, args)
  local through, max = need_num(args, 4, 'relayed_through'), need_num(args, 5, 'max')
  if max < 1 then
    error(reject('invalid_input', 'max must be at least 1'))
  end
  local outbox = p.idx('completions')
  local first = redis.call('LINDEX', outbox, 0)
  if not first then
    return {}
  end
  local drop = through - num(cjson.decode(first).seq) + 1
  if drop > 0 then
    redis.call('LTRIM', outbox, drop, -1)
  end
  return redis.call('LRANGE', outbox, 0, max - 1)
end

-- An outbox event's JSON decoded, or `invalid_input`.
function FL.outbox_event(text)
  local ok, ev = pcall(cjson.decode, text)
  if not ok or type(ev) ~= 'table' or tonumber(ev.seq) == nil then
    error(reject('invalid_input', 'not an outbox completion event: ' .. tostring(text)))
  end
  return ev
end

-- ff_relay_completions. KEYS[1] = the feed; ARGV: after, limit, then per partition its
-- index, an event count and that many outbox events (as drained, oldest first).
-- Appends each event past the partition's mark with the next event id, then replies
-- the events after `after`, oldest first, as their JSON (at most limit).
function FL.relay_completions(keys, args)
  local feed = keys[1]
  local after, limit = need_num(args, 1, 'after'), need_num(args, 2, 'limit')
  if limit < 1 then
    error(reject('invalid_input', 'limit must be at least 1'))
  end
  local at = 3
  while at <= #args do
    local partition = fmt(need_num(args, at, 'partition'))
    local n = need_list(args, at + 1, 'event count', 1)
    local mark = num(redis.call('HGET', feed .. ':relayed', partition))
    for j = 1, n do
      local ev = FL.outbox_event(args[at + 1 + j])
      local seq = tonumber(ev.seq)
      if seq > mark then
        redis.call('RPUSH', feed, cjson.encode({
          event_id = fmt(redis.call('INCR', feed .. ':seq')), execution_id = ev.execution_id,
          flow_id = ev.flow_id, outcome = ev.outcome, ts = ev.ts,
        }))
        mark = seq
      end
    end
    redis.call('HSET', feed .. ':relayed', partition, fmt(mark))
    at = at + 2 + n
  end
  redis.call('LTRIM', feed, -COMPLETIONS_LEN_MAX, -1)
  local first = redis.call('LINDEX', feed, 0)
  if not first then
    return {}
  end
  -- Event ids are contiguous (INCR per event, trimmed from the front).
  local start = math.max(after - num(cjson.decode(first).event_id) + 1, 0)
  return redis.call('LRANGE', feed, start, start + limit - 1)
end

SP.register('ff_completion_marks', FL.completion_marks, { 'no-writes' }, 0)
SP.register('ff_drain_completions', FL.drain_completions, {}, 5)
SP.register('ff_relay_completions', FL.relay_completions, {}, 2)
